"""The extension point for hub services: every insitu service is a :class:`HubService`.

A component that runs a service beside the hub (the gate, the access API, the
airlock, the dask-gateway) contributes a *provider*: a function
``provider(ctx: ServiceContext) -> HubService | list[HubService] | None``,
named in :data:`SERVICE_PROVIDERS` as ``"module:function"``. A provider whose
module does not exist yet is skipped, so components can land in any order.

`insitu up` calls :func:`plan_services` once, writes the plan (ports, tokens)
to ``run/services.json`` (mode 0600), starts the services that are not
hub-managed (``managed=False``: they must run before the hub, like the
dask-gateway), then starts the hub, whose config (``hub_config.configure``)
reads the same plan and registers every service with JupyterHub:

- the service is proxied at ``/services/<name>/`` and, when ``managed``, started
  and stopped by the hub with ``environment`` plus JupyterHub's own variables
  (``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_SERVICE_URL``, ...; ``INSITU_HOME`` is
  always added);
- with ``user_access`` every user's role gets ``access:services!service=<name>``
  and user servers' ``$JUPYTERHUB_API_TOKEN`` carries that scope, so a kernel
  can call the service with its token;
- ``scopes`` are granted to the service's own token (for example
  ``list:users`` for a service that must look users up);
- ``user_environment`` is added to every user server's environment (e.g.
  ``INSITU_GATE_URL``); never put a file-system path to data there.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from insitu.config import NodeHome, SiteConfig
from insitu.errors import ConfigError
from insitu.net import free_port

__all__ = [
    "SERVICE_PROVIDERS",
    "HubService",
    "ServiceContext",
    "free_port",  # re-exported from insitu.net
    "load_plan",
    "plan_services",
    "write_plan",
]

# Add a line here to run a new service beside the hub (see the module docstring).
SERVICE_PROVIDERS: tuple[str, ...] = (
    "insitu.hub.gate_service:hub_service",
    "insitu.hub.access_service:hub_service",
    "insitu.hub.airlock_service:hub_service",
    "insitu.hub.gateway:hub_service",
    "insitu.hub.site_service:hub_service",
)

PLAN_NAME = "services.json"


@dataclass(frozen=True)
class HubService:
    """One service of the site hub."""

    name: str
    command: list[str] = field(default_factory=list)
    port: int = 0  # 127.0.0.1 port it listens on (0: no HTTP endpoint)
    environment: dict[str, str] = field(default_factory=dict)
    managed: bool = True  # False: `insitu up` starts it before the hub and stops it after
    user_access: bool = True  # every user may call it with their token
    scopes: list[str] = field(default_factory=list)  # granted to the service's own token
    user_environment: dict[str, str] = field(default_factory=dict)
    api_token: str = ""  # filled in by plan_services for services outside the hub
    ready_path: str = ""  # GET this (under url) until it answers to know it is up
    display: bool = False  # listed in the hub's Services menu (only services with a page)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}" if self.port else ""

    @property
    def prefix(self) -> str:
        return f"/services/{self.name}/"


@dataclass(frozen=True)
class ServiceContext:
    """What a provider may use to describe its service."""

    home: NodeHome
    config: SiteConfig
    hub_url: str  # the hub's public base URL, e.g. http://127.0.0.1:8765
    hub_api_url: str  # e.g. http://127.0.0.1:8765/hub/api

    def port(self) -> int:
        return free_port()


def _load_provider(spec: str) -> Callable[[ServiceContext], Any] | None:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            return None  # that component has not landed yet
        raise
    provider = getattr(module, attr, None)
    return provider if callable(provider) else None


def plan_services(
    ctx: ServiceContext, providers: tuple[str, ...] = SERVICE_PROVIDERS
) -> list[HubService]:
    """Ask every provider for its services; give outside services a token."""
    services: list[HubService] = []
    for spec in providers:
        provider = _load_provider(spec)
        if provider is None:
            continue
        found = provider(ctx)
        for service in found if isinstance(found, list) else [found] if found else []:
            if not service.managed and not service.api_token:
                service = HubService(**(asdict(service) | {"api_token": secrets.token_hex(32)}))
            services.append(service)
    names = [s.name for s in services]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"two hub services share the name(s) {', '.join(duplicates)}")
    return services


def write_plan(home: NodeHome, services: list[HubService], extra: dict[str, Any]) -> Path:
    """Write run/services.json (0600: it holds tokens)."""
    home.run.mkdir(parents=True, exist_ok=True)
    path = home.run / PLAN_NAME
    data = {"services": [asdict(s) for s in services], **extra}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    return path


def load_plan(home: NodeHome) -> tuple[list[HubService], dict[str, Any]]:
    path = home.run / PLAN_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no service plan at {path}: start the hub with `insitu up`") from None
    services = [HubService(**s) for s in data.pop("services")]
    return services, data
