"""A killed ingest leaves no half-published version, and the next run completes it.

The ingest process is stopped with ``os._exit`` at each named step (the
``INSITU_INGEST_CRASH_AT`` hook: no cleanup runs, as with SIGKILL), then
ingest runs again on the same input.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_datasets import make_series

from insitu.config import NodeHome
from insitu.datasets.catalog import Catalog
from insitu.datasets.ingest import CRASH_ENV, ingest
from insitu.datasets.reader import open_dataset
from insitu.datasets.verify import verify

STEPS = ["scanned", "series-written", "staged", "checksummed", "pending", "renamed"]


@pytest.mark.parametrize("step", STEPS)
def test_killed_ingest_is_completed_by_the_next_run(
    home: NodeHome, tmp_path: Path, step: str
) -> None:
    inputs = tmp_path / "in"
    make_series(inputs / "a", n=5, patient_id="A")
    make_series(inputs / "b", n=3, patient_id="B", seed=1)
    env = {**os.environ, "INSITU_HOME": str(home.root), CRASH_ENV: step}
    proc = subprocess.run(
        [sys.executable, "-m", "insitu.cli", "ingest", str(inputs), "--dataset", "k", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 70, proc.stderr
    with Catalog(home) as catalog:
        assert catalog.versions("k") == []  # nothing half-published is listed
    published = sorted((home.stores / "k").glob("*.zarr")) if (home.stores / "k").exists() else []
    if step == "renamed":  # moved whole into place, not yet marked published
        assert [p.name for p in published] == ["v1.zarr"]
    else:
        assert published == []

    report = ingest([inputs], "k", show_progress=False)
    assert report.version == "v1"
    assert report.status in ("published", "unchanged")
    with Catalog(home) as catalog:
        assert [v["version"] for v in catalog.versions("k")] == ["v1"]
        assert catalog.pending() == []
    assert [r.ok for r in verify("k")] == [True]
    dataset = open_dataset("k")
    assert sorted(s[0] for s in dataset.series["shape"]) == [3, 5]
    assert not list(home.staging.glob("k-*"))  # the work folder is gone
    again = ingest([inputs], "k", show_progress=False)
    assert again.status == "unchanged" and again.version == "v1"
