"""Credit for those who share: usage of each dataset version, counted from the audit log.

Counts follow the COUNTER Code of Practice for Research Data in spirit
(investigations and requests, total and unique), per dataset version and
site, from entries the node already writes:

- ``read`` (the gate's coalesced reads): every key read is an *investigation*
  (``requests`` of the entry summed); a read of a series, label or table (the
  data itself, not the store's metadata) is a *request*. Unique counts are
  user-days, as COUNTER counts user-sessions. ``unique_researchers`` counts
  distinct site accounts.
- ``federation.reply`` with ``decision == "allowed"``: one federated run per
  ``run_id``, with the subjects this site contributed (the most any reply of
  the run covered). The version is the newest one published at that time (the
  SiteData a run opens).
- ``release.approve``: the datasets each approved release used (recorded at
  approval, see :func:`datasets_used`).

Nothing here reads data or writes the log; it only counts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from insitu.audit import AuditLog
from insitu.config import NodeHome, load_config

__all__ = ["Usage", "datasets_used", "releases_using", "usage_report"]

DATA_PARTS = ("series", "table")


@dataclass
class Usage:
    """COUNTER-style counts of one dataset version at one site."""

    dataset: str
    version: str
    site: str
    citation: str = ""
    retired: str = ""  # the retirement's date (YYYY-MM-DD) when the version was retired
    unique_researchers: int = 0
    total_investigations: int = 0
    unique_investigations: int = 0
    total_requests: int = 0
    unique_requests: int = 0
    federated_runs: int = 0
    subjects_contributed: int = 0
    approved_releases: int = 0
    _users: set[str] = field(default_factory=set, repr=False)
    _inv: set[tuple[str, str]] = field(default_factory=set, repr=False)
    _req: set[tuple[str, str]] = field(default_factory=set, repr=False)
    _runs: dict[Any, int] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


def _published_versions(home: NodeHome) -> dict[str, list[tuple[str, str]]]:
    """dataset -> [(created, version)] in publication order."""
    from insitu.datasets.catalog import Catalog

    with Catalog(home) as catalog:
        return {
            d["name"]: [(v["created"], v["version"]) for v in catalog.versions(d["name"])]
            for d in catalog.datasets()
        }


def _version_at(versions: list[tuple[str, str]], when: str) -> str:
    """The newest version published at ``when`` (the first one if none was yet)."""
    chosen = versions[0][1] if versions else ""
    moment = datetime.fromisoformat(when)
    for created, version in versions:
        if datetime.fromisoformat(created) <= moment:
            chosen = version
    return chosen


def datasets_used(home: NodeHome, user: str, *, until: str | None = None) -> list[tuple[str, str]]:
    """(dataset, version) pairs ``user`` read through the gate, up to ``until`` (ISO time)."""
    limit = datetime.fromisoformat(until) if until else None
    used: set[tuple[str, str]] = set()
    for entry in AuditLog(home).entries():
        if entry.get("kind") != "read" or entry.get("user") != user:
            continue
        if limit is not None and datetime.fromisoformat(entry["time"]) > limit:
            continue
        version = str(entry.get("details", {}).get("version", ""))
        if entry.get("dataset") and version:
            used.add((str(entry["dataset"]), version))
    return sorted(used)


def releases_using(home: NodeHome, dataset: str, version: str) -> list[dict[str, Any]]:
    """The approved releases that used a dataset version (from ``release.approve`` entries)."""
    out = []
    for entry in AuditLog(home).query(kind="release.approve"):
        details = entry.get("details", {})
        for used in details.get("datasets", []) or []:
            if used.get("dataset") == dataset and used.get("version") == version:
                out.append(
                    {
                        "request": details.get("request"),
                        "approved": entry["time"],
                        "approved_by": entry.get("user"),
                        "sha256": details.get("sha256"),
                    }
                )
    return out


def usage_report(home: NodeHome, *, entries: Iterable[dict[str, Any]] | None = None) -> list[Usage]:
    """Usage of every published dataset version of this site, newest first per dataset."""
    from insitu.datasets.citations_db import all_citations

    site = load_config(home).site.name
    versions = _published_versions(home)
    rows: dict[tuple[str, str], Usage] = {}
    for c in all_citations(home):
        rows[(c.dataset, c.version)] = Usage(
            c.dataset, c.version, site, citation=c.text(), retired=c.retired_on if c.retired else ""
        )

    def row(dataset: str, version: str) -> Usage | None:
        return rows.get((dataset, version))

    for entry in AuditLog(home).entries() if entries is None else entries:
        kind, details = entry.get("kind"), entry.get("details", {}) or {}
        dataset, user, day = entry.get("dataset"), entry.get("user") or "", entry["time"][:10]
        if kind == "read" and dataset:
            usage = row(dataset, str(details.get("version", "")))
            if usage is None or user.startswith("federation:"):
                continue
            usage._users.add(user)
            usage.total_investigations += int(details.get("requests", 1) or 1)
            usage._inv.add((user, day))
            if any(part in details for part in DATA_PARTS):
                usage.total_requests += 1
                usage._req.add((user, day))
        elif kind == "federation.reply" and dataset and details.get("decision") == "allowed":
            usage = row(dataset, _version_at(versions.get(dataset, []), entry["time"]))
            if usage is None:
                continue
            run = details.get("run_id")
            usage._runs[run] = max(usage._runs.get(run, 0), int(details.get("subjects", 0) or 0))
        elif kind == "release.approve":
            for used in details.get("datasets", []) or []:
                usage = row(str(used.get("dataset")), str(used.get("version")))
                if usage is not None:
                    usage.approved_releases += 1
    for usage in rows.values():
        usage.unique_researchers = len(usage._users)
        usage.unique_investigations = len(usage._inv)
        usage.unique_requests = len(usage._req)
        usage.federated_runs = len(usage._runs)
        usage.subjects_contributed = sum(usage._runs.values())
    by_dataset: dict[str, list[Usage]] = defaultdict(list)
    for usage in rows.values():
        by_dataset[usage.dataset].append(usage)
    return [
        u
        for name in sorted(by_dataset)
        for u in sorted(by_dataset[name], key=lambda u: -int(u.version[1:] or 0))
    ]
