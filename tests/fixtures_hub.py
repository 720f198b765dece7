"""Fixtures of the hub area: small published stores, accounts, a running hub.

``publish_tiny_store`` writes a small Zarr v3 store in the documented layout
(docs/architecture.md, "Store layout") and records it in the catalog as a
published version, so hub tests do not depend on a DICOM ingest.
"""

from __future__ import annotations

import hashlib
import shutil
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
