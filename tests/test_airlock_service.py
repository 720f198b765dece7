"""The airlock service behind a real JupyterHub (hub, proxy, hub-managed service),
and `insitu.release` talking to it with a user's hub token."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

import insitu
from insitu.config import NodeHome, init_home
from insitu.errors import (
    AccessDeniedError,
    InvalidRequestError,
    OutputTooLargeError,
    ReleaseNotFoundError,
    ReleaseStateError,
    UnsupportedOutputError,
)
from insitu.hub.services import free_port
from insitu.kernels.sdc import pivot_table

ADMIN_TOKEN = "a" * 40

CONFIG = """
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{state}/cookie_secret"
c.JupyterHub.pid_file = "{state}/hub.pid"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = ["{proxy}"]
c.ConfigurableHTTPProxy.pid_file = "{state}/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.services = [
    {{"name": "airlock", "url": "http://127.0.0.1:{service_port}",
      "command": ["{python}", "-m", "insitu.hub.airlock_service"],
      "environment": {{"INSITU_HOME": "{home}"}}}},
    {{"name": "tester", "api_token": "{admin_token}"}},
]
c.JupyterHub.load_roles = [
    {{"name": "tester", "scopes": ["admin:users", "tokens"], "services": ["tester"]}},
    {{"name": "user", "scopes": ["self", "access:services!service=airlock"]}},
]
"""


def _wait(check: Any, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the hub did not start:\n" + log.read_text(errors="replace")[-3000:])
        time.sleep(0.2)  # polling interval


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


@pytest.fixture(scope="module")
def airlock_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A node home (accounts ada, bob: researchers; sam: steward) and a hub serving the airlock."""
    from fixtures_hub import CAST, add_accounts

    root = tmp_path_factory.mktemp("airlock-hub")
    home = NodeHome(root / "home")
    init_home(home, "test-site")
    (home.config_path).write_text(
        home.config_path.read_text().replace(
            "max_release_bytes = 20971520", "max_release_bytes = 200000"
        )
    )
    add_accounts(home, **CAST)
    state = root / "hub"
    state.mkdir()
    port, service_port = free_port(), free_port()
    config = state / "jupyterhub_config.py"
    config.write_text(
        CONFIG.format(
            port=port,
            hub_port=free_port(),
            proxy_api_port=free_port(),
            service_port=service_port,
            state=state,
            proxy=Path(sys.executable).parent / "configurable-http-proxy",
            python=sys.executable,
            home=home.root,
            admin_token=ADMIN_TOKEN,
        )
    )
    log = state / "hub.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(config)],
            cwd=state,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ, INSITU_HOME=str(home.root)),
        )
    hub_api = f"http://127.0.0.1:{port}/hub/api"
    airlock_url = f"http://127.0.0.1:{service_port}/services/airlock/"
    try:
        _wait(lambda: _answers(hub_api), proc, log)
        _wait(lambda: _answers(airlock_url + "health"), proc, log)
        admin = {"Authorization": f"token {ADMIN_TOKEN}"}
        tokens = {}
        for name in ("ada", "bob", "sam", "eve"):
            requests.post(f"{hub_api}/users/{name}", headers=admin, timeout=30).raise_for_status()
            answer = requests.post(
                f"{hub_api}/users/{name}/tokens",
                headers=admin,
                json={"scopes": ["access:services!service=airlock"], "note": "test"},
                timeout=30,
            )
            answer.raise_for_status()
            tokens[name] = answer.json()["token"]
        yield {"home": home, "url": airlock_url, "tokens": tokens}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def call(hub: dict[str, Any], who: str | None, method: str, path: str, **kw: Any) -> Any:
    headers = {"Authorization": f"token {hub['tokens'][who]}"} if who else {}
    return requests.request(method, hub["url"] + path, headers=headers, timeout=120, **kw)


@pytest.fixture
def as_ada(airlock_hub, monkeypatch):
    """`insitu.release` as it runs in ada's notebook server."""
    monkeypatch.setenv("INSITU_AIRLOCK_URL", airlock_hub["url"])
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", airlock_hub["tokens"]["ada"])
    return airlock_hub


def per_arm() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"arm": rng.choice(["A", "B"], 60), "volume": rng.uniform(5, 9, 60)})


