"""Citations that travel with every approved release.

A release used the dataset versions its researcher read through the gate
before submitting it (the audit log's ``read`` entries). The steward's
approval records them (``release.approve`` ``datasets``), which is what the
credit report counts, and every download can carry them beside the output:
``CITATIONS.cff`` (CFF 1.2.0, one reference per dataset version),
``CITATIONS.bib`` and ``CITATIONS.md``. :func:`bundle` zips the output with
them (the airlock's ``bundle`` download).
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

from insitu.config import NodeHome, load_config

__all__ = ["CITATION_FILES", "bundle", "citation_files", "used_datasets"]

CITATION_FILES = ("CITATIONS.cff", "CITATIONS.bib", "CITATIONS.md")


def _submitted_at(home: NodeHome, request_id: int | None, submitted: str | None) -> str | None:
    """When the request was submitted, to the microsecond (its ``release.submit`` entry);
    the request row's time (whole seconds) rounded up when the entry is not found."""
    from datetime import datetime, timedelta

    from insitu.audit import AuditLog

    if request_id is not None:
        for entry in AuditLog(home).query(kind="release.submit"):
            if entry.get("details", {}).get("request") == request_id:
                return str(entry["time"])
    if not submitted:
        return None
    return (datetime.fromisoformat(submitted) + timedelta(seconds=1)).isoformat()


def used_datasets(
    home: NodeHome, user: str, submitted: str | None, request_id: int | None = None
) -> list[dict[str, str]]:
    """[{dataset, version, site}] the researcher read up to the submission."""
    from insitu.hub.credit import datasets_used

    site = load_config(home).site.name
    until = _submitted_at(home, request_id, submitted)
    return [{"dataset": d, "version": v, "site": site}
            for d, v in datasets_used(home, user, until=until)]  # fmt: skip


def citation_files(
    home: NodeHome, request_id: int, user: str, submitted: str | None
) -> dict[str, bytes]:
    """CITATIONS.cff, .bib and .md for one release request."""
    from insitu.datasets.citation import bibtex, cff_references, markdown
    from insitu.datasets.citations_db import citations_for

    used = used_datasets(home, user, submitted, request_id)
    citations = citations_for(home, [(u["dataset"], u["version"]) for u in used])
    title = f"Release {request_id} from site {load_config(home).site.name}"
    return {
        "CITATIONS.cff": cff_references(title, citations, authors=user).encode(),
        "CITATIONS.bib": bibtex(citations).encode(),
        "CITATIONS.md": markdown(title, citations).encode(),
    }


def bundle(filename: str, data: bytes, files: dict[str, bytes]) -> bytes:
    """A zip of the output and its citation files, byte for byte."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(filename, data)
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


def describe(files: dict[str, bytes]) -> dict[str, Any]:
    """The JSON the airlock service answers with: file name -> text."""
    return {name: content.decode() for name, content in files.items()}
