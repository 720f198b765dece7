"""Opening the hub's SQLite files (insitu/_sqlite.py) from several threads and processes.

Found in CI: threads charging a new federation ledger together failed one in a few
hundred times with "database is locked" from the switch to WAL, which SQLite answers at
once, without its busy handler, while another connection holds the file.
"""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

from insitu import _sqlite

SCHEMA = "CREATE TABLE IF NOT EXISTS t (n INTEGER);"


def _open_and_write(path: Path, failures: list[str]) -> None:
    for _ in range(10):
        try:
            conn = _sqlite.connect(path, SCHEMA)
            conn.execute("INSERT INTO t VALUES (1)")
            conn.close()
        except Exception as exc:  # collected: the test names what failed
            failures.append(repr(exc))


def test_threads_opening_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    failures: list[str] = []
    for round_ in range(40):
        path = tmp_path / f"db{round_}.sqlite"
        _sqlite._READY.clear()  # every thread's first open of a new file
        threads = [
            threading.Thread(target=_open_and_write, args=(path, failures)) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
    conn = _sqlite.connect(tmp_path / "db0.sqlite", SCHEMA)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 40
    conn.close()


def _process_opens(path: str) -> None:
    failures: list[str] = []
    _open_and_write(Path(path), failures)
    if failures:
        raise SystemExit(failures[0])


def test_processes_opening_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    for round_ in range(5):
        path = str(tmp_path / f"db{round_}.sqlite")
        processes = [context.Process(target=_process_opens, args=(path,)) for _ in range(3)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)
        assert [p.exitcode for p in processes] == [0, 0, 0]
