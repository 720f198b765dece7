"""`insitu up`, `insitu down`, `insitu status`: start, stop and describe the site hub.

`up` plans the services (:mod:`insitu.hub.services`), writes the hub's config,
starts the services that run outside the hub, then JupyterHub (which starts
its proxy and managed services) in its own process group, and polls until
``/hub/api`` and every service's health route answer. State lives in
``run/hub.json`` (pids with their start times); logs in ``run/*.log``. `down`
stops the hub (JupyterHub stops its proxy, services and user servers), then
anything of ours still alive. Processes are started, polled and stopped by
:mod:`insitu.supervisor`.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from insitu.audit import AuditLog
from insitu.config import NodeHome, load_config
from insitu.errors import PortInUseError, ServiceError
from insitu.hub.hub_config import operator_token, write_config_file
from insitu.hub.services import (
    HubService,
    ServiceContext,
    load_plan,
    plan_services,
    write_plan,
)
from insitu.net import free_port
from insitu.supervisor import (
    is_alive,
    log_tail,
    reap_finished,
    spawn,
    start_time,
    stop_tree,
    wait_until,
)

__all__ = ["HubState", "demo_logins", "down", "hub_api", "read_state", "status", "up"]

STATE_NAME = "hub.json"
DEMO_LOGINS = "demo-logins.txt"
START_TIMEOUT = 180.0


@dataclass(frozen=True)
class HubState:
    pid: int
    url: str
    started: str
    outside_pids: dict[str, int]
    # Start times (insitu.supervisor.start_time) of the hub and the outside services:
    # a pid reused by another program is never taken for ours. None in older state files.
    started_at: int | None = None
    outside_started: dict[str, int] | None = None

    @property
    def api_url(self) -> str:
        return self.url + "/hub/api"


def _answers(url: str, token: str | None = None) -> bool:
    request = urllib.request.Request(url)  # noqa: S310 (our own loopback URL)
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def hub_api(home: NodeHome, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the running hub's REST API as the node operator."""
    state = read_state(home)
    if state is None:
        raise ServiceError("the hub is not running: start it with `insitu up`")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310
        state.api_url + path, data=data, method=method
    )
    request.add_header("Authorization", f"token {operator_token(home)}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            text = response.read()
    except urllib.error.HTTPError as exc:
        raise ServiceError(
            f"the hub answered {exc.code} to {method} {path}: {exc.read()[:300]!r}"
        ) from None
    return json.loads(text) if text else None


def read_state(home: NodeHome) -> HubState | None:
    """The running hub's state, or None (stale state files are ignored)."""
    try:
        data = json.loads((home.run / STATE_NAME).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    state = HubState(**data)
    return state if _hub_alive(state) else None


def _hub_alive(state: HubState) -> bool:
    return is_alive(state.pid, state.started_at) and _is(state.pid, b"jupyterhub")


def _is(pid: int, name: bytes) -> bool:
    """Whether ``pid`` still runs ``name`` (a recycled pid must not pass for the hub)."""
    try:
        return name in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _service_env(
    home: NodeHome, service: HubService, api_url: str
) -> dict[str, str]:  # pragma: no cover - used by outside services
    return os.environ | {
        "INSITU_HOME": str(home.root),
        "JUPYTERHUB_API_TOKEN": service.api_token,
        "JUPYTERHUB_API_URL": api_url,
        "JUPYTERHUB_SERVICE_NAME": service.name,
        "JUPYTERHUB_SERVICE_URL": service.url,
        "JUPYTERHUB_SERVICE_PREFIX": service.prefix,
        **service.environment,
    }


def up(home: NodeHome, *, port: int | None = None, actor: str | None = None) -> HubState:
    """Start the hub and its services; return once all answer."""
    home.require_initialized()
    running = read_state(home)
    if running is not None:
        return running
    config = load_config(home)
    if config.hub.user_accounts_dir:
        # Checked before anything starts: a bad setting stops `up` with its own message,
        # not with a service that did not answer.
        from insitu.hub.local_users import accounts_dir, user_python

        users_dir = accounts_dir(home, config.hub.user_accounts_dir)
        user_python(config.hub.user_python, users_dir)
    port = config.hub.port if port is None else port
    port = port or free_port()
    host = "127.0.0.1" if config.hub.host in ("127.0.0.1", "0.0.0.0", "") else config.hub.host  # noqa: S104
    require_free_port(config.hub.host or "127.0.0.1", port)
    url = f"http://{host}:{port}"
    hub_api_port = free_port()
    ctx = ServiceContext(
        home=home,
        config=config,
        hub_url=url,
        hub_api_url=f"http://127.0.0.1:{hub_api_port}/hub/api",
    )
    services = plan_services(ctx)
    write_plan(
        home, services, {"port": port, "hub_api_port": hub_api_port, "proxy_api_port": free_port()}
    )
    config_file = write_config_file(home)
    operator_token(home)
    home.run.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen[bytes]] = []
    outside: dict[str, int] = {}
    try:
        for service in services:
            if service.managed or not service.command:
                continue
            proc = spawn(
                service.command,
                home.run / f"{service.name}.log",
                _service_env(home, service, ctx.hub_api_url),
                home.run,
            )
            started.append(proc)
            outside[service.name] = proc.pid
            _ready(service, proc, home)
        hub_cmd = [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(config_file)]
        env = os.environ | {"INSITU_HOME": str(home.root)}
        hub = spawn(hub_cmd, home.run / "hub.log", env, home.hub)
        started.append(hub)
        state = HubState(
            pid=hub.pid,
            url=url,
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            outside_pids=outside,
            started_at=start_time(hub.pid),
            outside_started={
                name: ticks for name, pid in outside.items() if (ticks := start_time(pid))
            },
        )
        (home.run / STATE_NAME).write_text(json.dumps(state.__dict__))
        ok = wait_until(lambda: hub.poll() is not None or _answers(state.api_url), START_TIMEOUT)
        if hub.poll() is not None:
            raise ServiceError(
                f"the hub exited during start-up (code {hub.returncode}); end of "
                f"{home.run / 'hub.log'}:\n{log_tail(home.run / 'hub.log')}"
            )
        if not ok:
            raise ServiceError(
                f"the hub did not answer at {state.api_url} within {START_TIMEOUT:.0f} s; "
                f"end of {home.run / 'hub.log'}:\n{log_tail(home.run / 'hub.log')}"
            )
        for service in services:
            if service.managed and service.ready_path:
                _ready(service, hub, home)
    except BaseException:
        for proc in reversed(started):
            stop_tree(proc.pid)
        (home.run / STATE_NAME).unlink(missing_ok=True)
        raise
    AuditLog(home).append("config", user=actor, action="hub.up", url=url)
    return state


def require_free_port(host: str, port: int) -> None:
    """Refuse at once, naming the port, when another program listens on it (a hub
    started there would fail only after its start-up timeout)."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUseError(
                f"port {port} on {host} is already in use by another program ({exc.strerror}); "
                "choose a free one: `insitu up --port N`, `insitu demo --port N` or "
                "`make demo PORT=N`"
            ) from None


def _ready(service: HubService, proc: subprocess.Popen[bytes], home: NodeHome) -> None:
    if not service.ready_path:
        return
    target = service.url + service.prefix + service.ready_path
    if not wait_until(lambda: proc.poll() is not None or _answers(target), START_TIMEOUT) or (
        proc.poll() is not None
    ):
        raise ServiceError(
            f"service {service.name} did not answer at {target}; see {home.run}/*.log:\n"
            f"{log_tail(home.run / 'hub.log')}"
        )


_HUB_PROCESSES = (b"insitu.hub.", b"jupyterhub", b"configurable-http-proxy")
_USER_PROCESSES = (b"jupyterhub-singleuser", b"ipykernel", b"jupyter")


def _ancestors() -> set[int]:
    found, pid = set(), os.getpid()
    while pid > 1:
        found.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return found


def _orphans(home: NodeHome) -> list[int]:
    """Hub processes of this node home: services (started with its INSITU_HOME) and
    user servers and kernels (working in hub/users/, or in hub.user_accounts_dir when
    researchers have their own Unix accounts); never this process or its parents."""
    marker = f"INSITU_HOME={home.root}".encode()
    users = [str(home.hub / "users")]
    with contextlib.suppress(Exception):  # a broken insitu.toml must not block `down`
        if load_config(home).hub.user_accounts_dir:
            users.append(load_config(home).hub.user_accounts_dir.rstrip("/") + "/")
    mine = _ancestors()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            if not cmd:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
            cwd = str((entry / "cwd").readlink())
        except OSError:
            continue
        service = marker in env and any(name in cmd for name in _HUB_PROCESSES)
        user = cwd.startswith(tuple(users)) and any(name in cmd for name in _USER_PROCESSES)
        if service or user:
            found.append(int(entry.name))
    return found


def down(home: NodeHome, *, actor: str | None = None) -> bool:
    """Stop everything `up` started; False when nothing ran."""
    path = home.run / STATE_NAME
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    state = HubState(**data)
    was_running = _hub_alive(state)
    if was_running:
        stop_tree(state.pid, timeout=30.0, started=state.started_at)
    recorded = state.outside_started or {}
    for name, pid in state.outside_pids.items():
        if is_alive(pid, recorded.get(name)):
            stop_tree(pid, started=recorded.get(name))
    # A hub that crashed leaves its proxy behind (it runs in a session of its own).
    proxy_pid = home.run / "proxy.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(proxy_pid.read_text().strip())
        if is_alive(pid) and _is(pid, b"configurable-http-proxy"):
            stop_tree(pid)
    # Last, anything of this node's hub still alive (a crashed hub orphans its services).
    for pid in _orphans(home):
        stop_tree(pid, timeout=10.0)
    path.unlink(missing_ok=True)
    proxy_pid.unlink(missing_ok=True)
    reap_finished()  # what ended (e.g. a crashed hub)
    if was_running:
        AuditLog(home).append("config", user=actor, action="hub.down", url=state.url)
    return was_running


def status(home: NodeHome) -> dict[str, Any]:
    """What runs: the hub, its services and the user servers."""
    state = read_state(home)
    if state is None:
        return {"running": False}
    services, _ = load_plan(home)
    info: dict[str, Any] = {
        "running": True,
        "url": state.url,
        "pid": state.pid,
        "started": state.started,
        "answers": _answers(state.api_url),
        "services": {
            s.name: {
                "url": s.url,
                "managed": s.managed,
                "answers": _answers(s.url + s.prefix + s.ready_path) if s.ready_path else None,
            }
            for s in services
        },
    }
    try:
        users = hub_api(home, "GET", "/users")
        info["servers"] = sorted(u["name"] for u in users if u.get("servers"))
    except ServiceError as exc:
        info["servers_error"] = str(exc)
    return info


def demo_logins(home: NodeHome) -> str | None:
    """The demo's logins, when `insitu demo` left them in private/ for `up` to print."""
    path = home.private / DEMO_LOGINS
    return path.read_text() if path.exists() else None
