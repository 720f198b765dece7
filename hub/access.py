"""Access requests, decisions and the read check: plain functions, no web framework.

The gate, the access service, the CLI and the Flower mod all call these, so
one set of rules holds everywhere:

- a researcher (or anyone with an account) requests access to a dataset with a
  purpose, a project and a duration in days;
- a steward or admin approves (with an expiry), denies or later revokes, always
  with a reason; nobody decides their own request;
- :func:`check_read` is asked on every read and never caches, so a revocation
  or an expiry takes effect on the very next read;
- :func:`register` lists every request and decision for every logged-in user
  (transparent processing of data requests).

Everything is written to the audit log (kinds ``access.request``,
``access.approve``, ``access.deny``, ``access.revoke``).
"""

from __future__ import annotations

import re
import sqlite3
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from insitu._sqlite import connect
from insitu.audit import AuditLog
from insitu.config import NodeHome
from insitu.errors import AccessDeniedError, InvalidRequestError
from insitu.hub import accounts
from insitu.hub.accounts import require_role

__all__ = [
    "DECIDERS",
    "Request",
    "approve",
    "check_read",
    "deny",
    "get_request",
    "register",
    "request",
    "revoke",
    "status_for",
]

DB_NAME = "access.sqlite"
DECIDERS = ("steward", "admin")
MAX_DAYS = 3 * 365
_DATASET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# Said to researchers in their notebooks: what they can do there, never node commands.
HOW_TO_REQUEST = (
    "request access in the dataset browser, or with insitu.request_access({dataset!r}, "
    "purpose=..., project=..., days=...) in a notebook"
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    dataset TEXT NOT NULL,
    purpose TEXT NOT NULL,
    project TEXT NOT NULL,
    days INTEGER NOT NULL,
    requested_at TEXT NOT NULL,
    status TEXT NOT NULL,              -- pending | approved | denied | revoked
    decided_by TEXT,
    decided_at TEXT,
    decision_reason TEXT,
    expires_at TEXT,
    revoked_by TEXT,
    revoked_at TEXT,
    revoke_reason TEXT
);
CREATE INDEX IF NOT EXISTS requests_user_dataset ON requests (user, dataset);
"""


@dataclass(frozen=True)
class Request:
    """One request with its decision so far (a row of the register)."""

    id: int
    user: str
    dataset: str
    purpose: str
    project: str
    days: int
    requested_at: str
    status: str
    decided_by: str | None
    decided_at: str | None
    decision_reason: str | None
    expires_at: str | None
    revoked_by: str | None
    revoked_at: str | None
    revoke_reason: str | None

    def state(self, now: datetime | None = None) -> str:
        """pending, approved, expired, denied or revoked, as of ``now``."""
        expired = self.expires_at and _parse(self.expires_at) <= (now or datetime.now(UTC))
        if self.status == "approved" and expired:
            return "expired"
        return self.status

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        return asdict(self) | {"state": self.state(now)}


_local = threading.local()
_keep = False


def keep_connections(keep: bool = True) -> None:
    """Reuse one connection per thread (the gate: it asks on every read).

    Only the connection is reused, never an answer: each query runs in a fresh
    read transaction and sees every decision committed before it.
    """
    global _keep
    _keep = keep


class _Conn:
    """``with _conn(home) as conn``: a connection, closed after unless kept."""

    def __init__(self, home: NodeHome, name: str = DB_NAME, schema: str = _SCHEMA) -> None:
        path = home.hub / name
        cache: dict[Path, sqlite3.Connection] = _local.__dict__.setdefault("conns", {})
        if _keep and path in cache:
            self.conn = cache[path]
        else:
            self.conn = connect(path, schema)
            if _keep:
                cache[path] = self.conn

    def __enter__(self) -> sqlite3.Connection:
        return self.conn

    def __exit__(self, *exc: object) -> None:
        if not _keep:
            self.conn.close()


def _conn(home: NodeHome) -> _Conn:
    return _Conn(home)


def node_db(home: NodeHome, path: Path, schema: str) -> _Conn:
    """``with node_db(home, path, schema) as conn``: another of the node's SQLite files,
    its connection kept like the access database's (see :func:`keep_connections`)."""
    return _Conn(home, str(path), schema)


def _now(now: datetime | None) -> datetime:
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError("times must be timezone-aware (UTC)")
    return when


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _row(row: sqlite3.Row) -> Request:
    return Request(**dict(row))


def _text(field: str, value: str, *, limit: int = 2000) -> str:
    value = (value or "").strip()
    if not value:
        raise InvalidRequestError(f"{field} is required: say it in a sentence")
    if len(value) > limit:
        raise InvalidRequestError(f"{field} is too long ({len(value)} > {limit} characters)")
    return value


def _days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise InvalidRequestError(f"days must be a whole number from 1 to {MAX_DAYS}, not {days!r}")
    return days


def _dataset_exists(home: NodeHome, dataset: str) -> None:
    from insitu.hub.stores import list_versions

    list_versions(home, dataset)  # raises DatasetNotFoundError naming what exists


# --- requests and decisions ----------------------------------------------


