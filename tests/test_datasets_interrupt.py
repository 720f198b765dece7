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
from insitu.datasets.ingest import ingest
from insitu.datasets.publish import CRASH_ENV
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


def test_sigkill_while_writing_series(home: NodeHome, tmp_path: Path) -> None:
    """A real SIGKILL once the first series is staged, then a normal re-run."""
    import signal

    inputs = tmp_path / "in"
    for k in range(3):
        make_series(inputs / f"s{k}", n=4, patient_id=f"P{k}", seed=k)
    env = {**os.environ, "INSITU_HOME": str(home.root)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "insitu.cli", "ingest", str(inputs), "--dataset", "k9", "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        # wait on the process, looking for the first finished series between waits
        while not list(home.staging.glob("k9-*/done/*.json")):
            try:
                proc.wait(timeout=0.01)
                break  # it finished before a series was staged: nothing to kill
            except subprocess.TimeoutExpired:
                continue
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    with Catalog(home) as catalog:
        published = [v["version"] for v in catalog.versions("k9")]
    assert published in ([], ["v1"])  # killed before, or it had already finished
    report = ingest([inputs], "k9", show_progress=False)
    assert report.version == "v1"
    assert [r.ok for r in verify("k9")] == [True]
    assert len(open_dataset("k9").series) == 3
