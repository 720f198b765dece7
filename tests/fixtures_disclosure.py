"""A node home for the disclosure corpora: fixtures_airlock's catalog (12 subjects, one
series of 6x48x40 each, study date 2019-03-14) and a 2 MB release limit."""

from __future__ import annotations

from pathlib import Path

from fixtures_airlock import SERIES_UID, STUDY_DATE, STUDY_UID, SUBJECTS, VOLUME

from insitu.config import NodeHome, init_home
from insitu.datasets.catalog import Catalog

RELEASE_LIMIT = 2_000_000


def corpus_home(root: Path) -> NodeHome:
    home = NodeHome(root / "home")
    init_home(home, "site-a")
    home.config_path.write_text(
        home.config_path.read_text().replace(
            "max_release_bytes = 20971520", f"max_release_bytes = {RELEASE_LIMIT}"
        )
    )
    studies = [STUDY_UID if i == 0 else f"2.25.{10**20 + i}" for i in range(len(SUBJECTS))]
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
                {"study_id": study, "subject_id": s, "study_date": STUDY_DATE}
                for study, s in zip(studies, SUBJECTS, strict=True)
            ],
            series=[
                {
                    "series_id": SERIES_UID if i == 0 else f"2.25.{10**21 + i}",
                    "study_id": studies[i],
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
