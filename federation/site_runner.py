"""Run one ClientApp task at a site: approval, sandboxed app, checker, site mods.

This is insitu's replacement for ``flwr-clientapp`` (started by
:mod:`insitu.federation.site_exec`, never by the app; the task token comes on
stdin, never on the command line where any local process could read it).
For one task it:

1. pulls the message, context, run and FAB from the SuperNode's Runtime API;
2. fingerprints the FAB bytes itself (SHA-256) and checks the steward's
   approval for the node's dataset, and that the message type and the run's
   reply count are within the approved egress manifest; otherwise it sends an
   error reply naming the reason, records the app (and the manifest it
   declares) as pending and audits the refusal: no app code runs;
3. otherwise runs the app in a sandbox process (:mod:`insitu.federation.sandbox`:
   own account, no network, no token), serving its data requests itself
   (:mod:`insitu.federation.data_service`, which keeps the tally), and takes
   its reply as bytes, which the checker parses and judges
   (:mod:`insitu.federation.checker`); what passes is rebuilt from the parsed
   values and goes through the site's mods (DP, SecAgg+, the envelope);
4. pushes the reply and the task's final status back to the SuperNode.

Every failure (the app raising, hanging, sending garbage, a mod breaking on
the reply) ends in an error reply with a code and a fixed text, and the task
is always finished, so the site goes on serving other runs.

A runner may be started ahead of its task (``--insitu-home``, the site
executor's ``prestart``): it imports what it needs and starts its sandbox
(which imports Flower and waits for its task), then waits for the token. No
app code runs before step 2 has passed. One line per task in the site's log
says where the time went (pull, admission, app, check, push).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

__all__ = ["main"]

NODE_HOME_KEY = "insitu-home"
# A sandbox started ahead of the task ("python": the hub.user_python it was started with).
_SPARE: dict[str, Any] = {}
# Seconds per step of this task, for the site log's line.
_TIMES: dict[str, float] = {}
_STARTED = time.perf_counter()


def _prestart(home: str) -> None:
    """Start this task's sandbox now (it imports Flower, then waits for the task)."""
    from insitu.config import NodeHome, load_config
    from insitu.federation import sandbox_launch
    from insitu.federation.settings import federation_settings

    try:
        config = load_config(NodeHome(Path(home)))
        python = config.hub.user_python
        limits = sandbox_launch.Limits.from_settings(federation_settings(config))
        _SPARE["box"] = sandbox_launch.start(python, limits, protect=(home,))
        _SPARE["python"], _SPARE["limits"], _SPARE["protect"] = python, limits, (home,)
    except Exception as exc:  # only costs time: the task then starts its own sandbox
        what = type(exc).__name__
        print(f"insitu site runner: no sandbox started ahead ({what})", file=sys.stderr)


def _take_sandbox(configured_python: str, limits: Any, protect: tuple[str, ...]) -> Any:
    """The sandbox started ahead when it still fits the site's config (Python, resource
    limits, the paths it must not read), else a new one."""
    from insitu.federation import sandbox_launch

    box = _SPARE.pop("box", None)
    python = _SPARE.pop("python", None)
    ahead = _SPARE.pop("limits", None)
    protected = _SPARE.pop("protect", None)
    if box is not None:
        fits = python == configured_python and ahead == limits and protected == protect
        if fits and box.process.poll() is None:
            _TIMES["prestarted"] = 1.0
            return box
        box.stop()
    return sandbox_launch.start(configured_python, limits, protect=protect)


def _drop_spare() -> None:
    box = _SPARE.pop("box", None)
    _SPARE.clear()
    if box is not None:
        box.stop()


