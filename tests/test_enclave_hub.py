"""The researcher's enclave end to end, behind a real hub (`insitu up` machinery:
proxy, gate, access, airlock, dask-gateway; fixtures_airlock.enclave_site).

First the airlock service's REST API and `insitu.release` with users' hub
tokens; then a real single-user server spawned for the researcher, with a real
insitu kernel driven through the server's REST and websocket API. One site for
the module; tests run in file order and share its state.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

import insitu
from insitu.audit import AuditLog
from insitu.errors import (
    AccessDeniedError,
    InvalidRequestError,
    OutputTooLargeError,
    ReleaseNotFoundError,
    ReleaseStateError,
    UnsupportedOutputError,
)
from insitu.kernels.sdc import pivot_table

pytestmark = pytest.mark.slow


# --- the airlock service and insitu.release ------------------------------------


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
    assert plot.filename == "a-plot-of-means.png" and plot.status == "pass", plot.checks
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
    # eve has a hub login but no site account: no steward powers, and no releases at all.
    assert call(hub, "eve", "GET", "api/releases?all=1").status_code == 403
    content = base64.b64encode(b"arm,n\nA,30\n").decode()
    body = {"filename": "a.csv", "purpose": "x", "content": content}
    refused = call(hub, "eve", "POST", "api/releases", json=body)
    assert refused.status_code == 403 and "not a user of this site" in refused.json()["message"]
    # Bodies far over the release limit are cut off before they are read.
    huge = {"filename": "a.csv", "purpose": "x", "content": "A" * 2_000_000}
    try:
        cut = call(hub, "ada", "POST", "api/releases", json=huge)
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        pass  # the service closed the connection
    else:
        assert cut.status_code == 400, cut.status_code
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


# --- inside the researcher's server ----------------------------------------------


@pytest.fixture(scope="module")
def enclave(enclave_site: dict[str, Any], ada_kernel: Any) -> dict[str, Any]:
    hub = enclave_site["hub"]
    return {**enclave_site, "kernel": ada_kernel, "server": f"{hub.url}/user/ada/"}


def airlock(enclave: dict[str, Any], user: str, method: str, path: str, **kw: Any) -> Any:
    hub = enclave["hub"]
    return requests.request(
        method,
        f"{hub.url}/services/airlock/api/{path}",
        headers={"Authorization": f"token {hub.token(user)}"},
        timeout=120,
        **kw,
    )


def test_the_server_is_an_enclave(enclave):
    kernel, server = enclave["kernel"], enclave["server"]
    headers = {"Authorization": f"token {enclave['hub'].token('ada')}"}
    out = kernel.run(
        "import os\n"
        "print(sorted(k for k in os.environ if k.startswith(('INSITU', 'DASK_GATEWAY'))))\n"
        "print('insitu' in dir())"
    )
    assert "INSITU_HOME" not in out and "INSITU_AIRLOCK_URL" in out and "INSITU_GATE_URL" in out
    assert out.strip().endswith("True")  # the insitu kernel starts with `import insitu`
    kernel.run(
        "import json\n"
        "open('note.txt', 'w').write('hello')\n"
        "open('pixels.png', 'wb').write(b'\\x89PNG\\r\\n\\x1a\\n' + bytes(64))\n"
        "json.dump({'cells': [], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5},"
        " open('nb.ipynb', 'w'))\n"
    )

    def get(path: str) -> requests.Response:
        return requests.get(server + path, headers=headers, timeout=30)

    # Download, export and file views are off, and say how results leave instead.
    for path in (
        "files/note.txt",
        "files/note.txt?download=1",
        "nbconvert/html/nb.ipynb?download=true",
        "nbconvert/script/nb.ipynb",
        "view/note.txt",
        "api/contents/pixels.png",
    ):
        answer = get(path)
        assert answer.status_code == 403, path
        assert "airlock" in answer.json()["message"], path
    # Notebooks and text still open for editing (the residual channel docs/security.md names).
    assert get("api/contents/note.txt").json()["content"] == "hello"
    assert get("api/contents/nb.ipynb").json()["type"] == "notebook"
    # No terminals; the insitu kernel is the default.
    terminal = requests.post(server + "api/terminals", headers=headers, timeout=30)
    assert terminal.status_code in (403, 404)
    specs = get("api/kernelspecs").json()
    assert specs["default"] == "insitu"
    assert specs["kernelspecs"]["insitu"]["spec"]["display_name"] == "Python 3 (insitu)"


def test_unknown_dataset_is_a_clear_error(enclave):
    out = enclave["kernel"].run(
        "try:\n"
        "    insitu.open_dataset('no-such-trial')\n"
        "except insitu.DatasetNotFoundError as exc:\n"
        "    print('NOTFOUND', exc)\n"
    )
    assert out.startswith("NOTFOUND") and "no-such-trial" in out


STATS = """
import numpy as np, pandas as pd
from insitu.kernels import sdc
ds = insitu.open_dataset("trial")
rows = []
for sid in ds.series["series_id"]:
    dose = ds.header(sid)["00189345"]["Value"][0]
    image = ds.image(sid)
    rows.append({"arm": "low-dose" if dose < 5 else "standard-dose",
                 "noise_sd": float(image.std())})
