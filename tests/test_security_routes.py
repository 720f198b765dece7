"""Security review, over HTTP: every route of every insitu hub service refuses what it must.

One real hub (module-scoped ``running_hub``: proxy, gate, access API, airlock,
dask-gateway) for the whole module. The tests run in file order and build on
each other's state (requests, approvals, releases); the last one checks that
every decision, read and release so far is in the audit log under the right
name and that the chain verifies. Every response is checked for leaks: no
file-system path of the node, no token, no stack trace, never a 500.
The findings these tests back are in docs/security-review.md.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import pytest
import requests
from fixtures_hub import publish_tiny_store

from insitu.audit import AuditLog
from insitu.hub import access
from insitu.hub.account_removal import remove_account

pytestmark = pytest.mark.slow

USERS = ("ada", "bob", "sam", "root_admin", "eve")  # eve: a hub user without a site account
CHUNK = "series/s1/0/c/0/0/0"
SPAWN_TIMEOUT = 180


@pytest.fixture(scope="module")
def site(running_hub: Any) -> SimpleNamespace:
    hub = running_hub
    publish_tiny_store(hub.home, "trial-b", seed=1)  # a second dataset nobody is approved for
    tokens = {user: hub.token(user) for user in USERS}
    from insitu.hub.hub_config import operator_token

    return SimpleNamespace(
        hub=hub,
        home=hub.home,
        tokens=tokens,
        secrets=[*tokens.values(), operator_token(hub.home)],
        site_key=hub.home.site_key_path.read_bytes().strip(),
        state={},
    )


def assert_no_leak(site: SimpleNamespace, response: requests.Response) -> None:
    """An answer names no path of the node, no token and no stack trace; never a 500."""
    assert response.status_code < 500, (response.request.method, response.url, response.text)
    body = response.content
    assert str(site.home.root).encode() not in body, response.url
    assert b"Traceback" not in body and b'File "' not in body, response.url
    assert site.site_key not in body, response.url
    for secret in site.secrets:
        assert secret.encode() not in body, response.url
        assert all(secret not in v for v in response.headers.values()), response.url


def call(
    site: SimpleNamespace,
    who: str | None,
    method: str,
    service: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> requests.Response:
    if headers is None:
        headers = {"Authorization": f"token {site.tokens[who]}"} if who else {}
    response = requests.request(
        method,
        f"{site.hub.url}/services/{service}/{path}",
        headers=headers,
        timeout=60,
        allow_redirects=False,
        **kw,
    )
    assert_no_leak(site, response)
    return response


def _content(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# (service, method, path, browser page): every authenticated route of every service.
ROUTES = [
    ("access", "GET", "api/requests", False),
    ("access", "POST", "api/requests", False),
    ("access", "GET", "api/requests/1", False),
    ("access", "POST", "api/requests/1/approve", False),
    ("access", "POST", "api/requests/1/deny", False),
    ("access", "POST", "api/requests/1/revoke", False),
    ("access", "GET", "api/me", False),
    ("access", "POST", "api/federation/identity", False),
    ("access", "GET", "", True),
    ("gate", "GET", "datasets", False),
    ("gate", "GET", "datasets/trial-a", False),
    ("gate", "GET", "stores/trial-a/v1/zarr.json", False),
    ("gate", "HEAD", "stores/trial-a/v1/zarr.json", False),
    ("gate", "GET", "stores/trial-a/latest/" + CHUNK, False),
    ("gate", "GET", "list/trial-a/v1", False),
    ("gate", "POST", "batch/trial-a/v1", False),
    ("airlock", "GET", "api/releases", False),
    ("airlock", "POST", "api/releases", False),
    ("airlock", "GET", "api/releases/1", False),
    ("airlock", "GET", "api/releases/1/preview", False),
    ("airlock", "POST", "api/releases/1/approve", False),
    ("airlock", "POST", "api/releases/1/deny", False),
    ("airlock", "GET", "api/releases/1/download", True),
]


def test_every_route_refuses_missing_malformed_and_foreign_tokens(site):
    ada = site.tokens["ada"]
    from insitu.hub.hub_config import operator_token

    bad_headers = [
        {},
        {"Authorization": "token "},
        {"Authorization": "token not-a-token"},
        {"Authorization": f"token {ada[:-1]}"},  # one character short
        {"Authorization": f"token {ada}x"},
        {"Authorization": "token " + "f" * 10_000},
        {"Authorization": f"Basic {base64.b64encode(b'ada:correct horse battery').decode()}"},
        {"Cookie": f"jupyterhub-session-id={ada}"},
    ]
    for service, method, path, page in ROUTES:
        for headers in bad_headers:
            r = call(site, None, method, service, path, headers=headers, json={})
            if page and method == "GET" and r.status_code == 302:
                # A browser page sends the visitor to the hub's login, nothing else.
                assert "/hub/" in r.headers["Location"] and not r.content
                continue
            assert r.status_code == 401, (service, method, path, headers, r.status_code)
            if method != "HEAD":
                assert r.json()["error"] == "AuthenticationError"
        # A service's token (the operator's) is not a user's: refused, never served.
        r = call(
            site,
            None,
            method,
            service,
            path,
            json={},
            headers={"Authorization": f"token {operator_token(site.home)}"},
        )
        assert r.status_code in (401, 403), (service, path, r.status_code)
    # The dask-gateway API (its own scheme, "jupyterhub <token>") answers hub user tokens
    # with access to it only. dask-gateway answers 500 to a header without a space
    # (its bug, finding S9): refused either way, and nothing leaks.
    gateway = f"{site.hub.url}/services/dask-gateway/api/v1/clusters/"
    for value in (
        "",
        "jupyterhub ",
        "jupyterhub nope",
        f"jupyterhub {ada[:-1]}",
        f"token {ada}",
        f"jupyterhub {operator_token(site.home)}",
        "jupyterhub",
    ):
        r = requests.get(gateway, headers={"Authorization": value} if value else {}, timeout=30)
        assert r.status_code in (401, 403, 500), (value, r.status_code)
        assert str(site.home.root) not in r.text and "Traceback" not in r.text
    r = requests.get(gateway, headers={"Authorization": f"jupyterhub {ada}"}, timeout=30)
    assert r.status_code == 200 and r.json() == {}
    # Health probes are the only unauthenticated routes, and they say nothing.
    for service in ("access", "gate", "airlock"):
        r = call(site, None, "GET", service, "health")
        assert r.status_code == 200 and set(r.json()) == {"ok", "service"}


def test_researchers_are_refused_every_steward_action(site):
    r = call(
        site,
        "ada",
        "POST",
        "access",
        "api/requests",
        json={"dataset": "trial-a", "purpose": "tumour volumes", "project": "P1", "days": 30},
    )
    assert r.status_code == 201, r.text
    rid = site.state["ada_request"] = r.json()["id"]
    for who in ("ada", "bob", "eve"):
        for action in ("approve", "deny", "revoke"):
            r = call(
                site,
                who,
                "POST",
                "access",
                f"api/requests/{rid}/{action}",
                json={"reason": "x", "days": 5},
            )
            assert r.status_code == 403, (who, action, r.text)
    # eve (no site account) cannot even ask.
    r = call(
        site,
        "eve",
        "POST",
        "access",
        "api/requests",
        json={"dataset": "trial-a", "purpose": "p", "project": "P", "days": 3},
    )
    assert r.status_code == 403 and "not a user of this site" in r.json()["message"]
    assert access.get_request(site.home, rid).status == "pending"


def test_a_steward_never_decides_their_own_request(site):
    r = call(
        site,
        "sam",
        "POST",
        "access",
        "api/requests",
        json={"dataset": "trial-b", "purpose": "QA of the ingest", "project": "QA", "days": 3},
    )
    rid = r.json()["id"]
    for action in ("approve", "deny"):
        r = call(
            site, "sam", "POST", "access", f"api/requests/{rid}/{action}", json={"reason": "mine"}
        )
        assert r.status_code == 403 and "their own request" in r.json()["message"]
    # Four eyes: another decider (the admin) may.
    r = call(
        site,
        "root_admin",
        "POST",
        "access",
        f"api/requests/{rid}/deny",
        json={"reason": "use the QA copy"},
    )
    assert r.status_code == 200 and r.json()["state"] == "denied"
    r = call(site, "sam", "GET", "gate", "stores/trial-b/v1/zarr.json")
    assert r.status_code == 403 and "denied" in r.json()["message"]


def test_approval_is_per_user_and_per_dataset(site):
    rid = site.state["ada_request"]
    r = call(
        site,
        "sam",
        "POST",
        "access",
        f"api/requests/{rid}/approve",
        json={"reason": "ok", "days": 5},
    )
    assert r.status_code == 200 and r.json()["state"] == "approved"
    assert call(site, "ada", "GET", "gate", "stores/trial-a/v1/" + CHUNK).status_code == 200
    # Another user's token reads as that user: bob and eve are not approved.
    for who in ("bob", "eve", "sam"):
        r = call(site, who, "GET", "gate", "stores/trial-a/v1/" + CHUNK)
        assert r.status_code == 403, who
    # ada's approval for trial-a is not one for trial-b.
    assert call(site, "ada", "GET", "gate", "stores/trial-b/v1/zarr.json").status_code == 403
    assert call(site, "ada", "GET", "gate", "list/trial-b/v1").status_code == 403


def test_an_unapproved_user_learns_nothing_about_keys(site):
    """403 for a present and an absent key alike: no oracle of what a store holds.
    404 for an unknown dataset is no leak: every logged-in user sees the catalog."""
    present = call(site, "bob", "GET", "gate", "stores/trial-a/v1/" + CHUNK)
    absent = call(site, "bob", "GET", "gate", "stores/trial-a/v1/series/nope/zarr.json")
    assert present.status_code == absent.status_code == 403
    assert present.json()["message"] == absent.json()["message"]
    names = {d["name"] for d in call(site, "bob", "GET", "gate", "datasets").json()}
    assert names == {"trial-a", "trial-b"}
    assert call(site, "bob", "GET", "gate", "stores/nope/v1/zarr.json").status_code == 404
    # The catalog view carries no store path.
    listing = call(site, "bob", "GET", "gate", "datasets/trial-a").text
    assert "stores" not in listing and ".zarr" not in listing


def test_an_expired_approval_is_refused_with_its_date(site):
    """A clock: the approval is granted two days in the past for one day."""
    past = datetime.now(UTC) - timedelta(days=2)
    found = access.request(site.home, "bob", "trial-a", "p", "P", 1, now=past)
    decided = access.approve(site.home, "sam", found.id, "ok", days=1, now=past)
    r = call(site, "bob", "GET", "gate", "stores/trial-a/v1/" + CHUNK)
    assert r.status_code == 403 and "expired" in r.json()["message"]
    assert decided.expires_at in r.json()["message"]
    listing = call(site, "bob", "GET", "gate", "datasets").json()
    assert {d["name"]: d["access"] for d in listing}["trial-a"] == "expired"


def test_revocation_stops_the_very_next_read(site):
    found = access.request(site.home, "bob", "trial-a", "p", "P", 5)
    access.approve(site.home, "root_admin", found.id, "ok")
    with requests.Session() as session:  # one keep-alive connection, as GateStore uses
        session.headers["Authorization"] = f"token {site.tokens['bob']}"
        url = f"{site.hub.url}/services/gate/stores/trial-a/v1/{CHUNK}"
        assert session.get(url, timeout=30).status_code == 200
        r = call(
            site,
            "sam",
            "POST",
            "access",
            f"api/requests/{found.id}/revoke",
            json={"reason": "left the project"},
        )
        assert r.status_code == 200
        refused = session.get(url, timeout=30)
        assert refused.status_code == 403 and "left the project" in refused.json()["message"]


def test_a_removed_account_is_refused_at_the_next_read(site):
    """The admin's kill switch: the hub token outlives the account, the reads do not
    (fixed in this review: findings S2 and S4)."""
    from insitu.hub.accounts import AccountStore

    with AccountStore(site.home) as store:
        store.add("dora", "researcher", None, actor="root_admin")
    found = access.request(site.home, "dora", "trial-a", "p", "P", 5)
    access.approve(site.home, "sam", found.id, "ok")
    token = site.hub.token("dora")
    site.secrets.append(token)
    headers = {"Authorization": f"token {token}"}
    assert call(site, None, "GET", "gate", "stores/trial-a/v1/" + CHUNK, headers=headers).ok
    remove_account(site.home, "dora", actor="root_admin")
    r = call(site, None, "GET", "gate", "stores/trial-a/v1/" + CHUNK, headers=headers)
    assert r.status_code == 403 and "account was removed" in r.json()["message"]


def _raw(
    site: SimpleNamespace, method: str, path: str, token: str, base: str = ""
) -> tuple[int, bytes]:
    """Send the path byte for byte (no client normalisation), to the gate's own port
    unless ``base`` names another server."""
    parsed = urlparse(base or site.hub.service_url("gate"))
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"token {token}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_keys_never_reach_outside_the_store(site):
    """Traversal variants beyond tests/test_gate_http.py: other datasets, the catalog,
    the audit log, the access database, symlinks to a sibling store."""
    token = site.tokens["ada"]
    store = site.home.stores / "trial-a" / "v1.zarr"
    sibling = site.home.stores / "trial-b" / "v1.zarr"
    link = store / "sibling"
    link.symlink_to(sibling)
    catalog_link = store / "series" / "catalog.sqlite"
    catalog_link.symlink_to(site.home.catalog_path)
    try:
        targets = [
            "../../trial-b/v1.zarr/zarr.json",
            "../../../catalog.sqlite",
            "../../../hub/access.sqlite",
            "../../../hub/accounts.sqlite",
            "../../../audit/",
            "..%2f..%2ftrial-b%2fv1.zarr%2fzarr.json",
            "%2e%2e%2f%2e%2e%2f%2e%2e%2fcatalog.sqlite",
            "%252e%252e%252f%252e%252e%252fcatalog.sqlite",
            "%c0%ae%c0%ae/%c0%ae%c0%ae/catalog.sqlite",  # overlong UTF-8 dots
            "..\\..\\..\\catalog.sqlite",
            "series\\..\\..\\..\\..\\private\\site.key",
            "./zarr.json",
            "zarr.json/.",
            "zarr.json%00.png",
            "zarr.json\x00",
            str(site.home.catalog_path),
            "/" + str(site.home.site_key_path),
            "sibling/zarr.json",
            "series/catalog.sqlite",
            "~/.ssh/id_rsa",
            "series/s1/0/c/0/0/0;../../../../catalog.sqlite",
        ]
        sqlite_magic = b"SQLite format 3"
        for key in targets:
            for route in ("stores/trial-a/v1/", "stores/trial-a/latest/"):
                path = "/services/gate/" + route + key.replace("\x00", "%00")
                if "\x00" in key:
                    path = path.replace("%00", "\x00")
                try:
                    status, body = _raw(site, "GET", path, token)
                except (http.client.HTTPException, ValueError, OSError):
                    continue  # the client or the server's parser refused it: fine
                assert status in (400, 404), (key, status, body[:200])
                assert sqlite_magic not in body and site.site_key not in body, key
                assert str(site.home.root).encode() not in body, key
            try:
                status, body = _raw(
                    site, "GET", "/services/gate/list/trial-a/v1?prefix=" + key, token
                )
            except (http.client.HTTPException, ValueError, OSError):
                continue
            if status == 200:
                assert json.loads(body)["keys"] == [], key
            else:
                assert status == 400, (key, status)
        keys = call(site, "ada", "GET", "gate", "list/trial-a/v1").json()["keys"]
        assert not any(k.startswith("sibling") or "catalog" in k for k in keys)
    finally:
        link.unlink()
        catalog_link.unlink()


def test_the_gate_is_read_only(site):
    store = site.home.stores / "trial-a" / "v1.zarr"
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    for method in ("PUT", "POST", "DELETE", "PATCH", "OPTIONS"):
        for path in (
            "stores/trial-a/v1/zarr.json",
            "stores/trial-a/v1/new-key",
            "datasets",
            "datasets/trial-a",
            "list/trial-a/v1",
        ):
            r = call(site, "ada", method, "gate", path, data=b'{"zarr_format": 3}')
            assert r.status_code == 405, (method, path, r.status_code)
    # Methods Tornado does not know at all never reach a handler.
    status, _ = _raw(
        site, "PROPFIND", "/services/gate/stores/trial-a/v1/zarr.json", site.tokens["ada"]
    )
    assert status in (400, 405)
    after = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    assert after == before


GARBAGE = [
    b"not json",
    b"[1, 2, 3]",
    b'"a string"',
    b"null",
    b"{" * 50_000,
    b"[" * 50_000 + b"]" * 50_000,
    b'{"dataset": "trial-a", "purpose": "\xff\xfe", "project": "P", "days": 3}',
]


def test_garbage_bodies_get_400_never_500(site):
    posts = [
        ("access", "api/requests"),
        ("access", f"api/requests/{site.state['ada_request']}/approve"),
        ("airlock", "api/releases"),
        ("airlock", "api/releases/1/approve"),
    ]
    for service, path in posts:
        who = "sam" if "approve" in path else "ada"
        for body in GARBAGE:
            r = call(
                site,
                who,
                "POST",
                service,
                path,
                data=body,
                headers={
                    "Authorization": f"token {site.tokens[who]}",
                    "Content-Type": "application/json",
                },
            )
            assert r.status_code in (400, 404, 409), (service, path, body[:20], r.status_code)
    typed = [
        {"dataset": "trial-a", "purpose": "p", "project": "P", "days": "30"},
        {"dataset": "trial-a", "purpose": "p", "project": "P", "days": True},
        {"dataset": "trial-a", "purpose": "p", "project": "P", "days": 10**40},
        {"dataset": "trial-a", "purpose": "p", "project": "P", "days": -1},
        {"dataset": "trial-a", "purpose": "p" * 2_000_000, "project": "P", "days": 3},
        {"dataset": ["trial-a"], "purpose": "p", "project": "P", "days": 3},
        {"dataset": "trial-a", "purpose": {"$ne": 1}, "project": "P", "days": 3},
        {"dataset": "trial-a", "purpose": " ", "project": "P", "days": 3},
    ]
    for body in typed:
        r = call(site, "ada", "POST", "access", "api/requests", json=body)
        assert r.status_code == 400, (str(body)[:80], r.status_code)
    # Ids too large for SQLite are "no such request", not a server error.
    huge = "9" * 30
    for service, path in (
        ("access", f"api/requests/{huge}"),
        ("airlock", f"api/releases/{huge}"),
        ("airlock", f"api/releases/{huge}/download"),
    ):
        r = call(site, "sam", "GET", service, path)
        assert r.status_code in (400, 404), (service, r.status_code)
    r = call(site, "sam", "POST", "access", f"api/requests/{huge}/revoke", json={"reason": "x"})
    assert r.status_code in (400, 404)
    for bad_range in (
        "bytes=0-" + "9" * 40,
        "bytes=" + "9" * 40 + "-",
        "bytes=-" + "9" * 40,
        "bytes=5-1",
        "bytes=0-1,2-3",
        "items=0-1",
    ):
        r = call(
            site,
            "ada",
            "GET",
            "gate",
            "stores/trial-a/v1/" + CHUNK,
            headers={"Authorization": f"token {site.tokens['ada']}", "Range": bad_range},
        )
        assert r.status_code in (200, 206, 400, 416), (bad_range, r.status_code)


ODD_NAMES = [
    "../private",
    "trial-a/../trial-b",
    "..",
    ".hidden",
    "trial-a\r\nX-Injected: 1",
    "trial-a\x00",
    "tr\u00efal",
    "trial-a;DROP TABLE requests",
    "a" * 300,
    "",
    "private",
    "catalog.sqlite",
]


def test_odd_dataset_names_are_refused_everywhere(site):
    for name in ODD_NAMES:
        r = call(
            site,
            "ada",
            "POST",
            "access",
            "api/requests",
            json={"dataset": name, "purpose": "p", "project": "P", "days": 3},
        )
        assert r.status_code in (400, 404), (name, r.status_code)
        assert "X-Injected" not in r.headers
    datasets = {r.dataset for r in access.register(site.home)}
    assert datasets <= {"trial-a", "trial-b"}
    for name in ("..", "%2e%2e", "private", "trial-a%2f..%2ftrial-b", "trial-a%00", "%0d%0aX"):
        status, body = _raw(site, "GET", f"/services/gate/datasets/{name}", site.tokens["ada"])
        assert status in (400, 404), (name, status)
        assert b"X-Injected" not in body


def test_release_routes_keep_researchers_to_their_own(site):
    r = call(
        site,
        "ada",
        "POST",
        "airlock",
        "api/releases",
        json={
            "filename": 'counts"\r\nSet-Cookie: x=1;../../../etc/passwd.csv',
            "purpose": "per-arm counts",
            "content": _content("arm,n\nA,30\nB,31\n"),
        },
    )
    assert r.status_code == 201, r.text
    mine = r.json()
    assert "/" not in mine["filename"] and "\r" not in mine["filename"]
    # A hub login without a site account releases nothing (S6, fixed in 9bd03b7).
    r = call(
        site,
        "eve",
        "POST",
        "airlock",
        "api/releases",
        json={"filename": "a.csv", "purpose": "x", "content": _content("arm,n\nA,30\n")},
    )
    assert r.status_code == 403
    site.state["ada_release"] = rid = mine["id"]
    # Before approval: not downloadable, not even by its owner.
    assert call(site, "ada", "GET", "airlock", f"api/releases/{rid}/download").status_code == 409
    for who in ("bob", "eve"):
        assert call(site, who, "GET", "airlock", f"api/releases/{rid}").status_code == 404
        assert call(site, who, "GET", "airlock", "api/releases?all=1").status_code == 403
        assert call(site, who, "GET", "airlock", f"api/releases/{rid}/preview").status_code == 403
        for action in ("approve", "deny"):
            r = call(
                site,
                who,
                "POST",
                "airlock",
                f"api/releases/{rid}/{action}",
                json={"reason": "x", "override": "y"},
            )
            assert r.status_code == 403, (who, action)
        listing = call(site, who, "GET", "airlock", "api/releases").json()
        assert rid not in [x["id"] for x in listing]
    # ada cannot decide her own request either.
    r = call(site, "ada", "POST", "airlock", f"api/releases/{rid}/approve", json={"reason": "x"})
    assert r.status_code == 403
    r = call(site, "sam", "POST", "airlock", f"api/releases/{rid}/approve", json={"reason": "ok"})
    assert r.status_code == 200, r.text
    # Approved: only ada downloads it, not bob, not the steward who approved it.
    for who in ("bob", "sam", "root_admin", "eve"):
        r = call(site, who, "GET", "airlock", f"api/releases/{rid}/download")
        assert r.status_code == 404, (who, r.status_code)
        r = call(site, who, "GET", "airlock", f"api/releases/{rid}/bundle")  # with citations
        assert r.status_code == 404, (who, r.status_code)
    for who in ("bob", "eve"):  # what to cite: the owner's, or a steward's business
        assert call(site, who, "GET", "airlock", f"api/releases/{rid}/citations").status_code == 404
    assert call(site, "sam", "GET", "airlock", f"api/releases/{rid}/citations").status_code == 200
    bundle = call(site, "ada", "GET", "airlock", f"api/releases/{rid}/bundle")
    assert bundle.status_code == 200 and bundle.content[:2] == b"PK"
    assert bundle.headers["X-Insitu-Sha256"]
    got = call(site, "ada", "GET", "airlock", f"api/releases/{rid}/download")
    assert got.status_code == 200 and got.content == b"arm,n\nA,30\nB,31\n"
    disposition = got.headers["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition and "Set-Cookie" not in got.headers
    assert disposition.count('"') == 2


def test_a_steward_never_approves_their_own_release(site):
    r = call(
        site,
        "sam",
        "POST",
        "airlock",
        "api/releases",
        json={"filename": "qa.csv", "purpose": "QA", "content": _content("arm,n\nA,30\n")},
    )
    rid = r.json()["id"]
    r = call(
        site,
        "sam",
        "POST",
        "airlock",
        f"api/releases/{rid}/approve",
        json={"reason": "mine", "override": "mine"},
    )
    assert r.status_code == 403 and "another steward" in r.json()["message"]
    r = call(
        site,
        "root_admin",
        "POST",
        "airlock",
        f"api/releases/{rid}/deny",
        json={"reason": "not needed"},
    )
    assert r.status_code == 200 and r.json()["state"] == "denied"
    assert call(site, "sam", "GET", "airlock", f"api/releases/{rid}/download").status_code == 409


def test_two_person_review_over_rest(site):
    """[policy] two_person_review through the airlock service, as stewards use it (issue 12):
    the first approval keeps the request submitted, the same steward cannot approve
    twice, the submitter never approves her own, a second steward releases it."""
    import dataclasses

    from insitu.config import load_config
    from insitu.hub.accounts import AccountStore

    with AccountStore(site.home) as store:  # a second steward (sam is the first)
        store.add("ann", "steward", "correct horse battery", actor="tests")
    site.tokens["ann"] = site.hub.token("ann")
    site.secrets.append(site.tokens["ann"])
    config = load_config(site.home)
    policy = dataclasses.replace(config.policy, two_person_review=True)
    site.home.config_path.write_text(dataclasses.replace(config, policy=policy).to_toml())
    try:
        r = call(site, "bob", "POST", "airlock", "api/releases", json={
            "filename": "arms.csv", "purpose": "per-arm counts",
            "content": _content("arm,n\nA,40\nB,41\n")})  # fmt: skip
        assert r.status_code == 201, r.text
        rid = r.json()["id"]

        def approve(who: str) -> requests.Response:
            return call(site, who, "POST", "airlock", f"api/releases/{rid}/approve",
                        json={"reason": f"{who}: aggregates only"})  # fmt: skip

        first = approve("sam")
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["state"] == "submitted" and body["first_approved_by"] == "sam"
        assert body["awaiting"] == "a second, different steward's approval"
        listed = call(site, "ann", "GET", "airlock", "api/releases?all=1").json()
        assert [x["first_approved_by"] for x in listed if x["id"] == rid] == ["sam"]
        assert (
            call(site, "bob", "GET", "airlock", f"api/releases/{rid}/download").status_code == 409
        )
        # The same steward twice: refused with one line, audited.
        again = approve("sam")
        assert again.status_code == 403, again.text
        message = again.json()["message"]
        assert "sam already approved release request" in message and "second, different" in message
        assert "\n" not in message
        # The submitter, made a steward meanwhile, still never approves her own.
        with AccountStore(site.home) as store:
            store.set_role("bob", "steward", actor="tests")
        try:
            own = approve("bob")
        finally:
            with AccountStore(site.home) as store:
                store.set_role("bob", "researcher", actor="tests")
        assert own.status_code == 403 and "another steward must decide" in own.json()["message"]
        assert "\n" not in own.json()["message"]
        assert call(site, "bob", "GET", "airlock", f"api/releases/{rid}").json()["state"] == (
            "submitted"
        )
        # A second, different steward releases it.
        second = approve("ann")
        assert second.status_code == 200, second.text
        assert second.json()["state"] == "approved" and second.json()["decided_by"] == "sam+ann"
        got = call(site, "bob", "GET", "airlock", f"api/releases/{rid}/download")
        assert got.status_code == 200 and got.content == b"arm,n\nA,40\nB,41\n"
        entries = [e for e in AuditLog(site.home).query(kind="release")
                   if e["details"].get("request") == rid]  # fmt: skip
        decisions = [(e["kind"], e["user"]) for e in entries if e["kind"] != "release.download"]
        assert decisions == [
            ("release.submit", "bob"),
            ("release.approve_first", "sam"),
            ("release.approve_refused", "sam"),
            ("release.approve_refused", "bob"),
            ("release.approve", "ann"),
        ]
        refused = [e["details"] for e in entries if e["kind"] == "release.approve_refused"]
        assert "already approved" in refused[0]["reason"]
        assert "another steward" in refused[1]["reason"]
    finally:
        site.home.config_path.write_text(config.to_toml())


def test_the_register_shows_decisions_and_nothing_else(site):
    rows = call(site, "bob", "GET", "access", "api/requests").json()
    assert rows, "the register is empty"
    allowed = {
        "id",
        "user",
        "dataset",
        "purpose",
        "project",
        "days",
        "requested_at",
        "status",
        "state",
        "decided_by",
        "decided_at",
        "decision_reason",
        "expires_at",
        "revoked_by",
        "revoked_at",
        "revoke_reason",
    }
    for row in rows:
        assert set(row) == allowed
    # What a user types is shown to every other user: escaped, never markup.
    access.request(site.home, "bob", "trial-b", "<script>alert(1)</script>", "<b>P</b>", 3)
    page = call(site, "bob", "GET", "access", "")
    assert page.status_code == 200 and "tumour volumes" in page.text
    assert "<script>alert" not in page.text and "&lt;script&gt;alert(1)" in page.text
    assert "<b>P</b>" not in page.text
    me = call(site, "bob", "GET", "access", "api/me").json()
    assert me == {"name": "bob", "role": "researcher"}


def _server_process(site: SimpleNamespace, user: str) -> int:
    """The pid of ``user``'s single-user server of this hub (found through /proc)."""
    plan = json.loads((site.home.run / "services.json").read_text())
    marker = f"127.0.0.1:{plan['hub_api_port']}".encode()
    me = os.getuid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if proc.stat().st_uid != me:
                continue
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        command = (proc / "cmdline").read_bytes()
        if (
            f"JUPYTERHUB_USER={user}".encode() in env
            and any(marker in v for v in env)
            and b"jupyterhub-singleuser" in command
        ):
            return int(proc.name)
    raise AssertionError(f"no server process of {user}")


