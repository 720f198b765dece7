"""The package installs both ways, maps folders into ``insitu.*`` and never
shadows Hugging Face's ``datasets``."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

import insitu

REPO = Path(__file__).resolve().parents[1]
COMPONENTS = ("datasets", "hub", "kernels", "federation", "widgets")

PROBE_TEMPLATE = """
import importlib, json, sys
import insitu
COMPONENTS = %s
out = {"insitu": insitu.__file__}
for name in COMPONENTS:
    out[name] = importlib.import_module("insitu." + name).__file__
try:
    import datasets
    out["bare_datasets"] = datasets.__file__
except ImportError:
    out["bare_datasets"] = None
print(json.dumps(out))
"""
PROBE = PROBE_TEMPLATE.replace("%s", repr(COMPONENTS))


def _fresh_venv(path: Path) -> Path:
    """A venv that sees our dependencies but not our editable install."""
    venv.create(path, with_pip=False)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # A path line in a .pth adds the folder, but not the .pth files inside it,
    # so the dev venv's editable finder stays out of this interpreter.
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _install_and_probe(tmp_path: Path, editable: bool) -> dict[str, str]:
    import json

    python = _fresh_venv(tmp_path / "venv")
    args = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    args += ["--no-deps", "--no-build-isolation"]
    args += ["-e", str(REPO)] if editable else [str(REPO)]
    built = subprocess.run(args, check=True, cwd=tmp_path, capture_output=True, text=True)
    # Every importable folder is declared (no "Package would be ignored" warning).
    assert "absent from the `packages` configuration" not in built.stderr + built.stdout
    probe = subprocess.run(
        [python, "-c", PROBE], check=True, cwd=tmp_path, capture_output=True, text=True
    )
    help_run = subprocess.run(
        [python, "-m", "insitu.cli", "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert help_run.returncode == 0, help_run.stderr
    return json.loads(probe.stdout)


@pytest.mark.parametrize("editable", [False, True], ids=["pip-install", "pip-install-e"])
def test_install_maps_folders_into_insitu(tmp_path, editable):
    found = _install_and_probe(tmp_path, editable)
    for name in COMPONENTS:
        location = Path(found[name]).resolve()
        if editable:
            assert location == REPO / name / "__init__.py"
        else:
            assert "site-packages" in location.parts
            assert location.parent.name == name and location.parent.parent.name == "insitu"
    # Our datasets/ must never be importable as the top-level `datasets`.
    bare = found["bare_datasets"]
    assert bare is None or not Path(bare).resolve().is_relative_to(REPO)


def test_public_api_is_what_the_docs_promise():
    assert set(insitu.__all__) >= {
        "open_dataset",
        "catalog",
        "request_access",
        "compute",
        "release",
        "__version__",
    }
    assert "open_dataset" in insitu.__doc__


def test_unknown_public_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = insitu.nope