per_series = pd.DataFrame(rows)
table = sdc.pivot_table(per_series, values="noise_sd", index="arm", aggfunc=["count", "mean"])
ok = insitu.release(table, purpose="noise SD per arm, table 2")
few = per_series.head(5).groupby("arm").size().rename("n").reset_index()
bad = insitu.release(few, purpose="first five subjects by arm")
print("IDS", ok.id, ok.status, bad.id, bad.status)
print("URL", ok.download_url)
print(bad)
"""


def test_per_arm_release_steward_approval_and_download(enclave):
    out = enclave["kernel"].run(STATS)
    lines = out.split("\n")
    ids = lines[0].split()
    ok_id, ok_status, bad_id, bad_status = int(ids[1]), ids[2], int(ids[3]), ids[4]
    # The researcher's browser downloads from the hub's address, not a loopback port.
    hub_url = enclave["hub"].url
    assert lines[1] == f"URL {hub_url}/services/airlock/api/releases/{ok_id}/download"
    assert ok_status == "pass", out
    assert bad_status == "fail" and "threshold" in out
    # The steward approves the passing one; the failing one needs an override reason.
    decided = airlock(enclave, "sam", "POST", f"releases/{ok_id}/approve", json={"reason": "ok"})
    assert decided.status_code == 200, decided.text
    refused = airlock(enclave, "sam", "POST", f"releases/{bad_id}/approve", json={"reason": "ok"})
    assert refused.status_code == 409 and "override" in refused.json()["message"]
    # Only the approved output can be downloaded, and only by ada.
    got = airlock(enclave, "ada", "GET", f"releases/{ok_id}/download")
    assert got.status_code == 200 and got.content.startswith(b"arm,count_noise_sd,mean_noise_sd")
    assert airlock(enclave, "ada", "GET", f"releases/{bad_id}/download").status_code == 409
    assert airlock(enclave, "bob", "GET", f"releases/{ok_id}/download").status_code == 404
    kinds = [e["kind"] for e in AuditLog(enclave["home"]).query(kind="release")]
    assert kinds.count("release.submit") >= 2 and "release.approve" in kinds


DUMP = """
from PIL import Image
sid = ds.series["series_id"][0]
pixels = ds.image(sid).values[0]
scaled = (pixels - pixels.min()) / max(int(pixels.max() - pixels.min()), 1) * 255
Image.fromarray(scaled.astype("uint8")).save("slice.png")
dump = insitu.release("slice.png", purpose="one slice")
print("DUMP", dump.status, [c["rule"] for c in dump.checks if c["status"] == "fail"])
for attempt in (lambda: insitu.release(pixels, purpose="raw"),
                lambda: insitu.release("note.txt.sh", purpose="x"),
                lambda: insitu.release("big.csv", purpose="x")):
    try:
        attempt()
    except insitu.InsituError as exc:
        print(type(exc).__name__, "|", exc)
