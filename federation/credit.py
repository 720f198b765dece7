"""Citations and contributions that travel with every federated result.

Each site's envelope (the outermost site mod, after the egress checks) adds one
ConfigRecord ``insitu.credit`` to a reply it lets out: the site, the dataset
version its app read, the number of subjects it contributed to this reply, and
the version's citation (public metadata, the same the site's credit page shows;
never data). The ServerApps fold them into their result (:func:`fold`), so a
researcher's analytics DataFrame and training result carry ``citations``,
``contributions`` (site, dataset, version, subjects) and ``citation_files``
(CITATIONS.cff, .bib, .md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from insitu.config import NodeHome

__all__ = ["CREDIT_RECORD", "CreditGrid", "fold", "read_credit", "site_credit"]

CREDIT_RECORD = "insitu.credit"


def site_credit(home: NodeHome, site: str, dataset: str, data: Any) -> dict[str, Any] | None:
    """The ConfigRecord values a site adds to a reply (None when nothing was read)."""
    from insitu.datasets.citations_db import citation_for
    from insitu.errors import InsituError

    if data is None:
        return None
    version = str(getattr(data, "version", "") or "") or None
    try:
        citation = citation_for(home, dataset, version)
    except InsituError:
        return None
    return {
        "site": site,
        "dataset": getattr(data, "alias", dataset) or dataset,
        "version": citation.version,
        "subjects": len(getattr(data, "served_subjects", ())),
        "citation": json.dumps(citation.to_json(), sort_keys=True),
    }


def read_credit(content: Any) -> dict[str, Any] | None:
    """The credit a reply carries (None for a site that sent none)."""
    record = content.config_records.get(CREDIT_RECORD) if content is not None else None
    if record is None:
        return None
    try:
        return {
            "site": str(record["site"]),
            "dataset": str(record["dataset"]),
            "version": str(record["version"]),
            "subjects": int(record["subjects"]),
            "citation": json.loads(str(record["citation"])),
        }
    except (KeyError, TypeError, ValueError):
        return None


class CreditGrid:
    """A ServerApp's Grid that also keeps each reply's credit (:func:`read_credit`).

    For Flower's workflows that talk to the sites themselves (``DefaultWorkflow`` with
    ``SecAggPlusWorkflow``): they reach the sites only through ``send_and_receive``,
    and the server folds ``credits`` afterwards as the Message-API server does.
    Everything else is the wrapped grid's.
    """

    def __init__(self, grid: Any) -> None:
        self._grid = grid
        self.credits: list[dict[str, Any] | None] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Any], *args: Any, **kwargs: Any) -> Any:
        replies = list(self._grid.send_and_receive(messages, *args, **kwargs))
        self.credits.extend(read_credit(r.content) for r in replies if not r.has_error())
        return replies


def fold(credits: Iterable[dict[str, Any] | None], *, title: str) -> dict[str, Any]:
    """One result's citations (one per site and version), contributions and files.

    A site that answered several rounds contributed the most subjects any one
    of its replies covered.
    """
    from insitu.datasets.citation import Citation, bibtex, cff_references, markdown

    best: dict[tuple[str, str, str], dict[str, Any]] = {}
    for credit in credits:
        if not credit:
            continue
        key = (credit["site"], credit["dataset"], credit["version"])
        if key not in best or credit["subjects"] > best[key]["subjects"]:
            best[key] = credit
    rows = [best[k] for k in sorted(best)]
    citations = [Citation.from_json(r["citation"]) for r in rows]
    contributions = [
        {"site": r["site"], "dataset": r["dataset"], "version": r["version"],
         "subjects": r["subjects"]}
        for r in rows
    ]  # fmt: skip
    return {
        "citations": [c.to_json() for c in citations],
        "contributions": contributions,
        "citation_files": {
            "CITATIONS.cff": cff_references(title, citations),
            "CITATIONS.bib": bibtex(citations),
            "CITATIONS.md": markdown(title, citations, contributions),
        },
    }
