"""The data gate and the access API over HTTP, behind a real hub and proxy.

One hub for the whole module (module-scoped ``running_hub``); tests run in
file order and share its state, so each test names the state it needs.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from urllib.parse import urlparse

import numpy as np
import pytest
import requests
from fixtures_hub import PASSWORD

from insitu.audit import AuditLog
from insitu.errors import AccessDeniedError, AuthenticationError, DatasetNotFoundError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hub(running_hub):
    return running_hub


def _h(token):
    return {"Authorization": f"token {token}"}


def _access(hub, user, method, path, body=None):
    url = hub.url + "/services/access/api/" + path
    return requests.request(method, url, json=body, headers=_h(hub.token(user)), timeout=30)


def _gate(hub, user, path, headers=None, timeout=30):
    headers = headers or _h(hub.token(user))
    return requests.get(hub.url + "/services/gate/" + path, headers=headers, timeout=timeout)


def _file(hub, key):
    return (hub.home.stores / "trial-a" / "v1.zarr" / key).read_bytes()


CHUNK = "series/s1/0/c/0/0/0"


def test_tokens_are_required_and_checked(hub):
    url = hub.url + "/services/gate/stores/trial-a/v1/zarr.json"
    for headers in (
        {},
        {"Authorization": "token not-a-real-token"},
        {"Authorization": "token "},
        {"Authorization": "token " + "a" * 5000},
        {"Authorization": "Basic YWRhOnBhc3N3b3Jk"},
        {"Authorization": "token ada"},
    ):
        r = requests.get(url, headers=headers, timeout=30, allow_redirects=False)
        assert r.status_code == 401, (headers, r.text)
        assert "token" in r.json()["message"]
    # Control characters never reach the gate: the HTTP parser refuses them.
    r = requests.get(url, headers={"Authorization": "Bearer \x00\x01"}, timeout=30)
    assert r.status_code in (400, 401)
    r = requests.get(hub.url + "/services/access/api/requests", timeout=30)
    assert r.status_code == 401


def test_unknown_dataset_404_and_no_approval_403(hub):
    r = _gate(hub, "ada", "stores/nope/v1/zarr.json", timeout=30)
    assert r.status_code == 404
    assert "no dataset 'nope'" in r.json()["message"]
    r = _gate(hub, "ada", "stores/trial-a/v9/zarr.json", timeout=30)
    assert r.status_code == 404 and "versions: v1" in r.json()["message"]
    r = _gate(hub, "ada", "stores/trial-a/v1/zarr.json", timeout=30)
    assert r.status_code == 403
    assert "request_access('trial-a'" in r.json()["message"]
    listing = _gate(hub, "ada", "datasets", timeout=30).json()
    assert [(d["name"], d["access"]) for d in listing] == [("trial-a", "none")]


def test_request_approve_read_revoke(hub):
    body = {"dataset": "trial-a", "purpose": "tumour volumes", "project": "P1", "days": 30}
    r = _access(hub, "ada", "POST", "requests", body)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    r = _gate(hub, "ada", "stores/trial-a/latest/zarr.json", timeout=30)
    assert r.status_code == 403 and "awaits a steward" in r.json()["message"]
    # Researchers are refused every steward action at the REST API.
    for action in ("approve", "deny", "revoke"):
        for user in ("ada", "bob"):
            r = _access(hub, user, "POST", f"requests/{rid}/{action}", {"reason": "x"})
            assert r.status_code == 403, (user, action, r.text)
            assert "researcher" in r.json()["message"]
    r = _access(hub, "sam", "POST", f"requests/{rid}/approve", {"reason": "ok", "days": 5})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "approved"
    r = _gate(hub, "ada", "stores/trial-a/latest/zarr.json", timeout=30)
    assert r.status_code == 200 and r.headers["X-Insitu-Version"] == "v1"
    assert r.content == _file(hub, "zarr.json")
    r = _gate(hub, "ada", "stores/trial-a/v1/" + CHUNK, timeout=30)
    assert r.content == _file(hub, CHUNK)
    # bob was never approved: still refused.
    assert _gate(hub, "bob", "stores/trial-a/v1/" + CHUNK, timeout=30).status_code == 403
    # The register is public to every logged-in user.
    reg = _access(hub, "bob", "GET", "requests").json()
    assert [(x["user"], x["state"]) for x in reg] == [("ada", "approved")]
    page = requests.get(hub.url + "/services/access/", headers=_h(hub.token("bob")), timeout=30)
    assert page.status_code == 200 and "Access register" in page.text and "ada" in page.text
    # Revocation stops the very next read.
    r = _access(hub, "sam", "POST", f"requests/{rid}/revoke", {"reason": "study closed"})
    assert r.status_code == 200
    r = _gate(hub, "ada", "stores/trial-a/v1/" + CHUNK, timeout=30)
    assert r.status_code == 403 and "revoked" in r.json()["message"]
    assert "study closed" in r.json()["message"]


def _approve(hub, user):
    r = _access(hub, user, "POST", "requests", {
        "dataset": "trial-a", "purpose": "p", "project": "P", "days": 30})  # fmt: skip
    rid = r.json()["id"]
    r = _access(hub, "sam", "POST", f"requests/{rid}/approve", {"reason": "ok"})
    assert r.status_code == 200, r.text
    return rid


def _raw_get(base_url, path, token):
    """Send the path byte for byte (no client-side normalisation of '..')."""
    parsed = urlparse(base_url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"token {token}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_paths_cannot_escape_the_store(hub):
    _approve(hub, "ada")
    token = hub.token("ada")
    store = hub.home.stores / "trial-a" / "v1.zarr"
    secret = hub.home.site_key_path.read_bytes()
    outside = hub.home.root / "outside.txt"
    outside.write_text("outside the store")
    links = {
        store / "series" / "s1" / "key-link": hub.home.site_key_path,
        store / "private-link": hub.home.private,
        store / "outside-link": outside,
    }
    for link, target in links.items():
        link.symlink_to(target)
    try:
        _check_attacks(hub, token, secret)
    finally:
        for link in links:
            link.unlink()


def _check_attacks(hub, token, secret):
    base = "/services/gate/stores/trial-a/v1/"
    attacks = [
        "../../../private/site.key",
        "series/../../../private/site.key",
        "%2e%2e/%2e%2e/%2e%2e/private/site.key",
        "%2E%2E%2F%2E%2E%2F%2E%2E%2Fprivate%2Fsite.key",
        "%252e%252e/%252e%252e/private/site.key",
        "..%2f..%2f..%2fprivate%2fsite.key",
        "/private/site.key",
        "%2Fetc%2Fpasswd",
        "series/s1/key-link",
        "private-link/site.key",
        "outside-link",
        "series%5c..%5c..%5cprivate%5csite.key",
        "zarr.json%00",
        "series//s1/zarr.json",
        "series/s1/",
    ]
    gate_port_base = hub.service_url("gate")
    for attack in attacks:
        for via in (hub.url, gate_port_base.split("/services/")[0]):
            status, body = _raw_get(via, base + attack, token)
            assert status in (400, 404), (attack, via, status, body[:200])
            assert secret.strip() not in body and b"outside the store" not in body, attack
            assert str(hub.home.root).encode() not in body, attack
    # The dataset and version segments are checked too.
    for bad in ("..", "%2e%2e", "trial-a%2f..", "private"):
        status, _ = _raw_get(hub.url, f"/services/gate/stores/{bad}/v1/zarr.json", token)
        assert status in (400, 404), bad
        status, _ = _raw_get(hub.url, f"/services/gate/stores/trial-a/{bad}/zarr.json", token)
        assert status in (400, 404), bad
    # A symlink that stays inside the store is fine; listing never follows links.
    listing = _gate(hub, "ada", "list/trial-a/v1", timeout=30).json()["keys"]
    assert "zarr.json" in listing and not any("link" in k for k in listing)


def test_range_requests(hub):
    data = _file(hub, CHUNK)
    for header, expected in (
        ("bytes=0-9", data[:10]),
        ("bytes=5-", data[5:]),
        ("bytes=-7", data[-7:]),
    ):
        r = _gate(hub, "ada", "stores/trial-a/v1/" + CHUNK, headers={
            **_h(hub.token("ada")), "Range": header}, timeout=30)  # fmt: skip
        assert r.status_code == 206 and r.content == expected, header
    r = _gate(hub, "ada", "stores/trial-a/v1/" + CHUNK, headers={
        **_h(hub.token("ada")), "Range": "lines=1-2"}, timeout=30)  # fmt: skip
    assert r.status_code == 400


def test_gatestore_reads_what_localstore_reads(hub):
    import zarr

    from insitu.kernels.gate_store import GateStore

    gate_url = hub.service_url("gate")
    store = GateStore("trial-a", url=gate_url, token=hub.token("ada"))
    assert store.version == "v1"
    local = zarr.storage.LocalStore(hub.home.stores / "trial-a" / "v1.zarr", read_only=True)
    remote_root = zarr.open_group(store, mode="r", zarr_format=3)
    local_root = zarr.open_group(local, mode="r", zarr_format=3)
    assert dict(remote_root.attrs) == dict(local_root.attrs)
    assert sorted(remote_root["series"].group_keys()) == ["s1", "s2"]
    for sid in ("s1", "s2"):
        np.testing.assert_array_equal(
            remote_root[f"series/{sid}/0"][...], local_root[f"series/{sid}/0"][...]
        )

    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    proto = default_buffer_prototype()

    async def both(method, *args):
        a = await getattr(store, method)(*args)
        b = await getattr(local, method)(*args)
        return a, b

    for rng in (None, RangeByteRequest(2, 9), OffsetByteRequest(3), SuffixByteRequest(4)):
        a, b = sync(both("get", CHUNK, proto, rng))
        assert a.to_bytes() == b.to_bytes(), rng
    a, b = sync(both("get", "series/s1/0/c/9/9/9", proto))
    assert a is None and b is None
    assert sync(store.exists(CHUNK)) and not sync(store.exists("nope/zarr.json"))

    async def collect(gen):
        return sorted([k async for k in gen])

    assert sync(collect(store.list())) == sync(collect(local.list()))
    assert sync(collect(store.list_dir("series"))) == sync(collect(local.list_dir("series")))
    assert sync(collect(store.list_prefix("series/s2"))) == sync(
        collect(local.list_prefix("series/s2"))
    )
    with pytest.raises(ValueError, match="read-only"):
        sync(store.set("x", proto.buffer.from_bytes(b"1")))
    assert "token" not in repr(store)


def test_gatestore_errors_carry_the_gate_reason(hub):
    from insitu.kernels.gate_store import GateStore

    gate_url = hub.service_url("gate")
    with pytest.raises(DatasetNotFoundError, match="no dataset 'nope'"):
        GateStore("nope", url=gate_url, token=hub.token("bob"))
    with pytest.raises(AuthenticationError):
        GateStore("trial-a", url=gate_url, token="forged")
    store = GateStore("trial-a", url=gate_url, token=hub.token("bob"))
    import zarr

    with pytest.raises(AccessDeniedError, match=r"bob has no approval.*request_access"):
        zarr.open_group(store, mode="r", zarr_format=3)


def test_client_api_through_the_gate(hub, monkeypatch):
    import insitu

    monkeypatch.setenv("INSITU_GATE_URL", hub.service_url("gate"))
    monkeypatch.setenv("INSITU_ACCESS_URL", hub.service_url("access"))
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", hub.token("bob"))
    frame = insitu.catalog()
    assert frame.loc[0, "name"] == "trial-a" and frame.loc[0, "access"] == "none"
    filed = insitu.request_access("trial-a", purpose="x", project="P", days=3)
    assert filed["state"] == "pending" and filed["user"] == "bob"
    assert insitu.catalog().loc[0, "access"] == "pending"


def test_a_researchers_server_gets_its_federated_identity_from_the_home_site(hub, monkeypatch):
    from insitu.config import load_config
    from insitu.federation import identity

    monkeypatch.delenv("INSITU_HOME", raising=False)
    monkeypatch.setenv("INSITU_ACCESS_URL", hub.service_url("access"))
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", hub.token("bob"))
    sign = identity.default_signer()
    assert sign is not None
    token = sign("ab" * 32, {"dataset": "trial-a"})
    who = identity.verify(hub.home, token, fab_hash="ab" * 32, run_config={"dataset": "trial-a"},
                          run_id="1")  # fmt: skip
    assert who.qualified == f"bob@{load_config(hub.home).site.name}"
    # The hub token decides who is signed for: no field of the request names the user.
    refused = _access(hub, "bob", "POST", "federation/identity", {"fab_hash": 1})
    assert refused.status_code == 400


def test_reads_are_audited_coalesced(hub):
    _approve(hub, "root_admin")
    keys = [k for k in _gate(hub, "root_admin", "list/trial-a/v1", timeout=30).json()["keys"]
            if k.startswith("series/s2/0/c/")]  # fmt: skip
    total = 0
    for key in keys:
        r = _gate(hub, "root_admin", f"stores/trial-a/v1/{key}", timeout=30)
        assert r.status_code == 200
        total += len(r.content)
    log = AuditLog(hub.home)

    def s2_reads():
        return [e for e in log.query(kind="read", user="root_admin")
                if e["details"].get("series") == "s2"]  # fmt: skip

    deadline = time.monotonic() + 30
    while sum(e["details"]["bytes"] for e in s2_reads()) < total and time.monotonic() < deadline:
        time.sleep(0.2)  # the gate flushes its ledger every 0.3 s in tests
    entries = s2_reads()
    assert sum(e["details"]["bytes"] for e in entries) == total
    assert sum(e["details"]["requests"] for e in entries) == len(keys)
    assert len(entries) < len(keys), "reads must be coalesced, not one entry per chunk"
    denied = log.query(kind="read.denied", user="bob")
    assert denied, "refusals are audited too"
    log.verify()


def test_hub_login_checks_the_account_store_and_is_audited(hub):
    session = requests.Session()
    page = session.get(hub.url + "/hub/login", timeout=30)
    assert page.status_code == 200
    xsrf = session.cookies.get("_xsrf")
    bad = session.post(
        hub.url + "/hub/login",
        data={"username": "ada", "password": "wrong password", "_xsrf": xsrf},
        allow_redirects=False,
        timeout=30,
    )
    assert bad.status_code == 403
    good = session.post(
        hub.url + "/hub/login",
        data={"username": "ada", "password": PASSWORD, "_xsrf": xsrf},
        allow_redirects=False,
        timeout=30,
    )
    assert good.status_code == 302, good.text[:300]
    outcomes = [e["details"]["outcome"] for e in AuditLog(hub.home).query(kind="login", user="ada")]
    assert outcomes[-2:] == ["refused", "ok"]
    # The register page logs a browser in through the hub's OAuth (no token needed).
    page = session.get(hub.url + "/services/access/", timeout=30)
    assert page.status_code == 200 and "Access register" in page.text
    assert page.url.endswith("/services/access/")


def test_researchers_cannot_use_the_hub_admin_api(hub):
    headers = _h(hub.token("ada"))
    for method, path in (
        ("POST", "/users/eve"),
        ("DELETE", "/users/bob"),
        ("POST", "/users/bob/server"),
        ("GET", "/users"),
    ):
        r = requests.request(method, hub.url + "/hub/api" + path, headers=headers, timeout=30)
        assert r.status_code in (403, 404), (method, path, r.status_code)


def test_a_retired_version_is_refused_at_the_next_read(hub):
    """`insitu dataset retire`: the gate answers 410 with when and why, also for a version
    whose store it has cached; 'latest' moves to the newest version not retired."""
    from fixtures_hub import publish_tiny_store

    from insitu.errors import VersionRetiredError
    from insitu.hub.retire import retire
    from insitu.kernels.gate_store import GateStore

    for version in ("v1", "v2"):
        publish_tiny_store(hub.home, "trial-r", version=version, seed=int(version[1]))
    r = _access(hub, "ada", "POST", "requests", {
        "dataset": "trial-r", "purpose": "p", "project": "P", "days": 30})  # fmt: skip
    rid = r.json()["id"]
    assert _access(hub, "sam", "POST", f"requests/{rid}/approve", {"reason": "ok"}).ok
    assert _gate(hub, "ada", "stores/trial-r/v1/" + CHUNK).status_code == 200  # cached now
    why = "withdrawn: the sponsor re-read the baseline"
    retire(hub.home, actor="sam", dataset="trial-r", version="v1", reason=why, only_copy=True)
    r = _gate(hub, "ada", "stores/trial-r/v1/" + CHUNK)
    assert r.status_code == 410, r.text
    message = r.json()["message"]
    assert message.startswith("trial-r v1 was retired on 20") and f"({why})" in message
    assert "\n" not in message and str(hub.home.root) not in message
    assert _gate(hub, "ada", "list/trial-r/v1").status_code == 410
    r = _gate(hub, "ada", "stores/trial-r/latest/zarr.json")
    assert r.status_code == 200 and r.headers["X-Insitu-Version"] == "v2"
    info = _gate(hub, "ada", "datasets/trial-r").json()
    assert info["versions"] == ["v2"] and info["retired"] == ["v1"]
    gate_url = hub.service_url("gate")
    with pytest.raises(VersionRetiredError, match=why):
        GateStore("trial-r", "v1", url=gate_url, token=hub.token("ada"))
    # The last readable version retired: the approval closes, every read says why.
    retire(hub.home, actor="sam", dataset="trial-r", version="v2", reason=why, only_copy=True)
    r = _gate(hub, "ada", "stores/trial-r/latest/zarr.json")
    assert r.status_code == 410 and "trial-r v2 was retired" in r.json()["message"]
    (found,) = [x for x in _access(hub, "ada", "GET", "requests").json() if x["id"] == rid]
    assert found["state"] == "revoked" and why in found["revoke_reason"]
    log = AuditLog(hub.home)
    deadline = time.monotonic() + 30
    # Earlier tests left other read.denied entries of ada's: wait for this dataset's.
    while (
        not log.query(kind="read.denied", user="ada", dataset="trial-r")
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)  # the gate flushes its ledger every 0.3 s in tests
    denied = log.query(kind="read.denied", user="ada", dataset="trial-r")
    assert denied and denied[0]["details"]["reason"] == "retired"


def test_foreground_up_stops_everything_on_ctrl_c(hub):
    """Last in the module: `insitu up --foreground` attaches to the running hub and
    Ctrl-C stops it (the module fixture's own `down` then finds nothing left)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "insitu.cli", "up", "--foreground"],
        env=os.environ | {"INSITU_HOME": str(hub.home.root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        assert any(f"already running at {hub.url}/" in x for x in lines), lines
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        assert "hub stopped" in out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    from insitu.hub import lifecycle

    assert lifecycle.read_state(hub.home) is None
    with pytest.raises(requests.ConnectionError):
        requests.get(hub.url + "/hub/api", timeout=5)
