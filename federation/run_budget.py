"""Per-run usage at this site: replies sent and numbers sent, per (run, app).

The checker refuses a reply that would take a run past its manifest's
``max-replies`` or ``max-values-per-run`` (or the site's own caps in
``[federation]``). State: ``$INSITU_HOME/federation/run-usage.json``, updated
under an exclusive lock; runs older than :data:`KEEP_RUNS` entries are dropped.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from insitu.config import NodeHome

__all__ = ["Usage", "record", "usage"]

KEEP_RUNS = 1000


class Usage:
    def __init__(self, replies: int = 0, values: int = 0) -> None:
        self.replies = replies
        self.values = values


def _path(home: NodeHome) -> Path:
    return home.root / "federation" / "run-usage.json"


@contextmanager
def _locked(home: NodeHome) -> Iterator[dict[str, Any]]:
    path = _path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                data = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                data = {}
            yield data
            if len(data) > KEEP_RUNS:
                for key in list(data)[: len(data) - KEEP_RUNS]:
                    del data[key]
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _key(run_id: int, fingerprint: str) -> str:
    return f"{run_id}:{fingerprint}"


def usage(home: NodeHome, run_id: int, fingerprint: str) -> Usage:
    with _locked(home) as data:
        row = data.get(_key(run_id, fingerprint), {})
    return Usage(int(row.get("replies", 0)), int(row.get("values", 0)))


def record(home: NodeHome, run_id: int, fingerprint: str, values: int) -> Usage:
    """Count one reply that left, with ``values`` numbers; returns the new totals."""
    with _locked(home) as data:
        row = data.setdefault(_key(run_id, fingerprint), {"replies": 0, "values": 0})
        row["replies"] += 1
        row["values"] += int(values)
        return Usage(row["replies"], row["values"])
