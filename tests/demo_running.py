"""A running `insitu demo` for the tests that need its hub (tests/test_demo_hub.py, the
browser tour): a copy of the session's demo, started as a user would, stopped with Ctrl-C;
as root, its researchers get their own accounts, removed afterwards."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fixtures_experience import DEMO_SIZE_FLAGS

from insitu.config import NodeHome, load_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int) -> bool:
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


def copy_demo(demo_root: Path, where: Path) -> Path:
    """A copy of the session's demo (`insitu demo` finds the same trial and reuses it);
    as root with researchers' folders of its own, removed by :func:`remove_accounts`."""
    shutil.copytree(demo_root, where, symlinks=True)
    if os.geteuid() == 0:
        for site in ("site-a", "site-b", "site-c"):
            home = NodeHome(where / site)
            config = load_config(home)
            users = tempfile.mkdtemp(prefix="insitu-demo-users-", dir="/tmp")
            hub = dataclasses.replace(config.hub, user_accounts_dir=users)
            home.config_path.write_text(dataclasses.replace(config, hub=hub).to_toml())
    return where


def remove_accounts(root: Path, existing: set[str]) -> None:
    from insitu.hub.local_users import ACCOUNT_PREFIX

    for site in ("site-a", "site-b", "site-c"):
        with contextlib.suppress(Exception):
            users = load_config(NodeHome(root / site)).hub.user_accounts_dir
            if users.startswith("/tmp/insitu-demo-users-"):
                shutil.rmtree(users, ignore_errors=True)
    for account in {p.pw_name for p in pwd.getpwall()} - existing:
        if account.startswith(ACCOUNT_PREFIX):
            subprocess.run(["userdel", account], check=False, capture_output=True)


@contextlib.contextmanager
def running_demo(demo_root: Path, size_flags: list[str] = DEMO_SIZE_FLAGS) -> Iterator[Demo]:
    """`insitu demo` (the console command) on a copy of the session's demo, until Ctrl-C
    (``size_flags``: the trial's size that ``demo_root`` was prepared with)."""
    # Outside pytest's 0700 temp tree, open to every account like a clone in /srv would be:
    # only the demo's own modes stand between a researcher's account and its files.
    tmp = Path(tempfile.mkdtemp(prefix="insitu-demo-", dir="/tmp"))
    tmp.chmod(0o755)
    existing = {p.pw_name for p in pwd.getpwall()}
    copy_demo(demo_root, tmp / "demo")
    port = free_port()
    script = Path(sys.executable).with_name("insitu")
    log = tmp / "demo.log"
    cmd = [str(script), "demo", "--dir", str(tmp / "demo"), "--port", str(port),
           *size_flags]  # fmt: skip
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
        if hub_pid is not None and alive(hub_pid):
            os.killpg(hub_pid, signal.SIGKILL)
        remove_accounts(running.root, existing)
        shutil.rmtree(tmp, ignore_errors=True)
