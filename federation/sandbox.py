"""The approved app's own process: no node home, no network, no task token.

The site runner (:mod:`insitu.federation.site_runner`) starts this module for
each ClientApp call through :func:`insitu.federation.sandbox_launch.start`:
as the site's app account (``insitu-federation``) when the node runs as
root, in a new network namespace (only its own loopback), with an empty
environment and a private working folder. It receives the task over an
inherited socket, installs the FAB in that folder, runs the ClientApp, and
sends the reply back as the bytes of Flower's ``Message`` protobuf. The
site's checker, in the runner, parses those bytes; whatever this process
does to its own objects (replacing checks, editing tallies) stays here.

Before the task arrives, the process confines itself with Landlock
(:mod:`insitu.federation.landlock`, where the kernel has it): it may then read
only the Python installation and insitu's packages, write only its own folder,
open no TCP connection and signal no process outside. This is what keeps an
app that shares the node's account (a node not run as root, a SuperNode pod of
the chart) out of the node home, the stores and the SuperExec secret. A path
the runner names as protected (the node home) that lies inside what the app
may read stops the sandbox before any app code runs.

Data comes only through :class:`RemoteSiteData`: every read is a request to
the runner, which reads the store, keeps the tally of subjects served, and
answers with the data.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import pickle
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from insitu.federation.channel import Channel

__all__ = [
    "LIMIT_KINDS",
    "NOT_CONFINED",
    "ConfinementError",
    "RemoteSiteData",
    "confine",
    "limit_hit",
    "main",
    "readable_paths",
]

# What the ``E`` frame may name (the runner maps each to its own fixed text).
LIMIT_KINDS = (b"memory", b"file-size", b"processes")
NOT_CONFINED = b"not-confined"  # the sandbox could not confine itself: a site failure


class ConfinementError(RuntimeError):
    """The sandbox could not confine itself as the site requires (no app code ran)."""


class RemoteSiteData:
    """``site_data(context)`` inside the sandbox: every read goes to the site's data API."""

    def __init__(self, channel: Channel, info: dict[str, Any]) -> None:
        self._channel = channel
        self.site = str(info["site"])
        self.dataset = str(info["dataset"])
        self.alias = str(info["alias"])
        self.min_cell_count = int(info["min_cell_count"])
        self.settings = info.get("settings")  # the site's [federation] settings

    def release(self, cells: Any) -> None:
        """The site's differencing check (built-in analytics): it runs at the runner."""
        self._ask("release", json.dumps({str(k): sorted(map(str, v)) for k, v in cells.items()}))

    def _ask(self, op: str, arg: str | None = None) -> Any:
        self._channel.send(b"Q", json.dumps({"op": op, "arg": arg}).encode())
        kind, payload = self._channel.recv()
        if kind == b"X":
            raise KeyError(payload.decode())
        return pickle.loads(payload)  # noqa: S301 (from the site's runner, trusted)

    @property
    def subjects(self) -> Any:
        return self._ask("subjects")

    @property
    def series(self) -> Any:
        return self._ask("series")

    def table_names(self) -> list[str]:
        return list(self._ask("table_names"))

    def table(self, name: str) -> Any:
        return self._ask("table", str(name))

    def image(self, series_id: str) -> Any:
        return self._ask("image", str(series_id))

    def header(self, series_id: str) -> dict[str, Any]:
        return dict(self._ask("header", str(series_id)))


# System files a Python process reads (the loader, time zone, account names), no more.
_SYSTEM_READ = (
    "/usr", "/lib", "/lib32", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/ld.so.conf",
    "/etc/ld.so.conf.d", "/etc/localtime", "/etc/nsswitch.conf", "/etc/passwd", "/etc/group",
    "/etc/mime.types", "/etc/ssl", "/proc/cpuinfo", "/proc/meminfo", "/sys/devices/system/cpu",
)  # fmt: skip
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")


