"""`insitu demo` with its hub: URL and logins work, the notebooks run through the gate and the
airlock as the approved researcher, and Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from insitu.audit import AuditLog
from insitu.config import NodeHome

pytest.importorskip("insitu.hub.lifecycle", reason="the hub's `insitu up` is not in this build")

from fixtures_experience import DEMO_SIZE_FLAGS
from test_notebooks_examples import outputs, run_notebook, widget_views

pytestmark = pytest.mark.slow
USER_SERVICES = ("gate", "access", "airlock")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Demo:
    root: Path
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def home(self) -> NodeHome:
        return NodeHome(self.root / "site-a")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, demo_root: Path) -> Iterator[Demo]:
    tmp = tmp_path_factory.mktemp("demo-hub")
    # A copy of the session's demo: `insitu demo` finds the same trial and reuses it.
    shutil.copytree(demo_root, tmp / "demo", symlinks=True)
    port = _free_port()
    script = Path(sys.executable).with_name("insitu")
    log = tmp / "demo.log"
    cmd = [str(script), "demo", "--dir", str(tmp / "demo"), "--port", str(port),
           *DEMO_SIZE_FLAGS]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "INSITU_HOME"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    running = Demo(tmp / "demo", f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 240
        while "insitu demo is running" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield running
    finally:
        state = running.home.run / "hub.json"
        hub_pid = json.loads(state.read_text())["pid"] if state.exists() else None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if hub_pid is not None and _alive(hub_pid):
            os.killpg(hub_pid, signal.SIGKILL)


def _login_token(demo: Demo, user: str) -> str:
    """Log in at the hub with the demo password and make a token, as a user's server has."""
    password = json.loads((demo.root / "logins.json").read_text())[user]
    with requests.Session() as browser:
        browser.get(demo.url + "/hub/login", timeout=60).raise_for_status()
        xsrf = browser.cookies.get("_xsrf")
        done = browser.post(
            demo.url + "/hub/login",
            data={"username": user, "password": password, "_xsrf": xsrf},
            allow_redirects=False,
            timeout=60,
        )
        assert done.status_code == 302, done.text
        xsrf = [c.value for c in browser.cookies if c.name == "_xsrf"][-1]
        token = browser.post(
            f"{demo.url}/hub/api/users/{user}/tokens",
            json={
                "note": "notebook test",
                "scopes": [f"access:services!service={s}" for s in USER_SERVICES],
            },
            headers={"X-XSRFToken": xsrf},
            timeout=60,
        )
        assert token.status_code == 201, token.text
        return str(token.json()["token"])


def _server_env(demo: Demo, user: str) -> dict[str, str]:
    """The environment the hub gives a user's server: service URLs and a token, no paths."""
    from insitu.hub.services import load_plan

    services, _plan = load_plan(demo.home)
    env = {"INSITU_USER": user, "JUPYTERHUB_API_TOKEN": _login_token(demo, user)}
    for service in services:
        if service.name in USER_SERVICES:
            env.update(service.user_environment)
    return env


def test_url_and_logins(demo: Demo) -> None:
    text = demo.log.read_text()
    assert demo.url in text
    for user in ("alice", "bob", "sam", "ada"):
        assert user in text
    assert requests.get(demo.url + "/hub/login", timeout=30).status_code == 200


