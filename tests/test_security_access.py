"""Security review without a running hub: the access rules, the airlock and the CLI
refuse what they must (findings in docs/security-review.md)."""

from __future__ import annotations

import io
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from fixtures_hub import PASSWORD

from insitu.audit import AuditLog
from insitu.cli import main
from insitu.errors import (
    AccessDeniedError,
    DatasetNotFoundError,
    InvalidRequestError,
    ReleaseNotFoundError,
)
from insitu.hub import access
from insitu.hub.account_removal import remove_account
from insitu.hub.accounts import AccountStore
from insitu.hub.airlock import Airlock
from insitu.hub.service_app import ServiceHandler

HUGE = 10**30  # beyond SQLite's 64-bit integers


def _approved(home, user="ada"):
    found = access.request(home, user, "trial-a", "volumes", "P1", 30)
    return access.approve(home, "sam", found.id, "ok")


def test_a_removed_account_reads_nothing_more(hub_home):
    """Removing a user is the admin's kill switch: their approval must stop working at the
    next read, even while their hub token still exists (finding S2)."""
    _approved(hub_home)
    assert access.check_read(hub_home, "ada", "trial-a").user == "ada"
    remove_account(hub_home, "ada", actor="root_admin")
    with pytest.raises(AccessDeniedError, match="account was removed"):
        access.check_read(hub_home, "ada", "trial-a")
    # An account that vanished otherwise (a restored or edited accounts.sqlite) while its
    # approval stands is refused too, also on the gate's kept connections.
    _approved(hub_home, "bob")
    with sqlite3.connect(hub_home.hub / "accounts.sqlite") as conn:
        conn.execute("DELETE FROM accounts WHERE name = 'bob'")
    for keep in (False, True):
        access.keep_connections(keep)
        try:
            with pytest.raises(AccessDeniedError, match="no longer a user of this site"):
                access.check_read(hub_home, "bob", "trial-a")
        finally:
            access.keep_connections(False)


def test_a_new_account_with_a_removed_name_inherits_nothing(hub_home):
    """Approvals are keyed by name: removing an account closes them (finding S4)."""
    approval = _approved(hub_home, "bob")
    pending = access.request(hub_home, "bob", "trial-a", "more", "P2", 5)
    remove_account(hub_home, "bob", actor="root_admin")
    with AccountStore(hub_home) as store:
        store.add("bob", "researcher", None, actor="root_admin")  # someone else, same name
    with pytest.raises(AccessDeniedError, match="account was removed"):
        access.check_read(hub_home, "bob", "trial-a")
    assert access.get_request(hub_home, approval.id).state() == "revoked"
    assert access.get_request(hub_home, pending.id).state() == "denied"
    with pytest.raises(InvalidRequestError, match="not pending"):
        access.approve(hub_home, "sam", pending.id, "ok")
    entries = AuditLog(hub_home).query(kind="access")
    closing = [e for e in entries if e["details"].get("reason") == "the account was removed"]
    assert {(e["kind"], e["user"], e["details"]["for_user"]) for e in closing} == {
        ("access.revoke", "root_admin", "bob"),
        ("access.deny", "root_admin", "bob"),
    }


def test_ids_beyond_sqlite_range_are_not_found(hub_home):
    with pytest.raises(InvalidRequestError, match="no access request"):
        access.get_request(hub_home, HUGE)
    for action in (access.approve, access.deny, access.revoke):
        with pytest.raises(InvalidRequestError, match="no access request"):
            action(hub_home, "sam", HUGE, "x")
    with Airlock(hub_home) as airlock:
        for rid in (HUGE, -HUGE, str(HUGE)):
            with pytest.raises(ReleaseNotFoundError):
                airlock.get(rid)
        with pytest.raises(ReleaseNotFoundError):
            airlock.download(HUGE, user="ada")


@pytest.mark.parametrize("body", [b"[" * 50_000, b'{"purpose": "\xff\xfe"}', b"\xef\xbb"])
def test_deeply_nested_or_undecodable_json_is_a_bad_request(body):
    class Fake:
        class request:  # mimics tornado's handler.request
            pass

    Fake.request.body = body  # type: ignore[attr-defined]
    with pytest.raises(InvalidRequestError, match="not JSON"):
        ServiceHandler.json_body(Fake())  # type: ignore[arg-type]


def test_expiry_and_revocation_take_effect_at_once(hub_home):
    past = datetime.now(UTC) - timedelta(days=3)
    found = access.request(hub_home, "bob", "trial-a", "p", "P", 1, now=past)
    access.approve(hub_home, "sam", found.id, "ok", days=1, now=past)
    with pytest.raises(AccessDeniedError, match="expired on"):
        access.check_read(hub_home, "bob", "trial-a")
    approval = _approved(hub_home)
    access.keep_connections()  # as in the gate: a kept connection never keeps an answer
    try:
        access.check_read(hub_home, "ada", "trial-a")
        access.revoke(hub_home, "sam", approval.id, "closed")
        with pytest.raises(AccessDeniedError, match="revoked"):
            access.check_read(hub_home, "ada", "trial-a")
    finally:
        access.keep_connections(False)


