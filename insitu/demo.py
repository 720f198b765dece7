"""``insitu demo``: three synthetic hospitals, one running hub, logins printed.

What it does, each step safe to run again (a second run reuses everything):

1. writes the synthetic LOCAT-like trial as DICOM (:mod:`insitu.datasets.synthetic`);
2. creates a node home per site (``site-a``, ``site-b``, ``site-c``) under ``--dir``;
3. ingests each site's DICOM through the real ingest path (de-identification,
   Zarr stores, catalog, audit) and its measurement table when the node has
   ``ingest-table``;
4. adds the demo users at every site: a researcher with access (approved by the
   steward through the hub's access rules), a researcher without, a steward and
   an admin; passwords are random;
5. starts the hub of ``site-a`` on 127.0.0.1 and prints the URL and the logins.
   Ctrl-C (or the printed ``insitu down`` command) stops it.

Run as root, every site gets per-user Unix accounts (``hub.user_accounts_dir``,
:mod:`insitu.hub.local_users`): researchers' servers and dask workers cannot
read the node homes, and the passwords are kept in ``<dir>/logins.json``
(root, 0600). Otherwise everything runs as one account, the demo says so
loudly, and the passwords live only in memory (new ones every run): a
researcher's code could read any file the demo wrote.

One demo per ``--dir`` at a time: a second one finds the first's lock
(``<dir>/demo.lock``) and refuses without touching it.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from insitu.kernels.examples import copy_examples, example_notebooks
from insitu.net import free_port

if TYPE_CHECKING:
    from insitu.config import NodeHome
    from insitu.datasets.synthetic import Trial, TrialSpec

__all__ = ["DEMO_USERS", "DemoSetup", "copy_examples", "example_notebooks", "prepare", "register"]

DEFAULT_DIR = ".demo"
DEFAULT_PORT = 8765
HUB_SITE = "site-a"
# name, role, what the demo lets them show
DEMO_USERS = (
    ("alice", "researcher", "approved for the trial at every site"),
    ("bob", "researcher", "asks for access in the dataset browser"),
    ("sam", "steward", "decides access and release requests"),
    ("ada", "admin", "runs the node"),
)
APPROVED_RESEARCHER = "alice"
STEWARD = "sam"
ADMIN = "ada"
LOGINS_NAME = "logins.json"
LOCK_NAME = "demo.lock"
FEDERATION_NAME = "federation.json"


def dataset_name(site: str) -> str:
    """The trial's name at every site: a federated job names one dataset for all sites."""
    return "locat"


@dataclass
class DemoSite:
    name: str
    home: NodeHome
    dataset: str
    ingest_status: str
    table: str  # "ingested", "unchanged" or why not


@dataclass
class DemoSetup:
    root: Path
    trial: Trial
    logins: dict[str, str]
    sites: list[DemoSite] = field(default_factory=list)

    def site(self, name: str) -> DemoSite:
        return next(s for s in self.sites if s.name == name)


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def isolated() -> bool:
    """Whether the demo's researchers get their own Unix accounts (the demo runs as root)."""
    return os.geteuid() == 0


def _logins(root: Path, *, keep: bool) -> dict[str, str]:
    """Random demo passwords: with ``keep``, generated once and kept beside the sites
    (0600, root's: the researchers' accounts cannot read it); else new every run and
    written nowhere."""
    path = root / LOGINS_NAME
    if not keep:
        path.unlink(missing_ok=True)
        return {name: secrets.token_urlsafe(9) for name, _r, _w in DEMO_USERS}
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    logins = {name: known.get(name) or secrets.token_urlsafe(9) for name, _r, _w in DEMO_USERS}
    if logins != known:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(logins, fh, indent=1)
    path.chmod(0o600)
    return logins


def _users(home: NodeHome, logins: dict[str, str], *, renew: bool) -> None:
    from insitu.hub.accounts import AccountStore

    with AccountStore(home) as accounts:
        for name, role, _why in DEMO_USERS:
            existing = accounts.get(name)
            if existing is None:
                accounts.add(name, role, logins[name], actor="insitu-demo")
                continue
            if existing.role != role:
                accounts.set_role(name, role, actor="insitu-demo")
            if renew:  # passwords kept nowhere: this run's are the valid ones
                accounts.set_password(name, logins[name], actor="insitu-demo")


