"""A ServerApp process started ahead of its run: ``flwr-serverapp``, already imported.

Flower 1.42's SuperExec starts a fresh ``flwr-serverapp`` for every run, and
that process first imports Flower's runtime (and, once the app loads, numpy and
insitu): seconds on a busy coordinator before the run's first message goes
out. The coordinator's executor (:mod:`insitu.federation.coordinator_exec`)
keeps one of these processes waiting instead: it imports all of that, then
reads one run token from stdin (never a command line or the environment: S27
in docs/security-review.md), and from there does exactly what
``flwr-serverapp`` does (Flower's own ``run_serverapp``) for that one run, and
exits. A process serves one run only, so nothing of one run (its app's
modules, its state, a failure) is there for the next. Its object pulls retry at
the ServerApp's poll interval (:mod:`insitu.federation.object_pulls`), not
after 1, 2, 4 ... s.

    python -m insitu.federation.serverapp --runtime-api-address ADDR --insecure < token
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import IO

__all__ = ["main", "read_token"]

# A message this module logs when the run starts, as ``flwr-serverapp`` does.
STARTED = "Start `flwr-serverapp` process"
# Modules a run imports anyway (Flower's runtime, the built-in apps): loaded ahead.
PRELOAD = (
    "flwr.superlink.runtime",
    "flwr.serverapp",
    "flwr.server.run_serverapp",
    "insitu.federation.analytics",
    "insitu.federation.apps",
    "insitu.federation.credit",
    "insitu.federation.stats",
    "insitu.federation.train_app",
)


def read_token(stream: IO[str]) -> str | None:
    """One run token from ``stream`` (a line of hex); None when it closes without one."""
    from flwr.common.constant import FLWR_TASK_TOKEN_LENGTH

    line = stream.readline(FLWR_TASK_TOKEN_LENGTH * 2 + 2)
    if not line:
        return None
    token = line.rstrip("\n")
    if re.fullmatch(f"[0-9a-f]{{{FLWR_TASK_TOKEN_LENGTH * 2}}}", token) is None:
        raise SystemExit("insitu ServerApp: stdin did not hold exactly one run token")
    return token


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="insitu ServerApp (one run, token on stdin)")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates", default=None)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument(
        "--allow-runtime-dependency-installation",
        dest="runtime_dependency_install",
        action="store_true",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from queue import Queue

    from flwr.supercore.app_utils import start_parent_process_monitor

    if args.parent_pid is not None:
        start_parent_process_monitor(args.parent_pid)  # no orphan when the SuperExec ends
    _preload()
    from insitu.federation.apps import POLL_SECONDS
    from insitu.federation.object_pulls import cap_pull_backoff

    cap_pull_backoff(POLL_SECONDS)  # replies are read as soon as their objects are there
    token = read_token(sys.stdin)
    if token is None:  # the executor ended before it had a run for this process
        return 0
    sys.stdin.close()

    from logging import INFO

    from flwr.supercore import log
    from flwr.supercore.logger import mirror_output_to_queue, restore_output
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.superlink.runtime import run_serverapp

    # From here on as Flower's `flwr-serverapp` (flwr.superlink.cli.flwr_serverapp).
    log_queue: Queue[str | None] = Queue()
    mirror_output_to_queue(log_queue)
    log(INFO, STARTED)
    run_serverapp(
        runtime_api_address=args.runtime_api_address,
        log_queue=log_queue,
        token=token,
        insecure=args.insecure,
        certificates=validate_and_resolve_root_certificates(args.root_certificates, args.insecure),
        parent_pid=args.parent_pid,
        runtime_dependency_install=args.runtime_dependency_install,
    )
    restore_output()
    return 0


if __name__ == "__main__":
    sys.exit(main())
