"""The site's catalog: what is published, where, and the checksum of every file.

SQLite at ``home.catalog_path``. A version row is inserted as ``pending``
before its store is moved into place and marked ``published`` after, so a
crash between the two is finished by the next ingest (see publish.recover).
Only published versions are listed. Identifiers here are pseudonyms and
de-identified UIDs only.

A retired version (``insitu dataset retire``, :mod:`insitu.datasets.retirement`)
keeps every row (the tombstone its citation resolves to) plus one row in
``retirements``; :meth:`Catalog.readable` is what every reader asks.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from insitu.config import NodeHome
from insitu.errors import DatasetNotFoundError, VersionRetiredError

__all__ = ["RETIREMENTS_SCHEMA", "Catalog", "retired_error", "retirement_on"]

RETIREMENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS retirements (
    dataset TEXT NOT NULL, version TEXT NOT NULL,
    retired_at TEXT NOT NULL, retired_by TEXT NOT NULL, reason TEXT NOT NULL,
    archive TEXT NOT NULL DEFAULT '', data_deleted_at TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (dataset, version)
);
"""

# The credit ledger's citations (:mod:`insitu.datasets.citations_db`): one row per
# version, set after publication (stores are immutable).
CITATIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS citations (
    dataset TEXT NOT NULL, version TEXT NOT NULL, meta TEXT NOT NULL,
    set_by TEXT NOT NULL, updated TEXT NOT NULL,
    PRIMARY KEY (dataset, version)
);
"""

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS datasets (
    name TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    citation TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    dataset TEXT NOT NULL REFERENCES datasets(name),
    version TEXT NOT NULL,
    number INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'published')),
    fingerprint TEXT NOT NULL,
    staging TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    n_subjects INTEGER NOT NULL DEFAULT 0,
    n_series INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dataset, version)
);
CREATE TABLE IF NOT EXISTS subjects (
    dataset TEXT NOT NULL, version TEXT NOT NULL, subject_id TEXT NOT NULL,
    n_studies INTEGER NOT NULL, n_series INTEGER NOT NULL,
    PRIMARY KEY (dataset, version, subject_id)
);
CREATE TABLE IF NOT EXISTS studies (
    dataset TEXT NOT NULL, version TEXT NOT NULL, study_id TEXT NOT NULL,
    subject_id TEXT NOT NULL, study_date TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (dataset, version, study_id)
);
CREATE TABLE IF NOT EXISTS series (
    dataset TEXT NOT NULL, version TEXT NOT NULL, series_id TEXT NOT NULL,
    study_id TEXT NOT NULL, subject_id TEXT NOT NULL, modality TEXT NOT NULL,
    shape TEXT NOT NULL, spacing TEXT NOT NULL, dtype TEXT NOT NULL,
    PRIMARY KEY (dataset, version, series_id)
);
CREATE TABLE IF NOT EXISTS tables (
    dataset TEXT NOT NULL, version TEXT NOT NULL, name TEXT NOT NULL,
    n_rows INTEGER NOT NULL, columns TEXT NOT NULL,
    PRIMARY KEY (dataset, version, name)
);
CREATE TABLE IF NOT EXISTS checksums (
    dataset TEXT NOT NULL, version TEXT NOT NULL, key TEXT NOT NULL,
    sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    PRIMARY KEY (dataset, version, key)
);
CREATE TABLE IF NOT EXISTS provenance (
    dataset TEXT NOT NULL, version TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (dataset, version, key)
);
"""
    + RETIREMENTS_SCHEMA
    + CITATIONS_SCHEMA
)

_VERSION_TABLES = ("subjects", "studies", "series", "tables", "checksums", "provenance")


def retired_error(row: dict[str, Any]) -> VersionRetiredError:
    """One line for a reader of a retired version: when, why, and that it stays citable."""
    return VersionRetiredError(
        f"{row['dataset']} {row['version']} was retired on {row['retired_at']} "
        f"({row['reason']}): its data is no longer read here; it stays citable, and the "
        "site's steward can say how to obtain its archived package"
    )


