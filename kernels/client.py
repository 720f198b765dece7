"""The researcher's data API: ``open_dataset``, ``catalog``, ``request_access`` (via ``insitu.``).

The same calls work in two places:

- in a user server started by the site hub, ``$INSITU_GATE_URL`` (and
  ``$INSITU_ACCESS_URL``) are set and every read goes through the data gate with
  the server's own hub token: the researcher never handles a token, a URL or a
  path;
- on the node itself (no gate URL), stores are read directly from the node home.

Refusals carry the site's reason: ``AccessDeniedError`` says whether access was
never requested, is pending, expired (with the date) or was revoked, and how to
ask.
"""

from __future__ import annotations

import getpass
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
        from insitu.kernels.gate_store import gate_session, raise_for_gate

        url = os.environ["INSITU_GATE_URL"].rstrip("/") + "/datasets"
        with gate_session(os.environ.get("JUPYTERHUB_API_TOKEN", "")) as session:
            response = session.get(url, timeout=60)
            raise_for_gate(response)
            rows = response.json()
    else:
        from insitu.config import resolve_home
        from insitu.hub import stores

        rows = [
            row | {"access": "node", "request": None, "expires": None}
            for row in stores.datasets(resolve_home())
        ]
    return pd.DataFrame(rows, columns=CATALOG_COLUMNS)


def request_access(dataset: str, purpose: str, project: str, days: int = 90) -> dict[str, Any]:
    """Ask the site's stewards for access; returns the request as filed (see the register)."""
    access_url = os.environ.get("INSITU_ACCESS_URL")
    if access_url:
        from insitu.kernels.gate_store import gate_session, raise_for_gate

        body: dict[str, Any] = {
            "dataset": dataset,
            "purpose": purpose,
            "project": project,
            "days": days,
        }
        with gate_session(os.environ.get("JUPYTERHUB_API_TOKEN", "")) as session:
            response = session.post(access_url.rstrip("/") + "/api/requests", json=body, timeout=60)
            raise_for_gate(response)
            filed: dict[str, Any] = response.json()
            return filed
    from insitu.config import resolve_home
    from insitu.hub import access

    user = os.environ.get("INSITU_USER") or getpass.getuser()
    return access.request(resolve_home(), user, dataset, purpose, project, days).to_json()
