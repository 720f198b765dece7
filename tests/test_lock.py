"""The environment the tests run in is exactly the committed lock.

`make setup` installs requirements.lock (hashes checked), the proxy from
.ci/node/package-lock.json and the Debian packages of .ci/apt-packages.txt;
`make lock` records them again. These tests prove the venv, the images' files
and the records agree, so a new upstream release cannot change what a fresh
clone, CI or an image installs without a commit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
_spec = spec_from_file_location("insitu_docker_lock", REPO / "docker" / "lock.py")
assert _spec is not None and _spec.loader is not None
docker_lock = module_from_spec(_spec)
_spec.loader.exec_module(docker_lock)

LOCKED = docker_lock.read_lock((REPO / "requirements.lock").read_text())
VENV = Path(sys.prefix)


def _installed() -> dict[str, str]:
    return {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if d.metadata["Name"]
    }


def test_every_locked_package_is_pinned_with_hashes():
    assert len(LOCKED) > 100
    for name, (version, hashes) in LOCKED.items():
        assert version, name
        assert hashes, f"{name} has no --hash in requirements.lock: run make lock"


def test_the_venv_is_exactly_the_lock():
    installed = _installed()
    installed.pop("insitu", None)  # the project itself, installed editable on top
    wrong = {
        n: (v, LOCKED[n][0]) for n, v in installed.items() if n in LOCKED and LOCKED[n][0] != v
    }
    extra = sorted(set(installed) - set(LOCKED))
    missing = sorted(set(LOCKED) - set(installed))
    assert not wrong, f"installed vs locked: {wrong}; run make setup"
    assert not extra, f"installed but not in requirements.lock: {extra}; run make setup"
    assert not missing, f"locked but not installed: {missing}; run make setup"


def test_the_lock_satisfies_every_pyproject_requirement():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in LOCKED, f"{req} is not in requirements.lock: run make lock"
        assert req.specifier.contains(LOCKED[name][0], prereleases=True), (
            f"{req} but requirements.lock pins {LOCKED[name][0]}: run make lock"
        )


def test_build_tools_are_locked_too():
    # The editable install builds without isolation, with these exact versions.
    for tool in ("pip", "setuptools", "wheel", "pip-tools"):
        assert tool in LOCKED, tool
    assert _installed()["pip"] == LOCKED["pip"][0]


@pytest.mark.parametrize("image", sorted(docker_lock.IMAGES))
def test_image_files_are_what_the_lock_gives(image):
    rendered = docker_lock.render(image)
    assert docker_lock.path(image).read_text() == rendered, (
        f"docker/requirements-{image}.txt is stale: run make lock"
    )
    for name, version in docker_lock.parse(rendered).items():
        assert LOCKED[name][0] == version


def test_the_proxy_is_the_locked_npm_package():
    package = json.loads((REPO / ".ci/node/package.json").read_text())
    lock = json.loads((REPO / ".ci/node/package-lock.json").read_text())
    wanted = package["dependencies"]["configurable-http-proxy"]
    assert wanted[0].isdigit(), "pin an exact version, not a range"
    entry = lock["packages"]["node_modules/configurable-http-proxy"]
    assert entry["version"] == wanted
    assert all(
        p.get("integrity", "").startswith("sha512-") for key, p in lock["packages"].items() if key
    )
    installed = VENV / "node" / "node_modules" / "configurable-http-proxy" / "package.json"
    assert json.loads(installed.read_text())["version"] == wanted
    assert (VENV / "bin" / "configurable-http-proxy").resolve().exists()


def _apt_record() -> dict[str, str]:
    lines = (REPO / ".ci/apt-packages.txt").read_text().splitlines()
    entries = [x.strip() for x in lines if x.strip() and not x.startswith("#")]
    assert all("=" in e for e in entries), "each line is NAME=VERSION: run make lock"
    return dict(e.split("=", 1) for e in entries)


def test_debian_packages_are_installed_at_their_recorded_versions():
    if shutil.which("dpkg-query") is None:
        pytest.fail(
            "dpkg-query missing: the suite runs on Debian (see .ci/install-system-packages)"
        )
    for name, version in _apt_record().items():
        have = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True, check=True
        ).stdout
        if have == version:
            continue
        # Debian replaced the recorded version with a security update: the
        # installer took the new one and said so; `make lock` records it.
        offered = subprocess.run(
            ["apt-cache", "madison", name], capture_output=True, text=True, check=False
        ).stdout
        assert version not in offered, (
            f"{name} {have} is installed but {version} is recorded and available: "
            "run bash .ci/install-system-packages"
        )
