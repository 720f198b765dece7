"""A home site's copy of its researchers' coordinator (Control API) tokens.

The coordinator issues one token per researcher (``insitu federation token
issue NAME@HOME`` there); the researcher's home site keeps it in its private
folder, one 0600 file per account in a 0700 folder, and the hub puts it into
that researcher's server as ``$INSITU_COORDINATOR_TOKEN`` when the server
starts (:func:`spawner_token`). With per-user accounts (``hub.user_accounts_dir``)
a server's environment is readable only by the researcher's own account (and
root); nothing is written into the server's folder.

    insitu federation token install alice < alice.token   # at alice's home site
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from insitu.config import NodeHome
from insitu.errors import InvalidRequestError

__all__ = ["TOKEN_ENV", "load", "spawner_token", "store", "token_path"]

TOKEN_ENV = "INSITU_COORDINATOR_TOKEN"  # noqa: S105 (a variable name, as in federation.apps)
FOLDER = "coordinator-tokens"
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{16,512}$")


def token_path(home: NodeHome, user: str) -> Path:
    if not _ACCOUNT.match(user):
        raise InvalidRequestError(f"{user!r} is not an account name of this site")
    return home.private / FOLDER / user


def store(home: NodeHome, user: str, token: str) -> Path:
    """Keep ``user``'s coordinator token (replacing an earlier one), readable by this
    site's account only."""
    token = token.strip()
    if not _TOKEN.match(token):
        raise InvalidRequestError(
            "that is not a coordinator token (one line, as `insitu federation token issue` "
            "printed it at the coordinator)"
        )
    path = token_path(home, user)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    partial = path.with_name(f".{user}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    partial.replace(path)
    return path


def load(home: NodeHome, user: str) -> str:
    """``user``'s coordinator token, or ``""`` when the site keeps none for them."""
    try:
        return token_path(home, user).read_text().strip()
    except (OSError, InvalidRequestError):
        return ""


def spawner_token(home: NodeHome) -> Any:
    """A value for ``Spawner.environment``: JupyterHub calls it with each spawner, so
    each server gets its own researcher's token (the hub reads it when it starts)."""

    def token(spawner: Any) -> str:
        return load(home, str(spawner.user.name))

    return token
