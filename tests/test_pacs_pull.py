"""DICOMweb pull from a real Orthanc: filters, ingest, resume, a PACS that goes away,
wrong credentials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_datasets import run_cli, run_json
from fixtures_pacs import PASSWORD, TRIAL, Pacs, configure_pacs

from insitu.audit import AuditLog
from insitu.config import NodeHome
from insitu.datasets.dicomweb import STOP_AFTER_ENV, PacsQuery, fingerprint, pull
from insitu.errors import SourceError


def _staged(home: NodeHome, url: str) -> list[Path]:
    folder = home.staging / "pacs" / fingerprint(url)
    return sorted(folder.glob("*.dcm")) if folder.is_dir() else []


def _pulls(home: NodeHome) -> list[dict]:
    return [e["details"] for e in AuditLog(home).entries() if e["kind"] == "pacs.pull"]


def _original_uids(pacs: Pacs, accession: str) -> set[str]:
    import pydicom

    out = set()
    for path in pacs.files[accession]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}
    return out


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (PacsQuery(accessions=("ACC-CT-1",)), {"ACC-CT-1"}),
        (PacsQuery(accessions=("ACC-CT-2", "ACC-MR-1")), {"ACC-CT-2", "ACC-MR-1"}),
        (PacsQuery(date_range="20240101-20241231"), {"ACC-CT-1", "ACC-MR-1"}),
        (PacsQuery(date_range="-20231231"), {"ACC-CT-2"}),
        (PacsQuery(modality="MR"), {"ACC-MR-1"}),
        (PacsQuery(date_range="20230101-", modality="CT"), {"ACC-CT-1", "ACC-CT-2"}),
    ],
    ids=["one-accession", "two-accessions", "date-range", "open-start", "modality", "date+ct"],
)
def test_filters_select_the_trial_studies(
    pacs_home: NodeHome, pacs: Pacs, query: PacsQuery, expected: set[str]
) -> None:
    result = pull(pacs.server.source, query, dataset="trial", home=pacs_home)
    assert len(result.paths) == sum(TRIAL[a][2] for a in expected)
    assert result.studies == len(expected) and result.series == len(expected)
    assert sorted(result.paths) == _staged(pacs_home, pacs.server.url)
    # Staged names are keyed hashes: no UID of the originals shows, and only the owner reads.
    uids = set().union(*(_original_uids(pacs, a) for a in TRIAL))
    for path in result.paths:
        assert path.stat().st_mode & 0o077 == 0
        assert not any(uid in path.name for uid in uids)
    result.discard()
    assert _staged(pacs_home, pacs.server.url) == []


def test_ingest_dicomweb_publishes_a_verified_version(
    pacs_home: NodeHome, pacs: Pacs, capsys: pytest.CaptureFixture[str]
) -> None:
    source = pacs.server.source
    args = ["ingest", source, "--dataset", "trial", "--accession", "ACC-CT-1"]
    code, report = run_json([*args, "--accession", "ACC-MR-1"], capsys)
    assert code == 0, report
    assert report["status"] == "published" and report["counts"] == {"published": 7}
    assert {s["modality"] for s in report["series"]} == {"CT", "MR"}
    assert _staged(pacs_home, pacs.server.url) == []  # the originals left staging
    code, out, err = run_cli(["verify", "trial"], capsys)
    assert code == 0 and "ok" in out, err
    # The same pull again: fetched again, but the ingest publishes nothing new.
    code, again = run_json([*args, "--accession", "ACC-MR-1"], capsys)
    assert code == 0 and again["status"] == "unchanged"
    pulls = _pulls(pacs_home)
    assert [p["fetched"] for p in pulls] == [7, 7]
    assert pulls[0]["instances"] == 7 and pulls[0]["status"] == "staged"
    # Audit and catalog hold counts and pseudonyms: no accession, UID or password.
    published = (pacs_home.audit / "audit.jsonl").read_bytes() + pacs_home.catalog_path.read_bytes()
    secrets = {PASSWORD, "ACC-CT-1", "ACC-MR-1"} | _original_uids(pacs, "ACC-CT-1")
    assert not [s for s in secrets if s.encode() in published]


def test_a_filter_is_required_and_must_not_widen(
    pacs_home: NodeHome, pacs: Pacs, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run_cli(["ingest", pacs.server.source, "--dataset", "all"], capsys)
    assert code == 1 and "never pulls a whole PACS" in err
    code, _out, err = run_cli(
        ["ingest", pacs.server.source, "--dataset", "x", "--accession", "ACC-*"], capsys
    )
    assert code == 1 and "no wildcards" in err
    code, _out, err = run_cli(
        ["ingest", pacs.server.source, "--dataset", "x", "--accession", "NOT-THERE"], capsys
    )
    assert code == 1 and "no instance" in err and "1 accession number" in err
    assert "NOT-THERE" not in err
    assert _pulls(pacs_home) == []


def test_wrong_password_names_the_key_and_never_shows_a_secret(
    home: NodeHome, pacs: Pacs, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "wrong-Secret-42x"
    configure_pacs(home, pacs.server.url, password=wrong)
    args = ["ingest", "dicomweb://", "--dataset", "trial", "--modality", "MR"]
    code, out, err = run_cli(args, capsys)
    assert code == 1
    assert "refused the login (HTTP 401)" in err
    assert "pacs.username and pacs.password_file" in err and str(home.config_path) in err
    assert wrong not in out + err and PASSWORD not in out + err
    # Without [pacs] credentials the message says which keys to set.
    home.config_path.write_text(home.config_path.read_text().split("[pacs]")[0])
    code, _out, err = run_cli(["ingest", pacs.server.source, *args[2:]], capsys)
    assert code == 1 and "set pacs.username and pacs.password_file (or pacs.token_file)" in err
    assert _staged(home, pacs.server.url) == []


def test_an_interrupted_pull_resumes_where_it_stopped(
    pacs_home: NodeHome, pacs: Pacs, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_pacs(pacs_home, pacs.server.url, extra="parallel = 1\n")  # at most 1 in flight
    args = ["ingest", "dicomweb://", "--dataset", "trial", "--accession", "ACC-CT-1"]
    env = {**os.environ, STOP_AFTER_ENV: "2", "INSITU_HOME": str(pacs_home.root)}
    killed = subprocess.run(
        [sys.executable, "-m", "insitu.cli", *args], env=env, capture_output=True, timeout=120
    )
    assert killed.returncode == 70, killed.stderr
    staged = _staged(pacs_home, pacs.server.url)
    n = len(staged)  # 2, or 3 if the next request was already answered
    assert 2 <= n <= 3
    before = {p: p.stat().st_mtime_ns for p in staged}
    code, report = run_json(args, capsys)
    assert code == 0 and report["counts"] == {"published": 6}
    last = _pulls(pacs_home)[-1]
    assert (last["fetched"], last["already_staged"], last["instances"]) == (6 - n, n, 6)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p.exists())


def test_a_pacs_that_goes_away_loses_nothing(
    home: NodeHome, own_pacs: Pacs, capsys: pytest.CaptureFixture[str]
) -> None:
    server = own_pacs.server
    configure_pacs(home, server.url, extra="parallel = 1\n")

    def kill_after_two(fetched: int) -> None:
        if fetched == 2:
            server.kill()

    query = PacsQuery(accessions=("ACC-CT-1",))
    with pytest.raises(SourceError) as caught:
        pull(server.source, query, dataset="trial", home=home, on_instance=kill_after_two)
    message = str(caught.value)
    assert "cannot be reached (connection refused)" in message
    n = len(_staged(home, server.url))  # 2, or 3 if the next answer was already on its way
    assert 2 <= n <= 3
    assert f"after {n} of 6 instances were staged" in message and f"remaining {6 - n}" in message
    assert str(home.staging / "pacs" / fingerprint(server.url)) in message
    assert PASSWORD not in message and not any(u in message for u in _uids(own_pacs))
    failed = _pulls(home)[-1]
    assert (failed["status"], failed["fetched"], failed["instances"]) == ("failed", n, 6)
    assert not (home.stores / "trial").exists()

    server.start()  # the same storage: the PACS is back
    code, report = run_json(
        ["ingest", "dicomweb://", "--dataset", "trial", "--accession", "ACC-CT-1"], capsys
    )
    assert code == 0 and report["counts"] == {"published": 6}
    last = _pulls(home)[-1]
    assert (last["fetched"], last["already_staged"]) == (6 - n, n)
    code, out, err = run_cli(["verify", "trial"], capsys)
    assert code == 0, out + err


def _uids(pacs: Pacs) -> set[str]:
    return _original_uids(pacs, "ACC-CT-1")


def test_a_pacs_that_is_down_before_the_query(
    home: NodeHome, own_pacs: Pacs, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_pacs(home, own_pacs.server.url)
    own_pacs.server.kill()
    code, _out, err = run_cli(
        ["ingest", "dicomweb://", "--dataset", "trial", "--modality", "CT"], capsys
    )
    assert code == 1
    assert f"the PACS at {own_pacs.server.url} cannot be reached (connection refused)" in err
    assert json.dumps(_pulls(home)) == "[]"
