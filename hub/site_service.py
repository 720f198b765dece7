"""The site's landing page: where a researcher or a steward arrives after logging in.

Routes under ``/services/site/``:

    GET   ""        the landing page (hub login): the site, my datasets and my access,
                    my access requests, my releases (download the approved ones), and,
                    for stewards and admins, the requests and releases waiting for them
    GET   health    unauthenticated liveness

The hub sends every user here after login (``JupyterHub.default_url``); the
hub's own home page links back. The page only reads, through the same plain
functions as the CLI (:mod:`insitu.hub.access`, :mod:`insitu.hub.airlock`,
:mod:`insitu.hub.stores`); decisions are taken in the steward panel, whose
calls the access and airlock services check.
"""

from __future__ import annotations

import html
import os
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from tornado import web

from insitu.config import NodeHome, load_config
from insitu.datasets.listing import published_datasets
from insitu.hub import access
from insitu.hub.accounts import role_of
from insitu.hub.airlock import Airlock
from insitu.hub.service_app import ServiceHandler, app_settings, oauth_routes, run_service
from insitu.hub.services import HubService, ServiceContext

__all__ = ["hub_service", "make_app", "page"]

NAME = "site"
STEWARD_NOTEBOOK = "06-steward-review.ipynb"
_BADGES = {
    "approved": "#1a7f37", "released": "#1a7f37", "pass": "#1a7f37",
    "pending": "#9a6700", "submitted": "#9a6700", "review": "#9a6700",
    "denied": "#cf222e", "expired": "#cf222e", "revoked": "#cf222e", "fail": "#cf222e",
}  # fmt: skip

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;
 background:#f6f8fa}
