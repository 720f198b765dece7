"""A researcher's run identity, signed by their home site (the signing half).

The home site signs a small token (Ed25519, the key in the home's
``private/``) that names the researcher and binds one run::

    {"v": 1, "sub": "alice", "home": "site-a", "fab": <FAB SHA-256>,
     "cfg": <SHA-256 of the run config>, "iat": ..., "exp": ..., "nonce": ...}

Only a user with an account at this site gets one. The access service signs
for a researcher's server (``POST api/federation/identity``); on the node,
``insitu.federation.identity.signer`` calls :func:`issue` directly. Verifying
a token at a site is ``insitu.federation.identity.verify``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

from insitu.config import NodeHome
from insitu.errors import AuthenticationError, ConfigError

__all__ = [
    "IDENTITY_KEY",
    "b64decode",
    "config_digest",
    "identity_public_key",
    "issue",
]

IDENTITY_KEY = "insitu-identity"  # the run config key that carries the token
KEY_NAME = "identity-ed25519.key"


def config_digest(run_config: Mapping[str, Any]) -> str:
    """SHA-256 of a run config without the identity (what a token binds)."""
    payload = {str(k): v for k, v in run_config.items() if k != IDENTITY_KEY}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --- keys -------------------------------------------------------------------


def _key_path(home: NodeHome) -> Any:
    return home.private / KEY_NAME


def _private_key(home: NodeHome) -> Any:
    """The home site's signing key, made on first use (0600, in private/)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = _key_path(home)
    if not path.exists():
        home.private.mkdir(mode=0o700, parents=True, exist_ok=True)
        raw = Ed25519PrivateKey.generate().private_bytes_raw()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(raw.hex() + "\n")
    try:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(path.read_text().strip()))
    except ValueError:
        raise ConfigError(
            f"the identity key at {path} is damaged: restore it from backup"
        ) from None


def identity_public_key(home: NodeHome) -> str:
    """This site's identity public key (hex), for other sites' ``trusted_homes``."""
    return str(_private_key(home).public_key().public_bytes_raw().hex())


# --- tokens -----------------------------------------------------------------


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(
    home: NodeHome,
    user: str,
    *,
    fab_hash: str,
    run_config: Mapping[str, Any],
    lifetime: int = 3600,
) -> str:
    """A token, signed by this (home) site, saying ``user`` submits this FAB and config.

    Only the home site calls this, for a user who has an account there (the
    researcher's own server cannot: the key is in ``private/``).
    """
    from insitu.config import load_config
    from insitu.hub.accounts import role_of

    if role_of(home, user) is None:
        raise AuthenticationError(
            f"{user} has no account at this site: only a researcher's home site signs "
            "their federated runs"
        )
    now = int(time.time())
    payload = {
        "v": 1,
        "sub": user,
        "home": load_config(home).site.name,
        "fab": fab_hash,
        "cfg": config_digest(run_config),
        "iat": now,
        "exp": now + int(lifetime),
        "nonce": secrets.token_hex(16),
    }
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    signature = _private_key(home).sign(body)
    return f"{b64encode(body)}.{b64encode(signature)}"