def request(
    home: NodeHome,
    user: str,
    dataset: str,
    purpose: str,
    project: str,
    days: int,
    *,
    now: datetime | None = None,
) -> Request:
    """File a request for ``user``; any user of the site may ask."""
    require_role(home, user, "researcher", *DECIDERS)
    if not isinstance(dataset, str) or not _DATASET.match(dataset):
        raise InvalidRequestError(f"dataset name {dataset!r} is not valid")
    _dataset_exists(home, dataset)
    purpose = _text("purpose", purpose)
    project = _text("project", project, limit=200)
    _days(days)
    when = _iso(_now(now))
    with _conn(home) as conn:
        cursor = conn.execute(
            "INSERT INTO requests (user, dataset, purpose, project, days, requested_at, status) "
            "VALUES (?, ?, ?, ?, ?, ?, 'pending')",
            (user, dataset, purpose, project, days, when),
        )
        request_id = int(cursor.lastrowid or 0)
    AuditLog(home).append(
        "access.request", user=user, dataset=dataset, request=request_id,
        purpose=purpose, project=project, days=days,
    )  # fmt: skip
    return get_request(home, request_id)


def get_request(home: NodeHome, request_id: int) -> Request:
    row = None
    if -(2**63) <= request_id < 2**63:  # beyond SQLite's integers no request can exist
        with _conn(home) as conn:
            row = conn.execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
    if row is None:
        raise InvalidRequestError(
            f"no access request #{request_id}: see `insitu access list` for the register"
        )
    return _row(row)


def _decidable(home: NodeHome, steward: str, request_id: int) -> Request:
    require_role(home, steward, *DECIDERS)
    found = get_request(home, request_id)
    if found.user == steward:
        raise AccessDeniedError(
            f"{steward} cannot decide their own request #{request_id}: another steward must"
        )
    return found


def approve(
    home: NodeHome,
    steward: str,
    request_id: int,
    reason: str,
    *,
    days: int | None = None,
    expires: datetime | None = None,
    now: datetime | None = None,
) -> Request:
    """Approve a pending request until ``expires`` (or ``days`` from now, else as asked)."""
    found = _decidable(home, steward, request_id)
    if found.status != "pending":
        raise InvalidRequestError(
            f"request #{request_id} is {found.status}, not pending: file a new request"
        )
    reason = _text("reason", reason)
    when = _now(now)
    if expires is None:
        expires = when + timedelta(days=_days(days if days is not None else found.days))
    elif expires.tzinfo is None:
        raise InvalidRequestError("the expiry must carry a time zone, e.g. 2027-01-31T00:00Z")
    if expires <= when:
        raise InvalidRequestError(f"the expiry {_iso(expires)} is not in the future")
    return _decide(home, steward, found, "approved", reason, when, expires_at=_iso(expires))


def deny(
    home: NodeHome, steward: str, request_id: int, reason: str, *, now: datetime | None = None
) -> Request:
    """Deny a pending request, with a reason the researcher sees in the register."""
    found = _decidable(home, steward, request_id)
    if found.status != "pending":
        raise InvalidRequestError(f"request #{request_id} is {found.status}, not pending")
    return _decide(home, steward, found, "denied", _text("reason", reason), _now(now))


def _decide(
    home: NodeHome,
    steward: str,
    found: Request,
    status: str,
    reason: str,
    when: datetime,
    *,
    expires_at: str | None = None,
) -> Request:
    with _conn(home) as conn:
        changed = conn.execute(
            "UPDATE requests SET status = ?, decided_by = ?, decided_at = ?, "
            "decision_reason = ?, expires_at = ? WHERE id = ? AND status = 'pending'",
            (status, steward, _iso(when), reason, expires_at, found.id),
        ).rowcount
    if changed != 1:
        raise InvalidRequestError(f"request #{found.id} was decided meanwhile: reload it")
    kind = "access.approve" if status == "approved" else "access.deny"
    details: dict[str, Any] = {"request": found.id, "for_user": found.user, "reason": reason}
    if expires_at:
        details["expires"] = expires_at
    AuditLog(home).append(kind, user=steward, dataset=found.dataset, **details)
    return get_request(home, found.id)


def revoke(
    home: NodeHome, steward: str, request_id: int, reason: str, *, now: datetime | None = None
) -> Request:
    """End an approval at once: the very next read through the gate is refused."""
    require_role(home, steward, *DECIDERS)
    found = get_request(home, request_id)
    if found.status != "approved":
        raise InvalidRequestError(
            f"request #{request_id} is {found.status}: only an approval can be revoked"
        )
    reason = _text("reason", reason)
    when = _iso(_now(now))
    with _conn(home) as conn:
        conn.execute(
            "UPDATE requests SET status = 'revoked', revoked_by = ?, revoked_at = ?, "
            "revoke_reason = ? WHERE id = ? AND status = 'approved'",
            (steward, when, reason, request_id),
        )
    AuditLog(home).append(
        "access.revoke", user=steward, dataset=found.dataset, request=request_id,
        for_user=found.user, reason=reason,
    )  # fmt: skip
    return get_request(home, request_id)


