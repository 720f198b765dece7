"""What a catalog shows before access: the published datasets and their citation.

The same rows serve the gate's ``GET datasets``, the site's landing page and
``insitu.catalog()`` on the node itself.
"""

from __future__ import annotations

from typing import Any

from insitu.config import NodeHome

__all__ = ["published_datasets"]


def published_datasets(home: NodeHome) -> list[dict[str, Any]]:
    """Published datasets: name, title, citation (the steward's, see docs/credit.md),
    readable versions (oldest first), retired versions, newest readable, and its subject
    and series counts (what a catalog shows before access)."""
    from insitu.datasets.catalog import Catalog

    found = []
    with Catalog(home) as catalog:
        for row in catalog.datasets():
            every = catalog.versions(row["name"])
            retired = [v["version"] for v in every if catalog.retirement(row["name"], v["version"])]
            versions = [v for v in every if v["version"] not in retired]
            newest = versions[-1] if versions else {}
            found.append(
                {
                    "name": row["name"],
                    "title": row.get("title", ""),
                    "citation": _cite_as(home, row["name"], row.get("citation", "")),
                    "versions": [v["version"] for v in versions],
                    "retired": retired,
                    "newest": newest.get("version"),
                    "subjects": newest.get("n_subjects"),
                    "series": newest.get("n_series"),
                }
            )
    return found


def _cite_as(home: NodeHome, dataset: str, ingest_citation: str) -> str:
    """The steward's recommended citation of the newest version (the credit ledger),
    else what ingest was given (``--citation``)."""
    from insitu.datasets.citations_db import citation_for

    cited = citation_for(home, dataset)
    return cited.text() if cited.set_by else ingest_citation
