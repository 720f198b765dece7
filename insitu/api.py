"""The researcher's short API (``insitu.open_dataset``, ``catalog``, ``request_access``).

An orchestrator like ``insitu.cli``: it picks, per call, where the answer
comes from. In a user server the hub sets ``$INSITU_GATE_URL`` and
``$INSITU_ACCESS_URL`` and everything goes through the site's services
(``insitu.kernels.client``); on the node itself, reads come from the node
home and an access request is filed with ``insitu.hub.access`` directly.
"""

from __future__ import annotations

import getpass
import os
from typing import Any

from insitu.kernels.client import catalog, open_dataset

__all__ = ["catalog", "open_dataset", "request_access"]


def request_access(dataset: str, purpose: str, project: str, days: int = 90) -> dict[str, Any]:
    """Ask the site's stewards for access; returns the request as filed (see the register)."""
    if os.environ.get("INSITU_ACCESS_URL"):
        from insitu.kernels.client import request_access as through_service

        return through_service(dataset, purpose, project, days)
    from insitu.config import resolve_home
    from insitu.hub import access

    user = os.environ.get("INSITU_USER") or getpass.getuser()
    return access.request(resolve_home(), user, dataset, purpose, project, days).to_json()