def test_release_from_a_kernel_then_steward_approves_and_only_that_downloads(as_ada):
    hub = as_ada
    table = pivot_table(per_arm(), values="volume", index="arm", aggfunc=["count", "mean"])
    passing = insitu.release(table, purpose="per-arm means for table 2")
    assert passing.state == "submitted" and passing.status == "pass", passing.checks
    small = pd.DataFrame({"arm": ["A", "B"], "n": [4, 56]})
    failing = insitu.release(small, purpose="counts")
    assert failing.status == "fail" and "threshold" in str(failing)

    # Researchers see their own, not others', and cannot decide.
    mine = call(hub, "ada", "GET", "api/releases").json()
    assert {r["id"] for r in mine} >= {passing.id, failing.id}
    assert call(hub, "bob", "GET", "api/releases").json() == []
    assert call(hub, "bob", "GET", f"api/releases/{passing.id}").status_code == 404
    assert call(hub, "bob", "GET", "api/releases?all=1").status_code == 403
    refused = call(hub, "ada", "POST", f"api/releases/{passing.id}/approve", json={"reason": "x"})
    assert refused.status_code == 403 and "steward" in refused.json()["message"]

    # Nothing downloads before approval.
    early = call(hub, "ada", "GET", f"api/releases/{passing.id}/download")
    assert early.status_code == 409 and "only approved" in early.json()["message"]

    # The steward reviews and decides.
    everyone = call(hub, "sam", "GET", "api/releases?all=1&state=submitted").json()
    assert {passing.id, failing.id} <= {r["id"] for r in everyone}
    preview = call(hub, "sam", "GET", f"api/releases/{passing.id}/preview").json()
    assert preview["preview"].startswith("arm,count_volume,mean_volume")
    ok = call(hub, "sam", "POST", f"api/releases/{passing.id}/approve", json={"reason": "fine"})
    assert ok.status_code == 200 and ok.json()["state"] == "approved"
    no_override = call(
        hub, "sam", "POST", f"api/releases/{failing.id}/approve", json={"reason": "fine"}
    )
    assert no_override.status_code == 409 and "override" in no_override.json()["message"]

    # Only the approved one downloads, only for ada, byte for byte what she submitted.
    got = call(hub, "ada", "GET", f"api/releases/{passing.id}/download")
    assert got.status_code == 200
    assert got.content == table.to_csv(index=False).encode()
    assert "attachment" in got.headers["Content-Disposition"]
    assert call(hub, "ada", "GET", f"api/releases/{failing.id}/download").status_code == 409
    assert call(hub, "sam", "GET", f"api/releases/{passing.id}/download").status_code == 404
    assert [r.state for r in insitu.kernels.release.releases() if r.id == passing.id] == [
        "released"
    ]


def test_bad_input_gets_clear_errors_in_the_kernel(as_ada, tmp_path):
    with pytest.raises(UnsupportedOutputError, match="raw ndarray cannot be released"):
        insitu.release(np.zeros((48, 40)), purpose="a slice")
    with pytest.raises(UnsupportedOutputError, match="cannot release a set"):
        insitu.release({1, 2}, purpose="x")
    script = tmp_path / "steal.sh"
    script.write_text("curl ...\n")
    with pytest.raises(UnsupportedOutputError, match=r"does not release \.sh files"):
        insitu.release(script, purpose="x")
    big = tmp_path / "big.csv"
    big.write_text("a\n" + "1\n" * 150_000)
    with pytest.raises(OutputTooLargeError, match=r"over the site's release limit"):
        insitu.release(big, purpose="x")
    with pytest.raises(InvalidRequestError, match="purpose"):
        insitu.release(pd.DataFrame({"n": [20]}), purpose=" ")
    with pytest.raises(InvalidRequestError, match="not a file"):
        insitu.release(tmp_path / "missing.csv", purpose="x")


def test_tokens_and_unknown_requests_are_refused(airlock_hub):
    hub = airlock_hub
    assert call(hub, None, "GET", "api/releases").status_code == 401
    bad = requests.get(
        hub["url"] + "api/releases", headers={"Authorization": "token nope"}, timeout=30
    )
    assert bad.status_code == 401
    assert call(hub, "sam", "GET", "api/releases/424242").status_code == 404
    decided = call(hub, "sam", "POST", "api/releases/424242/deny", json={"reason": "x"})
    assert decided.status_code == 404
    # eve has a hub account but no site account: no steward powers.
    assert call(hub, "eve", "GET", "api/releases?all=1").status_code == 403
    garbage = call(
        hub,
        "ada",
        "POST",
        "api/releases",
        json={"filename": "a.csv", "purpose": "x", "content": "%%%"},
    )
    assert garbage.status_code == 400 and "base64" in garbage.json()["message"]
    raw = base64.b64encode(b"arm,n\nA,30\n").decode()
    created = call(
        hub,
        "ada",
        "POST",
        "api/releases",
        json={"filename": "a.csv", "purpose": "x", "content": raw},
    )
    assert created.status_code == 201 and created.json()["status"] == "pass"


def test_release_outside_a_hub_server_says_where_it_works(monkeypatch):
    monkeypatch.delenv("INSITU_AIRLOCK_URL", raising=False)
    from insitu.errors import ServiceError

    with pytest.raises(ServiceError, match="insitu airlock"):
        insitu.release(pd.DataFrame({"n": [20]}), purpose="x")


def test_error_types_are_the_documented_ones():
    assert issubclass(ReleaseNotFoundError, LookupError)
    assert issubclass(ReleaseStateError, ValueError)
    assert issubclass(AccessDeniedError, PermissionError)
