"""The container images, checked without a Docker engine.

What can be checked here: every file a Dockerfile copies exists (and is not
left out of the build context), base images are pinned, the images run as
non-root users, every Python package is pinned to a version that satisfies
pyproject.toml, the commands the images and the chart run exist, and each
image's requirements resolve against PyPI to exactly the pinned set.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib.util import find_spec, module_from_spec, spec_from_file_location
from pathlib import Path

import pytest
import yaml
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
_spec = spec_from_file_location("insitu_docker_lock", DOCKER / "lock.py")
assert _spec is not None and _spec.loader is not None
lock = module_from_spec(_spec)  # docker/lock.py, the requirements writer
_spec.loader.exec_module(lock)

DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
IMAGES = {p.name.removesuffix(".Dockerfile"): p for p in DOCKERFILES}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def dockerignored() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [x.strip() for x in lines if x.strip() and not x.startswith("#")]


def test_the_three_images_exist():
    assert set(IMAGES) == {"node", "singleuser", "hub"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_in_the_build_context(dockerfile):
    ignored = dockerignored()
    copies = 0
    for keyword, args in instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue  # from an earlier stage, not the context
        sources = [w for w in words if not w.startswith("--")][:-1]
        assert sources, f"{dockerfile.name}: {keyword} {args}"
        for source in sources:
            assert not re.match(r"^[a-z]+://", source), f"{dockerfile.name}: no remote {keyword}"
            assert (REPO / source).exists(), f"{dockerfile.name}: {source} does not exist"
            top = source.split("/", 1)[0]
            assert top not in ignored, f"{dockerfile.name}: {source} is in .dockerignore"
            copies += 1
    assert copies


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(dockerfile):
    steps = instructions(dockerfile)
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)  # ARG NAME=default
    stages = set()
    for keyword, rest in steps:
        if keyword != "FROM":
            continue
        image = rest.split()[0]
        var = re.fullmatch(r"\$\{(\w+)\}", image)
        if var:
            image = args[var[1]]
        if image in stages:
            continue
        name, _, tag = image.rpartition(":")
        assert name, f"{dockerfile.name}: {image} has no tag"
        assert tag != "latest"
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{dockerfile.name}: {image} is not pinned"
        if " AS " in rest.upper():
            stages.add(rest.split()[-1])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_a_non_root_user(dockerfile):
    users = [a for k, a in instructions(dockerfile) if k == "USER"]
    assert users, f"{dockerfile.name} sets no USER"
    final = users[-1].split(":")[0]
    assert final not in ("root", "0")


def test_node_image_user_is_the_charts_user():
    node = [a for k, a in instructions(IMAGES["node"]) if k == "USER"][-1]
    values = yaml.safe_load((REPO / "helm" / "insitu-node" / "values.yaml").read_text())
    uid, gid = (int(x) for x in node.split(":"))
    assert (uid, gid) == (values["security"]["runAsUser"], values["security"]["runAsGroup"])
    single = values["jupyterhub"]["singleuser"]["image"]["name"]
    assert single.endswith("singleuser")


# --- Python requirements ----------------------------------------------------------


@pytest.mark.parametrize("image", sorted(lock.IMAGES))
def test_requirements_are_pinned_and_satisfy_pyproject(image):
    text = lock.path(image).read_text()
    lines = [x for x in text.splitlines() if x.strip() and not x.startswith("#")]
    pins = lock.parse(text)
    starts = [x for x in lines if not x.lstrip().startswith("--hash=sha256:")]
    assert len(pins) == len(starts), "every entry is one exact pin followed by its hashes"
    assert all(hashes for _, hashes in lock.read_lock(text).values()), "every pin has hashes"
    for req in lock.roots(image):
        name = canonicalize_name(req.name)
        assert name in pins, f"{image}: {req} is not pinned: run .venv/bin/python docker/lock.py"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{image}: {req} vs {pins[name]}"
        )
    # What each image must carry.
    must = {
        "node": {"flwr", "jupyterhub", "dask", "zarr", "pydicom", "dicomweb-client", "scipy"},
        "singleuser": {"jupyterlab", "jupyterhub", "dask-gateway", "ipykernel", "ipywidgets"},
        "hub": {"argon2-cffi"},
    }[image]
    assert must <= set(pins)
    # Test tooling never ships.
    assert not {"pytest", "ruff", "hypothesis", "helm-python-sdk"} & set(pins)


@pytest.mark.parametrize("image", ["node", "singleuser"])
def test_dockerfile_installs_its_own_requirements(image):
    copies = [a for k, a in instructions(IMAGES[image]) if k == "COPY"]
    assert any(a.startswith(f"docker/requirements-{image}.txt ") for a in copies)
    runs = " ".join(a for k, a in instructions(IMAGES[image]) if k == "RUN")
    assert "--no-deps" in runs  # nothing outside the pinned list gets in


def test_modules_and_commands_the_images_and_chart_run_exist():
    from insitu.cli import build_parser

    parser = build_parser()
    # What the Dockerfiles run at build time and the chart runs in pods.
    for module in (
        "insitu.hub.gate_service",
        "insitu.hub.access_service",
        "insitu.hub.airlock_service",
        "insitu.hub.authenticator",
        "insitu.kernels.enclave",
        "insitu.widgets",
        "insitu.federation.cli",
    ):
        assert find_spec(module) is not None, module
    parser.parse_args(["kernel", "install", "--prefix", "/opt/insitu"])
    parser.parse_args(["ingest", "/source", "--dataset", "locat", "--title", "T", "--json"])


@pytest.mark.parametrize("image", sorted(lock.IMAGES))
def test_requirements_are_closed_under_dependencies(image):
    """Every pinned package's own requirements are pinned in the same file, compatibly.

    A pinned version's metadata is the one installed in the venv (same version,
    same metadata as on PyPI), so this is pip's resolution check, offline.
    """
    from importlib import metadata

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    pins = lock.parse(lock.path(image).read_text())
    env = default_environment()
    for name, version in pins.items():
        dist = metadata.distribution(name)
        assert dist.version == version, (
            f"{name}: the venv has {dist.version}, {lock.path(image).name} pins {version}: "
            "run .venv/bin/python docker/lock.py"
        )
        for text in dist.requires or []:
            dep = Requirement(text)
            if dep.marker is not None and not dep.marker.evaluate(dict(env, extra="")):
                continue
            dep_name = canonicalize_name(dep.name)
            assert dep_name in pins, f"{image}: {name} needs {dep}, which is not pinned"
            assert dep.specifier.contains(pins[dep_name], prereleases=True), (
                f"{image}: {name} needs {dep}, pinned {pins[dep_name]}"
            )


def _index_url() -> str:
    """The index pip itself uses: $PIP_INDEX_URL, else pip's built-in default."""
    from pip._internal.models.index import PyPI

    return os.environ.get("PIP_INDEX_URL", PyPI.simple_url).rstrip("/")


