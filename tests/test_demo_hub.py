"""`insitu demo` with its hub: the URL answers, the logins work, Ctrl-C stops everything."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("insitu.hub.lifecycle", reason="the hub's `insitu up` is not in this build")

pytestmark = pytest.mark.slow


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


def test_demo_starts_the_hub_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    port = _free_port()
    script = Path(sys.executable).with_name("insitu")
    log = tmp_path / "demo.log"
    cmd = [str(script), "demo", "--dir", str(tmp_path / "demo"), "--port", str(port),
           "--subjects", "2", "--size", "24", "--slices", "2"]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    hub_pid = None
    try:
        deadline = time.monotonic() + 240
        while "insitu demo is running" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        assert f"http://127.0.0.1:{port}" in text
        for user in ("alice", "bob", "sam", "ada"):
            assert user in text
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hub/login", timeout=30) as page:
            assert page.status == 200
        state = json.loads((tmp_path / "demo/site-a/run/hub.json").read_text())
        hub_pid = int(state["pid"])
        assert _alive(hub_pid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, log.read_text()
        assert "stopping the hub" in log.read_text()
        assert not (tmp_path / "demo/site-a/run/hub.json").exists()
        deadline = time.monotonic() + 30
        while _alive(hub_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(hub_pid), "Ctrl-C stops the hub too"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if hub_pid is not None and _alive(hub_pid):
            os.killpg(hub_pid, signal.SIGKILL)
