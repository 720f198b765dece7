"""Fixtures for the airlock: a node home whose catalog knows a small dataset."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from insitu.config import NodeHome
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
