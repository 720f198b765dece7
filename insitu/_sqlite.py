"""One way to open the hub's SQLite files: WAL, a busy timeout, row access by name.

The hub's services, the CLI and `insitu up` open these files from several
processes at once; WAL plus a generous busy timeout lets them share safely.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["connect"]

# Files whose schema this process already applied: the gate opens the access
# database on every read (no caching of decisions), so keep that open cheap.
_READY: set[tuple[str, str]] = set()
_FIRST_OPEN = threading.Lock()  # threads opening a file first do it one at a time
TIMEOUT_SECONDS = 30.0


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """Open (and create if needed) a SQLite file with ``schema`` applied."""
    key = (str(path), schema)
    fresh = key not in _READY or not path.exists()
    if fresh:
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=TIMEOUT_SECONDS, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(TIMEOUT_SECONDS * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    if fresh:
        try:
            with _FIRST_OPEN:
                _use_wal(conn)
                conn.executescript(schema)
                _READY.add(key)
        except BaseException:
            conn.close()
            raise
    return conn


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL. SQLite answers "database is locked" at once, without its
    busy handler, when another connection holds the file during the switch (seen with
    threads charging a new ledger together): retry within the usual timeout."""
    deadline = time.monotonic() + TIMEOUT_SECONDS
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
