"""Where the widgets get their data: small protocols with real implementations.

Each panel takes a *source* object, so the same widget runs in a researcher's
server (the client library talks to the hub), on the node itself (plain
functions of the hub and datasets components) and in tests. A source
returns plain dicts; the widgets never see tokens, URLs or paths.
"""

from __future__ import annotations

import base64
from typing import Any, Protocol, runtime_checkable

from insitu.config import NodeHome, resolve_home

__all__ = [
    "AirlockSource",
    "BrowserSource",
    "ClientSource",
    "HubStewardSource",
    "NodeSource",
    "StewardSource",
    "dataset_row",
]

# "node": reading on the node itself (an admin's direct access, no approval involved)
ACCESS_STATES = ("approved", "node", "pending", "expired", "revoked", "denied", "none")


@runtime_checkable
class BrowserSource(Protocol):
    """What the dataset browser needs."""

    def datasets(self) -> list[dict[str, Any]]:
        """One dict per dataset (see :func:`dataset_row` for the keys)."""
        ...

    def request_access(self, dataset: str, *, purpose: str, project: str, days: int) -> Any:
        """File an access request; raise an InsituError with the reason if refused."""
        ...


@runtime_checkable
class StewardSource(Protocol):
    """What the steward panel needs: pending access and release requests, decisions."""

    def pending_access(self) -> list[dict[str, Any]]: ...

    def decide_access(
        self, request_id: int, *, approve: bool, reason: str, days: int | None = None
    ) -> Any: ...

    def pending_releases(self) -> list[dict[str, Any]]: ...

    def release_preview(self, release_id: int) -> tuple[str, bytes | None]:
        """(text preview, PNG bytes for image outputs else None)."""
        ...

    def decide_release(
        self, release_id: int, *, approve: bool, reason: str, override: str | None = None
    ) -> Any: ...


@runtime_checkable
class AirlockSource(Protocol):
    """What the researcher's airlock panel needs."""

    def my_releases(self) -> list[dict[str, Any]]: ...

    def download_release(self, release_id: int) -> tuple[str, bytes]:
        """(filename, bytes) of an approved output; refused otherwise."""
        ...


def dataset_row(raw: dict[str, Any]) -> dict[str, Any]:
    """One catalog entry with the keys the browser shows, whatever spelled them.

    Keys: name, title, description, citation, version, subjects, series,
    access (one of ACCESS_STATES), expires.
    """
    access = raw.get("access", raw.get("my_access", raw.get("state", raw.get("status"))))
    if isinstance(access, dict):  # e.g. {"state": "approved", "expires_at": ...}
        raw = {**raw, "expires": access.get("expires_at") or access.get("expires")}
        access = access.get("state") or access.get("status")
    access = str(access or "none").lower()
    if access not in ACCESS_STATES:
        access = "none"
    return {
        "name": str(raw.get("name") or raw.get("dataset") or "?"),
        "title": str(raw.get("title") or ""),
        "description": str(raw.get("description") or ""),
        "citation": str(raw.get("citation") or ""),
        "version": str(raw.get("version") or raw.get("newest") or ""),
        "subjects": _int(raw.get("subjects", raw.get("n_subjects"))),
        "series": _int(raw.get("series", raw.get("n_series"))),
        "access": access,
        "expires": raw.get("expires") or raw.get("expires_at") or "",
    }


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


class ClientSource:
    """Inside a researcher's server: the client library (`insitu.catalog()`...)."""

    def datasets(self) -> list[dict[str, Any]]:
        import insitu

        listing = insitu.catalog()
        if hasattr(listing, "to_dict"):  # a pandas DataFrame
            listing = listing.to_dict(orient="records")
        return [dataset_row(dict(row)) for row in listing]

    def request_access(self, dataset: str, *, purpose: str, project: str, days: int) -> Any:
        import insitu

        return insitu.request_access(dataset, purpose=purpose, project=project, days=days)

    def my_releases(self) -> list[dict[str, Any]]:
        """My release requests; approved ones carry the hub's ``download_url``."""
        from dataclasses import asdict

        from insitu.kernels.release import releases

        return [asdict(r) for r in releases()]

    def download_release(self, release_id: int) -> tuple[str, bytes]:
        from insitu.errors import InvalidRequestError

        raise InvalidRequestError(
            "in a hosted notebook, approved outputs download in your browser: use the link"
        )


