"""The airlock service behind a real hub (`insitu up` machinery: proxy, gate, airlock,
dask-gateway; the session's fixtures_airlock.enclave_site), and `insitu.release`
talking to it with a user's hub token."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

import insitu
from insitu.errors import (
    AccessDeniedError,
    InvalidRequestError,
    OutputTooLargeError,
    ReleaseNotFoundError,
    ReleaseStateError,
    UnsupportedOutputError,
)
from insitu.kernels.sdc import pivot_table


@pytest.fixture(scope="module")
def airlock_hub(enclave_site: dict[str, Any]) -> dict[str, Any]:
    """The airlock's own address (what user servers get) and hub tokens of four users:
    ada, bob (researchers), sam (steward), eve (a hub user without a site account)."""
    hub = enclave_site["hub"]
    tokens = {name: hub.token(name) for name in ("ada", "bob", "sam", "eve")}
    return {"home": hub.home, "url": hub.service_url("airlock"), "tokens": tokens}


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


def test_a_figure_and_a_notebook_are_released_as_png_and_ipynb(as_ada):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 3), dpi=50)
    figure.add_subplot().plot([1, 2, 3])
    plot = insitu.release(figure, purpose="a plot of means")
    assert plot.filename == "figure.png" and plot.status == "pass", plot.checks
    notebook = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    shown = insitu.release(notebook, purpose="the analysis")
    assert shown.filename == "notebook.ipynb" and shown.state == "submitted"


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
