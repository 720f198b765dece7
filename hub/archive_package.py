"""``insitu archive export`` with the hub's records in the package.

A dataset version's archive package (``insitu.datasets.archive``) carries,
beside the store and its catalog rows, the access register's entries for the
dataset and the approved releases that used the version. Those records are
the hub's, so they are gathered here and handed down to the package writer.
"""

from __future__ import annotations

from pathlib import Path

from insitu.config import NodeHome
from insitu.datasets.archive import export
from insitu.hub.access import register
from insitu.hub.credit import releases_using

__all__ = ["export_package"]


def export_package(home: NodeHome, dataset: str, version: str | None, out: Path) -> Path:
    """Write the archive package of a published version (newest when None) into ``out``."""
    from insitu.datasets.catalog import Catalog

    with Catalog(home) as catalog:
        version = str(catalog.version(dataset, version)["version"])
    return export(
        home,
        dataset,
        version,
        out,
        register=[r.to_json() for r in register(home, dataset=dataset)],
        releases=releases_using(home, dataset, version),
    )
