"""The node home and its one config file, insitu.toml, read in one place.

Every command finds the home through :func:`resolve_home`: ``$INSITU_HOME``
when set, else ``~/.local/share/insitu``. Several sites can therefore live
side by side on one machine (tests and the demo do exactly that).
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from insitu.errors import ConfigError, HomeNotInitializedError

__all__ = [
    "NodeHome",
    "SiteConfig",
    "init_home",
    "load_config",
    "resolve_home",
]

CONFIG_NAME = "insitu.toml"
SITE_KEY_NAME = "site.key"
_SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class NodeHome:
    """The folders of one site node (see docs/architecture.md, "Node home")."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def private(self) -> Path:
        """Site key, pseudonym links, quarantine: admin only, never served."""
        return self.root / "private"

    @property
    def site_key_path(self) -> Path:
        return self.private / SITE_KEY_NAME

    @property
    def quarantine(self) -> Path:
        return self.private / "quarantine"

    @property
    def staging(self) -> Path:
        """Work area of ingests in progress (inside private: may hold originals)."""
        return self.private / "staging"

    @property
    def stores(self) -> Path:
        return self.root / "stores"

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.sqlite"

    @property
    def audit(self) -> Path:
        return self.root / "audit"

    @property
    def airlock(self) -> Path:
        return self.root / "airlock"

    @property
    def hub(self) -> Path:
        return self.root / "hub"

    @property
    def run(self) -> Path:
        """Pid files and logs of the services `insitu up` started."""
        return self.root / "run"

    def site_key(self) -> bytes:
        """The site secret behind pseudonyms, UIDs and date shifts."""
        try:
            return bytes.fromhex(self.site_key_path.read_text().strip())
        except FileNotFoundError:
            raise HomeNotInitializedError(
                f"no site key at {self.site_key_path}: run `insitu init` first"
            ) from None
        except ValueError:
            raise ConfigError(
                f"the site key at {self.site_key_path} is not hex: restore it from backup"
            ) from None

    def require_initialized(self) -> NodeHome:
        if not self.config_path.is_file():
            raise HomeNotInitializedError(
                f"{self.root} is not an insitu node home (no {CONFIG_NAME}): "
                "run `insitu init` or set INSITU_HOME"
            )
        return self


def resolve_home(path: str | os.PathLike[str] | None = None) -> NodeHome:
    """The node home: ``path``, else ``$INSITU_HOME``, else ~/.local/share/insitu."""
    if path is None:
        path = os.environ.get("INSITU_HOME") or Path.home() / ".local" / "share" / "insitu"
    return NodeHome(Path(path).expanduser().resolve())


# --- insitu.toml ---------------------------------------------------------


# Each key's help text is the string right below it (the config reference,
# docs/reference/config.md, is generated from them: `python -m insitu.config_doc`).


@dataclass(frozen=True)
class SiteSection:
    """The site itself."""

    name: str = "site"
    """The site's name in federations, audit entries and the hub's pages: lower-case
    letters, digits and dashes."""
    title: str = "An insitu site node"
    """The site's name for people: the login and landing pages show it."""


