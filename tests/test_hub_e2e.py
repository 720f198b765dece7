"""End to end on loopback: a real hub and proxy, real single-user servers for two
researchers, code run in their kernels, a real DICOM ingest, and a hub restart.

One hub per module; the tests run in file order and build on each other.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import websocket
from fixtures_datasets import make_series
from fixtures_hub import start_hub

from insitu.audit import AuditLog
from insitu.cli import main
from insitu.hub import access, lifecycle

pytestmark = pytest.mark.slow

DATASET = "ct-trial"


@pytest.fixture(scope="module")
def site(module_home, tmp_path_factory):
    """The module's node home with a real ingest, and a running hub (stopped at the end)."""
    dicom = make_series(tmp_path_factory.mktemp("dicom") / "ct", n=6)
    # The ingest (its own process, as from a shell) runs while the hub starts: the hub
    # reads the catalog per request, and the audit chain takes one writer at a time.
    ingest = subprocess.Popen(
        [sys.executable, "-m", "insitu.cli", "ingest", "--dataset", DATASET, str(dicom)],
        env={"INSITU_HOME": str(module_home.root), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        state = {"hub": start_hub(module_home)}
    finally:
        _, stderr = ingest.communicate(timeout=300)
    try:
        assert ingest.returncode == 0, stderr
        yield state
    finally:
        lifecycle.down(module_home, actor="tests")


def _spawn(hub, users):
    for user in users:
        hub.token(user)  # creates the hub user
        hub.api("POST", f"/users/{user}/server")
    deadline = time.monotonic() + 240
    pending = set(users)
    while pending and time.monotonic() < deadline:
        for user in list(pending):
            model = hub.api("GET", f"/users/{user}")
            server = model.get("servers", {}).get("")
            if server and server.get("ready"):
                pending.discard(user)
        if pending:
            time.sleep(0.5)  # polling the hub API for readiness, not a fixed wait
    assert not pending, f"servers never became ready: {pending}"


class Kernel:
    """A kernel in a user's server, driven over the Jupyter server's websocket API."""

    def __init__(self, hub, user):
        self.user = user
        self.base = f"{hub.url}/user/{user}/"
        self.token = hub.token(user)
        headers = {"Authorization": f"token {self.token}"}
        r = requests.post(self.base + "api/kernels", headers=headers, json={}, timeout=60)
        assert r.status_code == 201, r.text
        self.id = r.json()["id"]
        ws_url = self.base.replace("http://", "ws://") + f"api/kernels/{self.id}/channels"
        self.ws = websocket.create_connection(
            ws_url, header=[f"Authorization: token {self.token}"], timeout=120
        )
        self.session = uuid.uuid4().hex

    def run(self, code: str) -> tuple[str, dict | None]:
        """Execute ``code``; return (stdout, error or None)."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": self.user, "session": self.session,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))  # fmt: skip
        out, error, replied, idle = [], None, False, False
        while not (replied and idle):
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                error = msg["content"]
            elif kind == "execute_reply":
                replied = True
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        return "".join(out), error

    def close(self):
        self.ws.close()


@pytest.fixture(scope="module")
def kernels(site):
    hub = site["hub"]
    _spawn(hub, ["ada", "bob"])
    made = {user: Kernel(hub, user) for user in ("ada", "bob")}
    yield made
    for kernel in made.values():
        kernel.close()


READ = f"""
import insitu
ds = insitu.open_dataset({DATASET!r})
sid = ds.series.series_id[0]
img = ds.image(sid)
print("SUM", int(img.astype("int64").sum().compute()), tuple(img.shape))
"""


def _local_sum(home):
    from insitu.datasets.reader import open_dataset

    ds = open_dataset(DATASET, home=home)
    img = ds.image(ds.series.series_id[0])
    return int(img.astype("int64").sum().compute()), tuple(img.shape)


def test_user_servers_know_the_gate_not_the_stores(kernels):
    out, error = kernels["ada"].run(
        "import os, glob\n"
        "print('GATE', bool(os.environ.get('INSITU_GATE_URL')))\n"
        "print('TOKEN', bool(os.environ.get('JUPYTERHUB_API_TOKEN')))\n"
        "print('HOME', os.environ.get('INSITU_HOME'))\n"
        "print('CWD', 'stores' in os.getcwd())\n"
        "print('EXAMPLES', len(glob.glob('*.ipynb')))\n"
    )
    assert error is None, error
    assert "GATE True" in out and "TOKEN True" in out
    assert "HOME None" in out and "CWD False" in out
    # The spawner puts the example notebooks in every researcher's folder.
    assert "EXAMPLES 0" not in out and "EXAMPLES" in out


def test_approved_reads_unapproved_is_refused_then_revoked(site, kernels):
    hub = site["hub"]
    home = hub.home
    # bob asks from his notebook and is left pending; ada is approved.
    out, error = kernels["bob"].run(
        f"import insitu\nr = insitu.request_access({DATASET!r}, purpose='lesion counts', "
        "project='P2', days=30)\nprint('STATE', r['state'])\n"
        "print(insitu.catalog()[['name', 'access']].to_string())"
    )
    assert error is None, error
    assert "STATE pending" in out and "pending" in out
    req = access.request(home, "ada", DATASET, "tumour volumes", "P1", 30)
    access.approve(home, "sam", req.id, "protocol matches")

    out, error = kernels["ada"].run(READ)
    assert error is None, error
    total, shape = _local_sum(home)
    assert f"SUM {total} {shape}" in out

    out, error = kernels["bob"].run(READ)
    assert error is not None and error["ename"] == "AccessDeniedError"
    assert "awaits a steward" in error["evalue"]

    # Revocation stops ada's very next read, even through objects she already holds.
    access.revoke(home, "sam", req.id, "consent withdrawn")
    out, error = kernels["ada"].run("print(int(img.astype('int64').sum().compute()))")
    assert error is not None and error["ename"] == "AccessDeniedError", (out, error)
    assert "revoked" in error["evalue"] and "consent withdrawn" in error["evalue"]


def test_register_and_audit_chain(site, capsys, tmp_path, monkeypatch):
    home = site["hub"].home
    monkeypatch.setenv("INSITU_HOME", str(home.root))
    monkeypatch.delenv("INSITU_USER", raising=False)
    register = access.register(home, dataset=DATASET)
    assert sorted((r.user, r.state()) for r in register) == [("ada", "revoked"), ("bob", "pending")]
    assert main(["audit", "verify"]) == 0
    assert "audit chain intact" in capsys.readouterr().out
    log = AuditLog(home)
    kinds = {e["kind"] for e in log.entries()}
    assert {"access.request", "access.approve", "access.revoke", "config"} <= kinds
    copy = tmp_path / "tampered.jsonl"
    lines = log.path.read_text().splitlines(keepends=True)
    del lines[len(lines) // 2]
    copy.write_text("".join(lines))
    assert main(["audit", "verify", "--file", str(copy)]) == 5
    assert "was dropped" in capsys.readouterr().err


def test_status_names_what_runs(site, capsys, monkeypatch):
    monkeypatch.setenv("INSITU_HOME", str(site["hub"].home.root))
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "answers" in out and "service gate" in out and "ada" in out and "bob" in out


def test_restart_keeps_users_approvals_and_chain(site, capsys, monkeypatch, kernels):
    hub = site["hub"]
    home = hub.home
    before = AuditLog(home).verify().entries
    monkeypatch.setenv("INSITU_HOME", str(home.root))
    assert main(["down"]) == 0
    assert "hub stopped" in capsys.readouterr().out
    assert lifecycle.read_state(home) is None
    # Nothing of the hub's process tree is left: user servers stopped too.
    assert not _running_under(home)
    site["hub"] = hub = start_hub(home)
    users = {u["name"] for u in hub.api("GET", "/users")}
    assert {"ada", "bob"} <= users
    pending = [r for r in access.register(home, user="bob") if r.state() == "pending"]
    approved = access.approve(home, "sam", pending[0].id, "ethics approval received")
    r = requests.get(
        hub.url + f"/services/gate/stores/{DATASET}/latest/zarr.json",
        headers={"Authorization": f"token {hub.token('bob')}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert approved.state() == "approved"
    report = AuditLog(home).verify()
    assert report.entries > before


def _running_under(home):
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes()
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"defunct" in cmd or not cmd:
            continue
        if str(home.root).encode() in env or str(home.hub).encode() in cmd:
            found.append(int(proc.name))
    return found


def test_up_twice_says_already_running(site, monkeypatch, capsys):
    """`insitu up` on an already running node says so instead of starting twice."""
    monkeypatch.setenv("INSITU_HOME", str(site["hub"].home.root))
    assert main(["up"]) == 0
    said = capsys.readouterr()
    assert "already running" in said.out
    assert "not an isolation boundary" in said.err  # finding S1, every time


def test_down_after_a_hub_crash_leaves_nothing_behind(site):
    """Last: kill -9 the hub; `down` still finds its proxy and services."""
    import os
    import signal

    home = site["hub"].home
    state = lifecycle.read_state(home)
    assert state is not None
    assert _running_under(home)
    os.kill(state.pid, signal.SIGKILL)
    lifecycle.down(home, actor="tests")
    deadline = time.monotonic() + 30
    while _running_under(home) and time.monotonic() < deadline:
        time.sleep(0.2)  # SIGTERM was sent; poll until the processes are gone
    assert not _running_under(home)
