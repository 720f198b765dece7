"""The disclosure engine's context for a node, with the identifiers its catalog lists.

The engine lives on the ground floor, which reads no catalog; this is the one
floor up that does (through :class:`~insitu.datasets.catalog.Catalog`, read-only)
and hands the engine what it must never let out.
"""

from __future__ import annotations

from insitu.config import NodeHome, SiteConfig
from insitu.datasets.catalog import Catalog
from insitu.disclosure.context import DisclosureContext, SiteIdentifiers
from insitu.disclosure.context import site_identifiers as _identifiers

__all__ = ["disclosure_context", "site_identifiers"]


def site_identifiers(home: NodeHome) -> SiteIdentifiers:
    """Pseudonyms, UIDs, dates and image shapes of every published version.

    A node without a catalog gives empty sets (the generic UID pattern still
    applies); a catalog that cannot be read raises, so that checks fail rather
    than pass.
    """
    if not home.catalog_path.exists():
        return SiteIdentifiers()
    catalog = Catalog(home, read_only=True)
    try:
        listed = catalog.published_identifiers()
    finally:
        catalog.close()
    return _identifiers(listed["subjects"], listed["studies"], listed["series"], listed["sizes"])


def disclosure_context(home: NodeHome, config: SiteConfig | None = None) -> DisclosureContext:
    """Everything from the node home: insitu.toml, the catalog, the fingerprint index."""
    return DisclosureContext.for_home(home, site_identifiers(home), config)