@dataclass(frozen=True)
class HubSection:
    """The site's JupyterHub (`insitu up`)."""

    host: str = "127.0.0.1"
    """The address the hub listens on; keep loopback behind a TLS reverse proxy."""
    port: int = 8765
    """The hub's port (0: a free one); `insitu up --port` overrides it."""
    authenticator: str = "local"
    """How people log in: "local" (accounts with hashed passwords in hub/, `insitu users`)
    or "oidc" (the institution's single sign-on, the oidc_* keys)."""
    oidc_client_id: str = ""
    """OIDC: this site's client id at the identity provider (the secret comes from
    $INSITU_OIDC_CLIENT_SECRET or private/oidc-client-secret, never from this file)."""
    oidc_authorize_url: str = ""
    """OIDC: the provider's authorization endpoint."""
    oidc_token_url: str = ""
    """OIDC: the provider's token endpoint."""
    oidc_userdata_url: str = ""
    """OIDC: the provider's userinfo endpoint."""
    oidc_username_claim: str = "preferred_username"
    """OIDC: the claim that becomes the hub user name."""
    oidc_admin_groups: list[str] = field(default_factory=list)
    """OIDC: members of these groups are admins."""
    oidc_steward_groups: list[str] = field(default_factory=list)
    """OIDC: members of these groups are data stewards."""
    spawner: str = "local"
    """Where researchers' servers run: "local" (processes of the node's account),
    "accounts" (one Unix account each, needs user_accounts_dir) or "kubernetes" (a pod
    each, KubeSpawner: the Helm chart's hub). Setting user_accounts_dir alone also means
    "accounts"."""
    user_accounts_dir: str = ""
    """Embedded node as root: run each researcher as their own Unix account
    (insitu-<name>) with a folder here, outside the node home, so their servers and dask
    workers cannot read the node's files. `insitu init` and `insitu demo` set it when run
    as root. Empty: everyone runs as the node's account (finding S1, a warning at every
    start)."""
    user_python: str = ""
    """The Python those accounts run (servers, kernels, dask workers); it must be
    executable by other accounts. Empty: the hub's own, or, when that one is closed to
    them (e.g. under /root), a small venv built in user_accounts_dir from the system's
    Python with insitu's packages."""

    @property
    def spawner_kind(self) -> str:
        """The spawner in effect: "accounts" when user_accounts_dir is set with "local"."""
        if self.spawner == "local" and self.user_accounts_dir:
            return "accounts"
        return self.spawner


SPAWNERS = ("local", "accounts", "kubernetes")


@dataclass(frozen=True)
class PolicySection:
    """What may leave the site (airlock checks and federated replies)."""

    min_cell_count: int = 10
    """Smallest count a released table cell (or a federated per-group statistic) may
    rest on."""
    min_subjects: int = 10
    """Fewest subjects a federated reply may be computed from."""
    p_ratio: float = 0.1
    """Dominance, p% rule: a cell fails when the others' total would let its largest
    contributor be estimated to within this fraction, in (0, 1]."""
    nk_n: int = 2
    """Dominance, n-k rule: the n largest contributors of a cell ..."""
    nk_k: float = 0.9
    """... may not make up more than this share of its total, in (0, 1]."""
    zeros_disclosive: bool = True
    """Whether an empty cell counts as disclosive (it tells that nobody has it)."""
    max_release_bytes: int = 20 * 1024 * 1024
    """Largest file the airlock releases, in bytes."""
    max_reply_bytes: int = 200 * 1024 * 1024
    """Largest federated reply the site sends, in bytes."""
    allow_model_updates_shaped_like_images: bool = False
    """Whether a federated reply may carry arrays shaped like the site's images (off:
    such replies are refused as possible image exports)."""
    differential_privacy: bool = False
    """Add Gaussian noise to the site's federated replies (client-side DP)."""
    dp_noise_multiplier: float = 1.0
    """DP: noise standard deviation as a multiple of the clipping norm."""
    dp_clipping_norm: float = 1.0
    """DP: updates are clipped to this L2 norm before the noise."""
    secure_aggregation: bool = False
    """Require secure aggregation (SecAgg+) for federated training: the coordinator sees
    only the sum of the sites' updates."""
    two_person_review: bool = False
    """Release requests need the approvals of two different stewards (neither of them the
    submitter) before anything can be downloaded."""


def _help(default: Any, text: str) -> Any:
    """A field with its help text (docs/reference/airlock-checks.md shows it)."""
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class DisclosureSection:
    """Limits of the disclosure engine (:mod:`insitu.disclosure`), every exit alike."""

    max_unpacked_bytes: int = _help(
        256 * 1024 * 1024,
        "bytes the engine decompresses or decodes from one output, all containers together; "
        "beyond it the output fails (a decompression bomb)",
    )
    max_expansion_ratio: float = _help(
        200.0,
        "largest ratio of decompressed to compressed size of one stream or member "
        "(applies above 1 MiB decompressed); beyond it the output fails",
    )
    max_nesting: int = _help(
        3, "containers inside containers (a zip in a zip ...) the engine opens; deeper fails"
    )
    max_members: int = _help(1000, "members of one archive; more fail")
    max_image_pixels: int = _help(
        40_000_000, "pixels of all frames of one image together; more fail"
    )
    plane_tolerance: int = _help(
        2,
        "rows/columns by which a grid may differ from a slice of a series here and still count "
        "as that slice's size",
    )
    max_upscale: int = _help(
        4, "whole-number upscaling factors of a slice that still count as the slice's size"
    )
    budget_values: int = _help(
        200_000, "numeric values one release may carry; above it the output needs review"
    )
    budget_bytes: int = _help(
        8 * 1024 * 1024, "bytes one release may carry; above it the output needs review"
    )
    min_identifier_length: int = _help(
        6,
        "shortest identifier (without separators) searched for as a substring; shorter ones "
        "are matched as whole words only",
    )
    review_grid_cells: int = _help(
        400,
        "numeric cells of a table that is not a declared frequency table from which on the "
        "table is reviewed as data",
    )
    max_vector_values: int = _help(
        20_000,
        "numbers in the path and colour operators of one PDF (drawn coordinates and colours) "
        "above which it needs review",
    )
    base64_min_length: int = _help(
        200, "base64 runs in text at least this long are decoded and checked as files"
    )