def close_for_removed_account(home: NodeHome, user: str, actor: str | None) -> list[Request]:
    """When an account is removed: revoke its approvals and deny its pending requests, so
    that a later account with the same name starts with nothing. The removal itself was
    authorised (an admin or the node operator), so no steward role is asked here."""
    return _close(home, register(home, user=user), actor, "the account was removed")


def close_for_dataset(
    home: NodeHome, dataset: str, actor: str | None, reason: str
) -> list[Request]:
    """Revoke every approval and deny every pending request for ``dataset`` (its last
    readable version was retired). The retirement was authorised by its caller."""
    return _close(home, register(home, dataset=dataset), actor, reason)


def _close(
    home: NodeHome, requests: list[Request], actor: str | None, reason: str
) -> list[Request]:
    when = _iso(_now(None))
    closed = [r for r in requests if r.status in ("approved", "pending")]
    for found in closed:
        with _conn(home) as conn:
            if found.status == "approved":
                conn.execute(
                    "UPDATE requests SET status = 'revoked', revoked_by = ?, revoked_at = ?, "
                    "revoke_reason = ? WHERE id = ? AND status = 'approved'",
                    (actor, when, reason, found.id),
                )
            else:
                conn.execute(
                    "UPDATE requests SET status = 'denied', decided_by = ?, decided_at = ?, "
                    "decision_reason = ? WHERE id = ? AND status = 'pending'",
                    (actor, when, reason, found.id),
                )
        kind = "access.revoke" if found.status == "approved" else "access.deny"
        AuditLog(home).append(
            kind, user=actor, dataset=found.dataset, request=found.id, for_user=found.user,
            reason=reason,
        )  # fmt: skip
    return [get_request(home, r.id) for r in closed]


# --- reading ----------------------------------------------------------------


def register(
    home: NodeHome, *, user: str | None = None, dataset: str | None = None
) -> list[Request]:
    """Every request and its decision, newest first (optionally for one user/dataset)."""
    query = "SELECT * FROM requests"
    clauses, params = [], []
    if user is not None:
        clauses.append("user = ?")
        params.append(user)
    if dataset is not None:
        clauses.append("dataset = ?")
        params.append(dataset)
    if clauses:
        query += " WHERE " + " AND ".join(clauses)
    with _conn(home) as conn:
        rows = conn.execute(query + " ORDER BY id DESC", params).fetchall()
    return [_row(r) for r in rows]


def status_for(
    home: NodeHome, user: str, dataset: str, *, now: datetime | None = None
) -> tuple[str, Request | None]:
    """The user's standing for a dataset: (state, the request that decides it).

    States: approved, pending, expired, revoked, denied, none. A current
    approval wins over everything else; otherwise the newest request speaks.
    """
    when = _now(now)
    requests = register(home, user=user, dataset=dataset)
    for found in requests:
        if found.state(when) == "approved":
            return "approved", found
    if not requests:
        return "none", None
    newest = requests[0]
    return newest.state(when), newest


def _require_account(home: NodeHome, user: str) -> None:
    """An approval counts only while its holder is a user of the site: removing an
    account stops their reads at once, whatever tokens and approvals remain."""
    with _Conn(home, accounts.DB_NAME, accounts._SCHEMA) as conn:
        known = conn.execute("SELECT 1 FROM accounts WHERE name = ?", (user,)).fetchone()
    if known is None:
        raise AccessDeniedError(
            f"{user} is no longer a user of this site: an admin adds accounts with "
            "`insitu users add`"
        )


def check_read(home: NodeHome, user: str, dataset: str, *, now: datetime | None = None) -> Request:
    """The approval that lets ``user`` read ``dataset`` now, or AccessDeniedError why not.

    Asked on every read; never cached.
    """
    when = _iso(_now(now))
    with _conn(home) as conn:
        row = conn.execute(
            "SELECT * FROM requests WHERE user = ? AND dataset = ? AND status = 'approved' "
            "AND expires_at > ? ORDER BY id DESC LIMIT 1",
            (user, dataset, when),
        ).fetchone()
    if row is not None:
        _require_account(home, user)
        return _row(row)
    state, found = status_for(home, user, dataset, now=now)
    if state == "approved" and found is not None:
        _require_account(home, user)
        return found
    how = HOW_TO_REQUEST.format(dataset=dataset)
    if found is None:
        message = f"{user} has no approval to read {dataset!r}: {how}"
    elif state == "pending":
        message = (
            f"{user}'s request #{found.id} for {dataset!r} awaits a steward's decision "
            f"(filed {found.requested_at})"
        )
    elif state == "expired":
        message = f"{user}'s approval for {dataset!r} expired on {found.expires_at}: {how}"
    elif state == "revoked":
        message = (
            f"{user}'s approval for {dataset!r} was revoked on {found.revoked_at} "
            f"({found.revoke_reason}): {how}"
        )
    else:
        message = (
            f"{user}'s request #{found.id} for {dataset!r} was denied ({found.decision_reason}): "
            f"{how}"
        )
    raise AccessDeniedError(message)
