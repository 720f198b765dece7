"""`insitu demo` with its hub: URL and logins work, the notebooks run through the gate and the
airlock as the approved researcher, a second demo or a busy port is refused at once without
touching the first, a researcher's kernel runs as their own account (root: it cannot read the
node home or the passwords), a refused read is one line, and Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from insitu.audit import AuditLog

pytest.importorskip("insitu.hub.lifecycle", reason="the hub's `insitu up` is not in this build")

from demo_running import Demo, alive, copy_demo, free_port, remove_accounts, running_demo
from fixtures_experience import DEMO_SIZE_FLAGS
from test_notebooks_examples import outputs, run_notebook, widget_views

pytestmark = pytest.mark.slow
USER_SERVICES = ("gate", "access", "airlock")


@pytest.fixture(scope="module")
def demo(demo_root: Path) -> Iterator[Demo]:
    with running_demo(demo_root) as running:
        yield running


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


def test_a_refused_read_is_one_clear_line(demo: Demo, tmp_path: Path) -> None:
    """Item 8: bob (no access) opens the trial in the site's kernel: one line, which says
    what to do in the notebook, never a command on the node."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell('ds = insitu.open_dataset("locat")\nds.series')])
    saved = dict(os.environ)
    os.environ.pop("INSITU_HOME", None)  # a user server never knows it
    os.environ.update(_server_env(demo, "bob"))
    try:
        with pytest.raises(CellExecutionError):
            NotebookClient(
                nb,
                timeout=180,
                kernel_name="insitu",
                resources={"metadata": {"path": str(tmp_path)}},
            ).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    (error,) = [o for o in nb.cells[0].outputs if o.output_type == "error"]
    assert error.ename == "AccessDeniedError"
    assert len(error.traceback) == 1, "\n".join(error.traceback)
    line = error.traceback[0]
    assert "AccessDeniedError" in line and "no approval to read 'locat'" in line
    assert "dataset browser" in line and "insitu.request_access('locat'" in line
    assert "on the node" not in line and "`insitu " not in line


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


def _demo_cmd(root: Path, port: int) -> list[str]:
    script = Path(sys.executable).with_name("insitu")
    return [str(script), "demo", "--dir", str(root), "--port", str(port), *DEMO_SIZE_FLAGS]


def test_a_second_demo_refuses_and_leaves_the_first_running(demo: Demo) -> None:
    """Item 1: the same --dir, another terminal: refused at once, naming the running one."""
    hub_pid = int(json.loads((demo.home.run / "hub.json").read_text())["pid"])
    env = {k: v for k, v in os.environ.items() if k != "INSITU_HOME"}
    second = subprocess.run(
        _demo_cmd(demo.root, free_port()), capture_output=True, text=True, env=env, timeout=120
    )
    assert second.returncode == 7, second.stdout + second.stderr
    said = second.stderr
    assert "already running from" in said and demo.url in said and str(demo.proc.pid) in said
    assert "down" in said and "/bin/insitu" in said
    assert "Starting the hub" not in second.stdout, "it must not even start"
    assert alive(hub_pid) and requests.get(demo.url + "/hub/login", timeout=30).ok
    assert demo.proc.poll() is None, "the first demo still runs"


def test_a_demo_on_a_busy_port_names_the_port_at_once(
    demo: Demo, demo_root: Path, tmp_path: Path
) -> None:
    """Item 2: another --dir on the first demo's port: the port is named, no start-up wait."""
    existing = {p.pw_name for p in pwd.getpwall()}
    other = copy_demo(demo_root, tmp_path / "other")
    port = int(demo.url.rsplit(":", 1)[1])
    env = {k: v for k, v in os.environ.items() if k != "INSITU_HOME"}
    try:
        busy = subprocess.run(
            _demo_cmd(other, port), capture_output=True, text=True, env=env, timeout=300
        )
    finally:
        remove_accounts(other, existing)
    assert busy.returncode == 7, busy.stdout + busy.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in busy.stderr
    assert "--port" in busy.stderr and "PORT=" in busy.stderr
    assert not (other / "site-a" / "run" / "hub.json").exists(), "nothing was started"
    assert requests.get(demo.url + "/hub/login", timeout=30).ok, "the first demo still answers"