@dataclass(frozen=True)
class ComputeSection:
    """Researchers' dask clusters (dask-gateway at the site)."""

    max_workers: int = 4
    """Most workers one researcher's cluster may have."""
    worker_memory: str = "2 GiB"
    """Memory of each worker, e.g. "2 GiB" or "512 MiB"."""
    worker_cores: int = 1
    """CPU cores of each worker."""
    gateway_port: int = 0
    """dask-gateway's port on loopback (0: a free one at `insitu up`)."""


@dataclass(frozen=True)
class DeidSection:
    """De-identification at ingest."""

    retain_device_identity: bool = False
    """Keep the scanner's make, model and serial number (off: removed, as the DICOM
    basic profile says)."""
    allow_burned_in: bool = False
    """Ingest modalities that often carry burned-in text (ultrasound, secondary captures);
    off: such images are held back for review."""
    deface_head_scans: bool = True
    """Deface head CT/MR at ingest (faces can be reconstructed from them)."""


@dataclass(frozen=True)
class SiteConfig:
    site: SiteSection = field(default_factory=SiteSection)
    hub: HubSection = field(default_factory=HubSection)
    policy: PolicySection = field(default_factory=PolicySection)
    disclosure: DisclosureSection = field(default_factory=DisclosureSection)
    compute: ComputeSection = field(default_factory=ComputeSection)
    deid: DeidSection = field(default_factory=DeidSection)
    # Free-form sections owned by one component (e.g. [pacs], [federation]).
    extra: dict[str, Any] = field(default_factory=dict)

    def to_toml(self) -> str:
        return _dump_toml({k: v for k, v in asdict(self).items() if k != "extra"} | self.extra)


_SECTIONS: dict[str, type] = {
    "site": SiteSection,
    "hub": HubSection,
    "policy": PolicySection,
    "disclosure": DisclosureSection,
    "compute": ComputeSection,
    "deid": DeidSection,
}


def _check_type(key: str, value: Any, default: Any) -> Any:
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is bool and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, not {value!r}")
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} must be a whole number, not {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{key} must be a {expected.__name__}, not {value!r}")
    return value


def parse_config(data: dict[str, Any], source: str = CONFIG_NAME) -> SiteConfig:
    """Validate a parsed insitu.toml; every error names the key."""
    sections: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, table in data.items():
        if name not in _SECTIONS:
            if not isinstance(table, dict):
                raise ConfigError(f"{source}: top-level key {name!r} must be a [section]")
            extra[name] = table
            continue
        cls = _SECTIONS[name]
        defaults = cls()
        known = {f.name for f in fields(cls)}
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(f'{name}.{u}' for u in unknown)}; "
                f"valid keys in [{name}]: {', '.join(sorted(known))}"
            )
        values = {
            k: _check_type(f"{source}: {name}.{k}", v, getattr(defaults, k))
            for k, v in table.items()
        }
        sections[name] = cls(**values)
    config = SiteConfig(**sections, extra=extra)
    _validate(config, source)
    return config