def _preload(home: str | None = None) -> None:
    """Import what a task needs before the task comes (a runner started ahead is ready);
    with the node ``home``, also load what its checks read that can be cached."""

    import insitu.federation.admission
    import insitu.federation.approvals
    import insitu.federation.checker
    import insitu.federation.data_service
    import insitu.federation.ledger
    import insitu.federation.manifest
    import insitu.federation.policy
    import insitu.federation.run_budget
    import insitu.federation.sandbox_launch
    import insitu.federation.site_mod
    import insitu.federation.transport

    with contextlib.suppress(ImportError):  # the checker's disclosure engine, when installed
        import insitu.disclosure.context
        import insitu.disclosure.provenance  # noqa: F401

    # Serving the app's reads: the store's tables (pandas) and images (xarray over dask;
    # dask looks for a distributed client when it computes). Seconds of imports that
    # would otherwise fall on the task's first read.
    import importlib

    for name in ("pandas", "xarray", "dask.array", "zarr", "insitu.datasets.reader"):
        importlib.import_module(name)
    # xarray finds its chunk managers (dask) through package entry points on first use:
    # a scan of every installed distribution (~0.1 s); the result is cached.
    from xarray.namedarray.parallelcompat import list_chunkmanagers

    list_chunkmanagers()
    # Flower's task API client and what the runner uses once the token has come.
    for name in (
        "flwr.app",
        "flwr.client.mod.utils",
        "flwr.supercore.heartbeat",
        "flwr.supercore.interceptors",
        "flwr.supercore.retry",
        "flwr.supercore.runtime",
        "flwr.supercore.tls",
        "flwr.supernode.runtime.run_clientapp",
        "httpcore",  # httpx imports its transport (and trio) when the first client is made
        "insitu.federation.identity",
        "insitu.hub.access",
    ):
        importlib.import_module(name)
    with contextlib.suppress(ImportError):
        importlib.import_module("distributed")
    if home is not None:
        _warm_fingerprints(home)


def _warm_fingerprints(home: str) -> None:
    """Load the site's fingerprint index into this process's cache ahead of the task.

    The check reads it again at task time (``FingerprintIndex.for_home``): the cache is
    used only while ``index.json`` is unchanged, so a series published meanwhile is
    still seen; loading all series' fingerprints takes ~0.1-0.2 s of the task otherwise.
    """
    try:
        from insitu.config import NodeHome
        from insitu.disclosure.provenance import FingerprintIndex
    except ImportError:  # no disclosure engine installed: nothing to warm
        return
    try:
        FingerprintIndex.for_home(NodeHome(Path(home)))
    except Exception as exc:  # only costs time: the check loads it (and reports) itself
        print(
            f"insitu site runner: fingerprints not loaded ahead ({type(exc).__name__})",
            file=sys.stderr,
        )


def _timing_line(run_id: Any, message_type: str) -> str:
    names = [name for name in ("pull", "admit", "app", "data", "push") if name in _TIMES]
    # data: of the app's time, what the runner spent answering its reads
    steps = ", ".join(f"{name} {_TIMES[name]:.2f} s" for name in names)
    check = f", check {_TIMES['check'] * 1000:.1f} ms" if "check" in _TIMES else ""
    ahead = "yes" if _TIMES.get("prestarted") else "no"
    return (
        f"insitu site runner: run {run_id} {message_type}: {steps}{check} "
        f"(sandbox started ahead: {ahead}; runner ready after {_TIMES.get('startup', 0):.2f} s, "
        f"{_TIMES.get('idle', 0):.2f} s before its task)"
    )


def _error(code: int, reason: str, reply_to: Any) -> Any:
    from flwr.app import Error, Message

    return Message(Error(code=code, reason=reason), reply_to=reply_to)


