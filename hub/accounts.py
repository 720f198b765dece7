"""Local accounts of a site hub: names, roles and argon2-hashed passwords.

The store lives in ``$INSITU_HOME/hub/accounts.sqlite``. It is the source of
truth for roles in both login modes: with local logins it also checks
passwords; with the institution's single sign-on (OIDC) the authenticator
records each user's role from their SSO groups at login and no password is
stored. Every change is written to the audit log (kind ``user``).
"""

from __future__ import annotations

import builtins
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from insitu._sqlite import connect
from insitu.audit import AuditLog
from insitu.config import NodeHome
from insitu.errors import AccessDeniedError, InvalidRequestError

__all__ = [
    "ROLES",
    "Account",
    "AccountStore",
    "require_role",
    "role_of",
]

# Ordered by power: each role can do what the ones before it can.
ROLES = ("researcher", "steward", "admin")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MIN_PASSWORD = 8
DB_NAME = "accounts.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT,
    created TEXT NOT NULL,
    last_login TEXT
);
"""

_hasher = PasswordHasher()


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    created: str
    last_login: str | None
    has_password: bool


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequestError(
            f"user name {name!r} is not valid: use 1-64 lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidRequestError(f"role {role!r} is not one of: {', '.join(ROLES)}")
    return role


class AccountStore:
    """The accounts of one node home (opened per call site; cheap)."""

    def __init__(self, home: NodeHome) -> None:
        self.home = home
        self._conn: sqlite3.Connection = connect(home.hub / DB_NAME, _SCHEMA)
        self._audit = AuditLog(home)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> AccountStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- queries ---------------------------------------------------------

    def get(self, name: str) -> Account | None:
        row = self._conn.execute("SELECT * FROM accounts WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return Account(
            name=row["name"],
            role=row["role"],
            created=row["created"],
            last_login=row["last_login"],
            has_password=row["password_hash"] is not None,
        )

    def list(self) -> builtins.list[Account]:
        names = [r["name"] for r in self._conn.execute("SELECT name FROM accounts ORDER BY name")]
        return [a for a in (self.get(n) for n in names) if a is not None]

    def names_by_role(self) -> dict[str, builtins.list[str]]:
        groups: dict[str, builtins.list[str]] = {role: [] for role in ROLES}
        for account in self.list():
            groups[account.role].append(account.name)
        return groups

    # --- changes ---------------------------------------------------------

    def add(self, name: str, role: str, password: str | None, *, actor: str | None) -> Account:
        """Create an account; ``password`` None means SSO-only (no local login)."""
        _check_name(name)
        _check_role(role)
        hashed = None
        if password is not None:
            if len(password) < MIN_PASSWORD:
                raise InvalidRequestError(
                    f"the password for {name!r} is too short: use at least {MIN_PASSWORD} "
                    "characters"
                )
            hashed = _hasher.hash(password)
        try:
            self._conn.execute(
                "INSERT INTO accounts (name, role, password_hash, created) VALUES (?, ?, ?, ?)",
                (name, role, hashed, _now()),
            )
        except sqlite3.IntegrityError:
            raise InvalidRequestError(
                f"user {name!r} exists already: use `insitu users role` to change the role"
            ) from None
        self._audit.append("user", user=actor, action="add", account=name, role=role)
        account = self.get(name)
        assert account is not None
        return account

    def set_password(self, name: str, password: str, *, actor: str | None) -> None:
        self._require(name)
        if len(password) < MIN_PASSWORD:
            raise InvalidRequestError(f"use at least {MIN_PASSWORD} characters for a password")
        self._conn.execute(
            "UPDATE accounts SET password_hash = ? WHERE name = ?", (_hasher.hash(password), name)
        )
        self._audit.append("user", user=actor, action="password", account=name)

    def set_role(self, name: str, role: str, *, actor: str | None) -> Account:
        _check_role(role)
        before = self._require(name)
        if before.role != role:
            self._conn.execute("UPDATE accounts SET role = ? WHERE name = ?", (role, name))
            self._audit.append(
                "user", user=actor, action="role", account=name, role=role, previous=before.role
            )
        return self._require(name)

    def delete(self, name: str, *, actor: str | None) -> None:
        """Delete the account's row only. Its approvals stay open: remove an account
        with ``insitu.hub.account_removal.remove_account``, which closes them too."""
        self._require(name)
        self._conn.execute("DELETE FROM accounts WHERE name = ?", (name,))
        self._audit.append("user", user=actor, action="remove", account=name)

    def sync_sso(self, name: str, role: str) -> Account:
        """Record (or update) an SSO user's role at login; never touches passwords."""
        _check_name(name)
        _check_role(role)
        existing = self.get(name)
        if existing is None:
            self._conn.execute(
                "INSERT INTO accounts (name, role, created) VALUES (?, ?, ?)",
                (name, role, _now()),
            )
            self._audit.append("user", user=name, action="add", account=name, role=role, via="sso")
        elif existing.role != role:
            self._conn.execute("UPDATE accounts SET role = ? WHERE name = ?", (role, name))
            self._audit.append(
                "user", user=name, action="role", account=name, role=role, via="sso",
                previous=existing.role,
            )  # fmt: skip
        return self._require(name)

    # --- login -----------------------------------------------------------

    def check_password(self, name: str, password: str) -> Account | None:
        """The account if ``password`` is right; None otherwise (no hint which part failed)."""
        row = self._conn.execute(
            "SELECT password_hash FROM accounts WHERE name = ?", (name,)
        ).fetchone()
        if row is None or row["password_hash"] is None:
            # Spend the same time as a real check so names cannot be probed.
            _hasher.hash(password or "x")
            return None
        try:
            _hasher.verify(row["password_hash"], password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if _hasher.check_needs_rehash(row["password_hash"]):
            self._conn.execute(
                "UPDATE accounts SET password_hash = ? WHERE name = ?",
                (_hasher.hash(password), name),
            )
        self._conn.execute("UPDATE accounts SET last_login = ? WHERE name = ?", (_now(), name))
        return self.get(name)

    def _require(self, name: str) -> Account:
        account = self.get(name)
        if account is None:
            raise InvalidRequestError(
                f"no user {name!r} at this site: see `insitu users list`, add one with "
                "`insitu users add`"
            )
        return account


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def role_of(home: NodeHome, name: str) -> str | None:
    """The user's role, or None when the site does not know the user."""
    store = AccountStore(home)
    try:
        account = store.get(name)
    finally:
        store.close()
    return None if account is None else account.role


def require_role(home: NodeHome, name: str | None, *allowed: str) -> str:
    """Return the user's role if it is one of ``allowed``; refuse otherwise."""
    role = role_of(home, name) if name else None
    if role is None:
        raise AccessDeniedError(
            f"{name or 'an anonymous user'} is not a user of this site: an admin adds users "
            "with `insitu users add`"
        )
    if role not in allowed:
        raise AccessDeniedError(f"{name} is a {role}: only a {' or '.join(allowed)} may do this")
    return role