def test_four_eyes_for_access_and_releases(hub_home):
    mine = access.request(hub_home, "sam", "trial-a", "QA", "QA", 3)
    for action in (access.approve, access.deny):
        with pytest.raises(AccessDeniedError, match="their own request"):
            action(hub_home, "sam", mine.id, "mine")
    with Airlock(hub_home) as airlock:
        release = airlock.submit("sam", b"arm,n\nA,30\n", "a.csv", purpose="QA")
        with pytest.raises(AccessDeniedError, match="another steward"):
            airlock.approve(release.id, steward="sam", reason="mine", override="mine")


def _cli(monkeypatch, capsys, *argv, stdin=""):
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_refuses_researchers_unknown_names_and_huge_ids(hub_home, monkeypatch, capsys):
    monkeypatch.delenv("INSITU_USER", raising=False)
    found = access.request(hub_home, "ada", "trial-a", "p", "P", 3)
    for who in ("ada", "bob", "nobody", "root_admin\nsam"):
        for action in ("approve", "deny"):
            code, _, err = _cli(
                monkeypatch, capsys, "access", action, str(found.id), "--reason", "x", "--as", who
            )
            assert code != 0, (who, action)
    assert access.get_request(hub_home, found.id).status == "pending"
    code, _, err = _cli(
        monkeypatch, capsys, "access", "approve", str(HUGE), "--reason", "x", "--as", "sam"
    )
    assert code == 1 and "no access request" in err and "Traceback" not in err
    # Airlock decisions at the CLI need a steward named with --as.
    with Airlock(hub_home) as airlock:
        release = airlock.submit("ada", b"arm,n\nA,30\n", "a.csv", purpose="x")
    for argv in (("--as", "bob"), ("--as", "nobody"), ()):
        code, _, err = _cli(
            monkeypatch, capsys, "airlock", "approve", str(release.id), "--reason", "x", *argv
        )
        assert code != 0, argv
    # A researcher may not manage users or read the audit log.
    code, _, _ = _cli(monkeypatch, capsys, "users", "role", "ada", "admin", "--as", "ada")
    assert code != 0
    code, _, _ = _cli(monkeypatch, capsys, "audit", "show", "--as", "ada")
    assert code != 0


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "A", "ada\r\nX: 1", "ada\x00", "éva", "", "a" * 65, ".hidden"]
)
def test_odd_user_names_are_refused(hub_home, name):
    with AccountStore(hub_home) as store, pytest.raises(InvalidRequestError):
        store.add(name, "researcher", PASSWORD, actor="tests")
    with AccountStore(hub_home) as store, pytest.raises(InvalidRequestError):
        store.sync_sso(name, "researcher")


def test_decisions_are_audited_under_the_deciders_name(hub_home):
    approval = _approved(hub_home, "bob")
    access.revoke(hub_home, "root_admin", approval.id, "closed")
    kinds = {
        (e["kind"], e["user"], e["details"].get("for_user")) for e in AuditLog(hub_home).entries()
    }
    assert ("access.request", "bob", None) in kinds
    assert ("access.approve", "sam", "bob") in kinds
    assert ("access.revoke", "root_admin", "bob") in kinds
    assert AuditLog(hub_home).verify().entries >= 3


def test_federation_decisions_name_a_real_decider(hub_home, monkeypatch, capsys):
    """--by is checked against the site's accounts, as the hub CLI's --as is."""
    from insitu.federation import analytics_fingerprint

    fingerprint = analytics_fingerprint()  # a built-in app: its manifest is known
    for who in ("ada", "nobody"):
        code, _, err = _cli(monkeypatch, capsys, "federation", "approve", fingerprint,
                            "--dataset", "trial-a", "--days", "3", "--by", who)  # fmt: skip
        assert code == AccessDeniedError.exit_code, (who, err)
    code, _, err = _cli(monkeypatch, capsys, "federation", "approve", fingerprint,
                        "--dataset", "trial-a", "--days", "3", "--by", "sam")  # fmt: skip
    assert code == 0, err
    (entry,) = AuditLog(hub_home).query(kind="federation.approve")
    assert entry["user"] == "sam"
    code, _, _ = _cli(monkeypatch, capsys, "federation", "revoke", fingerprint, "--by", "bob")
    assert code == AccessDeniedError.exit_code


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "/abs", "A", "a\\b", "x" * 65, "a\x00"])
def test_dataset_names_cannot_escape_stores(hub_home, name):
    from insitu.datasets.ingest import ingest
    from insitu.errors import IngestError
    from insitu.hub import stores

    before = sorted(p.name for p in hub_home.root.iterdir())
    with pytest.raises(IngestError, match="dataset name"):
        ingest([hub_home.root / "nothing"], name, home=hub_home, show_progress=False)
    with pytest.raises((InvalidRequestError, DatasetNotFoundError)):
        stores.resolve(hub_home, name)
    assert sorted(p.name for p in hub_home.root.iterdir()) == before
