"""Start and stop the Flower processes of a node: the coordinator's SuperLink and
this site's SuperNode (with the site's own executor beside it).

Each service gets its own process group (its pid), recorded with its ports in
a JSON pid file under ``$INSITU_HOME/run``. Flower's children (the SuperLink's
``flower-superexec`` and ``flwr-serverapp``, our executor and its runners)
stay in that group, so :func:`stop` ends them too, even when the leader is
already gone (an orphaned superexec is exactly that case). Processes are
started, polled and stopped by :mod:`insitu.supervisor`; a record carries the
leader's start time, so a pid reused by another program is never taken for ours.

Insecure (plain HTTP) mode is allowed only on loopback addresses; anywhere
else the coordinator needs TLS certificates and a site needs the CA.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from insitu.config import NodeHome, load_config
from insitu.errors import ConfigError, ServiceError
from insitu.federation.approvals import federation_dir
from insitu.federation.node_data import (
    NODE_CONFIG_ALIAS,
    NODE_CONFIG_DATASET,
    NODE_CONFIG_HOME,
    NODE_CONFIG_SITE,
)
from insitu.net import free_port
from insitu.supervisor import group_running, log_tail, spawn, start_time, stop_tree

__all__ = [
    "ServiceRecord",
    "TlsOptions",
    "free_port",  # re-exported from insitu.net
    "is_loopback",
    "running",
    "start_coordinator",
    "start_site",
    "stop",
    "write_flower_connection",
]

DEFAULT_COORDINATOR = "127.0.0.1:9093"
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class TlsOptions:
    """Certificates for a coordinator (cert, key, CA) or a site (CA only)."""

    certfile: str | None = None
    keyfile: str | None = None
    ca_certfile: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.certfile or self.keyfile or self.ca_certfile)


@dataclass
class ServiceRecord:
    role: str  # "coordinator" or "site"
    pid: int
    pgid: int
    address: str
    log: str
    started_at: str
    insecure: bool
    extra: dict[str, Any] = field(default_factory=dict)
    # The leader's start time (insitu.supervisor.start_time); None in older records.
    started: int | None = None

    def alive(self) -> bool:
        """Its process group still runs (zombies not yet reaped do not count) and the
        pid was not reused by another program."""
        now = start_time(self.pid)
        if self.started is not None and now is not None and now != self.started:
            return False
        return group_running(self.pgid)


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{address!r} is not HOST:PORT (for example 127.0.0.1:9093)")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_insecure(host: str, insecure: bool, tls: TlsOptions, what: str) -> None:
    if insecure and tls.enabled:
        raise ConfigError(f"{what}: give either --insecure or TLS certificates, not both")
    if not insecure and not tls.enabled:
        raise ConfigError(
            f"{what}: no TLS certificates given; pass --ssl-certfile/--ssl-keyfile/"
            "--ssl-ca-certfile (coordinator) or --root-certificates (site), or --insecure "
            "on a loopback address for a local test"
        )
    if insecure and not is_loopback(host):
        raise ConfigError(
            f"{what}: refusing --insecure on {host!r}: plain HTTP is only allowed on a "
            "loopback address (127.0.0.1, ::1, localhost); use TLS across machines"
        )


def _pidfile(home: NodeHome, role: str) -> Path:
    return home.run / f"federation-{role}.json"


def _flower_env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_HOME"] = str(flwr_home)
    # Flower finds flwr-serverapp, flower-superexec ... on PATH: use this venv's.
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.setdefault("FLWR_UPDATE_CHECK_ENABLED", "0")
    env["PYTHONUNBUFFERED"] = "1"
    # Flower's SuperExec polls for work every second by default; a tenth keeps rounds short.
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "0.1")
    return env


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(
                f"the Flower process exited with code {proc.returncode} before it was "
                f"ready; its log is {log}:\n{log_tail(log)}"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise ServiceError(f"nothing answered on {host}:{port} within {READY_TIMEOUT:.0f} s; see {log}")


def _wait_log(text: str, proc: subprocess.Popen[bytes], log: Path, offset: int) -> None:
    """Wait until ``text`` appears in the log after ``offset`` (the log is appended to)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(
                f"the SuperNode exited with code {proc.returncode}; its log is {log}:\n"
                f"{log_tail(log)}"
            )
        with open(log, "rb") as fh:
            fh.seek(offset)
            if text.encode() in fh.read():
                return
        time.sleep(0.1)
    raise ServiceError(
        f"the SuperNode did not connect within {READY_TIMEOUT:.0f} s; its log is {log}:\n"
        f"{log_tail(log)}"
    )


