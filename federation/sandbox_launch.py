"""Start the sandbox process an approved app runs in (see :mod:`insitu.federation.sandbox`).

What the sandbox gets, strongest first where the node can do it:

- its own Unix account, ``insitu-federation`` (created like the researchers'
  accounts, :func:`insitu.hub.local_users.ensure_account`), when the node runs
  as root: it cannot read the node home (0700), the stores, the SuperExec
  secret, or another process's environment; as non-root it runs as the node's
  account (documented: the account then is no boundary);
- a new network namespace (Linux ``unshare(CLONE_NEWNET)``; as non-root inside
  a new user namespace when the kernel allows it): no route to the SuperNode's
  Runtime API, the SuperLink or anywhere else;
- Landlock (:mod:`insitu.federation.landlock`, set by the sandbox itself
  before the task): only the Python installation readable, only its folder
  writable, no TCP, no signals out; the one boundary left when the app shares
  the node's account;
- an empty environment (no token, no ``INSITU_HOME``), a private 0700 working
  folder that is removed afterwards, no core dumps;
- resource limits set in the child before any app code runs (:class:`Limits`,
  from ``[federation]`` in insitu.toml): address space, CPU seconds, file size
  and, where the count is the sandbox's own (its account, or its own user
  namespace), processes; the runner adds a wall-clock timeout;
- its own session, and the starting process becomes a child subreaper, so
  :meth:`Sandbox.stop` ends every process the app started (also those that
  left its session), not only the first;
- one end of a Unix socket pair: its only way to the site's data and out.

:class:`Sandbox` records which of these held (``isolation``), and the runner
writes that to the audit log with each run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from insitu.federation.channel import Channel

__all__ = ["SANDBOX_ACCOUNT", "Limits", "Sandbox", "become_subreaper", "start"]

SANDBOX_ACCOUNT = "federation"  # hub-style name: the system account is insitu-federation
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
CPU_GRACE_SECONDS = 5  # SIGXCPU at the soft limit, SIGKILL this much later
MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandbox process (``[federation] sandbox_*``)."""

    memory_mb: int = 4096
    cpu_seconds: int = 1800
    file_size_mb: int = 1024
    max_processes: int = 256

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            memory_mb=settings.sandbox_memory_mb,
            cpu_seconds=settings.sandbox_cpu_seconds,
            file_size_mb=settings.sandbox_file_size_mb,
            max_processes=settings.sandbox_max_processes,
        )

    def rlimits(self, processes: bool) -> list[tuple[int, int, int]]:
        """(resource, soft, hard) to set in the child; without processes: no RLIMIT_NPROC."""
        cpu = self.cpu_seconds
        limits = [
            (resource.RLIMIT_CORE, 0, 0),
            (resource.RLIMIT_AS, self.memory_mb * MIB, self.memory_mb * MIB),
            (resource.RLIMIT_CPU, cpu, cpu + CPU_GRACE_SECONDS),
            (resource.RLIMIT_FSIZE, self.file_size_mb * MIB, self.file_size_mb * MIB),
        ]
        if processes:
            limits.append((resource.RLIMIT_NPROC, self.max_processes, self.max_processes))
        return limits

    def describe(self, processes: bool) -> str:
        what = (
            f"memory {self.memory_mb} MiB, CPU {self.cpu_seconds} s, "
            f"file size {self.file_size_mb} MiB, "
        )
        if processes:
            return what + f"processes {self.max_processes}"
        return what + "processes not limited (the app shares the node's account)"


@dataclass
class Sandbox:
    process: subprocess.Popen[bytes]
    channel: Channel
    folder: Path
    isolation: dict[str, Any] = field(default_factory=dict)
    netns: str = ""  # the app's network namespace (its processes cannot leave it)
    others: frozenset[int] = frozenset()  # our children that are not the app's

    def stop(self) -> None:
        """End the app's process and every process it started, then remove its folder."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session and group
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        _end_orphans(self._is_app)
        self.channel.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _is_app(self, pid: int) -> bool:
        if self.netns:
            return _netns(pid) == self.netns
        return pid not in self.others


def become_subreaper() -> bool:
    """Orphaned descendants of this process come back to it (the site runner calls this
    once: then :meth:`Sandbox.stop` finds what an app started and left, even after setsid)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def _is_subreaper() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    value = ctypes.c_int(0)
    ok = libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0) == 0
    return bool(ok and value.value)