def test_the_enclave_server(site):
    """ada's spawned server: no path to data in its environment, no download routes,
    and nobody else's token opens it."""
    hub = site.hub
    hub.api("POST", "/users/ada/server")
    deadline = time.monotonic() + SPAWN_TIMEOUT
    while not hub.api("GET", "/users/ada")["servers"].get("", {}).get("ready"):
        assert time.monotonic() < deadline, "ada's server did not start"
        time.sleep(0.5)  # polling interval
    try:
        pid = _server_process(site, "ada")
        env = dict(
            item.split("=", 1)
            for item in (Path(f"/proc/{pid}/environ").read_text().split("\0"))
            if "=" in item
        )
        assert "INSITU_HOME" not in env
        for name, value in env.items():
            assert str(site.home.stores) not in value, name
            assert str(site.home.private) not in value, name
        assert env["INSITU_USER"] == "ada"
        assert env["INSITU_GATE_URL"].startswith("http://127.0.0.1:")
        # Documented limitation of the embedded spawner (docs/security-review.md, S1):
        # the server runs as the node's account in a folder inside the node home.
        assert Path(f"/proc/{pid}").stat().st_uid == os.getuid()
        base = f"{hub.url}/user/ada/"
        ada = {"Authorization": f"token {site.tokens['ada']}"}
        for path in (
            "files/x.csv?download=1",
            "nbconvert/html/x.ipynb?download=true",
            "view/x.csv",
            "api/contents/x.png?format=base64&type=file",
        ):
            r = requests.get(base + path, headers=ada, timeout=30, allow_redirects=False)
            assert r.status_code in (403, 404), (path, r.status_code)
            assert r.status_code == 403 or path.startswith("api/contents"), path
        r = requests.post(base + "api/terminals", headers=ada, timeout=30)
        assert r.status_code in (403, 404)
        # The contents API stays inside the server's folder (paths sent byte for byte).
        for path in (
            "api/contents/..",
            "api/contents/../../../private",
            "api/contents/%2e%2e%2f%2e%2e%2f%2e%2e%2fprivate%2fsite.key",
        ):
            status, body = _raw(site, "GET", "/user/ada/" + path, site.tokens["ada"], hub.url)
            # Tornado answers plain '..' segments with a redirect to the normalised URL;
            # encoded ones reach the contents manager, which refuses them.
            assert status in (301, 302, 400, 403, 404), (path, status)
            assert site.site_key not in body  # the message may echo the path asked for
        # The server's own token (what its kernels hold) is ada's and only hers.
        server_token = env["JUPYTERHUB_API_TOKEN"]
        site.secrets.append(server_token)
        hub_api = f"{hub.url}/hub/api"
        as_server = {"Authorization": f"token {server_token}"}
        assert (
            requests.get(f"{hub_api}/user", headers=as_server, timeout=30).json()["name"] == "ada"
        )
        for path in ("/users", "/users/bob", "/users/bob/tokens", "/services"):
            r = requests.get(hub_api + path, headers=as_server, timeout=30)
            assert r.status_code in (403, 404), (path, r.status_code)
        r = requests.post(f"{hub_api}/users/ada/tokens", headers=as_server, timeout=30, json={})
        assert r.status_code == 403  # no minting of wider tokens from a kernel
        gate = call(site, None, "GET", "gate", "stores/trial-a/v1/zarr.json", headers=as_server)
        assert gate.status_code == 200  # ada's approval, as ada
        for who in ("bob", "sam", "eve"):
            other = {"Authorization": f"token {site.tokens[who]}"}
            r = requests.get(
                base + "api/contents", headers=other, timeout=30, allow_redirects=False
            )
            assert r.status_code in (302, 403, 404), (who, r.status_code)
            assert "content" not in r.text
    finally:
        hub.api("DELETE", "/users/ada/server")


