"""The analytic contract: what a federated analytic declares, and the registry of them.

An analytic is an app a steward can approve for a dataset. It declares

- its name and version (its FAB's project; the fingerprint a steward approves
  is the hash of the FAB, :meth:`Analytic.fingerprint`);
- its parameters: the run configuration keys with their defaults
  (``[tool.flwr.app.config]``);
- its output manifest (``[tool.insitu.egress]``): the message types, arrays and
  metrics a reply may hold, which :mod:`insitu.federation.checker` holds every
  reply to;
- its disclosure limits: replies per run and values per reply and per run.

All of it is read from one :class:`~insitu.federation.app_package.AppPackage`,
so what a steward is shown is what the site enforces. Built-in analytics are
registered by name in :data:`REGISTRY` as ``"module:attribute"`` (imported on
first use, like the hub's service providers); a new analytic adds its line.
"""

from __future__ import annotations

import hashlib
import importlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from insitu.errors import InvalidRequestError
from insitu.federation.app_package import AppPackage
from insitu.federation.manifest import EgressManifest, manifest_from_toml

__all__ = ["REGISTRY", "Analytic", "DisclosureLimits", "by_fingerprint", "get", "registered"]

REGISTRY: Mapping[str, str] = {
    "insitu-analytics": "insitu.federation.analytics:ANALYTIC",
    "insitu-train-cnn": "insitu.federation.train_app:ANALYTIC",
    "insitu-train-cnn-secagg": "insitu.federation.train_app:SECAGG_ANALYTIC",
}


@dataclass(frozen=True)
class DisclosureLimits:
    """How much one run of the analytic may send out of a site."""

    max_replies: int
    max_values_per_reply: int
    max_values_per_run: int


@dataclass(frozen=True)
class Analytic:
    """A federated analytic, declared by its app package."""

    package: AppPackage
    about: str = ""

    @property
    def name(self) -> str:
        return self.package.name

    @property
    def version(self) -> str:
        return self.package.version

    @cached_property
    def parameters(self) -> dict[str, Any]:
        """The run configuration keys with their defaults."""
        data = tomllib.loads(self.package.pyproject())
        config: dict[str, Any] = data["tool"]["flwr"]["app"]["config"]
        return dict(config)

    @cached_property
    def manifest(self) -> EgressManifest:
        """What a reply may hold (the egress checker's contract)."""
        return manifest_from_toml(self.package.pyproject())

    @property
    def limits(self) -> DisclosureLimits:
        m = self.manifest
        return DisclosureLimits(m.max_replies, m.max_values_per_reply, m.max_values_per_run)

    def fab(self) -> bytes:
        from insitu.federation.apps import build_fab

        return build_fab(self.package.files())

    def fingerprint(self) -> str:
        """What a steward approves (the FAB's SHA-256)."""
        return hashlib.sha256(self.fab()).hexdigest()


def get(name: str) -> Analytic:
    """The registered analytic ``name``; InvalidRequestError names the registered ones."""
    target = REGISTRY.get(name)
    if target is None:
        raise InvalidRequestError(
            f"no federated analytic {name!r}; registered: {', '.join(sorted(REGISTRY))}"
        )
    module, _, attribute = target.partition(":")
    analytic = getattr(importlib.import_module(module), attribute)
    if not isinstance(analytic, Analytic) or analytic.name != name:
        raise TypeError(f"{target} is not the Analytic {name!r} (federation/analytic.py)")
    return analytic


def registered() -> list[Analytic]:
    """Every registered analytic, by name."""
    return [get(name) for name in sorted(REGISTRY)]


def by_fingerprint(fingerprint: str) -> Analytic | None:
    """The registered analytic whose FAB has this fingerprint, if any."""
    for analytic in registered():
        if analytic.fingerprint() == fingerprint:
            return analytic
    return None