class AppCall:
    """The innermost callable of the mod chain: the sandboxed app plus the checker."""

    def __init__(self, *, run: Any, config: Any, fab: Any, flwr_run: Any, manifest: Any) -> None:
        self.run = run
        self.config = config
        self.fab = fab
        self.flwr_run = flwr_run
        self.manifest = manifest
        from insitu.federation.settings import federation_settings

        self.settings = federation_settings(config)
        self.timeout = float(self.settings.sandbox_timeout)
        self.isolation: dict[str, Any] = {}

    def __call__(self, message: Any, context: Any) -> Any:
        entered = _TIMES["enter"] = time.perf_counter()
        try:
            return self._call(message, context)
        finally:
            _TIMES["app"] = time.perf_counter() - entered - _TIMES.get("check", 0.0)

    def _call(self, message: Any, context: Any) -> Any:
        from flwr.app import Context, RecordDict
        from flwr.common.serde import context_to_proto, message_to_proto

        from insitu.federation import node_data
        from insitu.federation.channel import ChannelClosedError
        from insitu.federation.data_service import DataService
        from insitu.federation.sandbox import LIMIT_KINDS, NOT_CONFINED
        from insitu.federation.sandbox_launch import Limits

        data = node_data.open_for_node(dict(context.node_config))
        # The runner's own SiteData (trusted): the envelope reads it for the site's credit.
        node_data.set_current(data)
        service = DataService(data)
        # The app sees the node config without the node home's path, and no state
        # (SecAgg+ keeps its secrets in the runner's context state).
        app_context = Context(
            run_id=context.run_id,
            node_id=context.node_id,
            node_config={k: v for k, v in context.node_config.items() if k != NODE_HOME_KEY},
            state=RecordDict(),
            run_config=context.run_config,
        )
        task = {
            "message": message_to_proto(message).SerializeToString(),
            "context": context_to_proto(app_context).SerializeToString(),
            "fab": self.fab.content,
            "fab_id": self.flwr_run.fab_id,
            "fab_version": self.flwr_run.fab_version,
            "fab_hash": self.fab.hash_str,
            "data": {
                "site": data.site,
                "dataset": data.dataset,
                "alias": data.alias,
                "min_cell_count": data.min_cell_count,
                "settings": data.settings,
            },
        }
        protect = (str(context.node_config.get(NODE_HOME_KEY, "")),)
        box = _take_sandbox(
            self.config.hub.user_python, Limits.from_settings(self.settings), protect
        )
        self.isolation = box.isolation
        limits = {b"Q": 1 << 20, b"R": self.config.policy.max_reply_bytes + 65536, b"E": 65536}
        deadline = time.monotonic() + self.timeout
        try:
            box.channel.send(b"T", pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL))
            while True:
                box.channel.sock.settimeout(max(0.1, deadline - time.monotonic()))
                kind, payload = box.channel.recv(limits)
                if kind == b"Q":
                    reading = time.perf_counter()
                    service.answer(box.channel, payload)
                    _TIMES["data"] = _TIMES.get("data", 0.0) + time.perf_counter() - reading
                    continue
                if service.refusal is not None:
                    return self._refuse(message, [str(service.refusal)], 0)
                if kind == b"R":
                    started = time.perf_counter()
                    try:
                        return self._check(message, payload, service)
                    finally:
                        _TIMES["check"] = time.perf_counter() - started
                if payload in LIMIT_KINDS:  # a kind name from a fixed list, never app text
                    return self._over_limit(message, payload.decode())
                if payload == NOT_CONFINED:
                    return self._not_confined(message)
                return self._app_failed(message, "the app raised an exception")
        except TimeoutError:
            return self._over_limit(message, "time")
        except (ChannelClosedError, OSError):
            if _killed_by_cpu_limit(box.process):
                return self._over_limit(message, "cpu")
            return self._app_failed(message, "the app's process ended without a valid reply")
        finally:
            box.stop()

    def _over_limit(self, message: Any, kind: str) -> Any:
        """The fixed error reply (and audit entry) for an app stopped at a sandbox limit."""
        from insitu.federation.site_mod import ERROR_RESOURCE_LIMIT

        s = self.settings
        what = {
            "time": f"time limit ({s.sandbox_timeout:g} s, [federation] sandbox_timeout)",
            "cpu": f"CPU time limit ({s.sandbox_cpu_seconds} s, [federation] sandbox_cpu_seconds)",
            "memory": f"memory limit ({s.sandbox_memory_mb} MiB, [federation] sandbox_memory_mb)",
            "file-size": (
                f"file size limit ({s.sandbox_file_size_mb} MiB, [federation] sandbox_file_size_mb)"
            ),
            "processes": (
                f"process limit ({s.sandbox_max_processes} processes and threads, "
                "[federation] sandbox_max_processes)"
            ),
        }[kind]
        self.run.audit(
            "federation.reply",
            message_type=message.metadata.message_type,
            decision="error",
            reason=f"the app reached its {what}",
            limit=kind,
            size_bytes=0,
        )
        return _error(
            ERROR_RESOURCE_LIMIT,
            f"site {self.run.site!r}: the ClientApp reached its {what} and was stopped; the "
            "site goes on serving other runs and does not forward the app's own error text",
            message,
        )

    def _not_confined(self, message: Any) -> Any:
        """The sandbox stopped before the task: it could not confine itself (site's log)."""
        from insitu.federation.site_mod import ERROR_SITE_FAILURE

        what = "the site could not confine the app's process (see the site's log)"
        return self._error_reply(message, ERROR_SITE_FAILURE, what, what)

    def _app_failed(self, message: Any, what: str) -> Any:
        from insitu.federation.site_mod import ERROR_APP_FAILED

        text = f"the ClientApp failed ({what}); the site does not forward the app's own error text"
        return self._error_reply(message, ERROR_APP_FAILED, what, text)

    def _error_reply(self, message: Any, code: int, reason: str, text: str) -> Any:
        """Audit a refused task (the site's words only) and answer it with ``code``."""
        self.run.audit(
            "federation.reply",
            message_type=message.metadata.message_type,
            decision="error",
            reason=reason,
            size_bytes=0,
        )
        return _error(code, f"site {self.run.site!r}: {text}", message)

    def _check(self, message: Any, payload: bytes, service: Any) -> Any:
        from flwr.app import Message

        from insitu.federation import run_budget
        from insitu.federation.checker import (
            MalformedReplyError,
            check_parsed,
            fingerprint_text,
            parse_reply,
        )
        from insitu.federation.policy import EgressPolicy
        from insitu.federation.site_mod import (
            ERROR_APP_FAILED,
            ERROR_BUDGET_EXHAUSTED,
            ERROR_EGRESS_REFUSED,
        )

        run, policy = self.run, EgressPolicy.from_config(self.config.policy)
        message_type = message.metadata.message_type
        try:
            parsed = parse_reply(payload, max_bytes=policy.max_reply_bytes)
        except MalformedReplyError as exc:
            return self._refuse(message, [str(exc)], len(payload))
        if parsed.error_code is not None:
            # An error reply of the app: its code and text stay here (length and hash only).
            run.audit(
                "federation.reply",
                message_type=message_type,
                decision="error",
                reason="the app replied with an error",
                app_error=fingerprint_text(parsed.error_text) | {"code": parsed.error_code},
                size_bytes=0,
            )
            return _error(
                ERROR_APP_FAILED,
                f"site {run.site!r}: the ClientApp replied with an error; the site does not "
                "forward the app's own error text",
                message,
            )
        used = run_budget.usage(run.home, run.run_id, run.fingerprint)
        result = check_parsed(
            parsed,
            message_type=message_type,
            manifest=self.manifest,
            policy=policy,
            tally=service.tally(),
            run_values=used.values,
            max_values_per_reply=self.settings.max_values_per_reply,
            max_values_per_run=self.settings.max_values_per_run,
            disclosure_context=_disclosure_context(run.home),
        )
        run.audit("federation.reply", message_type=message_type, **result.summary())
        if not result.allowed:
            return _error(
                ERROR_EGRESS_REFUSED,
                f"site {run.site!r} refused to send this reply: " + "; ".join(result.reasons),
                message,
            )
        refused = self._charge(parsed.values)
        if refused is not None:
            return self._refuse(message, [refused], parsed.size_bytes, ERROR_BUDGET_EXHAUSTED)
        run_budget.record(run.home, run.run_id, run.fingerprint, parsed.values)
        return Message(result.content(), reply_to=message)

    def _charge(self, values: int) -> str | None:
        """Charge the researcher's budget for this dataset (the site's ledger); a reason if
        it is spent. DP's epsilon is charged when the site noises replies."""
        from insitu.errors import BudgetExhaustedError
        from insitu.federation import node_data
        from insitu.federation.ledger import Ledger
        from insitu.federation.site_mod import dp_epsilon

        policy = self.config.policy
        epsilon = 0.0
        if policy.differential_privacy:
            epsilon = dp_epsilon(policy.dp_noise_multiplier, self.settings.dp_delta)
        binding = node_data.current_run()
        researcher = binding.researcher if binding is not None else "anonymous"
        try:
            Ledger.for_home(self.run.home).charge(
                researcher,
                self.run.dataset,
                values=values,
                epsilon=epsilon,
                run_id=str(self.run.run_id),
            )
        except BudgetExhaustedError as exc:
            return str(exc)
        return None

    def _refuse(self, message: Any, reasons: list[str], size: int, code: int = 0) -> Any:
        from insitu.federation.site_mod import ERROR_EGRESS_REFUSED

        self.run.audit(
            "federation.reply",
            message_type=message.metadata.message_type,
            decision="refused",
            reasons=reasons,
            size_bytes=size,
        )
        return _error(
            code or ERROR_EGRESS_REFUSED,
            f"site {self.run.site!r} refused to send this reply: " + "; ".join(reasons),
            message,
        )


