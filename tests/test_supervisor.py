"""The process supervisor (insitu.supervisor): live processes, stale pid files, pid
reuse and stopping a whole tree, with real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from insitu.supervisor import (
    descendants,
    group_alive,
    group_running,
    identify,
    is_alive,
    spawn,
    start_time,
    stop_tree,
    wait_until,
)

# A leader that starts a child in its own group and one in a session of its own
# (as JupyterHub starts its proxy and Flower its SuperExec), writes their pids, waits.
TREE = """
import json, subprocess, sys, time
same = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
own = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
)
open(sys.argv[1] + ".tmp", "w").write(json.dumps([same.pid, own.pid]))
__import__("os").replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""
# A leader that starts a child in its group, writes its pid and exits (orphaning it).
ORPHAN = """
import os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1] + ".tmp", "w").write(str(child.pid))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
"""


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def _pids(path: Path):
    assert wait_until(path.exists, 60), "the test's process tree did not start"
    return json.loads(path.read_text())


def test_a_stale_record_is_not_alive(tmp_path):
    proc = _sleeper()
    recorded = identify(proc.pid)
    assert recorded is not None and recorded.alive()
    proc.kill()
    assert wait_until(lambda: not is_alive(proc.pid), 30)  # a zombie is not alive
    proc.wait()
    assert not recorded.alive()
    assert start_time(proc.pid) is None
    assert stop_tree(proc.pid, 5, started=recorded.started) is False


def test_a_reused_pid_is_not_ours_and_is_never_signalled():
    proc = _sleeper()
    try:
        now = start_time(proc.pid)
        assert now is not None
        assert is_alive(proc.pid) and is_alive(proc.pid, now)
        assert not is_alive(proc.pid, now - 1)  # what a pid file from before reuse holds
        assert stop_tree(proc.pid, 5, started=now - 1) is False
        assert proc.poll() is None, "a process that merely has a recorded pid was signalled"
    finally:
        proc.kill()
        proc.wait()


def test_stop_tree_ends_the_group_and_children_in_their_own_sessions(tmp_path):
    pids_file = tmp_path / "pids.json"
    leader = spawn([sys.executable, "-c", TREE, str(pids_file)], tmp_path / "tree.log")
    same, own = _pids(pids_file)
    assert {same, own} <= set(descendants(leader.pid))
    assert os.getpgid(own) == own != leader.pid
    assert stop_tree(leader.pid, 10, started=start_time(leader.pid)) is True
    assert wait_until(lambda: not any(is_alive(p) for p in (leader.pid, same, own)), 30)
    assert leader.poll() is not None  # reaped
    assert not group_running(leader.pid) and not group_running(own)
    # the leader's child, orphaned when the leader ended, is reaped by init
    assert wait_until(lambda: not group_alive(leader.pid) and not group_alive(own), 30)


def test_stop_tree_ends_a_group_whose_leader_is_gone(tmp_path):
    pid_file = tmp_path / "child.pid"
    leader = spawn([sys.executable, "-c", ORPHAN, str(pid_file)], tmp_path / "orphan.log")
    assert wait_until(pid_file.exists, 60)
    child = int(pid_file.read_text())
    leader.wait(60)
    assert not is_alive(leader.pid) and group_alive(leader.pid) and is_alive(child)
    assert stop_tree(leader.pid, 10) is True
    assert wait_until(lambda: not group_alive(leader.pid), 30)
    assert not is_alive(child)


# A parent that starts a child in a group of its own, never reaps it, and waits:
# the child's group then holds only a zombie this test process cannot reap.
ZOMBIE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(600)
"""


def test_a_group_of_zombies_is_not_running_and_is_not_waited_for(tmp_path):
    """`insitu down` run by another process than the one that started the hub: the
    hub's group holds a zombie until its parent reaps it. It counts as existing
    (group_alive) but not as running, so stopping it does not wait out a timeout."""
    pid_file = tmp_path / "zombie.pid"
    parent = spawn([sys.executable, "-c", ZOMBIE, str(pid_file)], tmp_path / "zombie.log")
    try:
        assert wait_until(pid_file.exists, 60)
        zombie = int(pid_file.read_text())
        assert wait_until(lambda: not is_alive(zombie), 60)
        assert group_alive(zombie) and not group_running(zombie)
        assert group_running(parent.pid)
    finally:
        stop_tree(parent.pid, 10)


def test_hub_and_federation_records_use_the_same_idea_of_live(home, tmp_path):
    """A stale or reused pid in run/hub.json or a federation record reads as not running."""
    from insitu.federation.processes import ServiceRecord, running
    from insitu.hub.lifecycle import STATE_NAME, read_state

    proc = _sleeper()
    try:
        home.run.mkdir(parents=True, exist_ok=True)
        now = start_time(proc.pid)
        assert now is not None
        record = {
            "role": "site", "pid": proc.pid, "pgid": proc.pid, "address": "127.0.0.1:1",
            "log": str(tmp_path / "x.log"), "started_at": "", "insecure": True,
        }  # fmt: skip
        path = home.run / "federation-site.json"
        path.write_text(json.dumps(record | {"started": now - 1}))
        assert running(home, "site") is None  # the pid was reused
        path.write_text(json.dumps(record))  # an old record: no start time
        # (the sleeper leads no group of its own: nothing of this record runs)
        assert running(home, "site") is None
        assert ServiceRecord(**record | {"pgid": os.getpgid(0), "started": now}).alive()
        state = {"pid": proc.pid, "url": "http://127.0.0.1:1", "started": "", "outside_pids": {}}
        (home.run / STATE_NAME).write_text(json.dumps(state | {"started_at": now}))
        assert read_state(home) is None  # alive, but not JupyterHub
    finally:
        proc.kill()
        proc.wait()
    (home.run / STATE_NAME).write_text(json.dumps(state | {"started_at": now}))
    assert read_state(home) is None  # stale


@pytest.fixture(autouse=True)
def _no_leftovers():
    before = set(descendants(os.getpid()))
    yield
    left = [p for p in set(descendants(os.getpid())) - before if is_alive(p)]
    assert not left, f"processes left running: {left}"