def _approve(home: NodeHome, dataset: str, user: str = APPROVED_RESEARCHER) -> None:
    """The approved researcher asks, the steward approves: the real access rules."""
    from insitu.hub import access

    state, _found = access.status_for(home, user, dataset)
    if state == "approved":
        return
    if state != "pending":
        access.request(
            home,
            user,
            dataset,
            "Compare image noise between the low-dose and standard-dose arms",
            "insitu demo",
            365,
        )
    pending = [
        r for r in access.register(home, user=user, dataset=dataset) if r.state() == "pending"
    ]
    for found in pending:
        access.approve(home, STEWARD, found.id, "demo: synthetic data, approved for the tour")


def _ingest_table(home: NodeHome, dataset: str, table: Path, *, quiet: bool) -> str:
    """The measurement table, through the node's `insitu ingest-table` when this build has it."""
    import contextlib
    import io

    from insitu.cli import build_parser, main

    commands = next(
        a.choices for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    if "ingest-table" not in commands:
        return "not ingested: this build has no `insitu ingest-table` yet"
    saved = os.environ.get("INSITU_HOME")
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
            code = main(
                ["--home", str(home.root), "ingest-table", dataset, str(table),
                 "--subject-column", "subject_id", "--date-columns", "scan_date"]
            )  # fmt: skip
    finally:
        if saved is None:
            os.environ.pop("INSITU_HOME", None)
        else:
            os.environ["INSITU_HOME"] = saved
    return "ingested" if code == 0 else f"not ingested: `insitu ingest-table` exited {code}"


def prepare(
    root: str | Path,
    spec: TrialSpec | None = None,
    *,
    port: int = DEFAULT_PORT,
    quiet: bool = False,
) -> DemoSetup:
    """Generate, ingest and set up users at the three sites (no hub)."""
    from insitu.config import NodeHome, init_home
    from insitu.datasets.ingest import ingest
    from insitu.datasets.synthetic import TrialSpec, generate_trial
    from insitu.errors import IngestError

    spec = spec or TrialSpec()
    root = Path(root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    accounts = isolated()
    _say(quiet, f"insitu demo: synthetic LOCAT-like trial in {root / 'trial'}")
    trial = generate_trial(root / "trial", spec, show_progress=None if not quiet else False)
    if accounts:
        # The source DICOM is the source zone: root's only, like the node homes.
        (root / "trial").chmod(0o700)
    logins = _logins(root, keep=accounts)
    setup = DemoSetup(root=root, trial=trial, logins=logins)
    for index, site in enumerate(spec.sites):
        home = NodeHome(root / site)
        init_home(home, site, hub_port=port + 10 * index)
        dataset = dataset_name(site)
        report = ingest(
            [trial.dicom_dir(site)],
            dataset,
            home=home,
            title=f"LOCAT-like appendicitis CT trial (synthetic), {site}",
            citation="insitu synthetic demo trial, modelled on the LOCAT design "
            "(low-dose vs standard-dose CT in suspected appendicitis); no real patients",
            show_progress=None if not quiet else False,
        )
        if report.status not in ("published", "unchanged"):
            raise IngestError(
                f"the demo's {site} ingest published nothing ({report.counts()}): "
                f"see {home.quarantine}"
            )
        table = _ingest_table(home, dataset, trial.table_path(site), quiet=quiet)
        _demo_policy(home)
        _users(home, logins, renew=not accounts)
        _approve(home, dataset)
        if accounts:
            from insitu.hub.isolation import isolate

            isolate(home)  # the spawner copies the notebooks into each account's folder
        else:
            # Each user's server starts in hub/users/<name> (the hub's home_dir_template).
            for name, _role, _why in DEMO_USERS:
                copy_examples(home.hub / "users" / name)
        setup.sites.append(DemoSite(site, home, dataset, report.status, table))
        # The newest version: the table's ingest publishes one after the images' own.
        _say(
            quiet,
            f"  {site}: {dataset} {_newest(home, dataset)} ({len(trial.site_subjects(site))} "
            f"subjects; images {report.status}, measurement table {table})",
        )
    return setup


def _newest(home: NodeHome, dataset: str) -> str:
    from insitu.datasets.catalog import Catalog

    with Catalog(home) as catalog:
        return str(catalog.version(dataset)["version"])


def _access_now(setup: DemoSetup, name: str) -> str:
    """A researcher's access to the hub site's trial as it is now (it changes in the tour)."""
    from insitu.hub import access

    site = setup.site(HUB_SITE)
    state, _found = access.status_for(site.home, name, site.dataset)
    return {"none": "no access yet"}.get(state, state)


def logins_text(setup: DemoSetup) -> str:
    width = max(len(n) for n, _r, _w in DEMO_USERS)
    lines = []
    for name, role, why in DEMO_USERS:
        now = f" (now: {_access_now(setup, name)})" if role == "researcher" else ""
        lines.append(f"  {name:<{width}}  {setup.logins[name]:<14} {role:<10} {why}{now}")
    return "\n".join(lines)


def _write_hub_logins(setup: DemoSetup) -> None:
    """Leave the logins in site-a's private/ so that `insitu up` there prints them too;
    only when researchers cannot read the node home (their own accounts)."""
    home = setup.site(HUB_SITE).home
    path = home.private / "demo-logins.txt"
    if not isolated():
        path.unlink(missing_ok=True)
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(logins_text(setup) + "\n")


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def _command(*args: str) -> str:
    """An `insitu` command line that works as typed here (the script is in .venv/bin)."""
    script = Path(sys.executable).parent / "insitu"
    shown = os.path.relpath(script) if script.is_relative_to(Path.cwd()) else str(script)
    return " ".join([shown, *args])


def claim(root: Path) -> Any:
    """Hold ``<root>/demo.lock`` for this process's life; a demo already running from
    ``root`` is refused with what it is and how to reach or stop it."""
    import fcntl

    from insitu.errors import DemoRunningError

    root.mkdir(parents=True, exist_ok=True)
    fh = open(root / LOCK_NAME, "a+")  # noqa: SIM115 - held open until the process ends
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        fh.close()
        raise DemoRunningError(_running_text(root, pid)) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def _running_text(root: Path, pid: str) -> str:
    from insitu.config import NodeHome
    from insitu.hub import lifecycle

    state = lifecycle.read_state(NodeHome(root / HUB_SITE))
    where = f" at {state.url}" if state else " (still starting)"
    return (
        f"an insitu demo is already running from {root}{where}, process {pid}; this one "
        "leaves it alone. Use that one (its terminal shows the logins), stop it with Ctrl-C "
        f"there or `{_command('--home', str(root / HUB_SITE), 'down')}`, or start another "
        "with its own --dir and --port."
    )


def _start_hub(setup: DemoSetup, port: int, *, extra: str = "") -> int:
    """Run the site-a hub until Ctrl-C (or `insitu down`), then stop it cleanly."""
    import signal
    import time

    try:
        from insitu.hub import lifecycle
    except ImportError:
        from insitu.errors import ServiceError

        raise ServiceError(
            "this build has no site hub yet (`insitu up`); the three sites are ready under "
            f"{setup.root}. Run with --no-hub to skip the hub."
        ) from None
    from insitu.errors import DemoRunningError
    from insitu.hub.isolation import local_mode_warning

    home = setup.site(HUB_SITE).home
    running = lifecycle.read_state(home)
    if running is not None:  # started by hand (`insitu up`): not this demo's to stop
        raise DemoRunningError(
            f"the hub of {HUB_SITE} is already running at {running.url} (process "
            f"{running.pid}), started outside this demo; this demo leaves it alone. Use it, "
            f"or stop it with `{_command('--home', str(home.root), 'down')}` and run again."
        )
    _write_hub_logins(setup)
    warning = local_mode_warning(_accounts_dir(home))
    if warning:
        print(f"\n{'!' * 78}\n{warning}\nThe demo passwords are kept nowhere: new ones every "
              f"run.\n{'!' * 78}", file=sys.stderr, flush=True)  # fmt: skip
    print(f"\nStarting the hub of {HUB_SITE} (first start takes a little while) ...", flush=True)
    # SIGTERM (e.g. from a service manager) stops the demo like Ctrl-C does; both are
    # caught from the start, so an interrupt during start-up stops what was started.
    # SIGINT explicitly too (as `insitu up --foreground`): a demo started from a shell
    # without job control inherits it ignored, and would never see a Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        state = lifecycle.up(home, port=port, actor=ADMIN)
        print(
            f"\ninsitu demo is running: {state.url}\n\nLog in as (user, password, role):\n"
            f"{logins_text(setup)}\n{extra}\n\nStop with Ctrl-C, or "
            f"`{_command('--home', str(home.root), 'down')}`.",
            flush=True,
        )
        while lifecycle.read_state(home) is not None:  # `insitu down` removes the state
            time.sleep(1.0)
        print("insitu demo: the hub was stopped (insitu down).")
    except KeyboardInterrupt:
        print("\ninsitu demo: stopping the hub ...", flush=True)
    finally:
        lifecycle.down(home, actor=ADMIN)
    return 0


def _accounts_dir(home: NodeHome) -> str:
    from insitu.config import load_config

    return load_config(home).hub.user_accounts_dir


# Each demo arm has 6 subjects per site: let cells of 5 out so per-arm federated statistics
# show (a real site keeps the default of 10; the airlock's own check still bites at 3).
DEMO_MIN_CELL_COUNT = 5


def demo_title(site: str) -> str:
    """What the login and landing pages call a demo site: site-a -> Hospital A (...)."""
    return f"Hospital {site.rsplit('-', 1)[-1].upper()} (insitu demo, synthetic data)"


def _demo_policy(home: NodeHome) -> None:
    """The demo's small cells (see DEMO_MIN_CELL_COUNT) and a title naming the hospital."""
    import dataclasses

    from insitu.config import SiteSection, load_config

    config = load_config(home)
    policy = dataclasses.replace(config.policy, min_cell_count=DEMO_MIN_CELL_COUNT)
    site = config.site
    if site.title == SiteSection().title:
        site = dataclasses.replace(site, title=demo_title(site.name))
    if (policy, site) != (config.policy, config.site):
        home.config_path.write_text(dataclasses.replace(config, policy=policy, site=site).to_toml())


def start_federation(setup: DemoSetup) -> str:
    """A loopback federation: coordinator + every site's SuperNode, apps approved by the steward.

    Returns the coordinator's address; :func:`stop_federation` ends it all.
    """
    from concurrent.futures import ThreadPoolExecutor

    from insitu.config import NodeHome, init_home
    from insitu.federation import approvals, processes
    from insitu.federation.analytics import analytics_fingerprint

    fingerprints = [analytics_fingerprint()]
    try:
        from insitu.federation.train_app import training_fingerprint

        fingerprints.append(training_fingerprint())
    except ImportError:  # a site without torch runs analytics only
        pass
    coordinator = NodeHome(setup.root / "coordinator")
    init_home(coordinator, "coordinator")
    _federated_researcher(setup, coordinator)
    address = coordinator_address(setup.root)
    try:
        processes.start_coordinator(coordinator, address, insecure=True)
        for site in setup.sites:
            for fingerprint in fingerprints:
                approvals.approve(site.home, fingerprint, site.dataset, days=365, user=STEWARD)
        # The SuperNodes start side by side (each waits for its own registration): the
        # federation is up in about the time of one, not of all in turn.
        with ThreadPoolExecutor(len(setup.sites)) as pool:
            list(
                pool.map(
                    lambda site: processes.start_site(
                        site.home, address, site.dataset, insecure=True
                    ),
                    setup.sites,
                )
            )
    except BaseException:
        stop_federation(setup)
        raise
    return address


def _federated_researcher(setup: DemoSetup, coordinator: NodeHome) -> None:
    """alice of the hub's site, known to the federation: every site trusts the others'
    identities, gives her a visitor account approved for the trial, and the coordinator
    a Control API token (in its private/, for :func:`federation_env`)."""
    from insitu.federation.control_auth import issue_token
    from insitu.federation.trust import add_visitor, trust_home
    from insitu.hub import researcher_tokens
    from insitu.hub.run_identity import identity_public_key

    keys = {site.name: identity_public_key(site.home) for site in setup.sites}
    for site in setup.sites:
        for other, key in keys.items():
            if other != site.name:
                trust_home(site.home, other, key)
        if site.name != HUB_SITE:
            visitor = add_visitor(site.home, APPROVED_RESEARCHER, HUB_SITE, actor="insitu-demo")
            _approve(site.home, site.dataset, visitor)
    # Every researcher of the hub's site gets a coordinator token, kept at the site; the
    # hub puts it into their own server only ($INSITU_COORDINATOR_TOKEN).
    hub_home = setup.site(HUB_SITE).home
    for name, role, _why in DEMO_USERS:
        if role == "researcher" and not researcher_tokens.load(hub_home, name):
            token = issue_token(coordinator, f"{name}@{HUB_SITE}")
            researcher_tokens.store(hub_home, name, token)


def federation_env(setup: DemoSetup) -> dict[str, str]:
    """The environment of the demo's federated researcher (alice at the hub's site)."""
    from insitu.hub import researcher_tokens

    token = researcher_tokens.load(setup.site(HUB_SITE).home, APPROVED_RESEARCHER)
    return {
        "INSITU_HOME": str(setup.site(HUB_SITE).home.root),
        "INSITU_USER": APPROVED_RESEARCHER,
        "INSITU_COORDINATOR_TOKEN": token,
    }


def coordinator_address(root: Path) -> str:
    """The demo's coordinator address, the same every run (kept in ``<dir>/federation.json``)
    so that ADDRESS in notebooks 04/05 is set once; a new port only when that one is taken."""
    import socket

    path = root / FEDERATION_NAME
    try:
        port = int(json.loads(path.read_text())["port"])
    except (OSError, ValueError, KeyError, TypeError):
        port = 0
    if port:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                port = 0
    if not port:
        port = free_port()
        path.write_text(json.dumps({"port": port}) + "\n")
    return f"127.0.0.1:{port}"


def stop_federation(setup: DemoSetup) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from insitu.config import NodeHome
    from insitu.federation import processes

    with ThreadPoolExecutor(max(1, len(setup.sites))) as pool:  # each waits for its own
        list(pool.map(lambda site: processes.stop(site.home), setup.sites))
    coordinator = NodeHome(setup.root / "coordinator")
    if coordinator.config_path.exists():
        processes.stop(coordinator)


def _cmd_demo(args: argparse.Namespace) -> int:
    from insitu.datasets.synthetic import spec_from_args
    from insitu.errors import ConfigError

    if args.federation and args.no_hub:
        raise ConfigError(
            "--federation runs with the hub in the foreground (Ctrl-C stops both): drop --no-hub"
        )
    spec = spec_from_args(args)
    lock = claim(Path(args.dir).expanduser().resolve())  # before anything is touched
    try:
        return _run_demo(args, spec)
    finally:
        lock.close()


def _run_demo(args: argparse.Namespace, spec: TrialSpec) -> int:
    setup = prepare(args.dir, spec, port=args.port)
    if args.no_hub:
        print(
            f"\nThe three sites are ready under {setup.root} "
            f"(INSITU_HOME={setup.site(HUB_SITE).home.root} for {HUB_SITE}). Logins:"
        )
        print(logins_text(setup))
        return 0
    if not args.federation:
        return _start_hub(setup, args.port)
    address = start_federation(setup)
    try:
        return _start_hub(
            setup,
            args.port,
            extra=f"\nFederation coordinator: {address} (loopback, insecure); the three sites "
            "joined with dataset 'locat' and approved the analytics and training apps.\n"
            f'In 04/05 notebooks set ADDRESS = "{address}"; each researcher\'s server has '
            "their own coordinator token ($INSITU_COORDINATOR_TOKEN), and their identity is "
            f"signed by {HUB_SITE}'s access service ({APPROVED_RESEARCHER} is approved at "
            "every site).",
        )
    finally:
        stop_federation(setup)


def _cmd_notebooks_copy(args: argparse.Namespace) -> int:
    copied = copy_examples(args.dest, overwrite=args.overwrite)
    for path in copied:
        print(path)
    kept = len(example_notebooks()) - len(copied)
    if kept:
        print(f"kept {kept} notebook(s) that already exist (--overwrite replaces them)")
    return 0


def register(sub: Any) -> None:
    from insitu.datasets.synthetic import add_size_arguments

    demo = sub.add_parser(
        "demo",
        help="start a demo site with a synthetic three-hospital trial",
        description="Generate a synthetic LOCAT-like trial (three hospitals, low-dose vs "
        "standard-dose CT) as DICOM, ingest it into three site homes under --dir, add demo "
        "users, start the hub of site-a on 127.0.0.1 and print the URL and logins. "
        "Everything is reused on the next run. Ctrl-C stops the hub.",
    )
    demo.add_argument("--dir", default=DEFAULT_DIR, help="where the sites live (default .demo)")
    demo.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"the hub's port (default {DEFAULT_PORT})"
    )
    demo.add_argument(
        "--no-hub", action="store_true", help="set up the sites and exit without starting a hub"
    )
    demo.add_argument(
        "--federation",
        action="store_true",
        help="also run a loopback Flower federation of the three sites (for notebooks 04/05)",
    )
    add_size_arguments(demo)
    demo.set_defaults(handler=_cmd_demo)

    notebooks = sub.add_parser(
        "notebooks",
        help="the example notebooks",
        description="The example notebooks researchers get in their servers.",
    )
    nb_sub = notebooks.add_subparsers(dest="notebooks_command", metavar="COMMAND", required=True)
    copy = nb_sub.add_parser(
        "copy",
        help="copy the example notebooks into a folder",
        description="Copy the example notebooks (explore a dataset, noise by dose arm, airlock, "
        "federated analysis) into DEST; existing files are kept unless --overwrite.",
    )
    copy.add_argument("dest", help="the folder, e.g. a user's notebook directory")
    copy.add_argument("--overwrite", action="store_true", help="replace existing copies")
    copy.set_defaults(handler=_cmd_notebooks_copy)


if __name__ == "__main__":
    from insitu.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
