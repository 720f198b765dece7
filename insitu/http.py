"""The one HTTP client helper for insitu's own services (gate, access, airlock).

A researcher's server talks to its site's services with the hub token it
was started with. :func:`session` sends that token and keeps connections
alive; :func:`raise_for_response` (or :func:`raise_for_status` for a raw
status and body) turns a refusal back into the insitu error the service
raised: the service answers with the error's ``http_status`` and its name
(JSON ``error``, header ``X-Insitu-Error``), and
:func:`insitu.errors.from_http` maps both back. A 401 also says what to do
(restart the server from the hub home page, which gives it a fresh token).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from insitu.errors import DEFAULT_SERVICE, AuthenticationError, from_http

if TYPE_CHECKING:
    import requests

__all__ = ["raise_for_response", "raise_for_status", "session"]


def session(token: str, pool: int = 32) -> requests.Session:
    """An HTTP session that sends the hub token and keeps connections alive."""
    import requests
    from requests.adapters import HTTPAdapter

    found = requests.Session()
    found.headers["Authorization"] = f"token {token}"
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool)
    found.mount("http://", adapter)
    found.mount("https://", adapter)
    return found


def raise_for_status(
    status: int,
    body: bytes,
    reason: str = "",
    *,
    error: str = "",
    service: str = DEFAULT_SERVICE,
) -> None:
    """Raise the insitu error for a service's answer ``status`` (nothing below 400).

    ``body`` is the answer's bytes (insitu services send JSON with ``message``
    and ``error``); ``error`` the ``X-Insitu-Error`` header when there is one.
    """
    if status < 400:
        return
    message = reason or str(status)
    name = error
    try:
        data: Any = json.loads(body)
    except (ValueError, TypeError):
        data = None
    if isinstance(data, dict):
        message = str(data.get("message") or message)
        name = name or str(data.get("error") or "")
    found = from_http(status, message, name, service=service)
    if isinstance(found, AuthenticationError):
        found = type(found)(
            f"{service} does not accept this server's token ({message}); restart your "
            "server from the hub home page"
        )
    raise found


def raise_for_response(response: requests.Response, *, service: str = DEFAULT_SERVICE) -> None:
    """:func:`raise_for_status` for a ``requests`` answer."""
    raise_for_status(
        response.status_code,
        response.content,
        response.reason or "",
        error=response.headers.get("X-Insitu-Error", ""),
        service=service,
    )