def _write_record(home: NodeHome, record: ServiceRecord) -> None:
    home.run.mkdir(parents=True, exist_ok=True)
    path = _pidfile(home, record.role)
    path.write_text(json.dumps(asdict(record), indent=2) + "\n")


def running(home: NodeHome, role: str) -> ServiceRecord | None:
    """The recorded service if its process group is still alive."""
    path = _pidfile(home, role)
    try:
        record = ServiceRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    return record if record.alive() else None


def _refuse_if_running(home: NodeHome, role: str) -> None:
    record = running(home, role)
    if record is not None:
        raise ServiceError(
            f"this home already runs a federation {role} (pid {record.pid}, "
            f"{record.address}): `insitu federation stop` first"
        )


def start_coordinator(
    home: NodeHome,
    address: str = DEFAULT_COORDINATOR,
    *,
    insecure: bool = False,
    tls: TlsOptions | None = None,
    node_auth: bool | None = None,
) -> ServiceRecord:
    """Start a Flower SuperLink (deployment engine) serving Fleet, Control and Runtime APIs.

    It runs through insitu's entry point (:mod:`insitu.federation.superlink`): the
    Control API needs a token from ``insitu federation token issue`` and shows each
    researcher only their own runs. SuperNode authentication is on by default
    (``node_auth=None``) whenever TLS is; Flower cannot do it over plain HTTP, so a
    loopback ``insecure`` coordinator runs without it.
    """
    tls = tls or TlsOptions()
    host, port = split_address(address)
    _check_insecure(host, insecure, tls, "insitu federation coordinator")
    if node_auth is None:
        node_auth = not insecure
    if node_auth and insecure:
        raise ConfigError(
            "SuperNode authentication needs TLS (Flower refuses it over plain HTTP): "
            "give certificates instead of --insecure"
        )
    _refuse_if_running(home, "coordinator")
    folder = federation_dir(home) / "coordinator"
    folder.mkdir(parents=True, exist_ok=True)
    log = home.run / "federation-coordinator.log"
    from insitu.federation.control_auth import ensure_admin_token

    ensure_admin_token(home)
    command = [
        sys.executable,
        "-m",
        "insitu.federation.superlink",
        "--insitu-home",
        str(home.root),
        "--host",
        host,
        "--port",
        str(port),
        "--database",
        str(folder / "state.db"),
        "--disable-runtime-dependency-installation",
    ]
    if insecure:
        command.append("--insecure")
    else:
        command += ["--ssl-certfile", str(tls.certfile), "--ssl-keyfile", str(tls.keyfile)]
        command += ["--ssl-ca-certfile", str(tls.ca_certfile)]
    if node_auth:
        command.append("--enable-supernode-auth")
    proc = spawn(command, log, _flower_env(folder / "flwr"))
    record = ServiceRecord(
        role="coordinator",
        pid=proc.pid,
        pgid=proc.pid,
        address=f"{host}:{port}",
        log=str(log),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        insecure=insecure,
        extra={"node_auth": node_auth, "command": shlex.join(command)},
        started=start_time(proc.pid),
    )
    _write_record(home, record)
    try:
        _wait_port(host, port, proc, log)
    except ServiceError:
        stop(home, roles=("coordinator",))
        raise
    return record