def test_notebooks_run_through_the_gate_and_the_airlock(
    demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INSITU_HOME", raising=False)  # a user server never knows it
    env = _server_env(demo, "alice")
    explore = run_notebook("01-explore-a-dataset.ipynb", tmp_path, env)
    assert "<insitu.Dataset locat v2: 4 subjects, 4 series>" in outputs(explore)
    assert widget_views(explore) == 2
    released = run_notebook("03-release-through-the-airlock.ipynb", tmp_path, env)
    text = outputs(released)
    assert "automatic checks: pass" in text
    assert "automatic checks: fail" in text and "threshold" in text
    from insitu.hub.airlock import Airlock

    with Airlock(demo.home) as airlock:
        mine = airlock.list(user="alice")
    assert [(r.kind, r.status) for r in mine] == [("image", "pass"), ("table", "fail")]


def test_the_researcher_without_access_is_refused_by_the_gate(
    demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbclient.exceptions import CellExecutionError

    monkeypatch.delenv("INSITU_HOME", raising=False)
    with pytest.raises(CellExecutionError, match="AccessDeniedError"):
        run_notebook("01-explore-a-dataset.ipynb", tmp_path, _server_env(demo, "bob"))


def test_widgets_request_decide_and_download_through_the_hub(
    demo: Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from insitu.hub import access
    from insitu.widgets.airlock import AirlockPanel
    from insitu.widgets.browser import DatasetBrowser
    from insitu.widgets.sources import ClientSource, HubStewardSource
    from insitu.widgets.steward import StewardPanel

    monkeypatch.delenv("INSITU_HOME", raising=False)

    def become(user: str) -> None:
        for key, value in _server_env(demo, user).items():
            monkeypatch.setenv(key, value)

    become("bob")  # asks in the dataset browser, through the access service
    browser = DatasetBrowser(ClientSource())
    assert browser.row("locat")["access"] == "none"
    browser.purpose.value, browser.project.value = "noise by arm", "dose study"
    browser.submit.click()
    assert "sent" in browser.message.value, browser.message.value
    become("alice")  # a researcher's steward panel is refused by the services themselves
    refused = StewardPanel(HubStewardSource())
    assert refused.release_rows == [] and "steward" in refused.release_message.value
    become("sam")  # decides in the steward panel, through the access and airlock APIs
    panel = StewardPanel(HubStewardSource())
    (bobs,) = [r for r in panel.access_rows if r["user"] == "bob"]
    panel.access_select.value = bobs["id"]
    panel.access_reason.value = "fits the consent"
    panel.access_approve.click()
    assert access.status_for(demo.home, "bob", "locat")[0] == "approved"
    kinds = {r["kind"]: r for r in panel.release_rows}  # alice's, from notebook 03
    panel.release_select.value = kinds["table"]["id"]
    assert "threshold" in panel.release_details.value
    panel.release_reason.value = "ok"
    panel.release_approve.click()
    assert "override" in panel.release_message.value  # the failed check still bites
    panel.release_select.value = kinds["image"]["id"]
    assert "PNG image" in panel.release_preview.value
    panel.release_reason.value = "a summary figure"
    panel.release_approve.click()
    become("alice")  # downloads the approved figure from the hub
    mine = AirlockPanel(ClientSource())
    mine.select.value = kinds["image"]["id"]
    assert not mine.download.disabled
    mine.fetch()
    assert "/download" in mine.link.value
    url = next(r["download_url"] for r in mine.rows if r["id"] == kinds["image"]["id"])
    token = os.environ["JUPYTERHUB_API_TOKEN"]
    got = requests.get(url, headers={"Authorization": f"token {token}"}, timeout=60)
    assert got.status_code == 200 and got.content[:4] == b"\x89PNG"
    mine.select.value = kinds["table"]["id"]
    assert mine.download.disabled, "the failed table was not approved"


def test_ctrl_c_stops_the_hub(demo: Demo) -> None:
    state = demo.home.run / "hub.json"
    hub_pid = int(json.loads(state.read_text())["pid"])
    assert _alive(hub_pid)
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=120) == 0, demo.log.read_text()
    assert "stopping the hub" in demo.log.read_text()
    assert not state.exists()
    deadline = time.monotonic() + 30
    while _alive(hub_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(hub_pid), "Ctrl-C stops the hub too"
    # The gate flushes its coalesced read records at shutdown: alice's reads are there.
    log = AuditLog(demo.home)
    reads = [e for e in log.query(user="alice", kind="read") if e["kind"] == "read"]
    assert reads and {r.get("dataset") for r in reads} == {"locat"}
    bobs = {e["kind"] for e in log.query(user="bob", kind="read")}
    assert bobs == {"read.denied"}, "bob's attempts are audited as refusals, never as reads"
    log.verify()
