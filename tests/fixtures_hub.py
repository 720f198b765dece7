"""Fixtures of the hub area: small published stores, accounts, a running hub.

``publish_tiny_store`` writes a small Zarr v3 store in the documented layout
(docs/architecture.md, "Store layout") and records it in the catalog as a
published version, so hub tests do not depend on a DICOM ingest.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from insitu.config import NodeHome, init_home
from insitu.hub.accounts import AccountStore

PASSWORD = "correct horse battery"


def publish_tiny_store(
    home: NodeHome,
    dataset: str = "trial-a",
    *,
    version: str = "v1",
    series: tuple[str, ...] = ("s1", "s2"),
    shape: tuple[int, int, int] = (4, 32, 32),
    chunks: tuple[int, int, int] = (2, 16, 16),
    seed: int = 0,
) -> Path:
    """Write a store with a few int16 series and publish it in the catalog."""
    import zarr

    from insitu.datasets.catalog import Catalog

    path = home.stores / dataset / f"{version}.zarr"
    rng = np.random.default_rng(seed)
    root = zarr.open_group(zarr.storage.LocalStore(path), mode="w", zarr_format=3)
    root.attrs["insitu"] = {
        "dataset": dataset,
        "version": version,
        "title": f"{dataset} (test)",
        "series": [{"series_id": s, "subject_id": f"sub-{i}"} for i, s in enumerate(series)],
    }
    for sid in series:
        group = root.require_group("series").require_group(sid)
        group.attrs["insitu"] = {"modality": "CT", "units": "HU"}
        arr = group.create_array("0", shape=shape, chunks=chunks, dtype="int16")
        arr[...] = rng.integers(-1000, 2000, size=shape, dtype=np.int16)
    checksums: dict[str, tuple[str, int]] = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        data = file.read_bytes()
        checksums[file.relative_to(path).as_posix()] = (hashlib.sha256(data).hexdigest(), len(data))
    rows: dict[str, Any] = {
        "subjects": [
            {"subject_id": f"sub-{i}", "n_studies": 1, "n_series": 1} for i in range(len(series))
        ],
        "studies": [
            {"study_id": f"st-{i}", "subject_id": f"sub-{i}", "study_date": ""}
            for i in range(len(series))
        ],
        "series": [
            {
                "series_id": s,
                "study_id": f"st-{i}",
                "subject_id": f"sub-{i}",
                "modality": "CT",
                "shape": list(shape),
                "spacing": [1.0, 1.0, 1.0],
                "dtype": "int16",
            }
            for i, s in enumerate(series)
        ],
    }
    with Catalog(home) as catalog:
        catalog.add_pending(
            dataset=dataset,
            version=version,
            title=f"{dataset} (test)",
            citation="",
            fingerprint=hashlib.sha256(f"{dataset}{version}{seed}".encode()).hexdigest(),
            staging=path,
            checksums=checksums,
            provenance={"source": "tests/fixtures_hub.py"},
            **rows,
        )
        catalog.mark_published(dataset, version)
    return path


def add_accounts(home: NodeHome, **roles: str) -> None:
    """Create accounts ``name=role`` with the shared test password."""
    with AccountStore(home) as store:
        for name, role in roles.items():
            store.add(name, role, PASSWORD, actor="tests")


CAST = {"ada": "researcher", "bob": "researcher", "sam": "steward", "root_admin": "admin"}


@pytest.fixture(scope="session")
def _hub_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once: hashing passwords with argon2 is slow on purpose."""
    node = NodeHome(tmp_path_factory.mktemp("hub-template") / "home")
    init_home(node, "test-site")
    publish_tiny_store(node, "trial-a")
    add_accounts(node, **CAST)
    return node.root


@pytest.fixture
def hub_home(_hub_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NodeHome:
    """A node home with one published dataset and the usual cast of accounts."""
    root = tmp_path / "hub-home"
    shutil.copytree(_hub_template, root, symlinks=True)
    monkeypatch.setenv("INSITU_HOME", str(root))
    return NodeHome(root)


# --- a running hub (one per test module: starting one takes seconds) ---------


class RunningHub:
    """A hub started with `insitu up` machinery for the tests of one module."""

    def __init__(self, home: NodeHome, url: str) -> None:
        self.home = home
        self.url = url
        self._tokens: dict[str, str] = {}

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        from insitu.hub.lifecycle import hub_api

        return hub_api(self.home, method, path, body)

    def token(self, user: str) -> str:
        """A hub API token of ``user`` (the hub user is created when missing)."""
        if user not in self._tokens:
            users = {u["name"] for u in self.api("GET", "/users")}
            if user not in users:
                self.api("POST", f"/users/{user}")
            made = self.api("POST", f"/users/{user}/tokens", {"note": "tests"})
            self._tokens[user] = made["token"]
        return self._tokens[user]

    def service_url(self, name: str) -> str:
        """The service's own loopback address (what user servers are given)."""
        from insitu.hub.services import load_plan

        services, _ = load_plan(self.home)
        (service,) = [s for s in services if s.name == name]
        return service.url + service.prefix


def start_hub(home: NodeHome) -> RunningHub:
    from insitu.hub import lifecycle
    from insitu.hub.services import free_port

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INSITU_GATE_FLUSH_SECONDS", "0.3")
        state = lifecycle.up(home, port=free_port(), actor="tests")
    return RunningHub(home, state.url)


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory, _hub_template: Path) -> NodeHome:
    """A copy of the hub template home for one test module (module-scoped)."""
    root = tmp_path_factory.mktemp("hub-module") / "home"
    shutil.copytree(_hub_template, root, symlinks=True)
    return NodeHome(root)


@pytest.fixture(scope="module")
def running_hub(module_home: NodeHome) -> Iterator[RunningHub]:
    """A real hub with its proxy, gate and access service; always stopped."""
    from insitu.hub import lifecycle

    try:
        yield start_hub(module_home)
    finally:
        lifecycle.down(module_home, actor="tests")
