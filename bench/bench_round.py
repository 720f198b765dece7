"""Round time of a real federation, with the site boundary and before it (issues 13, 15).

    .venv/bin/python bench/run.py round

Two federations run side by side on loopback, each a SuperLink and three SuperNodes
with their own node homes and the same synthetic trial: one runs this checkout's
code, the other the baseline checkout's (``BENCH_BASELINE``: a checkout with its
own ``.venv``, e.g. the last main commit before issue 13's boundary:
``git worktree add /tmp/insitu-pre13 52760a0 && make -C /tmp/insitu-pre13 setup``;
unset: this checkout only). Each federation is a worker process, this file run by
that checkout's interpreter (``bench_round.py worker``), using only APIs both
versions have, so each measures its own code. The driver alternates the workers'
runs (A B A B ...) so both see the same load, and prints medians with min-max.

Measured:
- one analytics run (``hu_mean`` by ``KVP``, 3 sites) submitted as a researcher
  would, and the same computation in one process (per-site summaries and the merge);
- one FedAvg training run of the demo CNN (``BENCH_ROUNDS`` rounds, 3 sites);
- where an analytics run's time goes: each log line of the SuperLink (and its
  ServerApp) and of the SuperNodes (and the site runner) stamped when it appears.

The analytics runs' log lines are summarised as a timeline (``round_timeline.py``): when
each step was first seen, seconds after submission, medians over the runs.

Environment: BENCH_REPEATS (5), BENCH_SUBJECTS per site (24), BENCH_SIZE (64),
BENCH_SLICES (16), BENCH_ROUNDS (3), BENCH_BASELINE (a checkout folder),
BENCH_COMMANDS (``local,analytics,train``: which measurements, in this order),
BENCH_SETTLE (1: an analytics run, and the one-process computation, start when the
federation is at rest, every site's runner and sandbox started ahead and idle, as for
a researcher's query; 0: at once),
BENCH_CHECKOUT (the checkout measured as "this", default this one: give a copy
when you edit this checkout during the run, as every task starts a fresh process
from the code), BENCH_KEEP=1 keeps the work folders.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import round_timeline

SITES = ("site-a", "site-b", "site-c")
DATASET = "locat"
RESEARCHER = "alice"
STEWARD = "sam"
HERE = Path(__file__).resolve().parent


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# --- worker: one federation, this interpreter's checkout ----------------------------


class LogWatch:
    """Stamp every line appended to some log files with the time it appeared."""

    def __init__(self, logs: dict[str, Path]) -> None:
        self.logs = logs
        self.offsets = {name: (p.stat().st_size if p.exists() else 0) for name, p in logs.items()}
        self.events: list[tuple[float, str, str]] = []
        self.partial = dict.fromkeys(logs, b"")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.01):
            for name, path in self.logs.items():
                try:
                    with open(path, "rb") as fh:
                        fh.seek(self.offsets[name])
                        data = fh.read()
                except FileNotFoundError:
                    continue
                if not data:
                    continue
                now = time.perf_counter()
                self.offsets[name] += len(data)
                *lines, self.partial[name] = (self.partial[name] + data).split(b"\n")
                for line in lines:
                    text = line.decode(errors="replace").strip()
                    if text:
                        self.events.append((now, name, text[:400]))

    def since(self, start: float) -> list[tuple[float, str, str]]:
        return [(round(t - start, 3), n, s) for t, n, s in self.events if t >= start]


# Processes a federation starts ahead of a run (the sites' runners and sandboxes, and
# where the checkout has it, the coordinator's ServerApp).
AHEAD = (
    "insitu.federation.site_runner",
    "insitu.federation.sandbox",
    "insitu.federation.serverapp",
)


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _at_rest(timeout: float = 180.0, window: float = 0.5) -> float:
    """Wait until this federation is at rest, as for a researcher's first query: every
    site has its next runner (and sandbox) started ahead and none of them is still
    starting (no CPU time used for ``window`` s). Seconds waited."""
    from insitu.supervisor import descendants

    start = time.perf_counter()
    last = -1
    while time.perf_counter() - start < timeout:
        ahead = [p for p in descendants(os.getpid()) if any(m in _command(p) for m in AHEAD)]
        runners = sum("site_runner" in _command(p) for p in ahead)
        ticks = sum(_cpu_ticks(p) for p in ahead)
        if ticks == last and runners >= len(SITES):
            break
        last = ticks
        time.sleep(window)
    return time.perf_counter() - start


def _python_for_accounts(where: Path) -> str:
    """A Python the sandbox's own account can run (ours may sit under 0700 /root)."""
    import sysconfig

    if os.geteuid() != 0 or not str(sys.executable).startswith("/root"):
        return ""
    minor = f"python3.{sys.version_info.minor}"
    base = shutil.which(minor, path="/usr/bin:/usr/local/bin")
    if base is None:
        return ""
    subprocess.run([base, "-m", "venv", "--without-pip", str(where)], check=True)
    ours = sysconfig.get_paths()["purelib"]
    (where / "lib" / minor / "site-packages" / "insitu-bench.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n"
    )
    for path in [where, *where.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or path.name.startswith("python") else 0o644)
    return str(where / "bin" / "python")


