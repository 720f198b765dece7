"""Fixtures of the enclave area: a node home whose catalog knows a small dataset
(airlock checks), and a running site hub with a spawned researcher server for the
hub-level tests of the area (tests/test_enclave_hub.py; a hub takes seconds to start)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from insitu.config import NodeHome, init_home
from insitu.datasets.catalog import Catalog
from insitu.hub.airlock import Airlock

# What the catalog holds: the checks look for exactly these.
SUBJECTS = [f"sub-{i:04x}a9" for i in range(12)]
STUDY_UID = "2.25.118827193764812211300990012345678901"
SERIES_UID = "2.25.227193764812211300990012345678901234"
STUDY_DATE = "20190314"
SLICE = (48, 40)  # (y, x) of every series' slices
VOLUME = (6, *SLICE)


@pytest.fixture
def airlock_home(home: NodeHome) -> NodeHome:
    """A node home with one published version of 12 subjects, 1 study and series each."""
    with Catalog(home) as catalog:
        catalog.add_pending(
            dataset="trial",
            version="v1",
            title="A trial",
            citation="",
            fingerprint="f" * 64,
            staging=home.staging / "x",
            subjects=[{"subject_id": s, "n_studies": 1, "n_series": 1} for s in SUBJECTS],
            studies=[
                {
                    "study_id": STUDY_UID if i == 0 else f"2.25.{10**20 + i}",
                    "subject_id": s,
                    "study_date": STUDY_DATE,
                }
                for i, s in enumerate(SUBJECTS)
            ],
            series=[
                {
                    "series_id": SERIES_UID if i == 0 else f"2.25.{10**21 + i}",
                    "study_id": STUDY_UID if i == 0 else f"2.25.{10**20 + i}",
                    "subject_id": s,
                    "modality": "CT",
                    "shape": list(VOLUME),
                    "spacing": [2.0, 1.0, 1.0],
                    "dtype": "int16",
                }
                for i, s in enumerate(SUBJECTS)
            ],
            checksums={},
            provenance={},
        )
        catalog.mark_published("trial", "v1")
    return home


@pytest.fixture
def airlock(airlock_home: NodeHome) -> Iterator[Airlock]:
    with Airlock(airlock_home) as lock:
        yield lock


ENCLAVE_DATASET = "trial"
SPAWN_TIMEOUT = 180


@pytest.fixture(scope="module")
def enclave_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running site (`insitu up` machinery: hub, gate, access, airlock, dask-gateway) with
    20 subjects in two arms, ada approved for them; release limit 200 kB, 2 workers at most."""
    from fixtures_hub import CAST, add_accounts, start_hub

    from insitu.datasets.ingest import ingest
    from insitu.datasets.synthetic import TrialSpec, generate_trial
    from insitu.hub import access, lifecycle

    root = tmp_path_factory.mktemp("enclave")
    spec = TrialSpec(subjects_per_site=20, size=16, slices=2, sites=("site-a",))
    trial = generate_trial(root / "trial", spec, show_progress=False)
    home = NodeHome(root / "home")
    init_home(home, "site-a")
    home.config_path.write_text(
        home.config_path.read_text()
        .replace("max_release_bytes = 20971520", "max_release_bytes = 200000")
        .replace("max_workers = 4", "max_workers = 2")
    )
    report = ingest(
        [trial.dicom_dir("site-a")],
        ENCLAVE_DATASET,
        home=home,
        title="t",
        citation="",
        show_progress=False,
    )
    assert report.status == "published"
    add_accounts(home, **CAST)
    request = access.request(home, "ada", ENCLAVE_DATASET, "per-arm noise", "P1", 30)
    access.approve(home, "sam", request.id, "ok")
    try:
        hub = start_hub(home)
        yield {"hub": hub, "home": home}
    finally:
        lifecycle.down(home, actor="tests")
        shutil.rmtree(home.run / "dask-clusters", ignore_errors=True)


@pytest.fixture(scope="module")
def ada_kernel(enclave_site: dict[str, Any]) -> Iterator[Any]:
    """ada's single-user server, spawned by the hub, and an insitu kernel in it."""
    from kernel_driver import Kernel

    hub = enclave_site["hub"]
    token = hub.token("ada")  # also creates the hub user
    hub.api("POST", "/users/ada/server")
    deadline = time.monotonic() + SPAWN_TIMEOUT
    while not hub.api("GET", "/users/ada")["servers"].get("", {}).get("ready"):
        assert time.monotonic() < deadline, "ada's server did not start"
        time.sleep(0.5)  # polling interval
    kernel = Kernel(f"{hub.url}/user/ada/", token)
    try:
        yield kernel
    finally:
        kernel.close()
