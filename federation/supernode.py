"""Flower's SuperNode (``flower-supernode``) with the site's poll interval.

Flower 1.42's SuperNode asks the coordinator for a message, and when there is
none waits 3 s before asking again; after handing a message to the site's
executor it looks for the finished reply, and then for each of its objects,
every 0.5 s. These waits are literals
in ``flwr.supernode.start_client_internal`` (``time.sleep(3)``,
``time.sleep(0.5)``): no flag or environment variable sets them. Every
federated message therefore waited up to 3 s at each site before it started.

This entry point runs the same SuperNode (Flower's own ``flower_supernode``,
same arguments) with its waits between requests to the coordinator capped at
``[federation] poll_interval`` (default 0.25 s), counted from its previous ask:
an insitu coordinator holds an ask that finds no message for up to a second
(:mod:`insitu.federation.long_poll`), and the SuperNode then asks again at once;
one that answers at once is asked once per interval. Its looks at its own state
(no request) are every 0.05 s. Its Runtime API holds the site executor's ask for
a task the same way, until the SuperNode makes one. The retries of a message's
objects that have not arrived yet (Flower: 1 s, doubling up to 10 s) wait at
most as long (:mod:`insitu.federation.object_pulls`). :mod:`insitu.federation.site_service`
starts the SuperNode through it.

    python -m insitu.federation.supernode --poll-interval 0.25 -- ARGS OF flower-supernode
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["CappedClock", "cap_waits", "main"]

POLL_OPTION = "--poll-interval"


# Flower's loop waits 3 s between requests to the coordinator, and 0.5 s between looks
# at its own state (is the executor's reply there, are all its objects): waits shorter
# than this are such local looks, which cost no request and are capped at LOCAL_WAIT.
REMOTE_WAIT = 1.0
LOCAL_WAIT = 0.05


class CappedClock:
    """The ``time`` module, except that ``sleep`` waits at most ``cap`` seconds between
    requests to the coordinator and at most ``local`` seconds between local looks.

    The wait between requests counts from the end of the previous one: a SuperLink
    that held an ask open until it had a message or a second had passed
    (:mod:`insitu.federation.long_poll`) is asked again at once, one that answers at
    once every ``cap`` seconds."""

    def __init__(self, cap: float, local: float = LOCAL_WAIT) -> None:
        self.cap = cap
        self.local = local
        self._asked: float | None = None  # when the last wait between requests ended

    def sleep(self, seconds: float) -> None:
        if seconds < REMOTE_WAIT:
            time.sleep(min(seconds, self.local))
            return
        since = 0.0 if self._asked is None else time.monotonic() - self._asked
        time.sleep(max(0.0, min(seconds, self.cap) - since))
        self._asked = time.monotonic()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def cap_waits(cap: float) -> ModuleType:
    """Cap the waits of Flower's SuperNode loop at ``cap`` seconds; return the module."""
    from flwr.supernode import start_client_internal as loop

    setattr(loop, "time", CappedClock(cap))  # noqa: B010 (the module's `time`, not exported)
    return loop


def split_argv(argv: Sequence[str]) -> tuple[float | None, list[str]]:
    """``--poll-interval X [--] REST`` -> (X, REST); (None, argv) without the option."""
    args = list(argv)
    cap = None
    if args[:1] == [POLL_OPTION] and len(args) >= 2:
        cap = float(args[1])
        args = args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    return cap, args


def main(argv: Sequence[str] | None = None) -> int:
    cap, rest = split_argv(sys.argv[1:] if argv is None else argv)
    if cap is not None:
        from insitu.federation.object_pulls import cap_pull_backoff

        cap_waits(cap)
        cap_pull_backoff(cap)
    import importlib

    from insitu.federation.long_poll import hold_acquire_task, task_makers

    # The site executor's ask for a task waits here until the SuperNode makes one.
    runtime = importlib.import_module("flwr.supernode.servicer.runtime.runtime_handlers")
    hold_acquire_task(runtime, task_makers(link=False))
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *rest]
    flower_supernode()
    return 0


if __name__ == "__main__":
    sys.exit(main())
