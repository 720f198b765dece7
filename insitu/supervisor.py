"""One process supervisor for every long-running process insitu starts.

The hub lifecycle (`insitu up/down/status`, the demo) and the federation
(SuperLink, SuperNode) start their services through :func:`spawn`, wait for
them with :func:`wait_until`, record them, and stop them with
:func:`stop_tree`. One idea of a live process holds for all of them:

- a process is *live* when ``/proc/<pid>`` exists and is not a zombie;
- a recorded process is *still ours* when it is live **and** its start time
  (``/proc/<pid>/stat`` field 22, clock ticks since boot) is the one recorded
  when it was started (:class:`ProcessId`). A pid file left by a crash names
  a dead pid (stale) or, after pid reuse, another program with a different
  start time: neither passes, and neither is ever signalled.

Each service is started in a session of its own (its pid is its process
group); :func:`stop_tree` ends the group, every descendant (also those that
started sessions of their own, such as the hub's proxy or Flower's
SuperExec), SIGTERM first and SIGKILL for what is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProcessId",
    "descendants",
    "group_alive",
    "group_running",
    "identify",
    "is_alive",
    "log_tail",
    "spawn",
    "start_time",
    "stop_groups",
    "stop_tree",
    "wait_until",
]

# Popen objects of the processes this Python process started, so stopping them
# reaps them (no zombies, no "still running" warnings when a Popen is collected).
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), None when there is no such process."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None  # field 22 of stat
    except (IndexError, ValueError):
        return None


def is_alive(pid: int, started: int | None = None) -> bool:
    """``pid`` runs and is no zombie; with ``started``, it is also the process recorded
    then (a reused pid has another start time)."""
    if pid <= 0:
        return False
    fields = _stat_fields(pid)
    if not fields or fields[0] == "Z":
        return False
    return started is None or start_time(pid) == started


def group_alive(pgid: int) -> bool:
    """Some process (a zombie counts: it is not reaped yet) is in group ``pgid``."""
    if pgid <= 0:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_running(pgid: int) -> bool:
    """Some process of group ``pgid`` runs (zombies do not count).

    A zombie whose parent is another process (a hub started by a process that
    still lives, when `insitu down` runs elsewhere) stays until that parent reaps
    it: waiting for the group to be empty would wait out every timeout.
    """
    if not group_alive(pgid):
        return False
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if entry.name.isdigit():
                fields = _stat_fields(int(entry.name))
                if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
                    return True
    return False


@dataclass(frozen=True)
class ProcessId:
    """A process as recorded in a pid file: its pid and its start time."""

    pid: int
    started: int

    def alive(self) -> bool:
        return is_alive(self.pid, self.started)


def identify(pid: int) -> ProcessId | None:
    """The :class:`ProcessId` of a running ``pid`` (None when it is gone)."""
    started = start_time(pid)
    return None if started is None else ProcessId(pid, started)


def spawn(
    command: list[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    _STARTED[proc.pid] = proc
    return proc


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``check`` until it is true or ``timeout`` passes (readiness, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a service's log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        try:
            ppid = int(fields[1]) if fields else None
        except (IndexError, ValueError):
            continue
        if ppid is not None:
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children = _children_map()
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return 0


def reap(pid: int, timeout: float = 5.0) -> None:
    """Wait for a process this Python process started (no zombie left behind)."""
    proc = _STARTED.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)


def reap_finished() -> None:
    """Forget the started processes that have ended (their exit status is collected)."""
    for pid, proc in list(_STARTED.items()):
        if proc.poll() is not None:
            del _STARTED[pid]


def _reap_group(pgid: int) -> None:
    # Our own children in that group must be waited for, or they stay zombies.
    with contextlib.suppress(ChildProcessError):
        while True:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
            if pid == 0:
                break


def stop_groups(pgids: Iterable[int], timeout: float) -> None:
    """SIGTERM every group at once, SIGKILL what is left after ``timeout``."""
    groups = [g for g in pgids if g > 0]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = any(group_running(g) for g in groups)
            for pgid in groups:
                _reap_group(pgid)  # after the check: what ended before it is reaped too
            if not running:
                return
            time.sleep(0.05)


def stop_tree(pid: int, timeout: float = 20.0, *, started: int | None = None) -> bool:
    """Stop the process ``pid``, its process group and every descendant, also those in
    sessions of their own; return whether anything of it still ran.

    With ``started`` (the start time recorded with the pid), a pid that now belongs
    to another process is left alone. A group whose leader is gone (an orphaned
    Flower SuperExec) is still stopped: no other process can lead that group.
    """
    now = start_time(pid)
    if started is not None and now is not None and now != started:
        return False  # the pid was reused: not ours
    own = os.getpgid(0)
    below = descendants(pid) if is_alive(pid) else []
    ran = group_alive(pid) or is_alive(pid) or any(is_alive(p) for p in below)
    # The process's own group first (it may stop its children itself, as JupyterHub
    # does), then the groups of descendants in sessions of their own.
    if pid != own and group_alive(pid):
        stop_groups([pid], timeout)
    groups = {_pgid(p) for p in below if is_alive(p)} - {0, own, pid}
    stop_groups(sorted(groups), timeout)
    # Whatever is left outside those groups (the process itself when it leads no
    # group, a descendant whose group is ours) gets SIGTERM, then SIGKILL.
    left = [p for p in (pid, *below) if is_alive(p) and p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not left:
            break
        for child in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, sig)
        if wait_until(lambda: not any(is_alive(p) for p in left), timeout, 0.05):
            break
    reap(pid)
    return ran
