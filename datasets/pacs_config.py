"""The ``[pacs]`` section of insitu.toml: where the PACS is, how to log in, how to receive.

Secrets never go on a command line (shell history, ``ps``): insitu.toml names
files that hold them, and those files must be readable by their owner only,
like ssh keys. Every error names the key to fix.

    [pacs]
    url = "https://pacs.example.org/dicom-web"   # DICOMweb base URL (QIDO-RS, WADO-RS)
    username = "insitu"                          # with password_file: HTTP basic auth
    password_file = "private/pacs-password"      # relative paths start at the node home
    # token_file = "private/pacs-token"          # or a bearer token instead
    # ca_file = "private/pacs-ca.pem"            # a private CA for dicomwebs://
    timeout = 30                                 # seconds per HTTP request
    parallel = 4                                 # WADO-RS requests at a time (1-16)
    receive_host = "127.0.0.1"                   # `insitu receive` (C-STORE SCP)
    receive_port = 11112
    receive_ae_title = "INSITU"
    receive_allowed_aes = ["ORTHANC"]            # calling AE titles let in ([] = any)
    receive_batch_seconds = 30                   # quiet time before a batch is ingested
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from insitu.config import CONFIG_NAME, NodeHome, SiteConfig, load_config
from insitu.errors import ConfigError

__all__ = ["PacsSettings", "load_pacs_settings", "parse_pacs_section"]

_TYPES: dict[str, tuple[type, ...]] = {
    "url": (str,),
    "username": (str,),
    "password_file": (str,),
    "token_file": (str,),
    "ca_file": (str,),
    "timeout": (int, float),
    "parallel": (int,),
    "receive_host": (str,),
    "receive_port": (int,),
    "receive_ae_title": (str,),
    "receive_allowed_aes": (list,),
    "receive_batch_seconds": (int, float),
}


@dataclass(frozen=True)
class PacsSettings:
    """Validated ``[pacs]`` settings; secrets stay in their files until needed."""

    url: str = ""
    username: str = ""
    password_file: Path | None = None
    token_file: Path | None = None
    ca_file: Path | None = None
    timeout: float = 30.0
    parallel: int = 4
    receive_host: str = "127.0.0.1"
    receive_port: int = 11112
    receive_ae_title: str = "INSITU"
    receive_allowed_aes: tuple[str, ...] = ()
    receive_batch_seconds: float = 30.0
    source: str = CONFIG_NAME  # the file the settings came from, for messages

    @property
    def has_credentials(self) -> bool:
        return bool(self.username or self.token_file)

    @property
    def credential_keys(self) -> str:
        """The keys an admin edits when the PACS refuses the login."""
        if self.token_file:
            return "pacs.token_file"
        if self.username:
            return "pacs.username and pacs.password_file"
        return "pacs.username and pacs.password_file (or pacs.token_file)"

    def password(self) -> str:
        assert self.password_file is not None
        return _read_secret(self.password_file, "pacs.password_file", self.source)

    def token(self) -> str:
        assert self.token_file is not None
        return _read_secret(self.token_file, "pacs.token_file", self.source)


def _read_secret(path: Path, key: str, source: str) -> str:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{source}: {key} names {path}, which does not exist") from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{source}: {key} names {path}, which is not a file")
    if mode & 0o077:
        raise ConfigError(
            f"{source}: {key} names {path}, which other users can read: "
            f"run `chmod 600 {path}` (it holds a secret)"
        )
    try:
        value = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: {key}: cannot read {path}: {exc}") from None
    if not value:
        raise ConfigError(f"{source}: {key} names {path}, which is empty")
    if "\n" in value:
        raise ConfigError(f"{source}: {key}: {path} must hold the secret on one line")
    return value


def _check_url(url: str, source: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{source}: pacs.url {url!r} must be an http:// or https:// URL of the PACS's "
            "DICOMweb service, e.g. https://pacs.example.org/dicom-web"
        )
    if parts.username or parts.password:
        raise ConfigError(
            f"{source}: pacs.url must not hold credentials: use pacs.username and "
            "pacs.password_file (or pacs.token_file)"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"{source}: pacs.url must not have a query or fragment")
    return url.rstrip("/")


def parse_pacs_section(table: dict[str, Any], home: NodeHome, source: str) -> PacsSettings:
    """Validate a ``[pacs]`` table; relative file paths start at the node home."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [pacs] must be a table")
    unknown = sorted(set(table) - set(_TYPES))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join('pacs.' + k for k in unknown)}; "
            f"valid keys in [pacs]: {', '.join(sorted(_TYPES))}"
        )
    for key, value in table.items():
        types = _TYPES[key]
        if isinstance(value, bool) or not isinstance(value, types):
            kind = " or ".join("number" if t in (int, float) else t.__name__ for t in types)
            raise ConfigError(f"{source}: pacs.{key} must be a {kind}, not {value!r}")

    def path(key: str) -> Path | None:
        value = table.get(key)
        if value is None:
            return None
        if not value.strip():
            raise ConfigError(f"{source}: pacs.{key} is empty: remove it or name a file")
        p = Path(value).expanduser()
        return p if p.is_absolute() else home.root / p

    url = _check_url(table["url"], source) if "url" in table else ""
    username = table.get("username", "")
    password_file, token_file = path("password_file"), path("token_file")
    if token_file and (username or password_file):
        raise ConfigError(
            f"{source}: [pacs] has both pacs.token_file and pacs.username/pacs.password_file: "
            "keep one way to log in"
        )
    if bool(username) != bool(password_file):
        missing = "pacs.password_file" if username else "pacs.username"
        raise ConfigError(
            f"{source}: [pacs] needs {missing} too (user name and password go together)"
        )
    if (username or token_file) and not url:
        raise ConfigError(
            f"{source}: [pacs] has credentials but no pacs.url: credentials are only ever "
            "sent to pacs.url, so set it"
        )
    allowed = table.get("receive_allowed_aes", [])
    if not all(isinstance(a, str) and 0 < len(a.strip()) <= 16 for a in allowed):
        raise ConfigError(
            f"{source}: pacs.receive_allowed_aes must list AE titles (1-16 characters each)"
        )
    settings = PacsSettings(
        url=url,
        username=username,
        password_file=password_file,
        token_file=token_file,
        ca_file=path("ca_file"),
        timeout=float(table.get("timeout", 30.0)),
        parallel=table.get("parallel", 4),
        receive_host=table.get("receive_host", "127.0.0.1"),
        receive_port=table.get("receive_port", 11112),
        receive_ae_title=table.get("receive_ae_title", "INSITU"),
        receive_allowed_aes=tuple(a.strip() for a in allowed),
        receive_batch_seconds=float(table.get("receive_batch_seconds", 30.0)),
        source=source,
    )
    _check_numbers(settings, source)
    return settings


def _check_numbers(settings: PacsSettings, source: str) -> None:
    if settings.timeout <= 0:
        raise ConfigError(f"{source}: pacs.timeout must be a positive number of seconds")
    if not 1 <= settings.parallel <= 16:
        raise ConfigError(f"{source}: pacs.parallel must be 1-16 requests at a time")
    if not 0 <= settings.receive_port <= 65535:
        raise ConfigError(f"{source}: pacs.receive_port {settings.receive_port} is not a TCP port")
    if not 0 < len(settings.receive_ae_title.strip()) <= 16:
        raise ConfigError(f"{source}: pacs.receive_ae_title must be 1-16 characters")
    if settings.receive_batch_seconds < 0:
        raise ConfigError(f"{source}: pacs.receive_batch_seconds must not be negative")


def load_pacs_settings(home: NodeHome, config: SiteConfig | None = None) -> PacsSettings:
    """The node's ``[pacs]`` settings (defaults when the section is absent)."""
    config = config or load_config(home)
    return parse_pacs_section(config.extra.get("pacs", {}), home, str(home.config_path))
