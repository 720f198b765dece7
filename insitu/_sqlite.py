"""One way to open the hub's SQLite files: WAL, a busy timeout, row access by name.

The hub's services, the CLI and `insitu up` open these files from several
processes at once; WAL plus a generous busy timeout lets them share safely.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["connect"]

# Files whose schema this process already applied: the gate opens the access
# database on every read (no caching of decisions), so keep that open cheap.
_READY: set[tuple[str, str]] = set()


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """Open (and create if needed) a SQLite file with ``schema`` applied."""
    key = (str(path), schema)
    fresh = key not in _READY or not path.exists()
    if fresh:
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA foreign_keys = ON")
    if fresh:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(schema)
        _READY.add(key)
    return conn