def _service_call(env: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call a hub service's REST API with this server's token; refusals become insitu errors."""
    import os

    import requests

    from insitu.errors import ConfigError, ServiceError
    from insitu.http import raise_for_response

    base, token = os.environ.get(env, ""), os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not base or not token:
        raise ConfigError(
            f"${env} is not set: this works in a notebook server of the site's hub (on the "
            "node itself, use NodeSource(user))"
        )
    try:
        answer = requests.request(
            method,
            base.rstrip("/") + "/" + path,
            json=body,
            headers={"Authorization": f"token {token}"},
            timeout=60,
        )
    except requests.RequestException as exc:
        raise ServiceError(f"the site's service did not answer ({type(exc).__name__})") from None
    raise_for_response(answer)
    return answer.json()


class HubStewardSource:
    """A steward in a hosted notebook: the hub's access and airlock REST APIs.

    The services check the steward role on every call; this class only carries
    the server's token (``$JUPYTERHUB_API_TOKEN``) to ``$INSITU_ACCESS_URL`` and
    ``$INSITU_AIRLOCK_URL``.
    """

    def pending_access(self) -> list[dict[str, Any]]:
        rows = _service_call("INSITU_ACCESS_URL", "GET", "api/requests")
        return [r for r in rows if r.get("state", r.get("status")) == "pending"]

    def decide_access(
        self, request_id: int, *, approve: bool, reason: str, days: int | None = None
    ) -> Any:
        body: dict[str, Any] = {"reason": reason}
        if approve and days is not None:
            body["days"] = days
        action = "approve" if approve else "deny"
        return _service_call(
            "INSITU_ACCESS_URL", "POST", f"api/requests/{request_id}/{action}", body
        )

    def pending_releases(self) -> list[dict[str, Any]]:
        return list(
            _service_call("INSITU_AIRLOCK_URL", "GET", "api/releases?all=1&state=submitted")
        )

    def release_preview(self, release_id: int) -> tuple[str, bytes | None]:
        answer = _service_call("INSITU_AIRLOCK_URL", "GET", f"api/releases/{release_id}/preview")
        image = answer.get("image")
        return str(answer.get("preview", "")), base64.b64decode(image) if image else None

    def decide_release(
        self, release_id: int, *, approve: bool, reason: str, override: str | None = None
    ) -> Any:
        body: dict[str, Any] = {"reason": reason}
        if approve and override:
            body["override"] = override
        action = "approve" if approve else "deny"
        return _service_call(
            "INSITU_AIRLOCK_URL", "POST", f"api/releases/{release_id}/{action}", body
        )


class NodeSource:
    """On the node itself, as ``user``: the catalog and the hub's access rules.

    Used by the demo, the steward's CLI-side tools and the tests; every call
    goes through the same plain functions (roles, audit) the hub's API uses.
    """

    def __init__(self, user: str, home: NodeHome | None = None) -> None:
        self.user = user
        self.home = (home or resolve_home()).require_initialized()

    # -- browser --------------------------------------------------------------

    def datasets(self) -> list[dict[str, Any]]:
        from insitu.datasets.catalog import Catalog
        from insitu.hub import access

        rows = []
        with Catalog(self.home) as catalog:
            for entry in catalog.datasets():
                newest = catalog.versions(entry["name"])[-1]
                state, found = access.status_for(self.home, self.user, entry["name"])
                rows.append(
                    dataset_row(
                        {
                            **entry,
                            "version": newest["version"],
                            "subjects": newest["n_subjects"],
                            "series": newest["n_series"],
                            "access": state,
                            "expires": found.expires_at if found else "",
                        }
                    )
                )
        return rows

    def request_access(self, dataset: str, *, purpose: str, project: str, days: int) -> Any:
        from insitu.hub import access

        return access.request(self.home, self.user, dataset, purpose, project, days).to_json()

    # -- steward ----------------------------------------------------------------

    def pending_access(self) -> list[dict[str, Any]]:
        from insitu.hub import access

        return [r.to_json() for r in access.register(self.home) if r.state() == "pending"]

    def decide_access(
        self, request_id: int, *, approve: bool, reason: str, days: int | None = None
    ) -> Any:
        from insitu.hub import access

        if approve:
            return access.approve(self.home, self.user, request_id, reason, days=days).to_json()
        return access.deny(self.home, self.user, request_id, reason).to_json()

    def _require_steward(self) -> None:
        from insitu.hub.access import DECIDERS
        from insitu.hub.accounts import require_role

        require_role(self.home, self.user, *DECIDERS)

    def pending_releases(self) -> list[dict[str, Any]]:
        from insitu.hub.airlock import Airlock

        self._require_steward()
        with Airlock(self.home) as airlock:
            return [r.to_dict() for r in airlock.list(state="submitted")]

    def release_preview(self, release_id: int) -> tuple[str, bytes | None]:
        from insitu.hub.airlock import Airlock

        self._require_steward()
        with Airlock(self.home) as airlock:
            preview = airlock.preview_details(release_id)  # the image downscaled, never raw
            return preview.summary(), preview.image

    def decide_release(
        self, release_id: int, *, approve: bool, reason: str, override: str | None = None
    ) -> Any:
        from insitu.hub.airlock import Airlock

        self._require_steward()
        with Airlock(self.home) as airlock:
            if approve:
                done = airlock.approve(
                    release_id, steward=self.user, reason=reason, override=override
                )
            else:
                done = airlock.deny(release_id, steward=self.user, reason=reason)
            return done.to_dict()

    # -- the researcher's airlock ---------------------------------------------------

    def my_releases(self) -> list[dict[str, Any]]:
        from insitu.hub.airlock import Airlock

        with Airlock(self.home) as airlock:
            return [r.to_dict() for r in airlock.list(user=self.user)]

    def download_release(self, release_id: int) -> tuple[str, bytes]:
        from insitu.hub.airlock import Airlock

        with Airlock(self.home) as airlock:
            request, data = airlock.download(release_id, user=self.user)
            return request.filename, data