header{background:#0b3d5c;color:white;padding:14px 28px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;opacity:.85}
main{max-width:1100px;margin:0 auto;padding:8px 28px 40px}
section{background:white;border:1px solid #d0d7de;border-radius:8px;padding:6px 18px 14px;
 margin:16px 0}
h2{font-size:17px;margin:10px 0} table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:5px 8px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{font-size:13px;color:#57606a;font-weight:600}
.badge{color:white;border-radius:4px;padding:1px 7px;font-size:13px;white-space:nowrap}
.button{display:inline-block;background:#1f6feb;color:white;border-radius:6px;
 padding:7px 14px;text-decoration:none;margin:6px 8px 0 0}
.button.secondary{background:#6e7781} .muted{color:#57606a}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _badge(state: str) -> str:
    colour = _BADGES.get(state, "#57606a")
    label = "no access" if state == "none" else state
    return f"<span class='badge' style='background:{colour}'>{_e(label)}</span>"


def _lab(base_url: str, user: str, notebook: str = "") -> str:
    """A link into the user's JupyterLab that starts their server first when it is not
    running (the hub's spawn page, then on to the lab), instead of a "not running" page."""
    target = f"{base_url}user/{quote(user)}/lab" + (f"/tree/{quote(notebook)}" if notebook else "")
    return _e(f"{base_url}hub/spawn/{quote(user)}?next={quote(target, safe='')}")


def _table(head: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f"<p class='muted'>{empty}</p>"
    cells = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (
        "<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead>"
        f"<tbody>{cells}</tbody></table>"
    )


def page(home: NodeHome, user: str, base_url: str = "/") -> str:
    """The landing page of ``user`` (HTML)."""
    config = load_config(home)
    role = role_of(home, user) or "researcher"
    now = datetime.now(UTC)
    lab = _lab(base_url, user)
    datasets = []
    for row in published_datasets(home):
        state, _found = access.status_for(home, user, row["name"])
        datasets.append(
            [
                f"<b>{_e(row['name'])}</b><br><span class='muted'>{_e(row['title'])}</span>",
                _e(row.get("newest")),
                _e(row.get("subjects")),
                _e(row.get("series")),
                _badge(state),
                f"<span class='muted'>{_e(row.get('citation'))}</span>",
            ]
        )
    mine = [
        [f"#{r.id}", _e(r.dataset), _e(r.purpose), _badge(r.state(now)),
         _e(r.decision_reason or r.revoke_reason or ""), _e((r.expires_at or "")[:10])]
        for r in access.register(home, user=user)
    ]  # fmt: skip
    with Airlock(home) as airlock:
        releases = airlock.list(user=user)
        waiting = airlock.list(state="submitted") if role in ("steward", "admin") else []
    my_releases = []
    for r in releases:
        link = (
            f"<a href='{base_url}services/airlock/api/releases/{r.id}/download'>download</a>"
            if r.state in ("approved", "released")
            else ""
        )
        my_releases.append(
            [
                f"#{r.id}",
                f"<code>{_e(r.filename)}</code>",
                _e(r.purpose),
                _badge(r.status),
                _badge(r.state),
                _e(r.reason or ""),
                link,
            ]
        )
    parts = [
        f"<section><h2>Welcome, {_e(user)}</h2><p>You are a <b>{_e(role)}</b> at this site. "
        "The images stay here: you work on them in your notebook server, through the "
        "site's gate; results leave through the airlock after a steward's review.</p>"
        f"<a class='button' href='{lab}'>Open JupyterLab</a>"
        f"<a class='button secondary' href='{base_url}hub/home'>Hub control panel</a>"
        f"<a class='button secondary' href='{base_url}services/access/'>Access register</a>"
        "</section>",
        "<section><h2>Datasets</h2>"
        + _table(
            ["dataset", "version", "subjects", "series", "my access", "citation"],
            datasets,
            "No datasets are published at this site yet.",
        )
        + "<p class='muted'>Ask for access in the dataset browser (notebook "
        "<code>01-explore-a-dataset</code>) or with <code>insitu.request_access(...)</code>."
        "</p></section>",
        "<section><h2>My access requests</h2>"
        + _table(
            ["", "dataset", "purpose", "state", "steward's reason", "expires"],
            mine,
            "You have not asked for access yet.",
        )
        + "</section>",
        "<section><h2>My releases</h2>"
        + _table(
            ["", "file", "purpose", "checks", "state", "steward's reason", ""],
            my_releases,
            "Nothing submitted yet: <code>insitu.release(obj, purpose=...)"
            "</code> in a notebook sends a result to the airlock.",
        )
        + "</section>",
    ]
    if role in ("steward", "admin"):
        pending = [
            [f"#{r.id}", _e(r.user), _e(r.dataset), _e(r.purpose), _e(r.days),
             _e(r.requested_at[:16])]
            for r in access.register(home) if r.state(now) == "pending"
        ]  # fmt: skip
        review = [
            [f"#{r.id}", _e(r.user), f"<code>{_e(r.filename)}</code>", _e(r.purpose),
             _badge(r.status)]
            for r in waiting
        ]  # fmt: skip
        parts.append(
            f"<section><h2>Waiting for a steward ({len(pending) + len(review)})</h2>"
            "<h3 style='font-size:15px'>Access requests</h3>"
            + _table(
                ["", "researcher", "dataset", "purpose", "days", "asked"],
                pending,
                "No access request is waiting.",
            )
            + "<h3 style='font-size:15px'>Releases</h3>"
            + _table(
                ["", "researcher", "file", "purpose", "checks"],
                review,
                "No release is waiting for review.",
            )
            + f"<a class='button' href='{_lab(base_url, user, STEWARD_NOTEBOOK)}'>Review in "
            "the steward panel</a></section>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{_e(config.site.title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{_e(config.site.title)}</h1><p>insitu site <code>{_e(config.site.name)}"
        f"</code> · signed in as {_e(user)} · <a style='color:white' "
        f"href='{base_url}hub/logout'>log out</a></p></header>"
        f"<main>{''.join(parts)}</main></body></html>"
    )


class LandingPage(ServiceHandler):
    browser_login = True

    async def get(self) -> None:
        base = os.environ.get("JUPYTERHUB_BASE_URL", "/")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page(self.home, self.user, base))


class HealthHandler(web.RequestHandler):
    def get(self) -> None:
        self.finish({"ok": True, "service": NAME})


def make_app(home: NodeHome, prefix: str) -> web.Application:
    routes: list[Any] = [
        (prefix + "health", HealthHandler),
        (prefix + "?", LandingPage),
        *oauth_routes(prefix),
    ]
    return web.Application(routes, **app_settings(home, prefix))


def hub_service(ctx: ServiceContext) -> HubService:
    return HubService(
        name=NAME,
        command=[sys.executable, "-m", "insitu.hub.site_service"],
        port=ctx.port(),
        ready_path="health",
        display=True,
    )


if __name__ == "__main__":
    run_service(make_app)