def test_every_pin_has_an_installable_wheel_on_the_index():
    """Each pinned version is on the package index, not yanked, with a wheel for the images.

    The images are Python 3.11 on Debian (glibc) x86_64, like this machine: a
    wheel must match one of this interpreter's tags, as `pip install
    --only-binary=:all:` in the Dockerfiles requires. One request per project
    to the index's JSON Simple API (PEP 691), in parallel.
    """
    import requests
    from packaging.specifiers import SpecifierSet
    from packaging.tags import sys_tags
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    supported = set(sys_tags())
    pins: dict[str, str] = {}
    for image in lock.IMAGES:
        pins |= lock.parse(lock.path(image).read_text())
    session = requests.Session()
    python = ".".join(map(str, sys.version_info[:3]))

    def check(item: tuple[str, str]) -> str:
        name, version = item
        reply = session.get(
            f"{_index_url()}/{name}/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
            timeout=120,
        )
        if reply.status_code != 200:
            return f"{name}: the index answered {reply.status_code}"
        for file in reply.json()["files"]:
            if not file["filename"].endswith(".whl") or file.get("yanked"):
                continue
            try:
                _, wheel_version, _, tags = parse_wheel_filename(file["filename"])
            except InvalidWheelFilename:
                continue
            if str(wheel_version) != version or not tags & supported:
                continue
            needs = file.get("requires-python")
            if needs and not SpecifierSet(needs).contains(python):
                continue
            return ""
        return f"{name}=={version}: no wheel for this platform on the index"

    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = [p for p in pool.map(check, sorted(pins.items())) if p]
    assert not problems, "\n".join(problems)


def test_pip_resolves_the_hub_requirements():
    """pip's own resolver on the smallest file (all three: `docker/lock.py --resolve`, minutes)."""
    assert lock.resolve("hub") == []
