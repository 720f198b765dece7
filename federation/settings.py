"""The ``[federation]`` section of insitu.toml: budgets, disclosure settings, trusted homes.

Read in one place (:func:`federation_settings`), validated on load; every
error names the key. Each setting's meaning is in :data:`HELP` (shown in
docs/federation.md, "Settings").

Example::

    [federation]
    values_budget = 100000          # numeric values per researcher and dataset
    epsilon_budget = 10.0           # differential-privacy epsilon per researcher and dataset
    max_bins = 20
    max_levels = 20
    min_bin_width = 0.1             # x the feature's standard deviation at this site
    require_identity = true

    [federation.trusted_homes]      # home sites whose researcher identities this site accepts
    site-a = "3b6a27bc..."          # their key: `insitu federation identity-key` at site-a
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from insitu.config import NodeHome, SiteConfig, load_config
from insitu.errors import ConfigError

__all__ = ["HELP", "FederationSettings", "federation_settings", "parse_federation"]

SECTION = "federation"
_SITE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_KEY_HEX = re.compile(r"^[0-9a-f]{64}$")

HELP: dict[str, str] = {
    "dp_delta": "delta of the (epsilon, delta) guarantee local DP reports (0 < delta < 1)",
    "values_budget": (
        "how many numeric values (metrics, array entries) replies may carry out of this "
        "site per researcher and dataset, over all runs; a reply beyond it is refused"
    ),
    "epsilon_budget": (
        "total differential-privacy epsilon one researcher may spend on one dataset at "
        "this site, over all runs"
    ),
    "max_bins": "most histogram bins one analytics query may ask for",
    "max_levels": (
        "most groups (levels of the `by` variable) one analytics query may return; a "
        "query with more is refused, not truncated"
    ),
    "min_bin_width": (
        "narrowest histogram bin allowed, as a fraction of the feature's standard "
        "deviation at this site (fine bins isolate single subjects)"
    ),
    "require_identity": (
        "refuse runs that carry no researcher identity signed by a trusted home site "
        "(turn off only for a single-site test bed)"
    ),
    "identity_max_age": "seconds a signed researcher identity stays valid after it was issued",
    "sandbox_timeout": (
        "seconds (wall clock) an approved app may take for one message in its sandbox before "
        "the site stops it and replies with an error (code 4006)"
    ),
    "sandbox_memory_mb": (
        "address space of the app's sandbox process, MiB (RLIMIT_AS; Python with numpy and "
        "Flower needs about 250, with torch about 800); an allocation beyond it fails"
    ),
    "sandbox_cpu_seconds": (
        "CPU seconds (all threads together) the app's sandbox process may use for one "
        "message (RLIMIT_CPU); then the kernel stops it"
    ),
    "sandbox_file_size_mb": (
        "largest file the app may write in its sandbox folder, MiB (RLIMIT_FSIZE)"
    ),
    "sandbox_max_processes": (
        "most processes and threads the app's sandbox account may run at once (RLIMIT_NPROC; "
        "counted per account, so several apps running at once share it)"
    ),
    "poll_interval": (
        "seconds the site's SuperNode waits between asking the coordinator for work when it "
        "has none, and between looks for a finished reply to send (Flower 1.42 waits 3 s and "
        "0.5 s); shorter answers sooner, each idle site then asks the coordinator more often; "
        "read when the site starts"
    ),
    "prestart": (
        "start the next task's runner and sandbox processes while the site is idle, so a "
        "message does not wait for Python start-up and imports; they run no app code before "
        "a task's app is approved (one idle pair per site); read when the site starts"
    ),
    "max_values_per_reply": (
        "most numbers (array entries and metrics) one reply may carry, whatever the app's "
        "egress manifest allows"
    ),
    "max_values_per_run": (
        "most numbers one run may take out of this site, whatever the app's egress manifest allows"
    ),
    "trusted_homes": (
        "table: home site name -> its Ed25519 public key (64 hex digits); this site "
        "accepts researcher identities those sites signed (its own key always counts)"
    ),
}


@dataclass(frozen=True)
class FederationSettings:
    """Validated ``[federation]`` settings (defaults are safe for a real site)."""

    dp_delta: float = 1e-5
    values_budget: int = 100_000
    epsilon_budget: float = 10.0
    max_bins: int = 20
    max_levels: int = 20
    min_bin_width: float = 0.1
    require_identity: bool = True
    identity_max_age: int = 24 * 3600
    sandbox_timeout: float = 900.0
    # 0.25 s: a query's message reaches the last of 3 sites ~0.2 s sooner than at 0.5 s;
    # each idle site costs the coordinator ~4 small requests a second (~1.3 % of a core,
    # measured: docs/federation.md). A coordinator of many sites may ask for more.
    poll_interval: float = 0.25
    prestart: bool = True
    sandbox_memory_mb: int = 4096
    sandbox_cpu_seconds: int = 1800
    sandbox_file_size_mb: int = 1024
    sandbox_max_processes: int = 256
    max_values_per_reply: int = 1_000_000
    max_values_per_run: int = 10_000_000
    trusted_homes: dict[str, str] = field(default_factory=dict)


def parse_federation(section: dict[str, Any], source: str = "insitu.toml") -> FederationSettings:
    """Validate a parsed ``[federation]`` table."""
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: [{SECTION}] must be a table")
    defaults = FederationSettings()
    known = {f.name for f in fields(FederationSettings)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(f'{SECTION}.{u}' for u in unknown)}; "
            f"valid keys in [{SECTION}]: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for key, value in section.items():
        default = getattr(defaults, key)
        name = f"{source}: {SECTION}.{key}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, not {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be a whole number, not {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number, not {value!r}")
            value = float(value)
        elif isinstance(default, dict) and not isinstance(value, dict):
            raise ConfigError(f"{name} must be a table ({HELP[key]})")
        values[key] = value
    settings = FederationSettings(**values)
    _validate(settings, source)
    return settings


def _validate(settings: FederationSettings, source: str) -> None:
    def fail(key: str, what: str) -> None:
        raise ConfigError(f"{source}: {SECTION}.{key} {what} ({HELP[key]})")

    if not 0 < settings.dp_delta < 1:
        fail("dp_delta", f"must lie in (0, 1), not {settings.dp_delta}")
    if settings.values_budget < 1:
        fail("values_budget", "must be at least 1")
    if settings.epsilon_budget < 0:
        fail("epsilon_budget", "must not be negative")
    if settings.max_bins < 1:
        fail("max_bins", "must be at least 1")
    if settings.max_levels < 1:
        fail("max_levels", "must be at least 1")
    if settings.min_bin_width < 0:
        fail("min_bin_width", "must not be negative")
    if settings.identity_max_age < 60:
        fail("identity_max_age", "must be at least 60 seconds")
    if settings.sandbox_timeout <= 0:
        fail("sandbox_timeout", "must be positive")
    if not 0.05 <= settings.poll_interval <= 60:
        fail("poll_interval", f"must lie in [0.05, 60] seconds, not {settings.poll_interval}")
    if settings.sandbox_memory_mb < 256:
        fail("sandbox_memory_mb", f"must be at least 256, not {settings.sandbox_memory_mb}")
    if settings.sandbox_max_processes < 8:
        fail("sandbox_max_processes", f"must be at least 8, not {settings.sandbox_max_processes}")
    for key in (
        "max_values_per_reply",
        "max_values_per_run",
        "sandbox_cpu_seconds",
        "sandbox_file_size_mb",
    ):
        if getattr(settings, key) < 1:
            fail(key, "must be at least 1")
    for site, key in settings.trusted_homes.items():
        if not _SITE.match(site):
            fail("trusted_homes", f"names {site!r}, which is not a site name")
        if not isinstance(key, str) or not _KEY_HEX.match(key):
            fail("trusted_homes", f"has a key for {site!r} that is not 64 hex digits")


def federation_settings(config: SiteConfig | NodeHome) -> FederationSettings:
    """The node's ``[federation]`` settings (defaults when the section is absent)."""
    if isinstance(config, NodeHome):
        source = str(config.config_path)
        config = load_config(config)
    else:
        source = "insitu.toml"
    return parse_federation(config.extra.get(SECTION, {}), source)
