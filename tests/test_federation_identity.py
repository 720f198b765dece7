"""Signed researcher identities, without a federation: what each site accepts and why not.

Forged, altered, replayed, expired, untrusted, for another app or another run config,
and a home site that signs for someone without an account: all refused."""

from __future__ import annotations

import stat
import time

import pytest

from insitu.config import NodeHome, init_home
from insitu.errors import AccessDeniedError, AuthenticationError, ConfigError
from insitu.federation import admission, identity
from insitu.federation.trust import add_visitor, trust_home
from insitu.hub import run_identity
from insitu.hub.accounts import AccountStore

FAB = "ab" * 32
CONFIG = {"dataset": "locat", "feature": "hu_mean"}


@pytest.fixture
def sites(tmp_path):
    homes = {}
    for name in ("site-a", "site-b"):
        homes[name] = NodeHome(tmp_path / name)
        init_home(homes[name], name)
    with AccountStore(homes["site-a"]) as accounts:
        accounts.add("alice", "researcher", None, actor="test")
    trust_home(homes["site-b"], "site-a", run_identity.identity_public_key(homes["site-a"]))
    return homes


def _token(home, **kwargs):
    return run_identity.issue(home, "alice", fab_hash=FAB, run_config=CONFIG, **kwargs)


def test_a_trusted_home_signs_and_another_site_verifies(sites):
    token = _token(sites["site-a"])
    who = identity.verify(sites["site-b"], token, fab_hash=FAB, run_config=CONFIG, run_id="1")
    assert who.qualified == "alice@site-a"
    assert identity.local_account(who, "site-b") == "alice.site-a"
    assert identity.local_account(who, "site-a") == "alice"
    key = sites["site-a"].private / run_identity.KEY_NAME
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # The same run asking again (each message of a run is a task) is fine.
    identity.verify(sites["site-b"], token, fab_hash=FAB, run_config=CONFIG, run_id="1")


def test_replayed_for_another_run_is_refused(sites):
    token = _token(sites["site-a"])
    identity.verify(sites["site-b"], token, fab_hash=FAB, run_config=CONFIG, run_id="1")
    with pytest.raises(AuthenticationError, match="already used for run 1"):
        identity.verify(sites["site-b"], token, fab_hash=FAB, run_config=CONFIG, run_id="2")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"fab_hash": "cd" * 32}, "different app"),
        ({"run_config": CONFIG | {"feature": "hu_std"}}, "different run config"),
        ({"now": time.time() + 7200}, "expired"),
    ],
)
def test_a_token_for_something_else_is_refused(sites, change, message):
    token = _token(sites["site-a"])
    ask = {"fab_hash": FAB, "run_config": CONFIG, "run_id": "1"} | change
    with pytest.raises(AuthenticationError, match=message):
        identity.verify(sites["site-b"], token, **ask)


def test_forged_altered_and_untrusted_identities_are_refused(sites, tmp_path):
    token = _token(sites["site-a"])
    body, sig = token.split(".")
    payload = run_identity.b64decode(body).replace(b'"alice"', b'"admin"')
    altered = f"{run_identity.b64encode(payload)}.{sig}"
    with pytest.raises(AuthenticationError, match="forged or altered"):
        identity.verify(sites["site-b"], altered, fab_hash=FAB, run_config=CONFIG, run_id="1")
    # site-a does not trust site-b: its researchers' identities are refused there.
    with AccountStore(sites["site-b"]) as accounts:
        accounts.add("bob", "researcher", None, actor="test")
    bobs = run_identity.issue(sites["site-b"], "bob", fab_hash=FAB, run_config=CONFIG)
    with pytest.raises(AuthenticationError, match="does not trust"):
        identity.verify(sites["site-a"], bobs, fab_hash=FAB, run_config=CONFIG, run_id="1")
    for garbage in ("", "x", "a.b.c"):
        with pytest.raises(AuthenticationError):
            identity.verify(sites["site-b"], garbage, fab_hash=FAB, run_config=CONFIG, run_id="1")


def test_a_home_signs_only_for_its_own_accounts(sites):
    with pytest.raises(AuthenticationError, match="no account at this site"):
        run_identity.issue(sites["site-a"], "mallory", fab_hash=FAB, run_config=CONFIG)


def test_admission_needs_an_approval_at_this_site(sites):
    # (Approved researchers are admitted: the live federation tests.)
    from insitu.config import load_config

    site_b = sites["site-b"]
    config = load_config(site_b)
    who = identity.verify(site_b, _token(sites["site-a"]), fab_hash=FAB, run_config=CONFIG,
                          run_id="1")  # fmt: skip
    with pytest.raises(AccessDeniedError, match="alice@site-a is not approved"):
        admission.authorize(site_b, config, who, "locat")
    add_visitor(site_b, "alice", "site-a", actor="test")  # an account, not yet an approval
    with pytest.raises(AccessDeniedError, match=r"alice\.site-a has no approval"):
        admission.authorize(site_b, config, who, "locat")


def test_trust_refuses_a_bad_key(sites):
    from insitu.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="not an identity key"):
        trust_home(sites["site-b"], "site-c", "nope")
    with pytest.raises(ConfigError, match="not a site name"):
        trust_home(sites["site-b"], "Site C", "ab" * 32)
