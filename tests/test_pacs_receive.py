"""``insitu receive``: Orthanc pushes (C-STORE) a trial; it ends in the same verified
store as the DICOMweb pull. Calling AE titles, batches, leftovers of a killed run."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fixtures_datasets import run_cli, run_json
from fixtures_pacs import Pacs

from insitu.audit import AuditLog
from insitu.config import NodeHome
from insitu.datasets.pacs_staging import received_area
from insitu.datasets.reader import open_dataset
from insitu.datasets.receive import Receiver

TRIAL_STUDIES = ("ACC-CT-1", "ACC-MR-1")


def _receipts(home: NodeHome) -> list[dict]:
    return [e["details"] for e in AuditLog(home).entries() if e["kind"] == "pacs.receive"]


def _content(home: NodeHome, dataset: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """series id -> (sha256 of the stored voxels, shape)."""
    ds = open_dataset(dataset, home=home)
    out = {}
    for series_id in ds.series["series_id"]:
        values = ds.image(series_id).values
        out[series_id] = (hashlib.sha256(values.tobytes()).hexdigest(), values.shape)
    return out


@pytest.fixture
def receiver_process(pacs_home: NodeHome) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``insitu receive`` as its own process on a free loopback port."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "insitu.cli",
            "receive",
            "--dataset",
            "pushed",
            "--port",
            "0",
            "--batch-seconds",
            "1",
        ],
        env={**os.environ, "INSITU_HOME": str(pacs_home.root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "listening on 127.0.0.1:" in line, line + (process.stderr.read() or "")
        port = int(line.split("127.0.0.1:")[1].split()[0])
        yield process, port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_push_and_pull_end_in_the_same_verified_store(
    pacs_home: NodeHome,
    pacs: Pacs,
    receiver_process: tuple[subprocess.Popen[str], int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    process, port = receiver_process
    ids = pacs.server.studies_by_accession()
    result = pacs.server.push("INSITU", port, [ids[a] for a in TRIAL_STUDIES])
    assert result["FailedInstancesCount"] == 0 and result["InstancesCount"] == 7
    deadline = time.monotonic() + 120
    while not _receipts(pacs_home) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.2)  # polling the audit log for the batch
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, out + err
    receipts = _receipts(pacs_home)  # one batch, or two if the push paused for a second
    assert f"stopped after {len(receipts)} batch(es)" in out
    assert sum(r["received"] for r in receipts) == 7
    receipt = receipts[-1]
    assert receipt["files"] == 7
    assert receipt["status"] == "published" and receipt["counts"] == {"published": 7}
    assert set(receipt) == {"status", "version", "received", "refused", "files", "counts"}

    accessions = [arg for a in TRIAL_STUDIES for arg in ("--accession", a)]
    code, report = run_json(["ingest", "dicomweb://", "--dataset", "pulled", *accessions], capsys)
    assert code == 0, report
    pushed, pulled = _content(pacs_home, "pushed"), _content(pacs_home, "pulled")
    assert len(pushed) == 2 and pushed == pulled  # same series ids, same voxels
    for name in ("pushed", "pulled"):
        code, out, err = run_cli(["verify", name], capsys)
        assert code == 0, out + err
    # The received originals stay in private/ (versions are snapshots of that folder).
    assert len(received_area(pacs_home, "pushed").files()) == 7


def _store(port: int, calling: str, files: list[Path]) -> list[int]:
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="INSITU")
    if not assoc.is_established:
        return []
    try:
        return [int(assoc.send_c_store(pydicom.dcmread(f)).Status) for f in files]
    finally:
        assoc.release()


def test_receiver_lets_in_only_the_allowed_calling_ae(pacs: Pacs, home: NodeHome) -> None:
    receiver = Receiver(
        "pushed", home=home, port=0, batch_seconds=3600, allowed_aes=("TESTPACS",),
        echo=lambda _line: None,
    )  # fmt: skip
    _host, port = receiver.start()
    stop = threading.Event()
    try:
        files = pacs.files["ACC-CT-2"]
        assert _store(port, "INTRUDER", files) == []  # association rejected
        assert received_area(home, "pushed").files() == []
        assert _store(port, "TESTPACS", files) == [0] * len(files)
    finally:
        stop.set()
        code = receiver.serve(stop)  # shutdown ingests what arrived
    assert code == 0 and receiver.batches == 1
    assert open_dataset("pushed", home=home).series["n_files"].tolist() == [len(files)]
    assert _receipts(home)[0]["received"] == len(files)


def test_a_restarted_receiver_ingests_what_a_killed_one_left(pacs: Pacs, home: NodeHome) -> None:
    area = received_area(home, "pushed")
    for path in pacs.files["ACC-CT-2"]:
        area.write_content(path.read_bytes())
    (area.folder / ".half-written.dcm.123.part").write_bytes(b"DICM")  # a transfer cut off
    receiver = Receiver("pushed", home=home, port=0, echo=lambda _line: None)
    receiver.start()
    stop = threading.Event()
    stop.set()
    assert receiver.serve(stop) == 0
    assert not list(area.folder.glob("*.part"))
    receipt = _receipts(home)[0]
    assert (receipt["received"], receipt["files"], receipt["status"]) == (0, 4, "published")
    # The next start re-checks the folder: the same files, so no new version.
    again = Receiver("pushed", home=home, port=0, echo=lambda _line: None)
    again.start()
    assert again.serve(stop) == 0
    assert _receipts(home)[1]["status"] == "unchanged"
    assert [v["version"] for v in _versions(home)] == ["v1"]


def _versions(home: NodeHome) -> list[dict]:
    from insitu.datasets.catalog import Catalog

    with Catalog(home) as catalog:
        return list(catalog.versions("pushed"))


def test_receive_refuses_a_bad_dataset_name_and_a_busy_port(
    home: NodeHome, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run_cli(["receive", "--dataset", "Bad Name", "--port", "0"], capsys)
    assert code == 1 and "dataset name" in err
    first = Receiver("one", home=home, port=0, echo=lambda _line: None)
    _host, port = first.start()
    try:
        code, _out, err = run_cli(["receive", "--dataset", "two", "--port", str(port)], capsys)
        assert code == 7 and f"cannot listen on 127.0.0.1:{port}" in err
    finally:
        first.close()