def _onboard(homes: dict[str, Any]) -> None:
    """Researcher identities trusted across sites; alice approved for the dataset."""
    from insitu.federation.identity import identity_public_key
    from insitu.federation.trust import add_visitor, trust_home
    from insitu.hub import access
    from insitu.hub.accounts import AccountStore

    keys = {site: identity_public_key(home) for site, home in homes.items()}
    for site, home in homes.items():
        for other, key in keys.items():
            if other != site:
                trust_home(home, other, key)
        account = RESEARCHER
        if site != "site-a":
            account = add_visitor(home, RESEARCHER, "site-a", actor="bench")
        with AccountStore(home) as accounts:
            for name, role in ((account, "researcher"), (STEWARD, "steward")):
                if accounts.get(name) is None:
                    accounts.add(name, role, None, actor="bench")
        found = access.request(home, account, DATASET, "benchmark", "bench", 30)
        access.approve(home, STEWARD, found.id, "ok")


class Worker:
    def __init__(self, root: Path) -> None:
        from insitu.config import NodeHome, init_home, load_config
        from insitu.datasets.ingest import ingest
        from insitu.datasets.synthetic import TrialSpec, generate_trial
        from insitu.federation import approvals, processes
        from insitu.federation.analytics import analytics_fingerprint
        from insitu.federation.train_app import training_fingerprint

        self.boundary = _has("insitu.federation.sandbox")
        spec = TrialSpec(
            subjects_per_site=_env("BENCH_SUBJECTS", 24),
            size=_env("BENCH_SIZE", 64),
            slices=_env("BENCH_SLICES", 16),
        )
        trial = generate_trial(root / "trial", spec, show_progress=False)
        self.python_dir = Path(tempfile.mkdtemp(prefix="insitu-py-", dir="/tmp"))
        python = _python_for_accounts(self.python_dir)
        self.homes: dict[str, Any] = {}
        for site in SITES:
            home = NodeHome(root / site)
            init_home(home, site)
            if self.boundary:
                config = load_config(home)
                hub = dataclasses.replace(config.hub, user_python=python)
                # Budgets: a benchmark sends more than one researcher's default allows.
                extra = config.extra | {"federation": {"values_budget": 10**9}}
                config = dataclasses.replace(config, hub=hub, extra=extra)
                home.config_path.write_text(config.to_toml())
            ingest([trial.dicom_dir(site)], DATASET, home=home, show_progress=False)
            self.homes[site] = home
        self.coordinator = NodeHome(root / "coordinator")
        init_home(self.coordinator, "coordinator")
        self.kwargs: dict[str, Any] = {}
        if self.boundary:
            from insitu.federation.control_auth import issue_token
            from insitu.federation.identity import signer

            _onboard(self.homes)
            self.kwargs = {
                "identity": signer(self.homes["site-a"], RESEARCHER),
                "token": issue_token(self.coordinator, RESEARCHER),
            }
        self.address = f"127.0.0.1:{processes.free_port()}"
        processes.start_coordinator(self.coordinator, self.address, insecure=True)
        for home in self.homes.values():
            processes.start_site(home, self.address, DATASET, insecure=True)
            for fp in (analytics_fingerprint(), training_fingerprint()):
                approvals.approve(home, fp, DATASET, days=1, user=STEWARD)
        self.local()  # imports warm, as in a researcher's notebook
        logs = {"superlink": self.coordinator.run / "federation-coordinator.log"}
        logs |= {site: h.run / "federation-site.log" for site, h in self.homes.items()}
        self.watch = LogWatch(logs)

    def analytics(self) -> dict[str, Any]:
        from insitu.federation.analytics import analyze

        settled = _at_rest() if _env("BENCH_SETTLE", 1) else 0.0
        start = time.perf_counter()
        table = analyze(
            address=self.address,
            insecure=True,
            dataset=DATASET,
            feature="hu_mean",
            by="KVP",
            min_sites=3,
            **self.kwargs,
        )
        took = time.perf_counter() - start
        time.sleep(0.3)  # the last log lines
        events = self.watch.since(start)
        return {"s": took, "sites": len(table.attrs["sites"]), "settle": settled, "events": events}

    def local(self) -> dict[str, Any]:
        """The same computation in one process: each site's summary, then the merge."""
        from insitu.datasets.reader import open_dataset
        from insitu.federation.analytics import (
            AnalysisSpec,
            combine,
            feature_frame,
            parse_reply,
            site_summary,
        )
        from insitu.federation.node_data import SiteData

        spec = AnalysisSpec(DATASET, "hu_mean", by="KVP", min_sites=3)
        # On the same quiet machine as an analytics run: not while the sites' next runners
        # and sandboxes (started a second after the previous run's tasks) still import.
        settled = _at_rest() if _env("BENCH_SETTLE", 1) else 0.0
        start = time.perf_counter()
        replies = []
        for site, home in self.homes.items():
            data = SiteData(open_dataset(DATASET, home=home), site=site, dataset=DATASET)
            content = site_summary(feature_frame(data, spec), spec, site=site, min_cell_count=10)
            replies.append(parse_reply(content))
        combine(replies, spec)
        return {"s": time.perf_counter() - start, "settle": settled}

    def train(self) -> dict[str, Any]:
        from insitu.federation.train_app import run_training

        rounds = _env("BENCH_ROUNDS", 3)
        start = time.perf_counter()
        run = run_training(
            address=self.address,
            insecure=True,
            rounds=rounds,
            min_sites=3,
            wait_for_sites=3,
            round_timeout=600,
            timeout=3600,
            **self.kwargs,
        )
        took = time.perf_counter() - start
        if not run.completed:
            return {"s": took, "failed": run.logs[-1500:]}
        return {"s": took, "rounds": len(run.result["rounds"])}

    def close(self) -> None:
        from insitu.federation import processes

        self.watch.stop.set()
        for home in [*self.homes.values(), self.coordinator]:
            processes.stop(home)
        shutil.rmtree(self.python_dir, ignore_errors=True)