def retirement_on(conn: sqlite3.Connection, dataset: str, version: str) -> dict[str, Any] | None:
    """The retirement row of a version read on a connection kept by its caller
    (the gate asks on every read), or None while it is readable."""
    row = conn.execute(
        "SELECT * FROM retirements WHERE dataset = ? AND version = ?", (dataset, version)
    ).fetchone()
    return None if row is None else dict(row)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def version_number(version: str) -> int:
    return int(version[1:])


class Catalog:
    """Open (and create) the catalog of one node home; the one owner of its schema
    and of every SQL statement on it (tests/test_architecture.py checks)."""

    def __init__(self, home: NodeHome, *, read_only: bool = False) -> None:
        self.home = home
        if read_only:  # never creates nor writes (a reader that may not write the file)
            self.db = sqlite3.connect(f"file:{home.catalog_path}?mode=ro", uri=True, timeout=30)
            self.db.row_factory = sqlite3.Row
            return
        home.root.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(home.catalog_path, timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading -----------------------------------------------------------

    def datasets(self) -> list[dict[str, Any]]:
        """Every dataset with a published version: name, title, versions, newest."""
        rows = self.db.execute(
            "SELECT d.name, d.title, d.citation, COUNT(v.version) AS n_versions, "
            "MAX(v.number) AS newest FROM datasets d JOIN versions v "
            "ON v.dataset = d.name AND v.status = 'published' GROUP BY d.name ORDER BY d.name"
        ).fetchall()
        return [
            dict(row) | {"newest": f"v{row['newest']}"} if row["newest"] else dict(row)
            for row in rows
        ]

    def versions(self, name: str, *, include_pending: bool = False) -> list[dict[str, Any]]:
        status = "" if include_pending else "AND status = 'published'"
        rows = self.db.execute(
            f"SELECT * FROM versions WHERE dataset = ? {status} ORDER BY number",  # noqa: S608
            (name,),
        ).fetchall()
        return [dict(r) for r in rows]

    def version(self, name: str, version: str | None = None) -> dict[str, Any]:
        """One published version (the newest when ``version`` is None)."""
        published = self.versions(name)
        if not published:
            known = [d["name"] for d in self.datasets()]
            raise DatasetNotFoundError(
                f"no dataset {name!r} at this site; datasets: "
                f"{', '.join(known) if known else 'none yet (run `insitu ingest`)'}"
            )
        if version is None:
            return published[-1]
        for row in published:
            if row["version"] == version:
                return row
        raise DatasetNotFoundError(
            f"dataset {name!r} has no version {version!r}; versions: "
            + ", ".join(r["version"] for r in published)
        )

    def retirement(self, name: str, version: str) -> dict[str, Any] | None:
        """The retirement row of a version, or None while it is readable."""
        return retirement_on(self.db, name, version)

    def dataset_row(self, name: str) -> dict[str, Any] | None:
        """The dataset's own row (name, title, citation, created), or None."""
        row = self.db.execute("SELECT * FROM datasets WHERE name = ?", (name,)).fetchone()
        return None if row is None else dict(row)

    def version_row(self, name: str, version: str) -> dict[str, Any] | None:
        """A version's row whatever its status (pending too), or None."""
        row = self.db.execute(
            "SELECT * FROM versions WHERE dataset = ? AND version = ?", (name, version)
        ).fetchone()
        return None if row is None else dict(row)

    def version_table(self, table: str, name: str, version: str) -> list[dict[str, Any]]:
        """Every row of one version in one of its tables, as stored (an archive's copy)."""
        if table not in _VERSION_TABLES:
            raise ValueError(f"{table!r} is not a version table: one of {_VERSION_TABLES}")
        rows = self.db.execute(
            f"SELECT * FROM {table} WHERE dataset = ? AND version = ? ORDER BY 3",  # noqa: S608
            (name, version),
        ).fetchall()
        return [dict(r) for r in rows]

    def published_identifiers(self) -> dict[str, list[Any]]:
        """Subjects, studies (id, date), series (id, shape) and the sizes of every
        published version: what must never appear in an output."""
        published = "(SELECT dataset, version FROM versions WHERE status = 'published')"
        db = self.db
        return {
            "subjects": [r[0] for r in db.execute(
                f"SELECT subject_id FROM subjects WHERE (dataset, version) IN {published}"  # noqa: S608
            )],
            "studies": [tuple(r) for r in db.execute(
                f"SELECT study_id, study_date FROM studies WHERE (dataset, version) IN {published}"  # noqa: S608
            )],
            "series": [(r[0], json.loads(r[1])) for r in db.execute(
                f"SELECT series_id, shape FROM series WHERE (dataset, version) IN {published}"  # noqa: S608
            )],
            "sizes": [tuple(r) for r in db.execute(
                "SELECT n_subjects, n_series FROM versions WHERE status = 'published'"
            )],
        }  # fmt: skip

    def citation_row(self, name: str, version: str) -> dict[str, Any] | None:
        """The steward's citation row of a version (meta as stored JSON text), or None."""
        row = self.db.execute(
            "SELECT * FROM citations WHERE dataset = ? AND version = ?", (name, version)
        ).fetchone()
        return None if row is None else dict(row)

    def readable(self, name: str, version: str | None = None) -> dict[str, Any]:
        """A version whose data may be read: the named one unless it was retired
        (VersionRetiredError: when, why), else the newest one not retired."""
        if version is not None:
            row = self.version(name, version)
            retired = self.retirement(name, row["version"])
            if retired is not None:
                raise retired_error(retired)
            return row
        newest = self.version(name)
        for candidate in reversed(self.versions(name)):
            if self.retirement(name, candidate["version"]) is None:
                return dict(candidate)
        raise retired_error(self.retirement(name, newest["version"]) or {})

    def store_path(self, name: str, version: str | None = None) -> Path:
        """Where a published version's store lies (newest when version is None)."""
        row = self.version(name, version)
        return self.home.stores / name / f"{row['version']}.zarr"

    def find_fingerprint(self, name: str, fingerprint: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT * FROM versions WHERE dataset = ? AND fingerprint = ? ORDER BY number",
            (name, fingerprint),
        ).fetchone()
        return None if row is None else dict(row)

    def pending(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM versions WHERE status = 'pending'").fetchall()
        return [dict(r) for r in rows]

    def next_version(self, name: str) -> str:
        row = self.db.execute(
            "SELECT MAX(number) FROM versions WHERE dataset = ?", (name,)
        ).fetchone()
        taken = row[0] or 0
        folder = self.home.stores / name
        if folder.is_dir():  # a store left without a row never gets its name reused
            for path in folder.glob("v*.zarr"):
                if path.stem[1:].isdigit():
                    taken = max(taken, int(path.stem[1:]))
        return f"v{taken + 1}"

    def checksums(self, name: str, version: str) -> dict[str, tuple[str, int]]:
        rows = self.db.execute(
            "SELECT key, sha256, size FROM checksums WHERE dataset = ? AND version = ?",
            (name, version),
        ).fetchall()
        return {r["key"]: (r["sha256"], r["size"]) for r in rows}

    def series(self, name: str, version: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT * FROM series WHERE dataset = ? AND version = ? ORDER BY series_id",
            (name, version),
        ).fetchall()
        return [dict(r) for r in rows]

    def provenance(self, name: str, version: str) -> dict[str, Any]:
        rows = self.db.execute(
            "SELECT key, value FROM provenance WHERE dataset = ? AND version = ?",
            (name, version),
        ).fetchall()
        return {r["key"]: json.loads(r["value"]) for r in rows}

    # --- writing -----------------------------------------------------------

    def add_pending(
        self,
        *,
        dataset: str,
        version: str,
        title: str,
        citation: str,
        fingerprint: str,
        staging: Path,
        subjects: Iterable[dict[str, Any]],
        studies: Iterable[dict[str, Any]],
        series: Iterable[dict[str, Any]],
        checksums: dict[str, tuple[str, int]],
        provenance: dict[str, Any],
        tables: Iterable[tuple[str, int, list[str]]] = (),
    ) -> None:
        """Record a complete, checksummed version before its store is moved into place."""
        subjects, studies, series = list(subjects), list(studies), list(series)
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO datasets (name, title, citation, created) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET title = excluded.title, "
                "citation = excluded.citation",
                (dataset, title, citation, _now()),
            )
            db.execute(
                "INSERT INTO versions (dataset, version, number, status, fingerprint, "
                "staging, created, n_subjects, n_series, bytes) "
                "VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
                (
                    dataset,
                    version,
                    version_number(version),
                    fingerprint,
                    str(staging),
                    _now(),
                    len(subjects),
                    len(series),
                    sum(size for _, size in checksums.values()),
                ),
            )
            key = (dataset, version)
            db.executemany(
                "INSERT INTO subjects VALUES (?, ?, ?, ?, ?)",
                [(*key, s["subject_id"], s["n_studies"], s["n_series"]) for s in subjects],
            )
            db.executemany(
                "INSERT INTO studies VALUES (?, ?, ?, ?, ?)",
                [(*key, s["study_id"], s["subject_id"], s["study_date"]) for s in studies],
            )
            db.executemany(
                "INSERT INTO series VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        *key,
                        s["series_id"],
                        s["study_id"],
                        s["subject_id"],
                        s["modality"],
                        json.dumps(s["shape"]),
                        json.dumps(s["spacing"]),
                        s["dtype"],
                    )
                    for s in series
                ],
            )
            db.executemany(
                "INSERT INTO checksums VALUES (?, ?, ?, ?, ?)",
                [(*key, k, digest, size) for k, (digest, size) in sorted(checksums.items())],
            )
            db.executemany(
                "INSERT INTO tables VALUES (?, ?, ?, ?, ?)",
                [(*key, name, n, json.dumps(cols)) for name, n, cols in tables],
            )
            db.executemany(
                "INSERT INTO provenance VALUES (?, ?, ?, ?)",
                [(*key, k, json.dumps(v, sort_keys=True)) for k, v in provenance.items()],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def mark_published(self, dataset: str, version: str) -> None:
        self.db.execute(
            "UPDATE versions SET status = 'published', staging = '' "
            "WHERE dataset = ? AND version = ?",
            (dataset, version),
        )

    def set_created(self, dataset: str, version: str, created: str) -> None:
        """Keep a version's creation time as its origin recorded it (an import)."""
        self.db.execute(
            "UPDATE versions SET created = ? WHERE dataset = ? AND version = ?",
            (created, dataset, version),
        )

    def put_citation(
        self, dataset: str, version: str, meta: str, set_by: str, updated: str
    ) -> None:
        """Record (or replace) a version's citation row; ``meta`` is its JSON text."""
        self.db.execute(
            "INSERT INTO citations VALUES (?, ?, ?, ?, ?) ON CONFLICT(dataset, version) DO "
            "UPDATE SET meta = excluded.meta, set_by = excluded.set_by, updated = excluded.updated",
            (dataset, version, meta, set_by, updated),
        )

    def drop_citation(self, dataset: str, version: str) -> None:
        self.db.execute(
            "DELETE FROM citations WHERE dataset = ? AND version = ?", (dataset, version)
        )

    def retire(
        self, dataset: str, version: str, *, when: str, actor: str, reason: str, archive: str
    ) -> None:
        self.db.execute(
            "INSERT INTO retirements (dataset, version, retired_at, retired_by, reason, "
            "archive) VALUES (?, ?, ?, ?, ?, ?)",
            (dataset, version, when, actor, reason, archive),
        )

    def mark_data_deleted(self, dataset: str, version: str, *, when: str, archive: str) -> None:
        self.db.execute(
            "UPDATE retirements SET data_deleted_at = ?, archive = ? "
            "WHERE dataset = ? AND version = ?",
            (when, archive, dataset, version),
        )

    def lift_retirement(self, dataset: str, version: str) -> None:
        """A retired version readable again (its store came back, checked)."""
        self.db.execute(
            "DELETE FROM retirements WHERE dataset = ? AND version = ?", (dataset, version)
        )

    def drop_pending(self, dataset: str, version: str) -> None:
        """Forget a pending version whose staged store is gone (it will be rebuilt)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for table in _VERSION_TABLES:
                self.db.execute(
                    f"DELETE FROM {table} WHERE dataset = ? AND version = ?",  # noqa: S608
                    (dataset, version),
                )
            self.db.execute(
                "DELETE FROM versions WHERE dataset = ? AND version = ? AND status = 'pending'",
                (dataset, version),
            )
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def tables(self, name: str, version: str) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT name, n_rows, columns FROM tables WHERE dataset = ? AND version = ? "
            "ORDER BY name",
            (name, version),
        ).fetchall()
        return [dict(r) | {"columns": json.loads(r["columns"])} for r in rows]
