"""The airlock without the web: state machine, storage, checks, audit."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_airlock import SERIES_UID, SLICE, STUDY_DATE, SUBJECTS, VOLUME

from insitu.audit import AuditLog
from insitu.errors import (
    AccessDeniedError,
    OutputTooLargeError,
    ReleaseNotFoundError,
    ReleaseStateError,
    UnsupportedOutputError,
)
from insitu.hub.airlock import Airlock
from insitu.kernels.sdc import EVIDENCE_ATTR, pivot_table


def rules(request) -> dict[str, str]:
    return {c["rule"]: c["status"] for c in request.checks}


def per_arm(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"arm": rng.choice(["A", "B"], n), "volume": rng.uniform(10, 20, n)})


def test_a_passing_table_is_approved_downloaded_and_audited(airlock: Airlock, tmp_path: Path):
    table = pivot_table(per_arm(), values="volume", index="arm", aggfunc=["count", "mean"])
    csv = table.to_csv(index=False).encode()
    request = airlock.submit(
        "alice", csv, "arms.csv", purpose="per-arm means", evidence=table.attrs[EVIDENCE_ATTR]
    )
    assert request.state == "submitted"
    assert request.status == "pass", request.checks
    found = rules(request)
    assert found["threshold"] == found["dominance-nk"] == found["dominance-p"] == "pass"
    assert found["evidence"] == "pass"
    assert request.sha256 == hashlib.sha256(csv).hexdigest()
    # Nothing can be downloaded before a steward approves.
    with pytest.raises(ReleaseStateError, match="only approved"):
        airlock.download(request.id, user="alice")
    approved = airlock.approve(request.id, steward="sam", reason="aggregates only")
    assert approved.state == "approved"
    released, data = airlock.download(request.id, user="alice")
    assert data == csv and released.state == "released" and released.downloads == 1
    # Another researcher cannot see or download it.
    with pytest.raises(ReleaseNotFoundError):
        airlock.download(request.id, user="bob")
    kinds = [e["kind"] for e in AuditLog(airlock.home).query(kind="release")]
    assert kinds == [
        "release.submit",
        "release.download",  # the refused early attempt
        "release.approve",
        "release.download",
    ]
    assert AuditLog(airlock.home).query(kind="release.download")[0]["details"]["refused"]


def test_small_cells_fail_and_need_an_override(airlock: Airlock):
    table = pd.DataFrame({"arm": ["A", "B"], "n": [3, 25], "mean_volume": [12.5, 14.1]})
    request = airlock.submit(
        "alice", table.to_csv(index=False).encode(), "small.csv", purpose="arms"
    )
    assert request.status == "fail"
    found = rules(request)
    assert found["threshold"] == "fail"
    assert found["dominance"] == "review"  # a finished table cannot show contributions
    threshold = next(c for c in request.checks if c["rule"] == "threshold")
    assert threshold["by"] == "acro" and "1 cells" in threshold["summary"]
    with pytest.raises(ReleaseStateError, match="override"):
        airlock.approve(request.id, steward="sam", reason="looks fine")
    assert airlock.get(request.id).state == "submitted"
    approved = airlock.approve(
        request.id, steward="sam", reason="ok", override="arm A is public in the protocol"
    )
    assert approved.override_reason == "arm A is public in the protocol"
    entry = AuditLog(airlock.home).query(kind="release.approve")[-1]
    assert entry["details"]["override"] and entry["details"]["failed"] == ["threshold"]


def test_denied_requests_never_download_and_decisions_are_final(airlock: Airlock):
    request = airlock.submit("alice", b"a summary\n", "notes.txt", purpose="notes")
    with pytest.raises(ReleaseStateError, match="reason"):
        airlock.deny(request.id, steward="sam", reason=" ")
    denied = airlock.deny(request.id, steward="sam", reason="not needed")
    assert denied.state == "denied" and denied.reason == "not needed"
    with pytest.raises(ReleaseStateError, match="denied"):
        airlock.download(request.id, user="alice")
    with pytest.raises(ReleaseStateError, match="only submitted"):
        airlock.approve(request.id, steward="sam", reason="changed my mind")


def test_a_researcher_cannot_approve_their_own_release(airlock: Airlock):
    request = airlock.submit("sam", b"x\n", "a.txt", purpose="mine")
    with pytest.raises(AccessDeniedError, match="another steward"):
        airlock.approve(request.id, steward="sam", reason="mine")


def test_bad_input_gets_a_clear_message_and_leaves_nothing(airlock: Airlock, tmp_path: Path):
    with pytest.raises(UnsupportedOutputError, match=r"\.exe.*allowed: \.csv"):
        airlock.submit("alice", b"MZ", "tool.exe", purpose="x")
    with pytest.raises(UnsupportedOutputError, match="without a suffix"):
        airlock.submit("alice", b"x", "README", purpose="x")
    too_big = airlock.config.policy.max_release_bytes + 1
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:
        fh.truncate(too_big)
    with pytest.raises(OutputTooLargeError, match=r"policy\.max_release_bytes"):
        airlock.submit("alice", big, purpose="x")
    with pytest.raises(ReleaseStateError, match="purpose"):
        airlock.submit("alice", b"x", "a.txt", purpose="")
    with pytest.raises(ReleaseNotFoundError, match="no release request 99"):
        airlock.get(99)
    with pytest.raises(ReleaseNotFoundError, match="not a release request id"):
        airlock.get("abc")
    assert airlock.list() == []
    assert not (airlock.root / "requests").exists()


def test_stored_files_are_immutable_and_tampering_is_caught(airlock: Airlock):
    request = airlock.submit("alice", b"fine\n", "a.md", purpose="x")
    path = airlock.path(request)
    assert path.stat().st_mode & 0o777 == 0o440
    airlock.approve(request.id, steward="sam", reason="ok")
    path.chmod(0o640)
    path.write_bytes(b"swapped\n")
    with pytest.raises(ReleaseStateError, match="SHA-256"):
        airlock.download(request.id, user="alice")


def test_identifiers_and_dates_in_text_fail(airlock: Airlock):
    text = f"best responder {SUBJECTS[3]} scanned {STUDY_DATE[:4]}-{STUDY_DATE[4:6]}-14\n"
    request = airlock.submit("alice", text.encode(), "notes.md", purpose="x")
    assert rules(request)["identifiers-in-text"] == "fail"
    summary = next(c for c in request.checks if c["rule"] == "identifiers-in-text")["summary"]
    assert SUBJECTS[3] in summary and "2019-03-14" in summary
    uid = airlock.submit(
        "alice", json.dumps({"series": SERIES_UID}).encode(), "a.json", purpose="x"
    )
    assert rules(uid)["identifiers-in-text"] == "fail"
    clean = airlock.submit(
        "alice", b"mean volume 12.5 ml (n=40), version 3.1.0\n", "b.txt", purpose="x"
    )
    assert clean.status == "pass", clean.checks


def test_a_row_per_subject_and_identifier_columns_fail(airlock: Airlock):
    rows = pd.DataFrame({"subject_id": SUBJECTS, "volume": np.arange(12.0)})
    request = airlock.submit("alice", rows.to_csv(index=False).encode(), "rows.csv", purpose="x")
    found = rules(request)
    assert found["identifier-columns"] == "fail" and found["row-per-subject"] == "fail"
    coded = pd.DataFrame({"code": [f"c{i}" for i in range(12)], "volume": np.arange(12.0)})
    request = airlock.submit("alice", coded.to_csv(index=False).encode(), "c.csv", purpose="x")
    assert rules(request)["row-per-subject"] == "fail"


def test_a_raw_slice_dump_fails_and_a_figure_passes(airlock: Airlock):
    from PIL import Image

    def png(array: np.ndarray, mode: str | None = None) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array, mode).save(buf, format="PNG")
        return buf.getvalue()

    dump = airlock.submit(
        "alice", png(np.zeros(SLICE, dtype=np.uint8)), "slice.png", purpose="look"
    )
    assert rules(dump)["image-resolution"] == "fail" and dump.status == "fail"

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 3), dpi=50)
    figure.add_subplot().plot([1, 2, 3])
    buf = io.BytesIO()
    figure.savefig(buf, format="png")
    fine = airlock.submit("alice", buf.getvalue(), "plot.png", purpose="plot")
    assert rules(fine)["image-resolution"] == "pass", fine.checks

    arrays = io.BytesIO()
    np.savez(arrays, conv=np.zeros((8, 3, 3)), volume=np.zeros(VOLUME))
    weights = airlock.submit("alice", arrays.getvalue(), "model.npz", purpose="weights")
    assert rules(weights)["image-resolution"] == "fail"
    assert "volume" in next(c for c in weights.checks if c["rule"] == "image-resolution")["summary"]


def test_a_notebook_with_a_slice_output_fails(airlock: Airlock):
    import base64

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros(SLICE, dtype=np.uint8)).save(buf, format="PNG")
    notebook = {
        "cells": [
            {"cell_type": "code", "source": "show(slice)", "outputs": [
                {"output_type": "display_data",
                 "data": {"image/png": base64.b64encode(buf.getvalue()).decode()}},
                {"output_type": "stream", "name": "stdout", "text": "n=40\n"},
            ]},
        ],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5,
    }  # fmt: skip
    request = airlock.submit("alice", json.dumps(notebook).encode(), "nb.ipynb", purpose="x")
    assert rules(request)["image-resolution"] == "fail"
    assert rules(request)["identifiers-in-text"] == "pass"


def test_evidence_that_does_not_match_the_table_fails(airlock: Airlock):
    table = pivot_table(per_arm(), values="volume", index="arm", aggfunc=["count", "mean"])
    evidence = table.attrs[EVIDENCE_ATTR]
    table["mean_volume"] = table["mean_volume"] * 2
    request = airlock.submit(
        "alice", table.to_csv(index=False).encode(), "t.csv", purpose="x", evidence=evidence
    )
    assert rules(request)["evidence"] == "fail"


def test_columns_added_after_acro_checked_the_table_need_review(airlock: Airlock):
    data = per_arm()
    table = pivot_table(data, values="volume", index="arm", aggfunc=["count", "mean"])
    table["max_volume"] = data.groupby("arm")["volume"].max().to_numpy()  # not checked
    request = airlock.submit(
        "alice",
        table.to_csv(index=False).encode(),
        "t.csv",
        purpose="x",
        evidence=table.attrs[EVIDENCE_ATTR],
    )
    evidence = next(c for c in request.checks if c["rule"] == "evidence")
    assert evidence["status"] == "review" and "max_volume" in evidence["summary"]


def test_dominance_is_checked_by_acro_on_the_evidence(airlock: Airlock):
    data = per_arm(40)
    data.loc[data["arm"] == "A", "volume"] = 0.001
    first = data.index[data["arm"] == "A"][0]
    data.loc[first, "volume"] = 1000.0  # one subject dominates arm A's total
    table = pivot_table(data, values="volume", index="arm", aggfunc=["count", "sum"])
    request = airlock.submit(
        "alice",
        table.to_csv(index=False).encode(),
        "t.csv",
        purpose="x",
        evidence=table.attrs[EVIDENCE_ATTR],
    )
    found = rules(request)
    assert found["dominance-nk"] == "fail" and found["dominance-p"] == "fail"
    assert found["threshold"] == "pass"


def test_list_filters_by_user_and_state(airlock: Airlock):
    a = airlock.submit("alice", b"a\n", "a.txt", purpose="x")
    airlock.submit("bob", b"b\n", "b.txt", purpose="x")
    airlock.deny(a.id, steward="sam", reason="no")
    assert [r.user for r in airlock.list(user="alice")] == ["alice"]
    assert [r.user for r in airlock.list(state="submitted")] == ["bob"]
    with pytest.raises(ReleaseStateError, match="choose one of"):
        airlock.list(state="pending")


def test_a_restarted_airlock_keeps_requests(airlock_home):
    with Airlock(airlock_home) as first:
        request = first.submit("alice", b"a\n", "a.txt", purpose="x")
    with Airlock(airlock_home) as second:
        assert second.get(request.id).sha256 == request.sha256


def test_checks_that_cannot_run_fail_rather_than_pass(airlock: Airlock):
    airlock.home.catalog_path.write_bytes(b"not a database")
    for suffix in ("-wal", "-shm"):
        airlock.home.catalog_path.with_name("catalog.sqlite" + suffix).unlink(missing_ok=True)
    request = airlock.submit("alice", b"mean 12.5\n", "a.txt", purpose="x")
    assert request.status == "fail"
    assert rules(request)["checks"] == "fail"


@pytest.fixture
def two_person_airlock(airlock_home):
    from dataclasses import replace

    from insitu.config import load_config

    config = load_config(airlock_home)
    config = replace(config, policy=replace(config.policy, two_person_review=True))
    with Airlock(airlock_home, config) as lock:
        yield lock


def test_two_person_review_needs_two_different_stewards(two_person_airlock: Airlock):
    airlock = two_person_airlock
    request = airlock.submit("alice", b"arm,n\nA,40\nB,41\n", "arms.csv", purpose="counts")
    # The submitter never reviews her own output, not even as the first approver.
    with pytest.raises(AccessDeniedError, match="another steward"):
        airlock.approve(request.id, steward="alice", reason="mine")
    first = airlock.approve(request.id, steward="sam", reason="aggregates")
    assert first.state == "submitted" and airlock.first_approver(request.id) == "sam"
    with pytest.raises(ReleaseStateError, match="only approved"):
        airlock.download(request.id, user="alice")
    # The same steward cannot give the second approval.
    with pytest.raises(AccessDeniedError, match="second, different steward"):
        airlock.approve(request.id, steward="sam", reason="again")
    second = airlock.approve(request.id, steward="ann", reason="agreed")
    assert second.state == "approved" and second.decided_by == "sam+ann"
    _, data = airlock.download(request.id, user="alice")
    assert data.startswith(b"arm,n")
    kinds = [e["kind"] for e in AuditLog(airlock.home).query(kind="release")]
    decisions = [k for k in kinds if k.startswith("release.approve")]
    # Both refusals (her own, sam twice) are audited between the decisions.
    assert decisions == [
        "release.approve_refused",
        "release.approve_first",
        "release.approve_refused",
        "release.approve",
    ]


def test_two_person_review_keeps_the_override_rule(two_person_airlock: Airlock):
    airlock = two_person_airlock
    request = airlock.submit("alice", b"arm,n\nA,3\nB,41\n", "small.csv", purpose="counts")
    assert request.status == "fail"
    with pytest.raises(ReleaseStateError, match="override"):
        airlock.approve(request.id, steward="sam", reason="fine")
    airlock.approve(request.id, steward="sam", reason="fine", override="published elsewhere")
    with pytest.raises(ReleaseStateError, match="override"):
        airlock.approve(request.id, steward="ann", reason="fine")
    # A denial by the second steward ends it, whatever the first decided.
    denied = airlock.deny(request.id, steward="ann", reason="cell of 3")
    assert denied.state == "denied"


def test_one_steward_approves_when_two_person_review_is_off(airlock: Airlock):
    request = airlock.submit("alice", b"arm,n\nA,40\nB,41\n", "arms.csv", purpose="counts")
    assert airlock.approve(request.id, steward="sam", reason="ok").state == "approved"
    assert airlock.first_approver(request.id) is None
