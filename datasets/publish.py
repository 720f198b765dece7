"""Publishing a dataset version and recovering an interrupted one.

Every command that makes a version (``insitu ingest``, ``ingest-table``,
``ingest-derived``, an archive import) goes through here, one at a time per
node home (:func:`publish_lock`: they share version numbers):

1. the complete store is staged under ``private/staging``;
2. :func:`publish` checksums every file, fingerprints the pixels, records the
   version as ``pending`` in the catalog, ``os.rename``\\ s the store into
   ``stores/`` and marks it ``published``;
3. :func:`recover` finishes a version stopped between those steps (or
   forgets it when its staged store is gone), so a killed command never
   leaves half a version. Every publisher calls it first, under the lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from insitu.config import NodeHome
from insitu.datasets.catalog import Catalog
from insitu.datasets.fingerprints import record_store
from insitu.datasets.store_write import checksum_tree, freeze_tree

__all__ = ["CRASH_ENV", "crash_point", "index_rows", "publish", "publish_lock", "recover"]

CRASH_ENV = "INSITU_INGEST_CRASH_AT"  # test hook: os._exit() at a named step


def crash_point(step: str) -> None:
    """Die here (exit 70) when the test hook names ``step``: interruption tests."""
    if os.environ.get(CRASH_ENV) == step:
        os._exit(70)


@contextmanager
def publish_lock(home: NodeHome) -> Iterator[None]:
    """One publisher at a time per node home (they share version numbers)."""
    home.staging.mkdir(parents=True, exist_ok=True)
    with open(home.staging / ".ingest.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def recover(home: NodeHome, catalog: Catalog) -> list[str]:
    """Finish or forget versions an interrupted publisher left ``pending``."""
    done = []
    for row in catalog.pending():
        target = home.stores / row["dataset"] / f"{row['version']}.zarr"
        staged = Path(row["staging"]) if row["staging"] else None
        if not target.exists() and staged is not None and staged.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.rename(target)
        if target.exists():
            freeze_tree(target)
            catalog.mark_published(row["dataset"], row["version"])
            if staged is not None:
                shutil.rmtree(staged.parent, ignore_errors=True)
            done.append(f"{row['dataset']} {row['version']}")
        else:
            catalog.drop_pending(row["dataset"], row["version"])
    return done


def index_rows(
    series_rows: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The catalog's subject and study rows for a version's series rows."""
    subjects: dict[str, dict[str, Any]] = {}
    studies: dict[str, dict[str, Any]] = {}
    for row in series_rows:
        studies.setdefault(
            row["study_id"],
            {"study_id": row["study_id"], "subject_id": row["subject_id"], "study_date": ""},
        )["study_date"] = row["study_date"]
        subject = subjects.setdefault(
            row["subject_id"], {"subject_id": row["subject_id"], "studies": set(), "n_series": 0}
        )
        subject["studies"].add(row["study_id"])
        subject["n_series"] += 1
    subject_rows = [
        {"subject_id": s["subject_id"], "n_studies": len(s["studies"]), "n_series": s["n_series"]}
        for s in sorted(subjects.values(), key=lambda s: s["subject_id"])
    ]
    return subject_rows, sorted(studies.values(), key=lambda s: s["study_id"])


def publish(
    home: NodeHome,
    catalog: Catalog,
    store_path: Path,
    *,
    dataset: str,
    version: str,
    title: str,
    citation: str,
    fingerprint: str,
    subjects: list[dict[str, Any]],
    studies: list[dict[str, Any]],
    series: list[dict[str, Any]],
    provenance: dict[str, Any],
    tables: Sequence[tuple[str, int, list[str]]] = (),
    fingerprints: Mapping[str, Any] | None = None,
    checksums: Mapping[str, tuple[str, int]] | None = None,
) -> Path:
    """Checksum a complete staged store and move it into place as ``version``.

    The catalog row is ``pending`` before the rename and ``published`` after,
    so :func:`recover` can finish the job whenever the process dies. Call it
    under :func:`publish_lock`. ``fingerprints``: pixel fingerprints the caller computed
    from the volumes it wrote (series id -> fingerprint); the others are read from the store.
    ``checksums``: sha256 and size of files the caller wrote (store key -> sum), taken
    for a file of the same size; every other file is read and hashed.
    """
    sums = checksum_tree(store_path, known=checksums)
    # Pixel provenance: every series is fingerprinted before its version becomes visible.
    record_store(home, store_path, dataset=dataset, version=version, known=fingerprints)
    crash_point("checksummed")
    catalog.add_pending(
        dataset=dataset, version=version, title=title, citation=citation,
        fingerprint=fingerprint, staging=store_path, subjects=subjects, studies=studies,
        series=series, checksums=sums, provenance=provenance, tables=tables,
    )  # fmt: skip
    crash_point("pending")
    target = home.stores / dataset / f"{version}.zarr"
    target.parent.mkdir(parents=True, exist_ok=True)
    store_path.rename(target)
    crash_point("renamed")
    recover(home, catalog)
    return target
