"""Differencing protection: no two released cells may differ by a few subjects.

Each cell an analytics reply releases (a group's moments, a histogram bin)
summarises a set of subjects. If a researcher obtains two cells whose subject
sets differ by one subject (say, the mean over all subjects and the mean over
all but one, or two histograms whose edges differ by a hair), the difference
gives away that subject's value. DataSHIELD's answer is a minimum cell size;
the subtraction defeats it unless the site also remembers what it released.

This ledger keeps, per researcher and dataset, the subject sets of every cell
the site released to them, and refuses a query in which any cell differs from
another cell (of this query or an earlier one) by more than zero and fewer
than ``min_cell`` subjects. Identical sets (repeating a query) are fine.

The subject sets are pseudonyms and never leave the node: the file lives in
``private/``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime

from insitu.config import NodeHome
from insitu.errors import QueryRefusedError

__all__ = ["QueryLedger"]

LEDGER_NAME = "federation-queries.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    researcher TEXT NOT NULL,
    dataset TEXT NOT NULL,
    run_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    subjects TEXT NOT NULL,
    at TEXT NOT NULL,
    UNIQUE (researcher, dataset, digest)
);
CREATE INDEX IF NOT EXISTS cells_researcher_dataset ON cells (researcher, dataset);
"""


def _digest(subjects: frozenset[str]) -> str:
    return hashlib.sha256("\n".join(sorted(subjects)).encode()).hexdigest()


class QueryLedger:
    """The released cells of one node home, per researcher and dataset."""

    def __init__(self, home: NodeHome) -> None:
        self.home = home
        self.path = home.private / LEDGER_NAME

    @classmethod
    def for_home(cls, home: NodeHome) -> QueryLedger:
        return cls(home)

    def _connect(self) -> sqlite3.Connection:
        from insitu._sqlite import connect

        return connect(self.path, _SCHEMA)

    def check_and_record(
        self,
        researcher: str,
        dataset: str,
        cells: Mapping[str, frozenset[str]],
        *,
        min_cell: int,
        run_id: str,
    ) -> None:
        """Refuse (QueryRefusedError) a query that differences; else remember its cells.

        ``cells`` maps a label (for the message: never subject ids) to the subject
        set of each cell this reply would release; empty cells are skipped.
        """
        new = {label: s for label, s in cells.items() if s}
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                old = [
                    frozenset(json.loads(row[0]))
                    for row in conn.execute(
                        "SELECT subjects FROM cells WHERE researcher = ? AND dataset = ?",
                        (researcher, dataset),
                    )
                ]
                labels = list(new)
                for i, label in enumerate(labels):
                    subjects = new[label]
                    for other in [new[k] for k in labels[i + 1 :]]:
                        _compare(label, subjects, other, min_cell, "another cell of this query")
                    for other in old:
                        _compare(label, subjects, other, min_cell, "a cell you were sent before")
                now = datetime.now(UTC).isoformat(timespec="seconds")
                conn.executemany(
                    "INSERT OR IGNORE INTO cells (researcher, dataset, run_id, digest, subjects, "
                    "at) VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (researcher, dataset, str(run_id), _digest(s), json.dumps(sorted(s)), now)
                        for s in new.values()
                    ],
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()


def _compare(
    label: str, subjects: frozenset[str], other: frozenset[str], min_cell: int, what: str
) -> None:
    differ = len(subjects ^ other)
    if 0 < differ < min_cell:
        raise QueryRefusedError(
            f"the {label} would differ from {what} by {differ} subject(s), fewer than this "
            f"site's minimum cell count ({min_cell}): the difference would reveal those "
            "subjects' values (differencing), so the site refuses the query"
        )
