"""The built-in federated apps: one FAB template (federation/app_package.py) and the
analytic contract with its registry (federation/analytic.py).

An app's fingerprint is the hash of its FAB's bytes and sites approve that
fingerprint, so the files must not change unless the app's version does: the
digests below are those of the files approvals were given for (issue 14 moved
the two copies of the template into one without changing a byte).
"""

from __future__ import annotations

import hashlib
import tomllib

import pytest

from insitu.errors import InvalidRequestError
from insitu.federation import analytic, analytics, train_app
from insitu.federation.app_package import AppPackage, entry_module
from insitu.federation.manifest import manifest_from_toml

PINNED = {
    "analytics": {
        "pyproject.toml": "73391bfa445e7ce9",
        "insitu_analytics_app.py": "889dabc463376d0d",
    },
    "train": {"pyproject.toml": "1e1a7c777b153340", "insitu_train_app.py": "9f94e1658c4e4c14"},
    "secagg": {"pyproject.toml": "379d6bd8d943defe", "insitu_train_secagg.py": "700eae73b2a6715d"},
}


def _files() -> dict[str, dict[str, bytes]]:
    return {
        "analytics": analytics.analytics_fab_files(),
        "train": train_app._package(
            train_app.APP_NAME, "insitu_train_app", train_app._MODULE
        ).files(),
        "secagg": train_app._package(
            train_app.APP_NAME + "-secagg", "insitu_train_secagg", train_app._SECAGG_MODULE
        ).files(),
    }


@pytest.mark.parametrize("app", sorted(PINNED))
def test_built_in_app_files_are_unchanged(app):
    files = _files()[app]
    digests = {name: hashlib.sha256(data).hexdigest()[:16] for name, data in files.items()}
    assert digests == PINNED[app], f"{app}: the FAB changed; give the app a new version"
    pyproject = files["pyproject.toml"].decode()
    components = tomllib.loads(pyproject)["tool"]["flwr"]["app"]["components"]
    module = components["serverapp"].split(":")[0]
    assert f"{module}.py" in files
    assert manifest_from_toml(pyproject).message_types  # the steward's manifest is there


def test_a_new_app_from_the_template():
    package = AppPackage(
        name="insitu-example",
        version="0.1.0",
        description="an example",
        dependencies=("flwr>=1.42", "insitu"),
        module="insitu_example_app",
        entry=entry_module("example", "insitu.federation.analytics"),
        config='dataset = ""\n',
        egress='\n[tool.insitu.egress]\nmessage-types = ["query"]\nmax-replies = 1\n',
    )
    data = tomllib.loads(package.pyproject())
    assert data["project"]["dependencies"] == ["flwr>=1.42", "insitu"]
    assert data["tool"]["flwr"]["app"]["config"] == {"dataset": ""}
    assert list(manifest_from_toml(package.pyproject()).message_types) == ["query"]
    code = package.files()["insitu_example_app.py"].decode()
    assert "from insitu.federation.analytics import client_app, server_app" in code


def test_the_registry_holds_the_built_in_analytics():
    names = [a.name for a in analytic.registered()]
    assert names == sorted(analytic.REGISTRY) == [
        "insitu-analytics", "insitu-train-cnn", "insitu-train-cnn-secagg",
    ]  # fmt: skip
    built_in = analytic.get("insitu-analytics")
    assert built_in is analytics.ANALYTIC
    assert built_in.fingerprint() == analytics.analytics_fingerprint()
    assert analytic.get("insitu-train-cnn-secagg").fingerprint() == (
        train_app.training_fingerprint(secagg=True)
    )
    assert analytic.by_fingerprint(built_in.fingerprint()) is built_in
    assert analytic.by_fingerprint("0" * 64) is None
    with pytest.raises(InvalidRequestError, match="registered: insitu-analytics"):
        analytic.get("insitu-anything")


def test_an_analytic_declares_parameters_manifest_and_limits():
    built_in = analytics.ANALYTIC
    assert {"dataset", "feature", "by", "bins", "quantiles"} <= set(built_in.parameters)
    assert built_in.parameters["quantiles"] == "0.25,0.5,0.75"
    assert list(built_in.manifest.message_types) == ["query"]
    limits = built_in.limits
    assert (limits.max_replies, limits.max_values_per_reply) == (1, 20000)
    training = train_app.ANALYTIC
    assert training.parameters["num-rounds"] == 3
    assert list(training.manifest.message_types) == ["train"]
    assert training.limits.max_values_per_run == 1_000_000
