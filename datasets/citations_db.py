"""The credit ledger's storage: one citation row per dataset version, in the catalog.

Stores are immutable, so a steward's citation (set after publication, changed
later) lives beside them in ``catalog.sqlite`` (table ``citations``, owned like
every catalog table by :class:`~insitu.datasets.catalog.Catalog`). Setting
one is audited (``dataset.cite``). :func:`citation_for` always answers: the
steward's entry when there is one, else a citation derived from the catalog.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from insitu.config import NodeHome, load_config
from insitu.datasets.catalog import Catalog
from insitu.datasets.citation import Citation, Creator

__all__ = ["all_citations", "citation_for", "citations_for", "set_citation"]


def _derived(catalog: Catalog, site: str, dataset: str, version: str | None) -> Citation:
    row = catalog.version(dataset, version)
    title = next((d["title"] for d in catalog.datasets() if d["name"] == dataset), "")
    return Citation(
        dataset=dataset,
        version=row["version"],
        title=title or dataset,
        site=site,
        date=str(row["created"])[:10],
    )


def citation_for(home: NodeHome, dataset: str, version: str | None = None) -> Citation:
    """The citation of a published version (newest when ``version`` is None)."""
    site = load_config(home).site.name
    with Catalog(home) as catalog:
        version = catalog.version(dataset, version)["version"]
        row = catalog.citation_row(dataset, version)
        citation = (
            _derived(catalog, site, dataset, version)
            if row is None
            else Citation.from_json(json.loads(row["meta"]))
        )
        retired = catalog.retirement(dataset, version)
    # Retirement is the catalog's fact of this node, never a stored (or imported) field.
    return replace(
        citation,
        retired=retired is not None,
        retired_on=str(retired["retired_at"])[:10] if retired else "",
    )


def citations_for(home: NodeHome, pairs: Iterable[tuple[str, str]]) -> list[Citation]:
    """Citations of several (dataset, version) pairs, sorted, unknown pairs skipped."""
    from insitu.errors import DatasetNotFoundError

    out = []
    for dataset, version in sorted(set(pairs)):
        try:
            out.append(citation_for(home, dataset, version or None))
        except DatasetNotFoundError:
            continue
    return out


def all_citations(home: NodeHome) -> list[Citation]:
    """Every published version's citation (steward's or derived)."""
    with Catalog(home) as catalog:
        pairs = [(d["name"], v["version"]) for d in catalog.datasets()
                 for v in catalog.versions(d["name"])]  # fmt: skip
    return citations_for(home, pairs)


def set_citation(
    home: NodeHome,
    *,
    actor: str,
    dataset: str,
    version: str | None = None,
    title: str,
    creators: Sequence[Creator],
    licence: str,
    doi: str = "",
    recommended: str = "",
) -> Citation:
    """Record the steward's citation of a version (role checks belong to the caller)."""
    from insitu.audit import AuditLog
    from insitu.errors import InvalidRequestError

    if not title.strip():
        raise InvalidRequestError("give the dataset version a title (--title '...')")
    if not creators:
        raise InvalidRequestError(
            "name at least one creator: --creator 'Family, Given;0000-0002-1825-0097'"
        )
    if not licence:
        raise InvalidRequestError("give a licence as an SPDX identifier, e.g. --licence CC-BY-4.0")
    site = load_config(home).site.name
    with Catalog(home) as catalog:
        base = _derived(catalog, site, dataset, version)
        citation = replace(
            base,
            title=title.strip(),
            creators=tuple(creators),
            licence=licence,
            doi=doi,
            recommended=recommended.strip(),
            set_by=actor,
        )
        catalog.put_citation(
            dataset,
            citation.version,
            json.dumps(citation.to_json(), sort_keys=True),
            actor,
            datetime.now(UTC).isoformat(timespec="seconds"),
        )
    AuditLog(home).append(
        "dataset.cite",
        user=actor,
        dataset=dataset,
        version=citation.version,
        title=citation.title,
        creators=[c.orcid or c.name for c in citation.creators],
        licence=citation.licence,
        doi=citation.doi,
    )
    return citation


def store_citation_row(catalog: Catalog, dataset: str, version: str, meta: dict[str, Any],
                       set_by: str, updated: str) -> None:  # fmt: skip
    """Write a citation row as it is (the archive import keeps the exporter's values)."""
    catalog.put_citation(dataset, version, json.dumps(meta, sort_keys=True), set_by, updated)


def citation_row(catalog: Catalog, dataset: str, version: str) -> dict[str, Any] | None:
    row = catalog.citation_row(dataset, version)
    return None if row is None else row | {"meta": json.loads(row["meta"])}
