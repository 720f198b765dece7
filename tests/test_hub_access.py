"""Access rules, accounts and the hub's CLI, without a running hub."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from fixtures_hub import PASSWORD

from insitu.audit import AuditLog
from insitu.cli import main
from insitu.errors import AccessDeniedError, DatasetNotFoundError, InvalidRequestError
from insitu.hub import access
from insitu.hub.accounts import AccountStore, require_role

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _approved(home, user="ada", days=10, now=T0):
    req = access.request(home, user, "trial-a", "tumour volumes", "LOCAT-2", 30, now=now)
    return access.approve(home, "sam", req.id, "fits the protocol", days=days, now=now)


# --- accounts ----------------------------------------------------------------


def test_passwords_are_hashed_and_checked(hub_home):
    with AccountStore(hub_home) as store:
        assert store.check_password("ada", PASSWORD).role == "researcher"
        assert store.check_password("ada", "wrong password") is None
        assert store.check_password("nobody", PASSWORD) is None
        assert store.get("ada").last_login is not None
    raw = (hub_home.hub / "accounts.sqlite").read_bytes()
    assert PASSWORD.encode() not in raw
    assert b"$argon2" in raw


def test_account_errors_say_what_to_do(hub_home):
    with AccountStore(hub_home) as store:
        with pytest.raises(InvalidRequestError, match="exists already"):
            store.add("ada", "researcher", PASSWORD, actor="t")
        with pytest.raises(InvalidRequestError, match="not one of: researcher, steward, admin"):
            store.add("eve", "superuser", PASSWORD, actor="t")
        with pytest.raises(InvalidRequestError, match="not valid"):
            store.add("../eve", "researcher", PASSWORD, actor="t")
        with pytest.raises(InvalidRequestError, match="at least 8"):
            store.add("eve", "researcher", "short", actor="t")
        with pytest.raises(InvalidRequestError, match="no user 'zed'"):
            store.set_role("zed", "admin", actor="t")
    with pytest.raises(AccessDeniedError, match="ada is a researcher: only a steward or admin"):
        require_role(hub_home, "ada", "steward", "admin")
    with pytest.raises(AccessDeniedError, match="not a user of this site"):
        require_role(hub_home, "ghost", "researcher")


# --- access rules ------------------------------------------------------------


def test_no_request_pending_approved_expired(hub_home):
    with pytest.raises(AccessDeniedError, match=r"no approval.*request_access\('trial-a'"):
        access.check_read(hub_home, "ada", "trial-a", now=T0)
    req = access.request(hub_home, "ada", "trial-a", "tumour volumes", "LOCAT-2", 30, now=T0)
    assert req.status == "pending"
    with pytest.raises(AccessDeniedError, match="awaits a steward"):
        access.check_read(hub_home, "ada", "trial-a", now=T0)
    access.approve(hub_home, "sam", req.id, "fits the protocol", days=10, now=T0)
    assert access.check_read(hub_home, "ada", "trial-a", now=T0 + timedelta(days=9)).id == req.id
    expired_at = T0 + timedelta(days=10)
    with pytest.raises(AccessDeniedError, match=r"expired on 2026-01-11T12:00:00\+00:00"):
        access.check_read(hub_home, "ada", "trial-a", now=expired_at)
    # Another user's approval never counts for ada's colleague.
    with pytest.raises(AccessDeniedError):
        access.check_read(hub_home, "bob", "trial-a", now=T0)


def test_approve_defaults_to_requested_days_and_explicit_expiry(hub_home):
    req = access.request(hub_home, "ada", "trial-a", "p", "proj", 30, now=T0)
    approved = access.approve(hub_home, "sam", req.id, "ok", now=T0)
    assert approved.expires_at == (T0 + timedelta(days=30)).isoformat()
    req2 = access.request(hub_home, "bob", "trial-a", "p", "proj", 30, now=T0)
    until = T0 + timedelta(days=3)
    assert access.approve(hub_home, "sam", req2.id, "ok", expires=until, now=T0).expires_at == (
        until.isoformat()
    )
    req3 = access.request(hub_home, "bob", "trial-a", "p", "proj", 30, now=T0)
    with pytest.raises(InvalidRequestError, match="not in the future"):
        access.approve(hub_home, "sam", req3.id, "ok", expires=T0 - timedelta(days=1), now=T0)


def test_revocation_applies_to_the_next_check(hub_home):
    req = _approved(hub_home)
    access.check_read(hub_home, "ada", "trial-a", now=T0)
    access.revoke(hub_home, "sam", req.id, "protocol breach", now=T0 + timedelta(hours=1))
    with pytest.raises(AccessDeniedError, match=r"revoked on .*\(protocol breach\)"):
        access.check_read(hub_home, "ada", "trial-a", now=T0 + timedelta(hours=1))
    # A new request and approval restores access; the register keeps both.
    _approved(hub_home, now=T0 + timedelta(days=1))
    assert access.check_read(hub_home, "ada", "trial-a", now=T0 + timedelta(days=1))
    states = [r.state(T0 + timedelta(days=1)) for r in access.register(hub_home, user="ada")]
    assert states == ["approved", "revoked"]


def test_denied_request_gives_the_reason(hub_home):
    req = access.request(hub_home, "ada", "trial-a", "p", "proj", 30, now=T0)
    access.deny(hub_home, "sam", req.id, "no ethics approval attached", now=T0)
    with pytest.raises(AccessDeniedError, match="denied \\(no ethics approval attached\\)"):
        access.check_read(hub_home, "ada", "trial-a", now=T0)
    with pytest.raises(InvalidRequestError, match="is denied, not pending"):
        access.approve(hub_home, "sam", req.id, "changed my mind", now=T0)
    with pytest.raises(InvalidRequestError, match="only an approval can be revoked"):
        access.revoke(hub_home, "sam", req.id, "x", now=T0)


def test_researchers_cannot_decide_and_nobody_decides_their_own(hub_home):
    req = access.request(hub_home, "ada", "trial-a", "p", "proj", 30, now=T0)
    for action in (access.approve, access.deny):
        with pytest.raises(AccessDeniedError, match="bob is a researcher"):
            action(hub_home, "bob", req.id, "sure", now=T0)
    approved = access.approve(hub_home, "sam", req.id, "ok", now=T0)
    with pytest.raises(AccessDeniedError, match="ada is a researcher"):
        access.revoke(hub_home, "ada", approved.id, "mine", now=T0)
    own = access.request(hub_home, "sam", "trial-a", "p", "proj", 30, now=T0)
    with pytest.raises(AccessDeniedError, match="cannot decide their own request"):
        access.approve(hub_home, "sam", own.id, "me", now=T0)
    access.approve(hub_home, "root_admin", own.id, "ok", now=T0)


def test_request_validation(hub_home):
    with pytest.raises(DatasetNotFoundError, match=r"no dataset 'nope'.*trial-a"):
        access.request(hub_home, "ada", "nope", "p", "proj", 30)
    with pytest.raises(InvalidRequestError, match="purpose is required"):
        access.request(hub_home, "ada", "trial-a", "  ", "proj", 30)
    with pytest.raises(InvalidRequestError, match="days must be a whole number"):
        access.request(hub_home, "ada", "trial-a", "p", "proj", 0)
    with pytest.raises(AccessDeniedError, match="not a user of this site"):
        access.request(hub_home, "mallory", "trial-a", "p", "proj", 30)


def test_everything_is_audited(hub_home):
    req = _approved(hub_home)
    access.revoke(hub_home, "sam", req.id, "done")
    kinds = [e["kind"] for e in AuditLog(hub_home).query(kind="access")]
    assert kinds == ["access.request", "access.approve", "access.revoke"]
    assert AuditLog(hub_home).query(kind="access.approve")[0]["details"]["for_user"] == "ada"
    assert len(AuditLog(hub_home).query(kind="user")) == 4
    AuditLog(hub_home).verify()


# --- CLI ---------------------------------------------------------------------


def _cli(monkeypatch, capsys, *argv, stdin=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_users_roles_and_refusals(home, monkeypatch, capsys):
    monkeypatch.delenv("INSITU_USER", raising=False)
    code, out, _ = _cli(
        monkeypatch, capsys, "users", "add", "boss", "--role", "admin", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0 and "added boss (admin)" in out
    code, _, err = _cli(
        monkeypatch, capsys, "users", "add", "ada", "--as", "boss", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err
    # A researcher may not manage users, not even herself.
    code, _, err = _cli(monkeypatch, capsys, "users", "role", "ada", "admin", "--as", "ada")
    assert code == 4 and "ada is a researcher: only a admin" in err
    # No terminal and no --password-stdin: refused, nothing stored.
    code, _, err = _cli(monkeypatch, capsys, "users", "add", "eve", stdin="")
    assert code == 1 and "--password-stdin" in err
    code, out, _ = _cli(monkeypatch, capsys, "users", "list", "--json")
    assert [u["name"] for u in json.loads(out)] == ["ada", "boss"]
    assert PASSWORD not in out
    code, out, _ = _cli(monkeypatch, capsys, "users", "role", "ada", "steward", "--as", "boss")
    assert code == 0 and "ada is now a steward" in out
    code, out, _ = _cli(monkeypatch, capsys, "users", "remove", "ada")
    assert code == 0


def test_cli_access_flow_and_register(hub_home, monkeypatch, capsys):
    monkeypatch.delenv("INSITU_USER", raising=False)
    code, out, err = _cli(
        monkeypatch, capsys, "access", "request", "trial-a", "--purpose", "volumes",
        "--project", "P1", "--days", "30", "--as", "ada",
    )  # fmt: skip
    assert code == 0, err
    assert "request #1 filed" in out
    # Researchers are refused every steward action at the CLI.
    for action in ("approve", "deny", "revoke"):
        code, _, err = _cli(
            monkeypatch, capsys, "access", action, "1", "--reason", "x", "--as", "bob"
        )
        assert code == 4, action
        assert "bob is a researcher" in err
    # The node operator must name a steward to decide.
    code, _, err = _cli(monkeypatch, capsys, "access", "approve", "1", "--reason", "ok")
    assert code == 4 and "--as NAME" in err
    monkeypatch.setenv("INSITU_USER", "sam")
    code, out, err = _cli(
        monkeypatch, capsys, "access", "approve", "1", "--reason", "ok", "--expires", "2099-01-01"
    )
    assert code == 0, err
    assert "until 2099-01-01T00:00:00+00:00" in out
    code, out, _ = _cli(monkeypatch, capsys, "access", "list", "--json")
    (row,) = json.loads(out)
    assert row["state"] == "approved" and row["decided_by"] == "sam"
    code, out, _ = _cli(monkeypatch, capsys, "access", "revoke", "1", "--reason", "ended")
    assert code == 0
    code, out, _ = _cli(monkeypatch, capsys, "access", "list")
    assert "revoked" in out and "ended" in out


def test_cli_audit_verify_show_and_tamper(hub_home, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("INSITU_USER", raising=False)
    _approved(hub_home)
    code, out, _ = _cli(monkeypatch, capsys, "audit", "verify")
    assert code == 0 and "audit chain intact: 6 entries" in out
    code, out, _ = _cli(monkeypatch, capsys, "audit", "show", "--kind", "access", "--json")
    assert [e["kind"] for e in json.loads(out)] == ["access.request", "access.approve"]
    code, out, _ = _cli(
        monkeypatch, capsys, "audit", "show", "--user", "sam", "--since", "2000-01-01"
    )
    assert "access.approve" in out and "access.request" not in out
    code, _, err = _cli(monkeypatch, capsys, "audit", "show", "--as", "ada")
    assert code == 4 and "ada is a researcher" in err
    lines = AuditLog(hub_home).path.read_text().splitlines(keepends=True)
    entry = json.loads(lines[4])
    entry["user"] = "someone-else"
    lines[4] = json.dumps(entry) + "\n"
    copy = tmp_path / "copy.jsonl"
    copy.write_text("".join(lines))
    code, _, err = _cli(monkeypatch, capsys, "audit", "verify", "--file", str(copy))
    assert code == 5 and "entry 4" in err
    code, _, err = _cli(monkeypatch, capsys, "audit", "show", "--since", "yesterday")
    assert code == 1 and "not a date" in err


def test_gate_connection_reuse_never_reuses_an_answer(hub_home, monkeypatch, capsys):
    """The gate keeps its SQLite connection; a revocation made by another process
    (here the CLI in a subprocess) must still stop the very next check."""
    import subprocess
    import sys

    req = _approved(hub_home, now=datetime.now(UTC))
    access.keep_connections()
    try:
        assert access.check_read(hub_home, "ada", "trial-a").id == req.id
        done = subprocess.run(
            [sys.executable, "-m", "insitu.cli", "access", "revoke", str(req.id),
             "--reason", "withdrawn", "--as", "sam"],
            env={"INSITU_HOME": str(hub_home.root), "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        with pytest.raises(AccessDeniedError, match="revoked"):
            access.check_read(hub_home, "ada", "trial-a")
    finally:
        access.keep_connections(False)
