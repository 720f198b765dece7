"""The access API and the public register, as a hub-managed service.

Routes under ``/services/access/`` (JSON unless said otherwise):

    GET   api/requests[?user=&dataset=]       the register: every request and decision
    POST  api/requests                         {dataset, purpose, project, days} -> 201
    GET   api/requests/<id>                    one request
    POST  api/requests/<id>/approve            {reason, days | expires}   steward/admin
    POST  api/requests/<id>/deny               {reason}                   steward/admin
    POST  api/requests/<id>/revoke             {reason}                   steward/admin
    GET   api/me                               my name and role
    POST  api/federation/identity              {fab_hash, run_config} -> {token}: my signed
                                               identity for one federated run (home site)
    GET   ""                                   the register as an HTML page (hub login)
    GET   credit                               the credit page: citations and usage (hub login)
    GET   api/credit                           the same as JSON (insitu.hub.credit.usage_report)
    GET   health                               unauthenticated liveness

The handlers only translate HTTP to :mod:`insitu.hub.access`, which checks
roles; so a researcher gets the same 403 here as at the CLI.
"""

from __future__ import annotations

import html
import sys
from datetime import UTC, datetime
from typing import Any

from tornado import web

from insitu.config import NodeHome
from insitu.errors import InvalidRequestError
from insitu.hub import access
from insitu.hub.accounts import role_of
from insitu.hub.service_app import ServiceHandler, app_settings, oauth_routes, run_service
from insitu.hub.services import HubService, ServiceContext

__all__ = ["hub_service", "make_app"]

NAME = "access"


def _int(body: dict[str, Any], key: str, default: int | None = None) -> int | None:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"{key} must be a whole number, not {value!r}")
    return value


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise InvalidRequestError(f"{key} must be text, not {value!r}")
    return value


class RequestsHandler(ServiceHandler):
    async def get(self) -> None:
        found = access.register(
            self.home,
            user=self.get_argument("user", None),
            dataset=self.get_argument("dataset", None),
        )
        now = datetime.now(UTC)
        self.write_json([r.to_json(now) for r in found])

    async def post(self) -> None:
        body = self.json_body()
        created = access.request(
            self.home,
            self.user,
            _str(body, "dataset"),
            _str(body, "purpose"),
            _str(body, "project"),
            _int(body, "days", 90) or 0,
        )
        self.write_json(created.to_json(), status=201)


class RequestHandler(ServiceHandler):
    async def get(self, request_id: str) -> None:
        self.write_json(access.get_request(self.home, int(request_id)).to_json())


class DecisionHandler(ServiceHandler):
    async def post(self, request_id: str, action: str) -> None:
        body = self.json_body()
        reason = _str(body, "reason")
        rid = int(request_id)
        if action == "approve":
            expires = None
            if body.get("expires"):
                try:
                    expires = datetime.fromisoformat(_str(body, "expires"))
                except ValueError:
                    raise InvalidRequestError("expires must be an ISO date-time") from None
                if expires.tzinfo is None:
                    expires = expires.replace(tzinfo=UTC)
            found = access.approve(
                self.home, self.user, rid, reason, days=_int(body, "days"), expires=expires
            )
        elif action == "deny":
            found = access.deny(self.home, self.user, rid, reason)
        else:
            found = access.revoke(self.home, self.user, rid, reason)
        self.write_json(found.to_json())


class IdentityHandler(ServiceHandler):
    """Sign the caller's identity for one federated run (this site is their home)."""

    async def post(self) -> None:
        from insitu.hub.run_identity import issue

        body = self.json_body()
        run_config = body.get("run_config", {})
        if not isinstance(run_config, dict):
            raise InvalidRequestError("run_config must be an object")
        token = issue(self.home, self.user, fab_hash=_str(body, "fab_hash"), run_config=run_config)
        self.write_json({"token": token})


class MeHandler(ServiceHandler):
    async def get(self) -> None:
        self.write_json({"name": self.user, "role": role_of(self.home, self.user)})