def _validate(config: SiteConfig, source: str) -> None:
    if not _SITE_NAME.match(config.site.name):
        raise ConfigError(
            f"{source}: site.name {config.site.name!r} must be lower-case letters, digits "
            "and dashes (it names the site in federations and audit entries)"
        )
    if not 0 <= config.hub.port <= 65535:
        raise ConfigError(f"{source}: hub.port {config.hub.port} is not a TCP port")
    if config.hub.authenticator not in ("local", "oidc"):
        raise ConfigError(
            f"{source}: hub.authenticator {config.hub.authenticator!r}: choose 'local' or 'oidc'"
        )
    if config.hub.spawner not in SPAWNERS:
        raise ConfigError(
            f"{source}: hub.spawner {config.hub.spawner!r}: choose "
            + ", ".join(repr(s) for s in SPAWNERS)
        )
    if config.hub.spawner == "accounts" and not config.hub.user_accounts_dir:
        raise ConfigError(
            f"{source}: hub.spawner 'accounts' needs hub.user_accounts_dir (the folder that "
            "holds each researcher's home, outside the node home)"
        )
    if config.hub.spawner == "kubernetes" and config.hub.user_accounts_dir:
        raise ConfigError(
            f"{source}: hub.user_accounts_dir is for hub.spawner 'accounts'; with 'kubernetes' "
            "each researcher gets a pod: remove hub.user_accounts_dir"
        )
    for key in ("min_cell_count", "min_subjects", "max_release_bytes", "max_reply_bytes"):
        if getattr(config.policy, key) < 1:
            raise ConfigError(f"{source}: policy.{key} must be at least 1")
    if not 0 < config.policy.nk_k <= 1 or not 0 < config.policy.p_ratio <= 1:
        raise ConfigError(f"{source}: policy.nk_k and policy.p_ratio must lie in (0, 1]")
    _validate_disclosure(config.disclosure, source)
    if config.compute.max_workers < 1:
        raise ConfigError(f"{source}: compute.max_workers must be at least 1")


def _validate_disclosure(section: DisclosureSection, source: str) -> None:
    for item in fields(section):
        value = getattr(section, item.name)
        if value < 1:
            raise ConfigError(
                f"{source}: disclosure.{item.name} must be at least 1, not {value!r} "
                f"({item.metadata['help']})"
            )
    if section.max_expansion_ratio < 2:
        raise ConfigError(
            f"{source}: disclosure.max_expansion_ratio must be at least 2 (compressed "
            "figures expand tens of times)"
        )


def load_config(home: NodeHome | None = None) -> SiteConfig:
    """Read and validate ``insitu.toml`` of a node home."""
    home = (home or resolve_home()).require_initialized()
    try:
        data = tomllib.loads(home.config_path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{home.config_path} is not valid TOML: {exc}") from None
    return parse_config(data, str(home.config_path))


def init_home(
    home: NodeHome, site_name: str = "site", *, hub_port: int | None = None
) -> SiteConfig:
    """Create a node home; safe to run again (never replaces the key or config)."""
    config = SiteConfig(site=SiteSection(name=site_name))
    if hub_port is not None:
        config = SiteConfig(site=config.site, hub=HubSection(port=hub_port))
    _validate(config, "insitu init")
    home.root.mkdir(parents=True, exist_ok=True)
    home.private.mkdir(mode=0o700, exist_ok=True)
    home.private.chmod(0o700)
    for folder in (home.quarantine, home.staging):
        folder.mkdir(mode=0o700, exist_ok=True)
    for folder in (home.stores, home.audit, home.airlock, home.hub, home.run):
        folder.mkdir(exist_ok=True)
    if not home.site_key_path.exists():
        fd = os.open(home.site_key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    if home.config_path.exists():
        return load_config(home)
    home.config_path.write_text(config.to_toml())
    return config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def _dump_toml(data: dict[str, dict[str, Any]]) -> str:
    lines = ["# insitu node configuration; see docs/reference/config.md for every key."]

    def table(name: str, values: dict[str, Any]) -> None:
        lines.append(f"\n[{name}]")
        lines.extend(
            f"{key} = {_toml_value(value)}"
            for key, value in values.items()
            if not isinstance(value, dict)
        )
        for key, value in values.items():
            if isinstance(value, dict):  # a sub-table, e.g. [federation.trusted_homes]
                table(f"{name}.{_toml_key(key)}", value)

    for section, values in data.items():
        table(section, values)
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)
