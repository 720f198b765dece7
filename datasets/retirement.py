"""Retiring a dataset version: its data is no longer read, its citation stays.

``insitu dataset retire NAME --version V --reason TEXT`` (stewards and admins):

- one row in the catalog's ``retirements`` table (when, who, why, the archive package
  that holds a copy); every other catalog row, the citation, the access register and
  the audit log stay, so the version's citation, DOI metadata and credit counts keep
  resolving (the tombstone);
- every reader asks :meth:`Catalog.readable`: the gate answers 410 with one line
  (when, why), ``open_dataset`` on the node and a federated run's data refuse it too;
  ``latest`` means the newest version not retired;
- when no readable version of the dataset is left, its open access requests close
  (approvals revoked, pending requests denied, the retirement as the reason): the
  hub's :func:`insitu.hub.retire.retire` does that after this module's part;
- ``delete_data`` removes the store's bytes, only when an archive package of exactly
  this version exists and verifies (``insitu archive export``); never otherwise;
- without such a package the store is the only copy of the version: retiring it then
  needs ``only_copy=True`` (``--only-copy``), so no version is retired by accident with
  no copy anywhere else.

Audited as ``dataset.retire``. ``insitu archive import`` of the version's package
brings a deleted store back and lifts the retirement (``restored``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from insitu.config import NodeHome
from insitu.datasets.catalog import Catalog
from insitu.errors import InvalidRequestError

__all__ = ["archived_copy", "retire"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _package_matches(catalog: Catalog, dataset: str, version: str, folder: Path) -> str:
    """'' when ``folder`` is an intact package of exactly this version, else why not."""
    from insitu.datasets.archive import verify

    if not (folder / "bagit.txt").is_file():
        return f"{folder} is not an archive package (no bagit.txt)"
    check = verify(folder)
    if not check.ok:
        return f"{folder} fails `insitu archive verify`: {check.problems[0]}"
    if (check.dataset, check.version) != (dataset, version):
        return f"{folder} holds {check.dataset} {check.version}, not {dataset} {version}"
    rows = json.loads((folder / "data" / "catalog.json").read_text())
    expected = {r["key"]: (r["sha256"], r["size"]) for r in rows["checksums"]}
    if rows["version"]["fingerprint"] != catalog.version(dataset, version)[
        "fingerprint"
    ] or expected != catalog.checksums(dataset, version):
        return f"{folder} holds other contents than this node's {dataset} {version}"
    return ""


def archived_copy(
    home: NodeHome, catalog: Catalog, dataset: str, version: str, given: Path | None = None
) -> str:
    """The folder of an intact archive package of the version, or ''.

    ``given``: that folder must be one (InvalidRequestError naming what is wrong);
    otherwise the packages ``insitu archive export`` wrote (its audit entries), newest
    first, the first that still verifies.
    """
    from insitu.audit import AuditLog

    if given is not None:
        problem = _package_matches(catalog, dataset, version, Path(given))
        if problem:
            raise InvalidRequestError(problem)
        return str(Path(given).resolve())
    exported = [
        str(e.get("details", {}).get("out", ""))
        for e in AuditLog(home).query(kind="archive.export", dataset=dataset)
        if e.get("details", {}).get("version") == version
    ]
    for out in reversed(exported):
        if (
            out
            and Path(out).is_dir()
            and not _package_matches(catalog, dataset, version, Path(out))
        ):
            return out
    return ""


def _delete_store(home: NodeHome, store: Path) -> None:
    """Move the (read-only) store out of ``stores/`` at once, then delete it."""
    if not store.is_dir():
        return
    trash = home.staging / f"retired-{secrets.token_hex(4)}"
    trash.parent.mkdir(parents=True, exist_ok=True)
    store.rename(trash)
    for dirpath, _dirs, _files in os.walk(trash):
        Path(dirpath).chmod(0o700)
    shutil.rmtree(trash)


def retire(
    home: NodeHome,
    *,
    actor: str,
    dataset: str,
    version: str,
    reason: str,
    delete_data: bool = False,
    archive: Path | None = None,
    only_copy: bool = False,
) -> dict[str, Any]:
    """Retire one published version (role checks belong to the caller); see the module."""
    from insitu.audit import AuditLog

    reason = (reason or "").strip()
    if not reason:
        raise InvalidRequestError("say why the version is retired: --reason '...'")
    with Catalog(home) as catalog:
        row = catalog.version(dataset, version)  # DatasetNotFoundError naming what exists
        version = str(row["version"])
        store = catalog.store_path(dataset, version)
        earlier = catalog.retirement(dataset, version)
        if earlier is not None and (earlier["data_deleted_at"] or not delete_data):
            raise InvalidRequestError(
                f"{dataset} {version} was already retired on {earlier['retired_at']} "
                f"({earlier['reason']})"
                + ("" if earlier["data_deleted_at"] else "; add --delete-data to remove its store")
            )
        copy = archived_copy(home, catalog, dataset, version, archive)
        command = f"insitu archive export {dataset} --version {version} --out DIR"
        if delete_data and not copy:
            raise InvalidRequestError(
                f"no intact archive package of {dataset} {version} is known, so its data is "
                f"not deleted: run `{command}` (and `insitu archive verify DIR`) first, or name "
                "a package with --archive DIR"
            )
        if not copy and not only_copy and earlier is None:
            raise InvalidRequestError(
                f"the store of {dataset} {version} is its only copy (no archive package of it "
                f"is known): run `{command}` first, or pass --only-copy to retire it anyway "
                "(its store stays on disk)"
            )
        when = _now()
        if earlier is None:
            catalog.retire(dataset, version, when=when, actor=actor, reason=reason, archive=copy)
        readable_left = [
            v["version"]
            for v in catalog.versions(dataset)
            if catalog.retirement(dataset, v["version"]) is None
        ]
    if delete_data:
        _delete_store(home, store)
        with Catalog(home) as catalog:
            catalog.mark_data_deleted(dataset, version, when=_now(), archive=copy)
    AuditLog(home).append(
        "dataset.retire", user=actor, dataset=dataset, version=version, reason=reason,
        archive=copy, data_deleted=delete_data, only_copy=not copy,
        readable_versions=readable_left,
    )  # fmt: skip
    return {
        "dataset": dataset,
        "version": version,
        "retired_at": earlier["retired_at"] if earlier else when,
        "archive": copy,
        "data_deleted": delete_data,
        "newly_retired": earlier is None,
        "readable_versions": readable_left,
    }
