"""The coordinator's Control API, per researcher: tokens, and runs only their owner sees.

Flower 1.42's SuperLink has account authentication only as an enterprise
plugin (OIDC); without it, any client that reaches the Control API may list
every run, read any run's logs (where results are printed) and stop any run.
insitu's coordinator runs the SuperLink through its own entry point
(:mod:`insitu.federation.superlink`), which installs two things before
Flower starts:

- :class:`TokenAuthn`, a Control API authentication plugin: every request
  must carry a bearer token that ``insitu federation token issue NAME`` made
  on the coordinator (stored there only as SHA-256 digests, in ``private/``);
  no token or an unknown or revoked one is refused (401);
- :func:`install_owner_checks`: wrappers around Flower's Control handlers.
  ``StartRun`` records the run's owner; ``ListRuns`` shows a researcher only
  their own runs; ``StreamLogs``, ``StreamRunEvents``, ``PullArtifacts`` and
  ``StopRun`` refuse runs of others; every other handler (node registration,
  federations, apps, invitations, automations) is for the coordinator's
  admin token only. Refusals are written to the coordinator's audit log
  (``control.refuse``).

The client side (the connection and :class:`TokenCliAuth`, handed to Flower's
HTTP client) is :mod:`insitu.federation.control_client`.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from insitu.config import NodeHome
from insitu.errors import InvalidRequestError

__all__ = [
    "ADMIN_ROLE",
    "TokenAuthn",
    "ensure_admin_token",
    "install_owner_checks",
    "issue_token",
    "register_node",
    "revoke_tokens",
    "token_holders",
]

DB_NAME = "coordinator-control.sqlite"
ADMIN_ROLE = "admin"
RESEARCHER_ROLE = "researcher"
# Handlers a researcher may call on their own runs (run id in the request).
_RUN_HANDLERS = ("stream_logs", "stream_run_events", "pull_artifacts", "stop_run")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    role TEXT NOT NULL,
    created TEXT NOT NULL,
    revoked TEXT
);
CREATE TABLE IF NOT EXISTS owners (
    run_id TEXT PRIMARY KEY,            -- Flower's run ids are unsigned 64-bit
    holder TEXT NOT NULL,
    started TEXT NOT NULL
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _connect(home: NodeHome) -> sqlite3.Connection:
    from insitu._sqlite import connect

    return connect(home.private / DB_NAME, _SCHEMA)


# --- tokens (coordinator side) ----------------------------------------------


def issue_token(home: NodeHome, holder: str, *, role: str = RESEARCHER_ROLE) -> str:
    """A new Control API token for ``holder`` (shown once; only its digest is kept)."""
    if role not in (RESEARCHER_ROLE, ADMIN_ROLE):
        raise InvalidRequestError(f"role {role!r}: choose {RESEARCHER_ROLE!r} or {ADMIN_ROLE!r}")
    if not holder or len(holder) > 200 or any(c.isspace() for c in holder):
        raise InvalidRequestError(
            f"token holder {holder!r} must be a name without spaces, e.g. alice@site-a"
        )
    token = "insitu-" + secrets.token_urlsafe(32)
    conn = _connect(home)
    try:
        conn.execute(
            "INSERT INTO tokens (digest, holder, role, created) VALUES (?, ?, ?, ?)",
            (_digest(token), holder, role, _now()),
        )
    finally:
        conn.close()
    _audit(home, "control.token", holder=holder, role=role)
    return token


ADMIN_TOKEN_NAME = "coordinator-admin.token"  # noqa: S105 (a file name)
ADMIN_HOLDER = "coordinator-admin"


def ensure_admin_token(home: NodeHome) -> str:
    """The coordinator operator's token (``private/``, 0600), made on first start."""
    import os

    path = home.private / ADMIN_TOKEN_NAME
    if path.exists():
        return path.read_text().strip()
    home.private.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = issue_token(home, ADMIN_HOLDER, role=ADMIN_ROLE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def register_node(
    home: NodeHome,
    address: str,
    public_key: str,
    *,
    insecure: bool,
    root_certificates: str | None = None,
) -> int:
    """Register a site's SuperNode public key at this coordinator (admin token)."""
    from pathlib import Path

    from flwr.cli.supernode.register import try_load_public_key
    from flwr.cli.typing import SuperLinkConnection
    from flwr.proto.control_pb2 import RegisterNodeRequest

    from insitu.federation.control_client import control

    key = try_load_public_key(Path(public_key).expanduser())
    connection = SuperLinkConnection(
        name="insitu", address=address, insecure=insecure, root_certificates=root_certificates
    )
    with control(connection, ensure_admin_token(home)) as client:
        response = client.RegisterNode(RegisterNodeRequest(public_key=key))
    if not response.node_id:
        from insitu.errors import ServiceError

        raise ServiceError("the coordinator did not register the SuperNode key")
    _audit(home, "control.register_node", holder=ADMIN_HOLDER, node_id=int(response.node_id))
    return int(response.node_id)


def revoke_tokens(home: NodeHome, holder: str) -> int:
    """Revoke every token of ``holder``; the next request with one is refused."""
    conn = _connect(home)
    try:
        count = conn.execute(
            "UPDATE tokens SET revoked = ? WHERE holder = ? AND revoked IS NULL", (_now(), holder)
        ).rowcount
    finally:
        conn.close()
    _audit(home, "control.revoke", holder=holder, tokens=count)
    return int(count)


def token_holders(home: NodeHome) -> list[dict[str, Any]]:
    """Holders and roles of the tokens (never the tokens)."""
    conn = _connect(home)
    try:
        rows = conn.execute("SELECT holder, role, created, revoked FROM tokens ORDER BY created")
        return [dict(row) for row in rows]
    finally:
        conn.close()


def _lookup(home: NodeHome, token: str) -> tuple[str, str] | None:
    conn = _connect(home)
    try:
        row = conn.execute(
            "SELECT holder, role FROM tokens WHERE digest = ? AND revoked IS NULL",
            (_digest(token),),
        ).fetchone()
    finally:
        conn.close()
    return (str(row[0]), str(row[1])) if row is not None else None


def _audit(home: NodeHome, kind: str, **details: Any) -> None:
    from insitu.audit import AuditLog

    holder = details.pop("holder", None)
    AuditLog(home).append(kind, user=holder, **details)


# --- the SuperLink side ---------------------------------------------------


def _account_info(holder: str, role: str) -> Any:
    from flwr.common.constant import NOOP_FLWR_AID
    from flwr.supercore.auth.typing import AccountInfo

    # Flower's federation manager (without the enterprise plugin) admits one account id;
    # the holder rides in account_name, prefixed with the role for the owner checks.
    return AccountInfo(flwr_aid=NOOP_FLWR_AID, account_name=f"{role}:{holder}")


def _holder(account: Any) -> tuple[str, str]:
    role, _, holder = str(getattr(account, "account_name", "") or "").partition(":")
    return role, holder


class TokenAuthn:
    """A Flower ControlAuthnPlugin: bearer tokens issued by ``insitu federation token``."""

    def __init__(self, home: NodeHome) -> None:
        self.home = home

    def get_login_details(self) -> Any:
        from flwr.common.constant import AuthnType
        from flwr.supercore.auth.typing import AccountAuthLoginDetails

        return AccountAuthLoginDetails(
            authn_type=AuthnType.NOOP,
            device_code="",
            verification_uri_complete="",
            expires_in=0,
            interval=0,
        )

    def validate_tokens_in_metadata(
        self, metadata: Sequence[tuple[str, str | bytes]]
    ) -> tuple[bool, Any]:
        from flwr.common.constant import ACCESS_TOKEN_KEY

        for key, value in metadata:
            if key == ACCESS_TOKEN_KEY:
                token = value.decode() if isinstance(value, bytes) else value
                found = _lookup(self.home, token)
                if found is not None:
                    return True, _account_info(*found)
        return False, None

    def get_auth_tokens(self, device_code: str) -> Any:
        from flwr.supercore.error import ApiErrorCode, FlowerError

        raise FlowerError(
            ApiErrorCode.NO_ACCOUNT_AUTH,
            "this coordinator uses tokens from `insitu federation token issue`, not login",
        )

    def refresh_tokens(
        self, metadata: Sequence[tuple[str, str | bytes]]
    ) -> tuple[Sequence[tuple[str, str | bytes]] | None, Any]:
        return None, None


def _refuse(home: NodeHome, account: Any, what: str) -> None:
    from flwr.supercore.error import ApiErrorCode, FlowerError

    role, holder = _holder(account)
    _audit(home, "control.refuse", holder=holder or "?", role=role, action=what)
    raise FlowerError(
        ApiErrorCode.RUN_ID_NOT_BELONG_TO_ACCOUNT,
        f"{holder or 'this token'} may not {what}: researchers see and stop only their own runs",
    )


def _owner(home: NodeHome, run_id: int) -> str | None:
    conn = _connect(home)
    try:
        row = conn.execute("SELECT holder FROM owners WHERE run_id = ?", (str(run_id),)).fetchone()
    finally:
        conn.close()
    return str(row[0]) if row is not None else None


def install_owner_checks(home: NodeHome) -> None:
    """Wrap Flower's Control handlers (module attributes the servicers call at run time)."""
    from flwr.superlink.servicer.control import control_handlers as handlers

    def admin_only(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(request: Any, account: Any, *args: Any, **kwargs: Any) -> Any:
            if _holder(account)[0] != ADMIN_ROLE:
                _refuse(home, account, f"call {name} (coordinator admin only)")
            return fn(request, account, *args, **kwargs)

        return wrapper

    def own_run(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(request: Any, account: Any, *args: Any, **kwargs: Any) -> Any:
            role, holder = _holder(account)
            if role != ADMIN_ROLE and _owner(home, request.run_id) != holder:
                _refuse(home, account, f"{name} on run {request.run_id}")
            return fn(request, account, *args, **kwargs)

        return wrapper

    start_run = handlers.start_run

    @functools.wraps(start_run)
    def start_run_wrapper(request: Any, account: Any, *args: Any, **kwargs: Any) -> Any:
        role, holder = _holder(account)
        if role not in (ADMIN_ROLE, RESEARCHER_ROLE):
            _refuse(home, account, "start a run")
        response = start_run(request, account, *args, **kwargs)
        if response.HasField("run_id"):
            conn = _connect(home)
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO owners (run_id, holder, started) VALUES (?, ?, ?)",
                    (str(response.run_id), holder, _now()),
                )
            finally:
                conn.close()
            _audit(home, "control.run", holder=holder, run_id=str(response.run_id))
        return response

    list_runs = handlers.list_runs

    @functools.wraps(list_runs)
    def list_runs_wrapper(request: Any, account: Any, *args: Any, **kwargs: Any) -> Any:
        role, holder = _holder(account)
        owned = not request.HasField("run_id") or _owner(home, request.run_id) == holder
        if role != ADMIN_ROLE and not owned:
            _refuse(home, account, f"list run {request.run_id}")
        response = list_runs(request, account, *args, **kwargs)
        if role != ADMIN_ROLE:
            for run_id in list(response.run_dict):
                if _owner(home, run_id) != holder:
                    del response.run_dict[run_id]
        return response

    replaced: dict[str, Callable[..., Any]] = {
        "start_run": start_run_wrapper,
        "list_runs": list_runs_wrapper,
    }
    for name, fn in list(vars(handlers).items()):
        if name.startswith("_") or name in replaced or not inspect.isfunction(fn):
            continue
        if getattr(fn, "__module__", "") != handlers.__name__:
            continue
        if "account" not in inspect.signature(fn).parameters:
            continue  # login details: no account involved
        replaced[name] = own_run(name, fn) if name in _RUN_HANDLERS else admin_only(name, fn)
    for name, fn in replaced.items():
        setattr(handlers, name, fn)
