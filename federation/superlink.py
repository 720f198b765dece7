"""insitu's entry point around Flower's SuperLink: per-researcher Control API, run
tokens off the command line.

``python -m insitu.federation.superlink --insitu-home HOME [flower-superlink args]``
installs insitu's Control API authentication (tokens from ``insitu federation
token issue``) and the owner checks of :mod:`insitu.federation.control_auth`,
and has the SuperLink start :mod:`insitu.federation.coordinator_exec` in place of
``flower-superexec`` (each ServerApp gets its run token in a file, not on argv),
then runs Flower's own ``flower-superlink`` main with the remaining arguments.
A site's ask for a message that finds none is held until one is stored, and the
executor's ask for a task until one is made (:mod:`insitu.federation.long_poll`).
Flower's middleware layers that act only on Control or only on Fleet paths see
only those (:mod:`insitu.federation.lean_middleware`).
``insitu federation coordinator`` starts the SuperLink this way.

One more change, to the SuperLink's state (SQLite): Flower 1.42 looks for expired
task claims before nearly every state read (the run-status check before each object a
SuperNode or ServerApp pushes or pulls, each SuperExec poll, ...), with two ``UPDATE``
statements even when nothing expired. Each takes SQLite's write lock, so concurrent
requests queue on it (the SQLite busy handler waits 1-100 ms per try): under load one
object push took 0.5 s in the SuperLink. :func:`throttle_token_cleanup` runs that
look at most every ``CLEANUP_SECONDS``. Tokens are not affected: Flower checks a
token's expiry itself (``get_task_by_token``); a claim that expired is only marked
so (pending again, or failed) up to ``CLEANUP_SECONDS`` later, against heartbeat
expiries of tens of seconds.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["CLEANUP_SECONDS", "main", "throttle_token_cleanup"]

# At most this often the SuperLink's state looks for expired task claims (Flower: before
# every state read).
CLEANUP_SECONDS = 0.5


def _superexec_command(flower_command: Any) -> Any:
    """Flower's command for its own SuperExec, with ours in its place."""

    def command(*args: Any, **kwargs: Any) -> list[str]:
        flower = list(flower_command(*args, **kwargs))
        if flower[:1] != ["flower-superexec"]:  # a Flower release that changed it: stop
            raise RuntimeError(f"unexpected SuperExec command from Flower: {flower[:1]}")
        return [sys.executable, "-m", "insitu.federation.coordinator_exec", *flower[1:]]

    return command


def throttle_token_cleanup(seconds: float = CLEANUP_SECONDS) -> None:
    """Flower's SQL state looks for expired task claims at most every ``seconds``."""
    import threading
    import time

    from flwr.supercore.corestate.sql_corestate import SqlCoreState

    flower = SqlCoreState.__dict__.get("_cleanup_expired_task_tokens")
    if flower is None:  # a Flower that changed it: stop
        raise RuntimeError("flwr's SqlCoreState has no _cleanup_expired_task_tokens to throttle")
    if getattr(flower, "insitu_throttled", False):
        return
    lock = threading.Lock()
    last: dict[int, float] = {}

    def cleanup(self: Any) -> None:
        with lock:
            now = time.monotonic()
            if now - last.get(id(self), -seconds) < seconds:
                return
            last[id(self)] = now
        flower(self)

    cleanup.insitu_throttled = True  # type: ignore[attr-defined]
    SqlCoreState._cleanup_expired_task_tokens = cleanup  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "--insitu-home":
        print("usage: python -m insitu.federation.superlink --insitu-home HOME [ARGS]")
        return 2
    import importlib

    from insitu.config import NodeHome
    from insitu.federation import lean_middleware
    from insitu.federation.control_auth import TokenAuthn, install_owner_checks
    from insitu.federation.long_poll import hold_acquire_task, hold_pull_messages, task_makers

    # The module (the package's attribute of that name is the function).
    cli = importlib.import_module("flwr.superlink.cli.flower_superlink")
    home = NodeHome(Path(args[1]))
    install_owner_checks(home)
    throttle_token_cleanup()
    hold_pull_messages()
    runtime = importlib.import_module("flwr.superlink.servicer.runtime.runtime_handlers")
    hold_acquire_task(runtime, task_makers(link=True))
    lean_middleware.install()
    # Flower's main reads its account plugin through this module-level name.
    setattr(cli, "load_control_authn_plugin", lambda: TokenAuthn(home))  # noqa: B010
    setattr(cli, "_get_superexec_command", _superexec_command(cli._get_superexec_command))  # noqa: B010
    sys.argv = ["flower-superlink", *args[2:]]
    cli.flower_superlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
