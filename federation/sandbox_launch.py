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
- an empty environment (no token, no ``INSITU_HOME``), a private 0700 working
  folder that is removed afterwards, no core dumps;
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
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from insitu.federation.channel import Channel

__all__ = ["SANDBOX_ACCOUNT", "Sandbox", "start"]

SANDBOX_ACCOUNT = "federation"  # hub-style name: the system account is insitu-federation
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000


@dataclass
class Sandbox:
    process: subprocess.Popen[bytes]
    channel: Channel
    folder: Path
    isolation: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.channel.close()
        shutil.rmtree(self.folder, ignore_errors=True)


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


def start(configured_python: str = "") -> Sandbox:
    """A sandbox process, waiting for its task on the returned channel.

    ``configured_python`` is ``hub.user_python``: the Python other accounts may
    run (checked, as for the researchers' accounts, when an account is used).
    """
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
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if account is not None:
            os.setgid(account.pw_gid)
            os.setgroups([account.pw_gid])
            os.setuid(account.pw_uid)
        os.chdir(folder)

    command = [python, "-m", "insitu.federation.sandbox"]
    command += ["--fd", str(child.fileno())]
    process = subprocess.Popen(
        command,
        env=env,
        pass_fds=[child.fileno()],
        preexec_fn=preexec,
        stdin=subprocess.DEVNULL,
        close_fds=True,
    )
    child.close()
    isolation = {
        "account": account.pw_name if account is not None else "the node's own account" + why,
        "network": "none (own network namespace)" if flags else "shared with the node",
    }
    return Sandbox(process, Channel(parent), folder, isolation)
