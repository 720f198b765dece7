"""Researchers identified end to end: a run carries an identity its home site signed.

A researcher's *home site* is the site where they have an account. When they
submit a federated run, their home site signs a small token (Ed25519, the
key in the home's ``private/``) that names them and binds the run::

    {"v": 1, "sub": "alice", "home": "site-a", "fab": <FAB SHA-256>,
     "cfg": <SHA-256 of the run config>, "iat": ..., "exp": ..., "nonce": ...}

The token travels in the run config under ``insitu-identity`` (every app a
site runs declares that key; the built-in apps do). Each site, before it
opens any data:

1. verifies the signature against the home sites it trusts
   (``[federation] trusted_homes``; its own key always counts), the expiry,
   and that the token was made for exactly this FAB and run config;
2. refuses a token it has already seen for a different run (replay);
3. asks :func:`insitu.hub.access.check_read` whether the researcher is
   approved for the dataset: a researcher of this site by their own account
   name, a visiting researcher by the account ``<name>.<home>`` a site admin
   created for them (see docs/federation.md, "Researchers from other sites").

Refusals are audited naming the claimed researcher; accepted runs are audited
naming the verified one.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from insitu.config import NodeHome
from insitu.errors import AuthenticationError
from insitu.hub.run_identity import (
    b64decode,
    config_digest,
    identity_public_key,
    issue,
)

__all__ = [
    "Researcher",
    "Signer",
    "claimed",
    "default_signer",
    "local_account",
    "service_signer",
    "signer",
    "verify",
]

# (FAB SHA-256, run config without the identity) -> signed token
Signer = Callable[[str, Mapping[str, Any]], str]
SEEN_NAME = "federation-identities.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    nonce TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    researcher TEXT NOT NULL,
    at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Researcher:
    """A verified researcher: their name at their home site, and that site."""

    name: str
    home: str

    @property
    def qualified(self) -> str:
        """How audit entries and ledgers name them: ``name@home``."""
        return f"{self.name}@{self.home}"


def local_account(researcher: Researcher, site: str) -> str:
    """The account name whose access approvals count for ``researcher`` at ``site``."""
    return researcher.name if researcher.home == site else f"{researcher.name}.{researcher.home}"


# --- tokens -----------------------------------------------------------------


def signer(home: NodeHome, user: str, *, lifetime: int = 3600) -> Signer:
    """A signer for ``user`` at the home site ``home`` (run where the key is readable)."""

    def sign(fab_hash: str, run_config: Mapping[str, Any]) -> str:
        return issue(home, user, fab_hash=fab_hash, run_config=run_config, lifetime=lifetime)

    return sign


def service_signer(access_url: str, api_token: str) -> Signer:
    """A signer that asks the home site's access service (a researcher's server)."""

    def sign(fab_hash: str, run_config: Mapping[str, Any]) -> str:
        from insitu.http import raise_for_response, session

        body: dict[str, Any] = {"fab_hash": fab_hash, "run_config": dict(run_config)}
        with session(api_token) as http:
            url = access_url.rstrip("/") + "/api/federation/identity"
            response = http.post(url, json=body, timeout=60)
            raise_for_response(response, service="the home site's access service")
            return str(response.json()["token"])

    return sign


def default_signer() -> Signer | None:
    """Who the environment says submits: in a researcher's server, their home site's
    access service signs (``$INSITU_ACCESS_URL`` with the hub token); on a node,
    ``$INSITU_USER`` (or ``$JUPYTERHUB_USER``) at the home in ``$INSITU_HOME``."""
    from insitu.config import resolve_home

    access_url = os.environ.get("INSITU_ACCESS_URL")
    if access_url and os.environ.get("JUPYTERHUB_API_TOKEN"):
        return service_signer(access_url, os.environ["JUPYTERHUB_API_TOKEN"])
    user = os.environ.get("INSITU_USER") or os.environ.get("JUPYTERHUB_USER")
    if not user or not os.environ.get("INSITU_HOME"):
        return None
    return signer(resolve_home(), user)


def claimed(token: str) -> str:
    """Who a token claims to be (unverified; for audit entries of refusals only)."""
    try:
        payload = json.loads(b64decode(token.split(".", 1)[0]))
        return f"{str(payload['sub'])[:64]}@{str(payload['home'])[:64]} (unverified)"
    except Exception:
        return "unknown (no readable identity)"


def verify(
    home: NodeHome,
    token: str,
    *,
    fab_hash: str,
    run_config: Mapping[str, Any],
    run_id: str,
    now: float | None = None,
) -> Researcher:
    """The researcher a run's token proves, or AuthenticationError saying why not."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from insitu.config import load_config
    from insitu.federation.settings import federation_settings

    if not token:
        raise AuthenticationError(
            "the run carries no researcher identity: submit it with insitu's "
            "`analyze`/`submit` from your home site's notebooks (or `insitu federation sign`)"
        )
    config = load_config(home)
    settings = federation_settings(config)
    try:
        body_text, sig_text = token.split(".")
        body, signature = b64decode(body_text), b64decode(sig_text)
        payload = json.loads(body)
        issuer = str(payload["home"])
        user = str(payload["sub"])
    except Exception:
        raise AuthenticationError("the run's researcher identity is not a valid token") from None
    keys = dict(settings.trusted_homes)
    keys[config.site.name] = identity_public_key(home)
    if issuer not in keys:
        raise AuthenticationError(
            f"the run's identity was signed by {issuer!r}, which this site does not trust "
            "([federation] trusted_homes)"
        )
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(keys[issuer])).verify(signature, body)
    except InvalidSignature:
        raise AuthenticationError(
            f"the run's identity does not carry {issuer!r}'s signature (forged or altered)"
        ) from None
    when = time.time() if now is None else now
    if payload.get("v") != 1 or not isinstance(payload.get("exp"), int):
        raise AuthenticationError("the run's identity token has an unknown format")
    if payload["exp"] < when or payload["iat"] > when + 300:
        raise AuthenticationError("the run's identity token has expired: submit the run again")
    if when - payload["iat"] > settings.identity_max_age:
        raise AuthenticationError(
            "the run's identity token is older than this site accepts "
            "([federation] identity_max_age): submit the run again"
        )
    if payload.get("fab") != fab_hash:
        raise AuthenticationError("the run's identity was signed for a different app (FAB)")
    if payload.get("cfg") != config_digest(run_config):
        raise AuthenticationError("the run's identity was signed for a different run config")
    researcher = Researcher(name=user, home=issuer)
    _first_use(home, str(payload["nonce"]), run_id, researcher)
    return researcher


def _first_use(home: NodeHome, nonce: str, run_id: str, researcher: Researcher) -> None:
    """A token serves one run: refuse it for any other run id (replay)."""
    from insitu._sqlite import connect

    conn = connect(home.private / SEEN_NAME, _SCHEMA)
    try:
        try:
            conn.execute(
                "INSERT INTO seen (nonce, run_id, researcher, at) VALUES (?, ?, ?, ?)",
                (nonce, run_id, researcher.qualified, time.time()),
            )
        except sqlite3.IntegrityError:
            row = conn.execute("SELECT run_id FROM seen WHERE nonce = ?", (nonce,)).fetchone()
            if row is not None and str(row[0]) != run_id:
                raise AuthenticationError(
                    f"the run's identity token was already used for run {row[0]} (replayed)"
                ) from None
    finally:
        conn.close()