PROBE = """
import json, os, pwd
found = {"account": pwd.getpwuid(os.geteuid()).pw_name, "examples": sorted(os.listdir("."))}
for name, path in LIST.items():
    try:
        os.listdir(path)
        found[name] = "listed"
    except OSError as exc:
        found[name] = type(exc).__name__
for name, path in READ.items():
    try:
        with open(path, "rb") as fh:
            fh.read(1)
        found[name] = "read"
    except OSError as exc:
        found[name] = type(exc).__name__
print(json.dumps(found))
"""


def _spawn(demo: Demo, user: str) -> tuple[str, str]:
    """Start ``user``'s server through the hub API; (server URL, a token of the user)."""
    from insitu.hub.lifecycle import hub_api

    token = hub_api(demo.home, "POST", f"/users/{user}/tokens", {"note": "demo test"})["token"]
    if "" not in hub_api(demo.home, "GET", f"/users/{user}")["servers"]:
        hub_api(demo.home, "POST", f"/users/{user}/server")
    deadline = time.monotonic() + 300
    while not hub_api(demo.home, "GET", f"/users/{user}")["servers"].get("", {}).get("ready"):
        assert time.monotonic() < deadline, f"{user}'s server did not start"
        time.sleep(0.5)  # polling the hub API for readiness
    return f"{demo.url}/user/{user}/", token


@pytest.mark.skipif(os.geteuid() != 0, reason="per-user accounts need root")
def test_a_researchers_kernel_cannot_read_the_node_home_or_the_passwords(demo: Demo) -> None:
    """Item 3: as root, alice's kernel runs as insitu-alice; private/ and the demo's
    password files are closed to it; the example notebooks wait in her folder."""
    from kernel_driver import Kernel

    from insitu.hub.local_users import system_name

    home = demo.home
    listing = {"private": home.private, "node home": home.root}
    reading = {
        "site key": home.site_key_path,
        "demo passwords": demo.root / "logins.json",
        "demo passwords (hub)": home.private / "demo-logins.txt",
        "accounts": home.hub / "accounts.sqlite",
    }
    for path in [*listing.values(), *reading.values()]:
        assert path.exists(), path  # the probe must not pass on a typo
    code = f"LIST = { ({k: str(v) for k, v in listing.items()})!r}\n"
    code += f"READ = { ({k: str(v) for k, v in reading.items()})!r}\n" + PROBE
    url, token = _spawn(demo, "alice")
    kernel = Kernel(url, token)
    try:
        found = json.loads(kernel.run(code).strip().splitlines()[-1])
    finally:
        kernel.close()
    assert found.pop("account") == system_name("alice")
    assert "01-explore-a-dataset.ipynb" in found.pop("examples")
    assert found == dict.fromkeys([*listing, *reading], "PermissionError")
    assert "not an isolation boundary" not in demo.log.read_text()


def test_ctrl_c_stops_the_hub(demo: Demo) -> None:
    state = demo.home.run / "hub.json"
    hub_pid = int(json.loads(state.read_text())["pid"])
    assert alive(hub_pid)
    demo.proc.send_signal(signal.SIGINT)
    assert demo.proc.wait(timeout=120) == 0, demo.log.read_text()
    assert "stopping the hub" in demo.log.read_text()
    assert not state.exists()
    deadline = time.monotonic() + 30
    while alive(hub_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(hub_pid), "Ctrl-C stops the hub too"
    # The gate flushes its coalesced read records at shutdown: alice's reads are there.
    log = AuditLog(demo.home)
    reads = [e for e in log.query(user="alice", kind="read") if e["kind"] == "read"]
    assert reads and {r.get("dataset") for r in reads} == {"locat"}
    bobs = {e["kind"] for e in log.query(user="bob", kind="read")}
    assert bobs == {"read.denied"}, "bob's attempts are audited as refusals, never as reads"
    log.verify()