def worker(root: Path) -> int:
    """Serve commands (one a line on stdin) with JSON answers on the original stdout."""
    root.mkdir(parents=True, exist_ok=True)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # everything else anyone prints goes to stderr
    import insitu

    code = str(Path(insitu.__file__).resolve().parent.parent)
    try:
        w = Worker(root)
    except Exception as exc:
        out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        raise
    out.write(json.dumps({"ready": code, "boundary": w.boundary}) + "\n")
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                break
            try:
                answer = getattr(w, command)()
            except Exception as exc:  # report, keep serving
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(answer) + "\n")
    finally:
        w.close()
    return 0


# --- driver ----------------------------------------------------------------------------


class Remote:
    def __init__(self, name: str, python: str, root: Path) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "worker", str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(root.with_suffix(".log"), "wb"),  # noqa: SIM115 (closed with the process)
            text=True,
        )
        self.hello = self._read()
        if "error" in self.hello:
            raise RuntimeError(f"{name}: {self.hello['error']} (see {root.with_suffix('.log')})")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the worker ended (exit {self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spread(xs: list[float], unit: str = "s", digits: int = 1) -> str:
    if not xs:
        return "no runs"
    med = statistics.median(xs)
    return f"{med:.{digits}f} {unit} ({min(xs):.{digits}f}-{max(xs):.{digits}f}, n={len(xs)})"


def _git(folder: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(folder), "log", "-1", "--format=%h %cs"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main() -> None:
    import flwr

    repeats = _env("BENCH_REPEATS", 5)
    commands = os.environ.get("BENCH_COMMANDS", "local,analytics,train").split(",")
    unknown = set(commands) - {"local", "analytics", "train"}
    if unknown:
        raise SystemExit(f"BENCH_COMMANDS: unknown {sorted(unknown)}; use local, analytics, train")
    root = Path(tempfile.mkdtemp(prefix="insitu-bench-round-"))
    checkouts = {"this": Path(os.environ.get("BENCH_CHECKOUT", HERE.parent)).resolve()}
    if os.environ.get("BENCH_BASELINE"):
        checkouts["baseline"] = Path(os.environ["BENCH_BASELINE"]).resolve()
    print(f"work folder {root}; flwr {flwr.__version__}; load {os.getloadavg()}")
    for name, folder in checkouts.items():
        print(f"{name}: {folder} at {_git(folder)}")
    results: dict[str, dict[str, list[Any]]] = {n: {} for n in checkouts}
    workers: dict[str, Remote] = {}
    try:
        for name, folder in checkouts.items():
            workers[name] = Remote(name, str(folder / ".venv" / "bin" / "python"), root / name)
            print(f"{name} ready: {workers[name].hello}", flush=True)
        loads = [os.getloadavg()[0]]
        for i in range(repeats):
            for command in commands:
                order = list(workers) if i % 2 == 0 else list(reversed(workers))
                for name in order:
                    answer = workers[name].ask(command)
                    results[name].setdefault(command, []).append(answer)
                    brief = {k: v for k, v in answer.items() if k != "events"}
                    print(f"[{i + 1}/{repeats}] {name} {command}: {brief}", flush=True)
                    loads.append(os.getloadavg()[0])
    finally:
        for w in workers.values():
            w.close()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
    # Per run, not shared: other people may run this benchmark on the same machine.
    events = Path(tempfile.gettempdir()) / f"insitu-bench-round-events-{os.getpid()}.json"
    events.write_text(json.dumps(results, indent=1))
    print(f"every answer, with the analytics runs' log timelines: {events}")
    print(f"1-minute load average during the runs: {min(loads):.1f}-{max(loads):.1f}")
    _report(results, checkouts)


def _times(answers: list[dict[str, Any]]) -> list[float]:
    return [a["s"] for a in answers if "s" in a and "error" not in a and "failed" not in a]


def _report(results: dict[str, dict[str, list[Any]]], checkouts: dict[str, Path]) -> None:
    rounds = _env("BENCH_ROUNDS", 3)
    print("\nBENCHMARKS.md section 'federation round time':")
    print("| measure | " + " | ".join(f"{n} ({_git(f)})" for n, f in checkouts.items()) + " |")
    print("| --- |" + " --- |" * len(checkouts))
    for command, what in (
        ("analytics", "one analytics run, 3 sites"),
        ("local", "same computation in one process"),
        ("train", f"FedAvg training run, {rounds} rounds, 3 sites"),
    ):
        if not any(command in results[n] for n in checkouts):
            continue
        cells = [_spread(_times(results[n].get(command, []))) for n in checkouts]
        print(f"| {what} | " + " | ".join(cells) + " |")
    for name in checkouts:
        fed = _times(results[name].get("analytics", []))
        local = _times(results[name].get("local", []))
        if fed and local:
            ratios = [f / lo for f, lo in zip(fed, local, strict=False)]
            print(f"{name}: analytics / one process = {_spread(ratios, 'x')}")
    for name in checkouts:
        answers = results[name].get("analytics", [])
        runs = [(a["events"], a["s"]) for a in answers if "events" in a and "s" in a]
        settles = [a["settle"] for a in answers if "settle" in a]
        if settles:
            print(f"{name}: waited for the federation at rest before each run: {_spread(settles)}")
        if runs:
            print(f"\n{name}: where an analytics run's time went")
            print(round_timeline.table(runs))
    if "baseline" in checkouts:
        for command in ("analytics", "train"):
            a = _times(results["this"].get(command, []))
            b = _times(results["baseline"].get(command, []))
            ratios = [x / y for x, y in zip(a, b, strict=False)]
            print(f"{command}: this / baseline = {_spread(ratios, 'x', 2)}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "worker":
        sys.exit(worker(Path(sys.argv[2])))
    main()
