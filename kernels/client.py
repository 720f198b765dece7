"""The researcher's data API: ``open_dataset``, ``catalog``, ``request_access`` (via ``insitu.``).

The same calls work in two places:

- in a user server started by the site hub, ``$INSITU_GATE_URL`` (and
  ``$INSITU_ACCESS_URL``) are set and every read goes through the data gate with
  the server's own hub token: the researcher never handles a token, a URL or a
  path;
- on the node itself (no gate URL), stores are read directly from the node home
  (``insitu.api`` picks this module or the node's own access functions for
  ``request_access``).

Refusals carry the site's reason: ``AccessDeniedError`` says whether access was
never requested, is pending, expired (with the date) or was revoked, and how to
ask.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from insitu.datasets.reader import Dataset

__all__ = ["catalog", "open_dataset", "request_access"]

CATALOG_COLUMNS = [
    "name", "title", "citation", "versions", "newest", "subjects", "series",
    "access", "request", "expires",
]  # fmt: skip


def _through_gate() -> bool:
    return bool(os.environ.get("INSITU_GATE_URL"))


def open_dataset(name: str, version: str | None = None) -> Dataset:
    """Open a dataset (newest version unless one is named) as an insitu ``Dataset``."""
    from insitu.datasets.reader import Dataset
    from insitu.datasets.reader import open_dataset as open_local

    if not _through_gate():
        return open_local(name, version)
    from insitu.kernels.gate_store import GateStore

    return Dataset(GateStore(name, version))


def catalog() -> pd.DataFrame:
    """The site's datasets and my access to each (approved, pending, expired, ...)."""
    import pandas as pd

    if _through_gate():
        from insitu.http import raise_for_response, session
        from insitu.kernels.gate_store import GATE

        url = os.environ["INSITU_GATE_URL"].rstrip("/") + "/datasets"
        with session(os.environ.get("JUPYTERHUB_API_TOKEN", "")) as http:
            response = http.get(url, timeout=60)
            raise_for_response(response, service=GATE)
            rows = response.json()
    else:
        from insitu.config import resolve_home
        from insitu.datasets.listing import published_datasets

        rows = [
            row | {"access": "node", "request": None, "expires": None}
            for row in published_datasets(resolve_home())
        ]
    return pd.DataFrame(rows, columns=CATALOG_COLUMNS)


def request_access(dataset: str, purpose: str, project: str, days: int = 90) -> dict[str, Any]:
    """Ask the site's stewards for access through the access service; returns the request.

    In a user server only (``$INSITU_ACCESS_URL``); ``insitu.request_access``
    files it directly on the node itself (``insitu.api``).
    """
    from insitu.errors import ConfigError
    from insitu.http import raise_for_response, session

    access_url = os.environ.get("INSITU_ACCESS_URL")
    if not access_url:
        raise ConfigError(
            "$INSITU_ACCESS_URL is not set: the hub sets it in every user server (on the node "
            "itself, insitu.request_access files the request directly)"
        )
    body: dict[str, Any] = {
        "dataset": dataset,
        "purpose": purpose,
        "project": project,
        "days": days,
    }
    with session(os.environ.get("JUPYTERHUB_API_TOKEN", "")) as http:
        response = http.post(access_url.rstrip("/") + "/api/requests", json=body, timeout=60)
        raise_for_response(response, service="the site's access service")
        filed: dict[str, Any] = response.json()
        return filed
