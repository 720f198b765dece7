"""The airlock as a hub service: JSON REST, authenticated with JupyterHub tokens.

Under ``/services/airlock/``:

    GET  health                              readiness (no token)
    POST api/releases                        submit {filename, purpose, content (base64), evidence?}
    GET  api/releases                        mine; a steward or admin adds ?all=1 for everyone's
    GET  api/releases/<id>                   mine, or any for a steward/admin
    GET  api/releases/<id>/preview           steward/admin: sniffed type, findings, the image
                                             downscaled (base64 PNG), table head, outputs
    POST api/releases/<id>/approve           steward/admin {reason, override?}
    POST api/releases/<id>/deny              steward/admin {reason}
    GET  api/releases/<id>/download          the researcher's own approved output, as a file
    GET  api/releases/<id>/bundle            the same output zipped with CITATIONS.cff/.bib/.md
    GET  api/releases/<id>/citations         what to cite: {files: {CITATIONS.cff: text, ...}}

Everything else about a request (checks, states, audit) is
:class:`insitu.hub.airlock.Airlock`; this module only maps HTTP onto it.
Roles come from the site's accounts (:func:`insitu.hub.accounts.role_of`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import sys
from typing import Any

from tornado import web

from insitu.config import NodeHome
from insitu.errors import (
    AccessDeniedError,
    InvalidRequestError,
)
from insitu.hub.accounts import require_role
from insitu.hub.airlock import Airlock
from insitu.hub.service_app import ServiceHandler, app_settings, oauth_routes, run_service
from insitu.hub.services import HubService, ServiceContext

__all__ = ["NAME", "hub_service", "make_app"]

NAME = "airlock"
DECIDERS = ("steward", "admin")
MEMBERS = ("researcher", "steward", "admin")


class AirlockHandler(ServiceHandler):
    """Each call opens the airlock in a worker thread (SQLite, file copies, checks)."""

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        def run() -> Any:
            with Airlock(self.home) as airlock:
                return getattr(airlock, method)(*args, **kwargs)

        return await asyncio.to_thread(run)

    def is_decider(self) -> bool:
        try:
            require_role(self.home, self.user, *DECIDERS)
        except AccessDeniedError:
            return False
        return True

    def require_decider(self) -> None:
        require_role(self.home, self.user, *DECIDERS)

    def require_member(self) -> None:
        """A hub login is not enough: releasing and downloading need a site account."""
        require_role(self.home, self.user, *MEMBERS)


def _text(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidRequestError(f"{key!r} must be a non-empty string")
    return value


class ReleasesHandler(AirlockHandler):
    async def get(self) -> None:
        everyone = self.get_argument("all", "0") in ("1", "true", "yes")
        if everyone:
            self.require_decider()
        state = self.get_argument("state", None)
        found = await self.call("list", user=None if everyone else self.user, state=state)
        self.write_json([r.to_dict() for r in found])

    async def post(self) -> None:
        self.require_member()
        body = self.json_body()
        filename = _text(body, "filename")
        purpose = _text(body, "purpose")
        try:
            content = base64.b64decode(_text(body, "content") or "", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError("'content' must be the file's bytes in base64") from None
        evidence = body.get("evidence")
        if evidence is not None and not isinstance(evidence, dict):
            raise InvalidRequestError("'evidence' must be a JSON object (from insitu.kernels.sdc)")
        request = await self.call(
            "submit", self.user, content, filename, purpose=purpose or "", evidence=evidence
        )
        self.write_json(request.to_dict(), status=201)


class ReleaseHandler(AirlockHandler):
    async def get(self, request_id: str) -> None:
        owner = None if self.is_decider() else self.user
        request = await self.call("get", request_id, user=owner)
        self.write_json(request.to_dict())


class PreviewHandler(AirlockHandler):
    async def get(self, request_id: str) -> None:
        self.require_decider()
        preview = await self.call("preview_details", request_id)
        self.write_json({"id": int(request_id), "preview": preview.summary(), **preview.to_json()})


class DecisionHandler(AirlockHandler):
    async def post(self, request_id: str, action: str) -> None:
        self.require_decider()
        body = self.json_body()
        reason = _text(body, "reason", required=False) or ""
        if action == "approve":
            override = _text(body, "override", required=False)
            request = await self.call(
                "approve", request_id, steward=self.user, reason=reason, override=override
            )
        else:
            request = await self.call("deny", request_id, steward=self.user, reason=reason)
        self.write_json(request.to_dict())


class DownloadHandler(AirlockHandler):
    browser_login = True  # researchers download from their browser, logged in to the hub

    async def get(self, request_id: str) -> None:
        await self.call("get", request_id, user=self.user)  # not yours: 404, as for anyone
        self.require_member()  # a removed account downloads nothing
        request, data = await self.call("download", request_id, user=self.user)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", f'attachment; filename="{request.filename}"')
        self.set_header("X-Insitu-Sha256", request.sha256)
        self.finish(data)


class BundleHandler(AirlockHandler):
    """The approved output and its CITATIONS.cff/.bib/.md in one zip."""

    browser_login = True

    async def get(self, request_id: str) -> None:
        await self.call("get", request_id, user=self.user)
        self.require_member()
        request, data = await self.call("download_bundle", request_id, user=self.user)
        stem = request.filename.rsplit(".", 1)[0] or "release"
        self.set_header("Content-Type", "application/zip")
        self.set_header("Content-Disposition", f'attachment; filename="{stem}-with-citations.zip"')
        self.set_header("X-Insitu-Sha256", request.sha256)
        self.finish(data)


class CitationsHandler(AirlockHandler):
    """What to cite for a release: the researcher's own, or any for a steward."""

    async def get(self, request_id: str) -> None:
        from insitu.hub.release_credit import describe

        owner = None if self.is_decider() else self.user
        files = await self.call("citations", request_id, user=owner)
        self.write_json({"id": int(request_id), "files": describe(files)})


