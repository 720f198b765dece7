"""Node home and insitu.toml: creation, validation, errors that name the key."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from insitu.config import NodeHome, init_home, load_config, parse_config, resolve_home
from insitu.errors import ConfigError, HomeNotInitializedError


def test_init_creates_home_with_private_key(tmp_path):
    node = NodeHome(tmp_path / "h")
    config = init_home(node, "site-a")
    assert config.site.name == "site-a"
    assert stat.S_IMODE(node.private.stat().st_mode) == 0o700
    assert stat.S_IMODE(node.site_key_path.stat().st_mode) == 0o600
    assert len(node.site_key()) == 32
    assert tomllib.loads(node.config_path.read_text())["site"]["name"] == "site-a"


def test_init_twice_keeps_key_and_config(tmp_path):
    node = NodeHome(tmp_path / "h")
    init_home(node, "site-a")
    key = node.site_key()
    init_home(node, "other-name")
    assert node.site_key() == key
    assert load_config(node).site.name == "site-a"


def test_home_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("INSITU_HOME", str(tmp_path / "x"))
    assert resolve_home().root == (tmp_path / "x").resolve()


def test_uninitialised_home_is_a_clear_error(tmp_path):
    with pytest.raises(HomeNotInitializedError, match="insitu init"):
        load_config(NodeHome(tmp_path))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"policy": {"min_cell_count": "ten"}}, "policy.min_cell_count must be a whole number"),
        ({"policy": {"min_cell_count": 0}}, "policy.min_cell_count must be at least 1"),
        ({"hub": {"portt": 1}}, r"unknown key\(s\) hub.portt; valid keys in \[hub\]"),
        ({"site": {"name": "Site A"}}, "site.name 'Site A' must be lower-case"),
        ({"hub": {"authenticator": "ldap"}}, "choose 'local' or 'oidc'"),
        ({"deid": {"allow_burned_in": "yes"}}, "deid.allow_burned_in must be true or false"),
    ],
)
def test_bad_config_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_component_sections_pass_through():
    config = parse_config({"pacs": {"url": "http://127.0.0.1:8042"}})
    assert config.extra["pacs"]["url"] == "http://127.0.0.1:8042"


def test_broken_toml_is_a_config_error(tmp_path):
    node = NodeHome(tmp_path / "h")
    init_home(node)
    node.config_path.write_text("[site\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(node)


@pytest.mark.parametrize(
    ("hub", "message"),
    [
        ({"spawner": "pods"}, r"hub\.spawner 'pods': choose 'local', 'accounts', 'kubernetes'"),
        ({"spawner": "accounts"}, r"hub\.spawner 'accounts' needs hub\.user_accounts_dir"),
        (
            {"spawner": "kubernetes", "user_accounts_dir": "/srv/users"},
            r"hub\.user_accounts_dir is for hub\.spawner 'accounts'",
        ),
    ],
    ids=["unknown", "accounts-without-dir", "kubernetes-with-dir"],
)
def test_hub_spawner_is_checked(hub, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"hub": hub})


def test_hub_spawner_in_effect():
    assert parse_config({}).hub.spawner_kind == "local"
    # user_accounts_dir alone keeps meaning what it meant before [hub] spawner existed.
    assert parse_config({"hub": {"user_accounts_dir": "/srv/u"}}).hub.spawner_kind == "accounts"
    kube = parse_config({"hub": {"spawner": "kubernetes"}})
    assert kube.hub.spawner_kind == "kubernetes"


def test_the_config_reference_is_generated_from_the_code():
    """docs/reference/config.md is what `python -m insitu.config_doc` prints."""
    from insitu.config_doc import COMMAND, markdown, missing_help

    assert missing_help() == [], (
        "give each new insitu.toml key its help text: a string literal on the line below "
        f"the field in insitu/config.py; then run `.venv/bin/{COMMAND}`"
    )
    page = Path(__file__).parents[1] / "docs" / "reference" / "config.md"
    assert page.read_text() == markdown(), (
        f"docs/reference/config.md is out of date: run `.venv/bin/{COMMAND}` and commit it"
    )