def _killed_by_cpu_limit(process: Any) -> bool:
    """Did the kernel stop the app at RLIMIT_CPU (SIGXCPU, or SIGKILL at the hard limit)?"""
    import signal
    import subprocess

    try:
        code = process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return code in (-signal.SIGXCPU, -signal.SIGKILL)


def _disclosure_context(home: Any) -> Any | None:
    """The disclosure engine's context for this node, when the engine is installed."""
    import importlib

    try:
        importlib.import_module("insitu.disclosure")
    except ImportError:
        return None
    from insitu.datasets.disclosure_context import disclosure_context

    return disclosure_context(home)


def _handle(message: Any, context: Any, run: Any, fab: Any) -> Any:
    """The reply for one task (an error reply when the site refuses or anything fails)."""
    from flwr.client.mod.utils import make_ffn

    from insitu.config import NodeHome, load_config
    from insitu.errors import (
        AccessDeniedError,
        AppNotApprovedError,
        BudgetExhaustedError,
        InsituError,
    )
    from insitu.federation import admission, approvals, node_data, run_budget
    from insitu.federation.ledger import Ledger
    from insitu.federation.manifest import manifest_from_fab
    from insitu.federation.site_mod import (
        ERROR_BUDGET_EXHAUSTED,
        ERROR_EGRESS_REFUSED,
        ERROR_NOT_APPROVED,
        ERROR_SITE_FAILURE,
        SiteRun,
        site_mods,
    )

    node_config = dict(context.node_config)
    home = NodeHome(Path(str(node_config[node_data.NODE_CONFIG_HOME])))
    config = load_config(home)
    dataset = str(node_config[node_data.NODE_CONFIG_DATASET])
    fingerprint = hashlib.sha256(fab.content).hexdigest()
    message_type = message.metadata.message_type
    run_info = SiteRun(
        home=home,
        site=config.site.name,
        dataset=dataset,
        fingerprint=fingerprint,
        app=f"{run.fab_id}=={run.fab_version}",
        run_id=int(run.run_id),
    )
    try:
        approval = approvals.check(home, fingerprint, dataset)
    except AppNotApprovedError as refused:
        reason = f"site {config.site.name!r} refused the run: {refused}"
        try:
            declared: dict[str, Any] | None = manifest_from_fab(fab.content).to_dict()
        except InsituError:
            declared = None
        approvals.record_refusal(
            home,
            fingerprint,
            dataset,
            app=run_info.app,
            run_id=run_info.run_id,
            reason=reason,
            manifest=declared,
        )
        run_info.audit("federation.refuse", message_type=message_type, reason=str(refused))
        return _error(ERROR_NOT_APPROVED, reason, message)

    manifest = approval.egress_manifest()
    refusal = None
    if manifest is None:
        refusal = "the app was approved without an egress manifest: the steward must approve again"
    elif not manifest.allows_type(message_type):
        refusal = f"message type {message_type!r} is not in the app's approved egress manifest"
    elif run_budget.usage(home, run_info.run_id, fingerprint).replies >= manifest.max_replies:
        refusal = f"the run has had the {manifest.max_replies} replies its manifest allows"
    if refusal is not None or manifest is None:
        run_info.audit("federation.refuse", message_type=message_type, reason=refusal)
        return _error(ERROR_EGRESS_REFUSED, f"site {config.site.name!r}: {refusal}", message)

    # Who the run works for: a verified researcher this site approved for the dataset.
    # Refused (unsigned, forged, replayed, expired, not approved): no app code runs.
    try:
        researcher = admission.identify(
            home,
            config,
            fab_content=fab.content,
            override_config=dict(run.override_config),
            run_id=run.run_id,
        )
    except AccessDeniedError as refused:
        claimed = admission.claimed_researcher(run.override_config)
        return _refuse_researcher(run_info, claimed, refused, message, config.site.name)
    run_info = replace(run_info, researcher=researcher.qualified)
    try:
        admission.authorize(home, config, researcher, dataset)
    except AccessDeniedError as refused:
        who = researcher.qualified
        return _refuse_researcher(run_info, who, refused, message, config.site.name)

    # A researcher with nothing left of their budget here: refused before the app runs.
    try:
        Ledger.for_home(home).ensure_left(
            researcher.qualified,
            dataset,
            run_id=str(run.run_id),
            epsilon=config.policy.differential_privacy,
        )
    except BudgetExhaustedError as spent:
        reason = f"site {config.site.name!r} refused the run: {spent}"
        return _error(ERROR_BUDGET_EXHAUSTED, reason, message)

    app = AppCall(run=run_info, config=config, fab=fab, flwr_run=run, manifest=manifest)
    delta = app.settings.dp_delta
    call: Callable[..., Any] = make_ffn(app, site_mods(run_info, config.policy, dp_delta=delta))

    node_data.set_run(node_data.RunBinding(home, researcher.qualified, str(run.run_id)))
    run_info.audit(
        "federation.run",
        message_type=message_type,
        approved_by=approval.approved_by,
        expires_at=approval.expires_at,
    )
    try:
        reply = call(message, context)
    except InsituError as exc:
        # Our own errors are safe to show (dataset missing, bad node config).
        run_info.audit("federation.reply", decision="error", reason=str(exc), size_bytes=0)
        return _error(ERROR_SITE_FAILURE, f"site {config.site.name!r}: {exc}", message)
    except Exception as exc:  # a mod (DP, SecAgg+) broke on the reply
        what = f"{type(exc).__module__}.{type(exc).__name__}"
        run_info.audit(
            "federation.reply",
            message_type=message_type,
            decision="error",
            reason=f"the site's processing of the reply failed ({what})",
            size_bytes=0,
        )
        return _error(
            ERROR_SITE_FAILURE,
            f"site {config.site.name!r} could not process the app's reply (its privacy "
            "mods refused its form); the run fails at this site, other runs go on",
            message,
        )
    if app.isolation:
        run_info.audit("federation.sandbox", message_type=message_type, **app.isolation)
    return reply