class HealthHandler(web.RequestHandler):
    def get(self) -> None:
        self.finish({"ok": True, "service": NAME})


def max_body_size(home: NodeHome) -> int:
    """Uploads are base64 in JSON: room for twice the release limit, so an oversized
    file still gets the airlock's clear 413; far larger bodies are cut off unread."""
    from insitu.config import load_config

    return 3 * load_config(home).policy.max_release_bytes + 2**20


def make_app(home: NodeHome, prefix: str) -> web.Application:
    releases = prefix + r"api/releases"
    routes: list[Any] = [
        (prefix + "health", HealthHandler),
        (releases, ReleasesHandler),
        (releases + r"/(\d+)", ReleaseHandler),
        (releases + r"/(\d+)/preview", PreviewHandler),
        (releases + r"/(\d+)/(approve|deny)", DecisionHandler),
        (releases + r"/(\d+)/download", DownloadHandler),
        (releases + r"/(\d+)/bundle", BundleHandler),
        (releases + r"/(\d+)/citations", CitationsHandler),
        *oauth_routes(prefix),
    ]
    return web.Application(routes, **app_settings(home, prefix), max_body_size=max_body_size(home))


def hub_service(ctx: ServiceContext) -> HubService:
    """The airlock as a hub-managed service; user servers get its URL."""
    port = ctx.port()
    return HubService(
        name=NAME,
        command=[sys.executable, "-m", "insitu.hub.airlock_service"],
        port=port,
        user_environment={
            "INSITU_AIRLOCK_URL": f"http://127.0.0.1:{port}/services/{NAME}/",
            # What the researcher's browser opens to download approved outputs.
            "INSITU_AIRLOCK_PUBLIC_URL": f"{ctx.hub_url}/services/{NAME}/",
        },
        ready_path="health",
    )


def main() -> None:
    import threading

    from insitu.disclosure.acro import import_acro as _acro

    # ACRO (with statsmodels) takes seconds to import: do it now, not at the first release.
    threading.Thread(target=_acro, name="import-acro", daemon=True).start()
    run_service(make_app)


if __name__ == "__main__":
    main()
