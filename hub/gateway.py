"""Compute for researchers: a dask-gateway server beside the hub.

It runs outside the hub (``managed=False``: `insitu up` starts it first and
stops it last) and authenticates every request with the user's JupyterHub
token (``JupyterHubAuthenticator``, requiring ``access:services!service=
dask-gateway``, which the hub grants users). Clusters run as local processes
(``UnsafeLocalBackend``: every cluster runs as the node's service account, as
the single-user servers do in the embedded setup; the Kubernetes chart uses
dask-gateway's own chart instead).

Workers read stores only through the gate, with the researcher's own token:
``insitu.compute`` passes the kernel's token as the cluster option
``gate_token`` and the options handler puts it, with the gate's URL, into the
scheduler's and workers' environment (workers inherit only a few variables).
So the gate checks and audits every read a worker makes in the researcher's
name. Limits come from insitu.toml ``[compute]``; idle clusters stop after
:data:`IDLE_TIMEOUT` seconds and a kernel's cluster stops when the kernel does.

Addresses: the HTTP API at ``http://127.0.0.1:<port>/services/dask-gateway``
(also proxied by the hub under the same prefix, for dashboards) and the
scheduler proxy at ``gateway://127.0.0.1:<tcp port>``; the hub puts both into
every user server's environment as dask-gateway's own config variables.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from insitu.audit import AuditLog
from insitu.config import NodeHome, load_config, resolve_home
from insitu.errors import ConfigError
from insitu.hub.services import HubService, ServiceContext, load_plan
from insitu.net import free_port

__all__ = ["IDLE_TIMEOUT", "NAME", "configure_gateway", "hub_service"]

NAME = "dask-gateway"
IDLE_TIMEOUT = 1800.0  # seconds without a client before a cluster shuts itself down
PORTS_ENV = "INSITU_GATEWAY_PORTS"  # "<http>,<tcp>,<api>"


def _dask_command(what: str) -> list[str]:
    """``dask scheduler`` / ``dask worker`` from this Python's environment."""
    beside = Path(sys.executable).parent / "dask"
    return [str(beside) if beside.exists() else shutil.which("dask") or "dask", what]


def _memory(text: str) -> int:
    """Bytes of a size such as "2 GiB" (insitu.toml) for dask-gateway, which wants "2 G"."""
    from dask.utils import parse_bytes

    try:
        return int(parse_bytes(text))
    except (ValueError, TypeError):
        raise ConfigError(
            f'compute.worker_memory {text!r} is not a size: write e.g. "2 GiB" or "512 MiB"'
        ) from None


def _gate_url(home: NodeHome) -> str:
    """The gate's URL as user servers get it (from the service plan)."""
    services, _ = load_plan(home)
    for service in services:
        url = service.user_environment.get("INSITU_GATE_URL")
        if url:
            return url
    return ""


def configure_gateway(c: Any, home: NodeHome, ports: tuple[int, int, int]) -> None:
    """Fill dask-gateway-server's config ``c`` for this node."""
    from dask_gateway_server.options import Options, String

    compute = load_config(home).compute
    http_port, tcp_port, api_port = ports
    gate_url = _gate_url(home)

    c.DaskGateway.address = f"127.0.0.1:{api_port}"
    c.Proxy.address = f"127.0.0.1:{http_port}"
    c.Proxy.tcp_address = f"127.0.0.1:{tcp_port}"
    c.Proxy.prefix = f"/services/{NAME}"
    c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
    c.DaskGateway.authenticator_class = "dask_gateway_server.auth.JupyterHubAuthenticator"
    c.JupyterHubAuthenticator.jupyterhub_service_name = NAME
    c.UnsafeLocalBackend.clusters_directory = str(home.run / "dask-clusters")
    accounts_python = ""
    hub = load_config(home).hub
    if hub.user_accounts_dir:
        # Finding S1 closed: clusters run as the researcher's own Unix account.
        from insitu.hub.local_users import accounts_dir, clusters_dir, user_python

        users = accounts_dir(home, hub.user_accounts_dir)
        c.DaskGateway.backend_class = "insitu.hub.local_users.AccountsLocalBackend"
        c.AccountsLocalBackend.clusters_directory = str(clusters_dir(users))
        accounts_python = user_python(hub.user_python, users)

    cluster = c.ClusterConfig
    cluster.scheduler_cmd = _dask_command("scheduler")
    cluster.worker_cmd = _dask_command("worker")
    if accounts_python:  # the researchers' accounts may not be able to run ours
        cluster.scheduler_cmd = [accounts_python, "-m", "dask", "scheduler"]
        cluster.worker_cmd = [accounts_python, "-m", "dask", "worker"]
    cluster.worker_cores = compute.worker_cores
    cluster.worker_memory = _memory(compute.worker_memory)
    cluster.cluster_max_workers = compute.max_workers
    cluster.idle_timeout = IDLE_TIMEOUT

    audit = AuditLog(home)

    def options_handler(options: Any, user: Any) -> dict[str, Any]:
        # Called once per new cluster. The researcher's own token: the gate authorises
        # and audits worker reads as them.
        environment = {"INSITU_GATE_URL": gate_url, "INSITU_USER": user.name}
        if options.gate_token:
            environment["JUPYTERHUB_API_TOKEN"] = options.gate_token
        audit.append(
            "compute",
            user=user.name,
            action="cluster.start",
            max_workers=compute.max_workers,
            worker_memory=compute.worker_memory,
            worker_cores=compute.worker_cores,
        )
        return {"environment": environment}

    c.Backend.cluster_options = Options(
        String("gate_token", default="", label="the researcher's hub token (set by insitu)"),
        handler=options_handler,
    )


def hub_service(ctx: ServiceContext) -> HubService:
    """The gateway, started before the hub; user servers get its addresses."""
    http_port, tcp_port, api_port = ctx.port(), free_port(), free_port()
    http = f"http://127.0.0.1:{http_port}/services/{NAME}"
    return HubService(
        name=NAME,
        command=[sys.executable, "-m", "insitu.hub.gateway"],
        port=http_port,
        managed=False,
        environment={PORTS_ENV: f"{http_port},{tcp_port},{api_port}"},
        user_environment={
            "DASK_GATEWAY__ADDRESS": http,
            "DASK_GATEWAY__PROXY_ADDRESS": f"gateway://127.0.0.1:{tcp_port}",
            "DASK_GATEWAY__PUBLIC_ADDRESS": f"{ctx.hub_url}/services/{NAME}",
            "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
        },
        ready_path="api/health",
    )


def main() -> None:
    """Write the gateway's config under run/ and serve it (exits on SIGTERM)."""
    from dask_gateway_server.app import DaskGateway
    from traitlets.config import Config

    home = resolve_home().require_initialized()
    try:
        ports = tuple(int(p) for p in os.environ[PORTS_ENV].split(","))
    except (KeyError, ValueError):
        raise ConfigError(f"{PORTS_ENV} is not set: `insitu up` starts this service") from None
    if len(ports) != 3:
        raise ConfigError(f"{PORTS_ENV} must be three ports: http,tcp,api")
    config = Config()
    configure_gateway(config, home, (ports[0], ports[1], ports[2]))
    (home.run / "dask-clusters").mkdir(parents=True, exist_ok=True)
    app = DaskGateway(config=config)
    app.initialize([])
    app.start()


if __name__ == "__main__":
    main()
