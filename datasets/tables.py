"""Publish tables (measurements, clinical variables) beside a dataset's images.

Published stores never change, so adding tables makes a new version: the base
version's image chunks are shared by hard links (no copy of the pixels; every
chunk file stays read-only), metadata files are copied, the tables are
written with :func:`insitu.datasets.reader.write_table`, and the version is
published like an ingest (checksummed, pending -> rename -> published).
Publishing the same tables on the same base again makes no new version.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from insitu import __version__
from insitu.config import NodeHome, resolve_home
from insitu.datasets.catalog import Catalog
from insitu.datasets.publish import index_rows, publish, publish_lock, recover
from insitu.datasets.reader import write_table
from insitu.datasets.store_write import open_root
from insitu.errors import IngestError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["add_tables"]


def table_digest(name: str, frame: pd.DataFrame) -> str:
    import pandas as pd

    digest = hashlib.sha256(name.encode())
    digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _stored_digests(store: Path) -> dict[str, str]:
    attrs = json.loads((store / "zarr.json").read_text()).get("attributes", {})
    return dict(attrs.get("insitu", {}).get("table_digests", {}))


def _share(base: Path, work: Path, replaced: set[str]) -> None:
    """Hard-link the base store's chunk files into ``work``; copy its metadata."""
    for dirpath, _dirs, files in os.walk(base):
        rel_dir = Path(dirpath).relative_to(base)
        if rel_dir.parts[:1] == ("tables",) and rel_dir.parts[1:2] and rel_dir.parts[1] in replaced:
            continue  # a table being replaced is written afresh
        (work / rel_dir).mkdir(parents=True, exist_ok=True)
        for name in files:
            source, target = Path(dirpath) / name, work / rel_dir / name
            if name == "zarr.json":
                shutil.copyfile(source, target)  # metadata may be rewritten: never shared
                continue
            try:
                os.link(source, target)
            except OSError:  # another file system: copy instead
                shutil.copyfile(source, target)


def add_tables(
    dataset: str,
    tables: Mapping[str, pd.DataFrame],
    *,
    home: NodeHome | None = None,
    base_version: str | None = None,
    note: str = "",
    write_extra: Callable[[Any], None] | None = None,
    extra_digest: str = "",
) -> str:
    """Publish a new version of ``dataset`` = ``base_version`` (newest) + ``tables``.

    Returns the new version, or the existing one when the same tables were
    already published on the same base. Rows must hold pseudonymous keys only
    (``subject_id``, ``study_id``, ``series_id``), never original identifiers.
    """
    if not tables and write_extra is None:
        raise IngestError("no tables given: pass a mapping of table name -> DataFrame")
    node = (home or resolve_home()).require_initialized()
    with publish_lock(node), Catalog(node) as catalog:
        recover(node, catalog)
        base = catalog.version(dataset, base_version)
        base_path = catalog.store_path(dataset, base["version"])
        digests = {n: table_digest(n, tables[n]) for n in sorted(tables)}
        base_digests = _stored_digests(base_path)
        if not extra_digest and all(base_digests.get(n) == d for n, d in digests.items()):
            return str(base["version"])  # the base already holds exactly these tables
        parts = [base["fingerprint"], *digests.values(), *([extra_digest] if extra_digest else [])]
        fingerprint = hashlib.sha256("\n".join(parts).encode()).hexdigest()
        existing = catalog.find_fingerprint(dataset, fingerprint)
        if existing is not None:
            return str(existing["version"])
        work = node.staging / f"{dataset}-tables-{secrets.token_hex(4)}"
        store_path = work / "store.zarr"
        try:
            _share(base_path, store_path, set(tables))
            root = open_root(store_path)
            for name in sorted(tables):
                write_table(root, name, tables[name])
            if write_extra is not None:  # e.g. SEG label volumes (insitu.datasets.derived)
                write_extra(root)
            attrs = dict(root.attrs["insitu"])
            version = catalog.next_version(dataset)
            provenance = {
                **attrs.get("provenance", {}),
                "fingerprint": fingerprint,
                "software": f"insitu {__version__}",
                "derived_from": base["version"],
                "tables_added": sorted(tables),
                "note": note,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            attrs.update(
                version=version,
                provenance=provenance,
                table_digests={**attrs.get("table_digests", {}), **digests},
            )
            root.attrs["insitu"] = attrs
            subjects, studies = index_rows(attrs["series"])
            table_rows = []
            for name in attrs.get("tables", []):
                info: dict[str, Any] = root[f"tables/{name}"].attrs["insitu"]
                table_rows.append((name, int(info["n_rows"]), list(info["columns"])))
            publish(
                node, catalog, store_path, dataset=dataset, version=version,
                title=attrs.get("title", ""), citation=attrs.get("citation", ""),
                fingerprint=fingerprint, subjects=subjects, studies=studies,
                series=attrs["series"], provenance=provenance, tables=table_rows,
            )  # fmt: skip
        finally:
            shutil.rmtree(work, ignore_errors=True)
    from insitu.audit import AuditLog

    AuditLog(node).append(
        "ingest",
        user=os.environ.get("USER"),
        dataset=dataset,
        version=version,
        status="tables",
        derived_from=base["version"],
        tables={name: len(frame) for name, frame in tables.items()},
    )
    return version