def start_site(
    home: NodeHome,
    superlink: str,
    dataset: str,
    *,
    insecure: bool = False,
    root_certificates: str | None = None,
    auth_private_key: str | None = None,
    runtime_port: int | None = None,
    alias: str | None = None,
) -> ServiceRecord:
    """Start this site's SuperNode for one dataset, and the site executor beside it.

    ``alias`` is the name the federation uses for the dataset when the site's
    own name differs (``locat-site-a`` here, ``locat`` in the federation).
    """
    config = load_config(home)
    host, _ = split_address(superlink)
    _check_insecure(
        host, insecure, TlsOptions(ca_certfile=root_certificates), "insitu federation join"
    )
    _refuse_if_running(home, "site")
    folder = federation_dir(home) / "site"
    folder.mkdir(parents=True, exist_ok=True)
    log = home.run / "federation-site.log"
    port = runtime_port or free_port()
    node_config = " ".join(
        f"{key}={json.dumps(value)}"
        for key, value in (
            (NODE_CONFIG_HOME, str(home.root)),
            (NODE_CONFIG_DATASET, dataset),
            (NODE_CONFIG_SITE, config.site.name),
            (NODE_CONFIG_ALIAS, alias or dataset),
        )
    )
    command = [
        str(Path(sys.executable).parent / "flower-supernode"),
        "--superlink",
        superlink,
        "--isolation",
        "process",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--node-config",
        node_config,
    ]
    if insecure:
        command.append("--insecure")
    else:
        command += ["--root-certificates", str(root_certificates)]
    if auth_private_key:
        command += ["--auth-supernode-private-key", auth_private_key]
    # Only the site's executor may take tasks from the Runtime API (HMAC with this secret).
    secret = superexec_secret(folder)
    command += ["--superexec-auth-secret-file", str(secret)]
    service = [sys.executable, "-m", "insitu.federation.site_service"]
    service += ["--runtime-port", str(port), "--superexec-auth-secret-file", str(secret)]
    service += ["--", *command]
    offset = log.stat().st_size if log.exists() else 0
    proc = spawn(service, log, _flower_env(folder / "flwr"))
    record = ServiceRecord(
        role="site",
        pid=proc.pid,
        pgid=proc.pid,
        address=superlink,
        log=str(log),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        insecure=insecure,
        extra={
            "dataset": dataset,
            "alias": alias or dataset,
            "runtime_port": port,
            "site": config.site.name,
        },
        started=start_time(proc.pid),
    )
    _write_record(home, record)
    try:
        _wait_log("SuperNode ID", proc, log, offset)
    except ServiceError:
        stop(home, roles=("site",))
        raise
    return record


def superexec_secret(folder: Path) -> Path:
    """A fresh random SuperExec secret for this SuperNode, 0600 (the site's account only)."""
    return new_secret_file(folder / "superexec.secret")


def new_secret_file(path: Path) -> Path:
    """Write 32 fresh random bytes to ``path`` (replacing it), readable by this account only."""
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))
    return path


def stop(
    home: NodeHome, roles: tuple[str, ...] = ("site", "coordinator"), timeout: float = 10.0
) -> list[str]:
    """Stop what this home started (whole process groups); return what was stopped."""
    stopped: list[str] = []
    for role in roles:
        path = _pidfile(home, role)
        try:
            record = ServiceRecord(**json.loads(path.read_text()))
        except FileNotFoundError:
            continue
        # Flower starts some children (the SuperLink's superexec) in their own
        # session: stop_tree finds every descendant's group before the leader goes.
        if stop_tree(record.pid, timeout, started=record.started):
            stopped.append(f"{role} (process group {record.pgid}, {record.address})")
        path.unlink(missing_ok=True)
    return stopped


def write_flower_connection(
    flwr_home: Path,
    name: str,
    address: str,
    *,
    insecure: bool,
    root_certificates: str | None = None,
    default: bool = True,
) -> Path:
    """Add ``[superlink.NAME]`` to ``$FLWR_HOME/config.toml`` (what `flwr run` reads)."""
    import tomllib

    path = flwr_home / "config.toml"
    flwr_home.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {}
    if path.exists():
        data = tomllib.loads(path.read_text())
    superlink = data.setdefault("superlink", {})
    entry: dict[str, Any] = {"address": address}
    if insecure:
        entry["insecure"] = True
    if root_certificates:
        entry["root-certificates"] = str(root_certificates)
    superlink[name] = entry
    if default:
        superlink["default"] = name
    path.write_text(_dump(data))
    return path


def _dump(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for section, table in data.items():
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if scalars:
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {json.dumps(v)}" for k, v in scalars.items())
            lines.append("")
        for sub, subtable in table.items():
            if isinstance(subtable, dict):
                lines.append(f"[{section}.{sub}]")
                lines.extend(f"{k} = {json.dumps(v)}" for k, v in subtable.items())
                lines.append("")
    return "\n".join(lines)
