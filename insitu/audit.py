"""The site's audit log: append-only, hash-chained JSON lines.

Each entry carries ``seq`` (0, 1, 2, ...), ``prev`` (the previous entry's
hash) and ``hash`` (SHA-256 of the entry's canonical JSON without ``hash``).
Editing, dropping or reordering any entry breaks the chain at that entry and
:func:`verify` names it. Writers from several processes take an exclusive
``flock`` on ``audit.lock`` around read-last-then-append, so entries never
interleave or get lost.

Entries hold pseudonyms and dataset names only, never original identifiers.
Every kind of entry is declared, with the detail fields it requires, in
:mod:`insitu.audit_events`; new entries carry its ``schema`` version.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from insitu.audit_events import EVENTS, SCHEMA_VERSION, check_event
from insitu.config import NodeHome
from insitu.errors import AuditChainError

__all__ = ["GENESIS", "AuditLog", "VerifyReport"]

GENESIS = "0" * 64
LOG_NAME = "audit.jsonl"

# The kinds of event (declared with their required fields in insitu.audit_events).
KINDS = tuple(EVENTS)


def _canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    last_hash: str


class AuditLog:
    """Append to and read the audit log of one node home."""

    def __init__(self, home: NodeHome) -> None:
        self.folder = home.audit
        self.path = self.folder / LOG_NAME
        self._lock_path = self.folder / "audit.lock"

    def append(
        self,
        kind: str,
        *,
        user: str | None = None,
        dataset: str | None = None,
        **details: Any,
    ) -> dict[str, Any]:
        """Write one entry and return it (with its seq and hash).

        ValueError when ``kind`` is not declared in :mod:`insitu.audit_events` or
        ``details`` lacks a field the kind requires: a programming error, found by tests.
        """
        if not kind or not isinstance(kind, str):
            raise ValueError("an audit entry needs a kind, e.g. 'read' or 'access.approve'")
        check_event(kind, details)
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                last = self._last_entry()
                entry: dict[str, Any] = {
                    "seq": 0 if last is None else last["seq"] + 1,
                    "time": datetime.now(UTC).isoformat(timespec="microseconds"),
                    "kind": kind,
                    "user": user,
                    "dataset": dataset,
                    "details": details,
                    "prev": GENESIS if last is None else last["hash"],
                    "schema": SCHEMA_VERSION,
                }
                entry["hash"] = _digest(entry)
                line = _canonical(entry) + b"\n"
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, line)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return entry

    def _last_entry(self) -> dict[str, Any] | None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                if size == 0:
                    return None
                # Read back from the end until a whole last line is in hand.
                block = 4096
                data = b""
                pos = size
                while pos > 0:
                    step = min(block, pos)
                    pos -= step
                    fh.seek(pos)
                    data = fh.read(step) + data
                    if data.rstrip(b"\n").count(b"\n") >= 1:
                        break
                last_line = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        except FileNotFoundError:
            return None
        try:
            entry: dict[str, Any] = json.loads(last_line)
        except json.JSONDecodeError:
            raise AuditChainError(
                f"the last line of {self.path} is not JSON: run `insitu audit verify`"
            ) from None
        return entry

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every entry in order (no chain check: use :meth:`verify` for that)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    raise AuditChainError(f"line {number} of {self.path} is not JSON") from None

    def verify(self, path: Path | None = None) -> VerifyReport:
        """Check the whole chain; raise :class:`AuditChainError` at the first bad entry."""
        path = path or self.path
        prev = GENESIS
        count = 0
        if not path.exists():
            return VerifyReport(entries=0, last_hash=GENESIS)
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                where = f"entry {number - 1} (line {number} of {path})"
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    raise AuditChainError(f"{where} is not JSON: the log was edited") from None
                if not isinstance(entry, dict) or "hash" not in entry:
                    raise AuditChainError(f"{where} has no hash: the log was edited")
                if entry.get("seq") != count:
                    raise AuditChainError(
                        f"{where} has seq {entry.get('seq')!r}, expected {count}: "
                        "an entry was dropped, inserted or reordered"
                    )
                if entry.get("prev") != prev:
                    raise AuditChainError(
                        f"{where} does not follow the entry before it: an entry was dropped "
                        "or reordered"
                    )
                if _digest(entry) != entry["hash"]:
                    raise AuditChainError(f"{where} does not match its hash: it was edited")
                prev = entry["hash"]
                count += 1
        return VerifyReport(entries=count, last_hash=prev)

    def query(
        self,
        *,
        user: str | None = None,
        dataset: str | None = None,
        kind: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Entries matching every filter given; ``kind`` matches a prefix ('access')."""
        found = []
        for entry in self.entries():
            if user is not None and entry.get("user") != user:
                continue
            if dataset is not None and entry.get("dataset") != dataset:
                continue
            if kind is not None and not (
                entry["kind"] == kind or entry["kind"].startswith(kind + ".")
            ):
                continue
            when = datetime.fromisoformat(entry["time"])
            if since is not None and when < since:
                continue
            if until is not None and when > until:
                continue
            found.append(entry)
        return found