def _audit_until(home: Any, predicate: Any, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        entries = list(AuditLog(home).entries())
        if predicate(entries) or time.monotonic() > deadline:
            return entries
        time.sleep(0.2)  # the gate flushes its ledger every 0.3 s in tests


def test_every_read_decision_and_release_is_audited_by_name(site, monkeypatch, capsys):
    def has(entries, kind, user, **details):
        return any(
            e["kind"] == kind
            and e.get("user") == user
            and all(e.get(k, e["details"].get(k)) == v for k, v in details.items())
            for e in entries
        )

    rid = site.state["ada_request"]
    release = site.state["ada_release"]
    expected = [
        ("access.request", "ada", {"dataset": "trial-a", "request": rid}),
        ("access.approve", "sam", {"dataset": "trial-a", "request": rid, "for_user": "ada"}),
        ("access.deny", "root_admin", {"dataset": "trial-b", "for_user": "sam"}),
        ("access.revoke", "sam", {"dataset": "trial-a", "for_user": "bob"}),
        ("read", "ada", {"dataset": "trial-a", "series": "s1"}),
        ("read", "bob", {"dataset": "trial-a", "series": "s1"}),
        ("read.denied", "bob", {"dataset": "trial-a", "reason": "none"}),
        ("read.denied", "bob", {"dataset": "trial-a", "reason": "expired"}),
        ("read.denied", "bob", {"dataset": "trial-a", "reason": "revoked"}),
        ("read.denied", "ada", {"dataset": "trial-b"}),
        ("read.denied", "sam", {"dataset": "trial-b", "reason": "denied"}),
        ("read.denied", "dora", {"dataset": "trial-a", "reason": "revoked"}),
        ("user", "root_admin", {"action": "remove", "account": "dora"}),
        ("access.revoke", "root_admin", {"for_user": "dora", "reason": "the account was removed"}),
        ("release.submit", "ada", {"request": release}),
        ("release.approve", "sam", {"request": release, "researcher": "ada"}),
        ("release.download", "ada", {"request": release, "refused": True}),
        ("release.download", "ada", {"request": release, "sha256": None}),
        ("release.deny", "root_admin", {"researcher": "sam"}),
    ]

    def complete(entries):
        return all(
            has(entries, k, u, **{x: y for x, y in d.items() if y is not None})
            for k, u, d in expected
        )

    entries = _audit_until(site.home, complete)
    missing = [
        (k, u, d)
        for k, u, d in expected
        if not has(entries, k, u, **{x: y for x, y in d.items() if y is not None})
    ]
    assert not missing, missing
    # No entry carries a token or the site key.
    text = b"".join(p.read_bytes() for p in sorted(site.home.audit.rglob("*")) if p.is_file())
    for secret in site.secrets:
        assert secret.encode() not in text
    from insitu.cli import main

    monkeypatch.setenv("INSITU_HOME", str(site.home.root))
    monkeypatch.delenv("INSITU_USER", raising=False)
    assert main(["audit", "verify"]) == 0
    assert "audit chain intact" in capsys.readouterr().out
