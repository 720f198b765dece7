"""Flower's object pulls, retried at the federation's poll interval instead of 1-10 s.

In Flower 1.42 a message is announced before its contents arrive: a SuperNode
(or the ServerApp) registers its message, then uploads the message's objects
(records, arrays, array chunks) one HTTP request each. Whoever pulls the message
in between gets "object unavailable" and retries, waiting 1 s, 2 s, 4 s ... up to
10 s (``PULL_INITIAL_BACKOFF``, ``PULL_BACKOFF_CAP``: constants, bound as the
defaults of ``flwr.supercore.inflatable.inflatable_utils.pull_objects``; no flag
or environment variable sets them). An analytics reply of ~30 objects that took
3 s to upload was thus read up to 7 s later.

:func:`cap_pull_backoff` sets those defaults in this process: the first retry
after ``initial`` seconds, doubling up to ``cap``. It raises the number of tries
per object so that the longest wait for one object (a large model update still
uploading) stays what Flower allows.
"""

from __future__ import annotations

__all__ = ["PULLS", "cap_pull_backoff"]

# Flower's functions whose retry defaults are set (flwr.supercore.inflatable.inflatable_utils).
PULLS = ("pull_objects", "pull_and_inflate_object_from_tree")


def cap_pull_backoff(cap: float, initial: float = 0.05) -> None:
    """Retry unavailable objects after ``initial`` s, doubling up to ``cap`` s."""
    from flwr.supercore import constant
    from flwr.supercore.inflatable import inflatable_utils

    cap = max(cap, initial)
    # Flower's longest wait per object: its tries at its cap (500 x 10 s).
    tries = int(constant.PULL_MAX_TRIES_PER_OBJECT * constant.PULL_BACKOFF_CAP / cap) + 1
    # pull_objects (SuperNode, ServerApp); pull_and_inflate_object_from_tree (a ClientApp's
    # task input, the site runner) passes its own defaults of the same names on to it.
    for function in PULLS:
        defaults = getattr(inflatable_utils, function).__kwdefaults__
        if defaults is None or "backoff_cap" not in defaults:  # a Flower that changed it
            raise RuntimeError(f"flwr's {function} has no backoff_cap default to set")
        defaults.update(initial_backoff=initial, backoff_cap=cap, max_tries_per_object=tries)