def _netns(pid: int) -> str:
    try:
        return str(Path(f"/proc/{pid}/ns/net").readlink())
    except OSError:
        return ""


def _children() -> list[int]:
    """Our own child processes (with a subreaper, also the orphans of the app)."""
    me, found = os.getpid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            found.append(int(entry.name))
    return found


def _end_orphans(is_app: Any, rounds: int = 50) -> None:
    """Kill and reap what the app left behind (it may still be forking: several rounds)."""
    for _ in range(rounds):
        children = [pid for pid in _children() if is_app(pid)]
        if not children:
            return
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _account() -> Any | None:
    if os.geteuid() != 0:
        return None
    from insitu.hub.local_users import ensure_account

    return ensure_account(SANDBOX_ACCOUNT)


def _can_unshare(flags: int) -> bool:
    """Try the namespace in a throwaway child (the parent keeps its own)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        libc = ctypes.CDLL(None, use_errno=True)
        os._exit(0 if libc.unshare(flags) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _namespace_flags(as_root: bool) -> int:
    flags = CLONE_NEWNET if as_root else CLONE_NEWUSER | CLONE_NEWNET
    return flags if _can_unshare(flags) else 0


def _confinement() -> str:
    """What the sandbox's Landlock rules will hold on this kernel (it stops if they fail)."""
    from insitu.federation.landlock import Confinement, abi_version

    abi = abi_version()
    return Confinement(abi, files=abi > 0, tcp=abi >= 4, signals=abi >= 6).describe()


def start(
    configured_python: str = "", limits: Limits | None = None, protect: tuple[str, ...] = ()
) -> Sandbox:
    """A sandbox process, waiting for its task on the returned channel.

    ``configured_python`` is ``hub.user_python``: the Python other accounts may
    run (checked, as for the researchers' accounts, when an account is used);
    ``protect``: paths (the node home) the sandbox refuses to start beside when
    its Landlock rules would let the app read them.
    When the calling process is a child subreaper (:func:`become_subreaper`),
    :meth:`Sandbox.stop` ends all the app's processes, also those that left its
    session; the audit's isolation entry says which held.
    """
    limits = limits or Limits()
    from insitu.errors import ConfigError

    account = _account()
    python = sys.executable
    why = ""
    if account is not None:
        from insitu.hub.local_users import user_python

        try:
            python = user_python(configured_python)
        except ConfigError:
            # No Python the account may run: the app runs as the node's account (audited).
            account, why = None, " (hub.user_python: no Python other accounts may run)"
    flags = _namespace_flags(account is not None or os.geteuid() == 0)
    # RLIMIT_NPROC counts per user (per user namespace): only the sandbox's own count.
    count_processes = account is not None or bool(flags & CLONE_NEWUSER)
    rlimits = limits.rlimits(count_processes)
    subreaper = _is_subreaper()
    others = frozenset(_children())
    folder = Path(tempfile.mkdtemp(prefix="insitu-app-"))
    if account is not None:
        os.chown(folder, account.pw_uid, account.pw_gid)
    folder.chmod(0o700)
    parent, child = socket.socketpair()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(folder),
        "TMPDIR": str(folder),
        "FLWR_HOME": str(folder / "flwr"),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_UPDATE_CHECK_ENABLED": "0",
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",
        "MPLCONFIGDIR": str(folder),
    }
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:  # pragma: no cover (runs after fork)
        if flags and libc.unshare(flags) != 0:
            os._exit(126)
        for which, soft, hard in rlimits:
            resource.setrlimit(which, (soft, hard))
        if account is not None:
            os.setgid(account.pw_gid)
            os.setgroups([account.pw_gid])
            os.setuid(account.pw_uid)
        os.chdir(folder)

    command = [python, "-m", "insitu.federation.sandbox"]
    command += ["--fd", str(child.fileno())]
    for path in protect:
        if path:
            command += ["--protect", path]
    process = subprocess.Popen(
        command,
        env=env,
        pass_fds=[child.fileno()],
        preexec_fn=preexec,
        stdin=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
    )
    child.close()
    isolation = {
        "account": account.pw_name if account is not None else "the node's own account" + why,
        "network": "none (own network namespace)" if flags else "shared with the node",
        "files": _confinement(),
        "limits": limits.describe(count_processes),
        "processes": "all ended after the call"
        if subreaper
        else "its session ended after the call (processes that left it may remain)",
    }
    netns = _netns(process.pid) if flags & CLONE_NEWNET else ""
    return Sandbox(process, Channel(parent), folder, isolation, netns, others)
