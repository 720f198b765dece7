"""insitu federation: Flower jobs across site nodes, under each site's control.

Researchers call :func:`analyze` (built-in federated analytics) from a
notebook; sites run ``insitu federation join`` and approve apps with
``insitu federation approve``. See docs/federation.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["analytics_fingerprint", "analyze", "site_data"]


def analyze(**kwargs: Any) -> Any:
    """Federated analytics across sites; see :func:`insitu.federation.analytics.analyze`."""
    from insitu.federation.analytics import analyze as _analyze

    return _analyze(**kwargs)


def analytics_fingerprint() -> str:
    """The fingerprint a steward approves for the built-in analytics."""
    from insitu.federation.analytics import analytics_fingerprint as _fingerprint

    return _fingerprint()


def site_data(context: Any) -> Any:
    """In a ClientApp: this site's dataset (the only way an app reads data)."""
    from insitu.federation.node_data import site_data as _site_data

    return _site_data(context)