def _refuse_researcher(run_info: Any, who: str, refused: Exception, message: Any, site: str) -> Any:
    """The error reply (and audit entry, naming who asked) for a refused researcher."""
    from insitu.federation.site_mod import ERROR_RESEARCHER_REFUSED

    replace(run_info, researcher=who).audit(
        "federation.refuse", message_type=message.metadata.message_type, reason=str(refused)
    )
    reason = f"site {site!r} refused the run: {refused}"
    return _error(ERROR_RESEARCHER_REFUSED, reason, message)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="insitu site runner (one ClientApp task)")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates", default=None)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--insitu-home", default=None, help="start the sandbox ahead")
    parser.add_argument(
        "--taken-fd", type=int, default=None, help="written to once the task has started"
    )
    args = parser.parse_args(argv)
    # `insitu federation stop` (SIGTERM) while waiting: still remove the sandbox's folder.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    from flwr.supercore.app_utils import start_parent_process_monitor

    from insitu.federation.sandbox_launch import become_subreaper

    if args.parent_pid is not None:
        start_parent_process_monitor(args.parent_pid)
    become_subreaper()  # what an app starts and leaves comes back here to be ended
    try:
        if args.insitu_home:
            _prestart(args.insitu_home)  # first: the sandbox imports while this one does
        if not _token_waiting():  # started ahead: import now; with a task: take it first
            _preload(args.insitu_home)
        ready = time.perf_counter()
        _TIMES["startup"] = ready - _STARTED
        token = sys.stdin.readline().strip()  # from the site executor, never on argv
        _TIMES["idle"] = time.perf_counter() - ready  # ~0: the task waited for this runner
        if not token:  # the executor stopped before it had a task for this runner
            return 0
        return _serve(args, token)
    finally:
        _drop_spare()