class RegisterPage(ServiceHandler):
    browser_login = True

    async def get(self) -> None:
        now = datetime.now(UTC)
        rows = []
        for r in access.register(self.home):
            state = r.state(now)
            decided = r.revoked_by or r.decided_by or ""
            reason = r.revoke_reason or r.decision_reason or ""
            cells = [
                f"#{r.id}", r.user, r.dataset, r.project, r.purpose, r.requested_at, state,
                decided, reason, r.expires_at or "",
            ]  # fmt: skip
            rows.append(
                "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"
            )
        head = "".join(
            f"<th>{h}</th>"
            for h in (
                "id", "user", "dataset", "project", "purpose", "requested", "state", "by",
                "reason", "expires",
            )
        )  # fmt: skip
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(
            "<!doctype html><html><head><meta charset='utf-8'><title>Access register</title>"
            "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}"
            "tr:nth-child(even){background:#f3f3f3}</style></head><body>"
            "<h1>Access register</h1><p>Every request for data at this site and its "
            f"decision, visible to every user. You are {html.escape(self.user)}. "
            "<a href='credit'>Credit: citations and usage</a>.</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            "</body></html>"
        )


def credit_page(home: NodeHome, *, user: str) -> str:
    """The credit page: each dataset version's citation and its usage (public, as the register)."""
    from insitu.hub.credit import usage_report

    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "dataset", "version", "cite as", "researchers", "investigations", "requests",
            "federated runs", "subjects contributed", "approved releases",
        )
    )  # fmt: skip
    rows = []
    for u in usage_report(home):
        version = f"{u.version} (retired {u.retired})" if u.retired else u.version
        cells = [
            u.dataset, version, u.citation, u.unique_researchers,
            f"{u.total_investigations} ({u.unique_investigations} unique)",
            f"{u.total_requests} ({u.unique_requests} unique)", u.federated_runs,
            u.subjects_contributed, u.approved_releases,
        ]  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Credit</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}"
        "tr:nth-child(even){background:#f3f3f3}</style></head><body>"
        "<h1>Credit for the data shared here</h1><p>How to cite each dataset version, and "
        "how it was used (counted COUNTER-style from the audit log: investigations are "
        "reads of any part, requests are reads of images or tables; unique counts are "
        f"researcher-days), visible to every user. You are {html.escape(user)}. "
        "<a href='./'>Access register</a>.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "</body></html>"
    )


class CreditPage(ServiceHandler):
    browser_login = True

    async def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(credit_page(self.home, user=self.user))


class CreditHandler(ServiceHandler):
    async def get(self) -> None:
        from insitu.hub.credit import usage_report

        self.write_json([u.to_json() for u in usage_report(self.home)])


class HealthHandler(web.RequestHandler):
    def get(self) -> None:
        self.finish({"ok": True, "service": NAME})


def make_app(home: NodeHome, prefix: str) -> web.Application:
    routes: list[Any] = [
        (prefix + "health", HealthHandler),
        (prefix + "api/requests", RequestsHandler),
        (prefix + r"api/requests/(\d+)", RequestHandler),
        (prefix + r"api/requests/(\d+)/(approve|deny|revoke)", DecisionHandler),
        (prefix + "api/me", MeHandler),
        (prefix + "api/credit", CreditHandler),
        (prefix + "credit", CreditPage),
        (prefix + "api/federation/identity", IdentityHandler),
        (prefix + "?", RegisterPage),
        *oauth_routes(prefix),
    ]
    return web.Application(routes, **app_settings(home, prefix))


def hub_service(ctx: ServiceContext) -> HubService:
    port = ctx.port()
    return HubService(
        name=NAME,
        command=[sys.executable, "-m", "insitu.hub.access_service"],
        port=port,
        user_environment={"INSITU_ACCESS_URL": f"http://127.0.0.1:{port}/services/{NAME}/"},
        ready_path="health",
        display=True,  # the public register of decisions
    )


if __name__ == "__main__":
    run_service(make_app)
