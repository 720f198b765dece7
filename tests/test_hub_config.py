"""The generated JupyterHub config loads into the real classes (no hub, no SSO server)."""

from __future__ import annotations

import asyncio
import dataclasses
import os

import pytest
from fixtures_hub import PASSWORD
from traitlets.config import Config

from insitu.audit import AuditLog
from insitu.config import load_config
from insitu.errors import ConfigError
from insitu.hub.hub_config import configure, find_proxy
from insitu.hub.services import ServiceContext, plan_services, write_plan


def _configure(home) -> Config:
    ctx = ServiceContext(
        home=home, config=load_config(home), hub_url="http://127.0.0.1:1", hub_api_url="x"
    )
    services = plan_services(ctx)
    write_plan(home, services, {"port": 1234, "hub_api_port": 1235, "proxy_api_port": 1236})
    c = Config()
    configure(c, home.root)
    return c


def _set_oidc(home, **changes):
    config = load_config(home)
    keys = {
        "authenticator": "oidc",
        "oidc_client_id": "insitu-site",
        "oidc_authorize_url": "https://sso.example.org/auth",
        "oidc_token_url": "https://sso.example.org/token",
        "oidc_userdata_url": "https://sso.example.org/userinfo",
        "oidc_admin_groups": ["imaging-admins"],
        "oidc_steward_groups": ["data-stewards"],
    } | changes
    hub = dataclasses.replace(config.hub, **keys)
    home.config_path.write_text(dataclasses.replace(config, hub=hub).to_toml())


def test_local_config_roles_spawner_and_services(hub_home):
    c = _configure(hub_home)
    assert c.JupyterHub.port == 1234 and c.JupyterHub.hub_port == 1235
    assert c.JupyterHub.db_url.endswith("hub/jupyterhub.sqlite")
    assert c.ConfigurableHTTPProxy.command == [find_proxy()]
    assert c.SimpleLocalProcessSpawner.home_dir_template.startswith(str(hub_home.hub / "users"))
    names = {s["name"] for s in c.JupyterHub.services}
    assert {"gate", "access", "insitu-operator"} <= names
    (user_role,) = [r for r in c.JupyterHub.load_roles if r["name"] == "user"]
    assert "access:services!service=gate" in user_role["scopes"]
    assert "access:services!service=access" in c.Spawner.server_token_scopes
    env = c.Spawner.environment
    assert env["INSITU_GATE_URL"].startswith("http://127.0.0.1:")
    assert not any(str(hub_home.root) in str(v) for v in env.values() if isinstance(v, str))
    assert "INSITU_HOME" not in c.Spawner.env_keep
    if os.geteuid() == 0:
        assert "--allow-root" in c.Spawner.args
    gate = next(s for s in c.JupyterHub.services if s["name"] == "gate")
    assert gate["environment"]["INSITU_HOME"] == str(hub_home.root)


def test_each_server_gets_its_own_researchers_coordinator_token(hub_home, capsys, monkeypatch):
    import io
    from types import SimpleNamespace

    from insitu.cli import main
    from insitu.errors import InvalidRequestError
    from insitu.hub import researcher_tokens

    alice = "insitu-" + "a" * 43
    monkeypatch.setattr("sys.stdin", io.StringIO(alice + "\n"))
    assert main(["--home", str(hub_home.root), "federation", "token", "install", "alice"]) == 0
    assert "kept the coordinator token of alice" in capsys.readouterr().out
    researcher_tokens.store(hub_home, "bob", "insitu-" + "b" * 43)
    path = researcher_tokens.token_path(hub_home, "alice")
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    with pytest.raises(InvalidRequestError, match="not a coordinator token"):
        researcher_tokens.store(hub_home, "carol", "two words")
    with pytest.raises(InvalidRequestError, match="not an account name"):
        researcher_tokens.token_path(hub_home, "../alice")

    token = _configure(hub_home).Spawner.environment["INSITU_COORDINATOR_TOKEN"]

    def server(name: str) -> str:
        return str(token(SimpleNamespace(user=SimpleNamespace(name=name))))

    assert (server("alice"), server("bob"), server("sam")) == (alice, "insitu-" + "b" * 43, "")


def test_local_authenticator_checks_the_account_store(hub_home):
    from insitu.hub.authenticator import InsituAuthenticator

    c = _configure(hub_home)
    auth = InsituAuthenticator(config=c)
    assert auth.insitu_home == str(hub_home.root)
    model = asyncio.run(auth.authenticate(None, {"username": "sam", "password": PASSWORD}))
    assert model == {"name": "sam", "admin": False, "groups": ["steward"]}
    model = asyncio.run(auth.authenticate(None, {"username": "root_admin", "password": PASSWORD}))
    assert model["admin"] is True
    assert asyncio.run(auth.authenticate(None, {"username": "sam", "password": "nope"})) is None
    assert auth.check_allowed("ada") and not auth.check_allowed("mallory")
    outcomes = [
        (e["user"], e["details"]["outcome"]) for e in AuditLog(hub_home).query(kind="login")
    ]
    assert outcomes == [("sam", "ok"), ("root_admin", "ok"), ("sam", "refused")]


def test_oidc_config_loads_into_generic_oauthenticator(hub_home, monkeypatch):
    from oauthenticator.generic import GenericOAuthenticator

    from insitu.hub.authenticator import InsituOIDCAuthenticator

    monkeypatch.setenv("INSITU_OIDC_CLIENT_SECRET", "s3cret")
    _set_oidc(hub_home)
    c = _configure(hub_home)
    assert c.JupyterHub.authenticator_class == "insitu.hub.authenticator.InsituOIDCAuthenticator"
    auth = InsituOIDCAuthenticator(config=c)
    assert isinstance(auth, GenericOAuthenticator)
    assert auth.client_id == "insitu-site" and auth.client_secret == "s3cret"
    assert auth.authorize_url == "https://sso.example.org/auth"
    assert auth.token_url == "https://sso.example.org/token"
    assert auth.userdata_url == "https://sso.example.org/userinfo"
    assert auth.admin_groups == {"imaging-admins"} and auth.manage_groups
    # An SSO login maps groups to insitu roles and records them in the account store.
    for groups, role in ((["data-stewards"], "steward"), (["x"], "researcher"),
                         (["imaging-admins", "data-stewards"], "admin")):  # fmt: skip
        model = {"name": "carol", "admin": None,
                 "auth_state": {"oauth_user": {"groups": groups}}}  # fmt: skip
        asyncio.run(auth.update_auth_model(model))
        from insitu.hub.accounts import role_of

        assert role_of(hub_home, "carol") == role
        assert role in asyncio.run(auth.get_user_groups(model["auth_state"]))


def test_oidc_config_names_missing_keys(hub_home):
    _set_oidc(hub_home, oidc_token_url="", oidc_userdata_url="")
    with pytest.raises(ConfigError, match=r"hub\.oidc_token_url, hub\.oidc_userdata_url"):
        _configure(hub_home)
