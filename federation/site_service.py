"""The site's federation service: the SuperNode and the site executor, as one group.

``insitu federation join`` starts this module in a new session; it starts
Flower's SuperNode (``--isolation process``) and, once the SuperNode's
Runtime API answers, :mod:`insitu.federation.site_exec`. Both are its
children, in its process group, so stopping the group stops everything the
site runs for the federation. If the SuperNode exits, so does the executor
and this process, with the SuperNode's exit code.

The node home comes from the SuperNode's ``--node-config`` (``insitu-home``);
its ``[federation]`` settings say how long the SuperNode waits between polls
(``poll_interval``: ``flower-supernode`` is run through
:mod:`insitu.federation.supernode`, which caps Flower's fixed 3 s wait) and
whether the executor keeps a runner started ahead (``prestart``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["main", "node_home_of", "supernode_command"]


def node_home_of(command: Sequence[str]) -> str | None:
    """The ``insitu-home`` of a ``flower-supernode`` command's ``--node-config``."""
    from flwr.common.config import parse_config_args

    for option, value in itertools.pairwise(command):
        if option == "--node-config":
            home = parse_config_args([value]).get("insitu-home")
            return str(home) if home else None
    return None


def _settings(home: str | None) -> Any:
    from insitu.federation.settings import FederationSettings, federation_settings

    if home is None:
        return FederationSettings()
    from insitu.config import NodeHome

    return federation_settings(NodeHome(Path(home)))


def supernode_command(command: Sequence[str], poll_interval: float) -> list[str]:
    """``flower-supernode ARGS`` as insitu's SuperNode entry point with the site's waits."""
    if not command or Path(command[0]).name != "flower-supernode":
        return list(command)
    entry = [sys.executable, "-m", "insitu.federation.supernode"]
    return [*entry, "--poll-interval", str(poll_interval), "--", *command[1:]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="insitu site federation service")
    parser.add_argument("--runtime-port", type=int, required=True)
    parser.add_argument("--root-certificates", default=None)
    parser.add_argument("--superexec-auth-secret-file", default=None)
    parser.add_argument("supernode", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = [c for c in args.supernode if c != "--"]
    home = node_home_of(command)
    settings = _settings(home)
    command = supernode_command(command, settings.poll_interval)
    children: list[subprocess.Popen[bytes]] = []

    def terminate(signum: int, _frame: FrameType | None) -> None:
        # No waiting here: the main thread may be inside Popen.wait (not re-entrant).
        # `insitu federation stop` signals the whole group and waits for it.
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    if args.superexec_auth_secret_file and not Path(args.superexec_auth_secret_file).exists():
        # A pod starts here without `insitu federation join`: make the secret now.
        from insitu.federation.processes import new_secret_file

        new_secret_file(Path(args.superexec_auth_secret_file))
    supernode = subprocess.Popen(command)
    children.append(supernode)
    while supernode.poll() is None:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", args.runtime_port), timeout=0.5).close()
            break
        time.sleep(0.1)
    if supernode.poll() is not None:
        return supernode.returncode
    executor = [
        sys.executable,
        "-m",
        "insitu.federation.site_exec",
        "--runtime-api-address",
        f"127.0.0.1:{args.runtime_port}",
        "--parent-pid",
        str(supernode.pid),
    ]
    if args.superexec_auth_secret_file:
        executor += ["--superexec-auth-secret-file", args.superexec_auth_secret_file]
    if settings.prestart and home is not None:
        executor += ["--prestart", "--insitu-home", home]
    children.append(subprocess.Popen(executor))
    code = supernode.wait()
    for child in children[1:]:
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
    return code


if __name__ == "__main__":
    sys.exit(main())