"""


def test_a_raw_slice_dump_and_bad_input_are_refused(enclave):
    kernel = enclave["kernel"]
    kernel.run(
        "open('note.txt.sh', 'w').write('echo')\n"
        "open('big.csv', 'w').write('a\\n' + '1\\n' * 150000)\n"
    )
    lines = kernel.run(DUMP).splitlines()
    # A slice is refused by its size and recognised by its fingerprint.
    assert lines[0] == "DUMP fail ['image-resolution', 'pixel-provenance']"
    assert lines[1].startswith("UnsupportedOutputError | a raw ndarray cannot be released")
    assert lines[2].startswith("UnsupportedOutputError | the airlock does not release .sh")
    assert lines[3].startswith("OutputTooLargeError |") and "release limit" in lines[3]


COMPUTE = """
try:
    insitu.compute(workers=3)
except insitu.InsituError as exc:
    print("LIMIT", type(exc).__name__, "max_workers" in str(exc))
client = insitu.compute(workers=2)
sid = ds.series["series_id"][1]
image = ds.image(sid)
whole = float(image.mean().compute())
workers = client.run(lambda: __import__("os").environ.get("INSITU_USER"))
print("GW", len(client.scheduler_info()["workers"]), sorted(set(workers.values())))
print("SID", sid)
client.close()
client.cluster.shutdown()
"""


def test_a_statistic_on_a_gateway_cluster_reads_as_the_researcher(enclave):
    home = enclave["home"]
    before = len(AuditLog(home).query(kind="read", user="ada"))
    out = enclave["kernel"].run(COMPUTE, timeout=400)
    lines = dict(line.split(" ", 1) for line in out.splitlines())
    assert lines["LIMIT"] == "PolicyViolationError True", out
    assert lines["GW"] == "2 ['ada']", out
    series_id = lines["SID"]
    # The gate flushes coalesced reads every 0.3 s in tests: poll for the workers' reads.
    deadline = time.monotonic() + 30
    while True:
        reads = AuditLog(home).query(kind="read", user="ada")[before:]
        if any(r["details"].get("series") == series_id for r in reads):
            break
        assert time.monotonic() < deadline, f"no audited read of {series_id} by ada: {reads}"
        time.sleep(0.3)  # polling interval
    assert all(r["user"] == "ada" for r in AuditLog(home).query(kind="read")[before:])
    started = AuditLog(home).query(kind="compute", user="ada")
    assert len(started) >= 2  # the refused 3-worker cluster and the 2-worker one


def test_the_airlock_cli_sees_what_happened(enclave, capsys, monkeypatch):
    from insitu.cli import main

    monkeypatch.setenv("INSITU_HOME", str(enclave["home"].root))
    assert main(["airlock", "list", "--state", "released"]) == 0
    assert "noise SD per arm" in capsys.readouterr().out
    assert Path(enclave["home"].airlock / "airlock.sqlite").exists()


PREPARE = """
client = insitu.compute(workers=1)
image = ds.image(ds.series["series_id"][3])  # lazy: metadata now, chunks on the worker
"""

REVOKED = """
try:
    print("READ", float(image.mean().compute()))
except Exception as exc:
    print("REFUSED", type(exc).__name__)
finally:
    client.close()
    client.cluster.shutdown()
"""


def test_a_revoked_approval_stops_the_workers_at_their_next_read(enclave):
    """Access checks hold on workers too: they read with ada's token, so her
    revoked approval refuses their very next read (last test: it revokes ada)."""
    from insitu.hub import access

    home = enclave["home"]
    enclave["kernel"].run(PREPARE, timeout=400)
    (approval,) = [r for r in access.register(home, user="ada") if r.status == "approved"]
    access.revoke(home, "sam", approval.id, "study closed")
    out = enclave["kernel"].run(REVOKED, timeout=400)
    assert out.strip() == "REFUSED AccessDeniedError", out
    deadline = time.monotonic() + 30
    while not AuditLog(home).query(kind="read.denied", user="ada"):
        assert time.monotonic() < deadline, "the refused worker reads were not audited"
        time.sleep(0.3)  # polling interval