def _token_waiting() -> bool:
    """The executor launched this runner for a task it holds (no runner was started
    ahead): the task must be started within Flower's claim window, imports can wait."""
    import select

    with contextlib.suppress(OSError, ValueError):
        return bool(select.select([sys.stdin], [], [], 0)[0])
    return False


def _tell_taken(fd: int | None) -> None:
    """Tell the executor this runner has started its task (runner_slots)."""
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, b"1")
        os.close(fd)


def _serve(args: argparse.Namespace, token: str) -> int:
    """Pull the task, handle it, push the reply and the task's status."""
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    from insitu.federation import transport
    from insitu.federation.object_pulls import cap_pull_backoff
    from insitu.federation.site_exec import POLL_SECONDS

    # The executor hands over a task as soon as the SuperNode creates it, which can be
    # before the SuperNode has the message's objects from the coordinator: retry them
    # at the executor's own poll, not after Flower's 1 s, 2 s, ...
    cap_pull_backoff(POLL_SECONDS)
    retry = make_simple_http_retry_invoker()
    client = RuntimeHttpClient.from_server_address(
        server_address=args.runtime_api_address,
        insecure=args.insecure,
        root_certificates=validate_and_resolve_root_certificates(
            args.root_certificates, args.insecure
        ),
        interceptors=[
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
            RuntimeTokenHttpInterceptor(token),
        ],
        retry_invoker=retry,
    )
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context = None
    sub_status, details, code = SubStatus.FAILED, "site runner failed", 1
    run_id: Any = "?"
    message_type = "?"
    try:
        started = time.perf_counter()
        message, context, run, fab = pull_task_input(client)
        _tell_taken(args.taken_fd)
        run_id, message_type = run.run_id, message.metadata.message_type
        pulled = time.perf_counter()
        _TIMES["pull"] = pulled - started
        # The ServerApp's request for a packed reply is transport, not the app's input.
        packed = transport.take_request(message)
        try:
            reply = _handle(message, context, run, fab)
            sub_status, details, code = SubStatus.COMPLETED, "", 0
            if packed:  # after the checks, mods and audit: the content they let out
                transport.pack(reply)
        except Exception as exc:
            # The site's own failure: a fixed text (the type only, in the site log).
            reply = _error(
                ErrorCode.CLIENT_APP_RAISED_EXCEPTION, "the site failed to run the task", message
            )
            details = f"site runner raised {type(exc).__name__}"
            import traceback

            traceback.print_exc()
        if "enter" in _TIMES:
            _TIMES["admit"] = _TIMES.pop("enter") - pulled
        pushing = time.perf_counter()
        push_message(client, reply, context)
        _TIMES["push"] = time.perf_counter() - pushing
    finally:
        retry.max_tries = 1
        push_task_output(client=client, context=context, sub_status=sub_status, details=details)
        if heartbeat.is_running:
            heartbeat.stop()
        client.close()
        print(_timing_line(run_id, message_type), file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    from insitu.federation.quick_exit import run_and_exit

    run_and_exit(main)
