"""Coalesced read accounting for the gate: one audit entry per user, dataset,
version and series (or table) per flush, with byte and request counts.

Serving a series touches many chunk keys; writing an audit line per chunk
would bury the log. The ledger sums reads in memory and :meth:`flush` writes
one ``read`` entry per group (and one ``read.denied`` entry per user, dataset
and reason for refusals). The gate flushes every few seconds and on shutdown.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from insitu.audit import AuditLog
from insitu.config import NodeHome

__all__ = ["ReadLedger", "part_of"]


def part_of(key: str) -> tuple[str, str]:
    """What a key belongs to: ("series", id), ("table", name) or ("metadata", "")."""
    parts = key.split("/")
    if len(parts) >= 2 and parts[0] in ("series", "labels") and parts[1] != "zarr.json":
        return "series", parts[1]
    if len(parts) >= 2 and parts[0] == "tables" and parts[1] != "zarr.json":
        return "table", parts[1]
    return "metadata", ""


@dataclass
class _Tally:
    bytes: int = 0
    requests: int = 0
    first: str = ""
    last: str = ""


class ReadLedger:
    """Thread-safe sums of reads and refusals, flushed to the audit log."""

    def __init__(self, home: NodeHome) -> None:
        self._audit = AuditLog(home)
        self._lock = threading.Lock()
        self._reads: dict[tuple[str, str, str, str, str], _Tally] = {}
        self._denied: dict[tuple[str, str, str], _Tally] = {}

    def record(self, user: str, dataset: str, version: str, key: str, nbytes: int) -> None:
        kind, name = part_of(key)
        self._add(self._reads, (user, dataset, version, kind, name), nbytes)

    def refuse(self, user: str, dataset: str, reason: str) -> None:
        self._add(self._denied, (user, dataset, reason), 0)

    def _add(self, table: dict, group: tuple, nbytes: int) -> None:  # type: ignore[type-arg]
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            tally = table.setdefault(group, _Tally(first=now))
            tally.bytes += nbytes
            tally.requests += 1
            tally.last = now

    def pending(self) -> int:
        with self._lock:
            return len(self._reads) + len(self._denied)

    def flush(self) -> int:
        """Write the sums so far as audit entries; return how many were written."""
        with self._lock:
            reads, self._reads = self._reads, {}
            denied, self._denied = self._denied, {}
        for (user, dataset, version, kind, name), t in sorted(reads.items()):
            part = {kind: name} if name else {"part": kind}
            self._audit.append(
                "read", user=user, dataset=dataset, version=version, bytes=t.bytes,
                requests=t.requests, first=t.first, last=t.last, via="gate", **part,
            )  # fmt: skip
        for (user, dataset, reason), t in sorted(denied.items()):
            self._audit.append(
                "read.denied", user=user, dataset=dataset, reason=reason, requests=t.requests,
                first=t.first, last=t.last, via="gate",
            )  # fmt: skip
        return len(reads) + len(denied)