def readable_paths() -> list[Path]:
    """What the app may read: this Python, its packages (insitu's too) and system files."""
    import insitu

    found = {Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    found |= {Path(p) for p in sys.path if p and Path(p).is_dir() and Path(p) != Path.cwd()}
    for name in ("insitu", "insitu.datasets", "insitu.federation", "insitu.hub",
                 "insitu.kernels", "insitu.widgets"):  # fmt: skip
        with contextlib.suppress(ImportError):
            found |= {Path(p) for p in __import__(name, fromlist=["_"]).__path__}
    found |= {Path(p) for p in insitu.__path__}
    found |= {Path(p) for p in _SYSTEM_READ}
    found.add(Path(f"/proc/{os.getpid()}"))
    return sorted(found)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve() == folder.resolve() or folder.resolve() in path.resolve().parents


def confine(protect: Sequence[str]) -> str:
    """Confine this process with Landlock; what held, for the audit. A protected path
    that the app could read is an error (the site must move it), never a silent pass."""
    from insitu.federation import landlock

    readable = readable_paths()
    for name in protect:
        for folder in readable:
            if _inside(Path(name), folder):
                raise ConfinementError(
                    f"{name} lies inside {folder}, which a federated app may read: "
                    "keep the node home outside the Python installation"
                )
    try:
        confinement = landlock.restrict(readable, [Path.cwd(), *map(Path, _DEVICES)])
    except OSError as exc:
        raise ConfinementError(f"Landlock is there but refused: {exc}") from exc
    return confinement.describe()


def _run(channel: Channel, protect: Sequence[str]) -> bytes:
    # Libraries every shipped app uses, loaded before the task (a sandbox may be started
    # ahead of it): installed site code, not the app's. Images arrive as xarray objects;
    # the built-in analytics read DICOM keywords through pydicom's dictionary.
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import xarray  # noqa: F401
    from flwr.cli.install import install_from_fab
    from flwr.clientapp.utils import get_load_client_app_fn
    from flwr.common.serde import context_from_proto, message_from_proto, message_to_proto
    from flwr.proto.message_pb2 import Context as ProtoContext
    from flwr.proto.message_pb2 import Message as ProtoMessage

    from insitu.federation import node_data

    with contextlib.suppress(ImportError):  # the built-in apps, when this site has them
        import pydicom.datadict  # noqa: F401

        import insitu.federation.analytics  # noqa: F401

    confine(protect)  # before the task: no app code has run yet
    kind, payload = channel.recv()
    if kind != b"T":
        raise RuntimeError("expected a task")
    task = pickle.loads(payload)  # noqa: S301 (from the site's runner, trusted)
    message = message_from_proto(ProtoMessage.FromString(task["message"]))
    context = context_from_proto(ProtoContext.FromString(task["context"]))
    node_data.set_current(RemoteSiteData(channel, task["data"]))  # type: ignore[arg-type]
    install_from_fab(task["fab"], skip_prompt=True)
    load = get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
    client_app = load(task["fab_id"], task["fab_version"], task["fab_hash"])
    reply = client_app(message, context)
    return bytes(message_to_proto(reply).SerializeToString())


def limit_hit(exc: BaseException | None) -> bytes:
    """Which resource limit the app's failure came from, if any (``b""``: none seen).

    Only a kind from :data:`LIMIT_KINDS` ever leaves, never the exception's text.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError):
            return b"memory"
        if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
            return b"file-size"
        if isinstance(exc, OSError) and exc.errno == errno.EAGAIN:
            return b"processes"  # fork/clone over RLIMIT_NPROC (no sockets in here)
        if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
            return b"processes"
        exc = exc.__cause__ or exc.__context__
    return b""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="insitu sandbox (one ClientApp call)")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument(
        "--protect", action="append", default=[], help="a path the app must not read"
    )
    args = parser.parse_args(argv)
    channel = Channel(socket.socket(fileno=args.fd))
    try:
        reply = _run(channel, args.protect)
    except BaseException as exc:
        # The app's words (exception text, class) stay here; the runner sends a fixed text.
        kind = NOT_CONFINED if isinstance(exc, ConfinementError) else limit_hit(exc)
        with contextlib.suppress(Exception):
            import traceback

            traceback.print_exc()  # to the site's log (local)
        with contextlib.suppress(OSError):
            channel.send(b"E", kind)
        return 1
    channel.send(b"R", reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
