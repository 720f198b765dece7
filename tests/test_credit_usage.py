"""Usage counted from the audit log, and the citations every approved release carries."""

from __future__ import annotations

import io
import json
import zipfile

from cff_schema import validate_cff

from insitu.audit import AuditLog
from insitu.cli import main
from insitu.datasets.citation import parse_creator
from insitu.datasets.citations_db import set_citation
from insitu.hub.airlock import Airlock
from insitu.hub.credit import usage_report
from insitu.hub.read_ledger import ReadLedger

ADA_ORCID = "0000-0002-1825-0097"


def _cite(home) -> None:
    set_citation(
        home, actor="sam", dataset="trial-a", title="Trial A", licence="CC-BY-4.0",
        creators=[parse_creator(f"Lovelace, Ada;{ADA_ORCID}")],
    )  # fmt: skip


def _reads(home) -> None:
    """What the gate writes: ada reads a series twice and metadata; bob only metadata."""
    ledger = ReadLedger(home)
    ledger.record("ada", "trial-a", "v1", "zarr.json", 300)
    ledger.record("ada", "trial-a", "v1", "series/s1/0/c/0/0/0", 4000)
    ledger.record("ada", "trial-a", "v1", "series/s1/0/c/1/0/0", 4000)
    ledger.record("ada", "trial-a", "v1", "tables/measurements/c0/c/0", 100)
    ledger.record("bob", "trial-a", "v1", "zarr.json", 300)
    assert ledger.flush() == 4


def test_a_release_carries_the_citations_of_what_its_researcher_read(hub_home) -> None:
    _cite(hub_home)
    _reads(hub_home)
    with Airlock(hub_home) as airlock:
        request = airlock.submit(
            "ada", b"arm,mean_volume_ml\nA,12.5\nB,13.1\n", "summary.csv", purpose="paper table"
        )
        override = "reviewed by hand" if request.status == "fail" else None
        airlock.approve(request.id, steward="sam", reason="aggregates", override=override)
        approve = AuditLog(hub_home).query(kind="release.approve")[-1]
        assert approve["details"]["datasets"] == [
            {"dataset": "trial-a", "version": "v1", "site": "test-site"}
        ]
        released, data = airlock.download_bundle(request.id, user="ada")
    with zipfile.ZipFile(io.BytesIO(data)) as bundle:
        names = set(bundle.namelist())
        assert names == {"summary.csv", "CITATIONS.cff", "CITATIONS.bib", "CITATIONS.md"}
        assert bundle.read("summary.csv") == b"arm,mean_volume_ml\nA,12.5\nB,13.1\n"
        cff = validate_cff(bundle.read("CITATIONS.cff").decode())
        (ref,) = cff["references"]
        assert ref["title"] == "Trial A" and ref["version"] == "v1"
        assert ref["authors"][0]["orcid"] == f"https://orcid.org/{ADA_ORCID}"
        assert ref["publisher"] == {"name": "test-site"}
        assert "Lovelace" in bundle.read("CITATIONS.bib").decode()
        assert "Lovelace (2" in bundle.read("CITATIONS.md").decode().replace("Ada ", "")
    assert released.state == "released"


def test_a_release_by_someone_who_read_nothing_cites_nothing(hub_home) -> None:
    _reads(hub_home)  # ada's reads do not count for bob's release (bob read metadata only)
    with Airlock(hub_home) as airlock:
        request = airlock.submit("sam", b"a,b\n1,2\n", "x.csv", purpose="p")
        files = airlock.citations(request.id)
    assert "no dataset reads" in files["CITATIONS.md"].decode()
    assert "references" not in validate_cff(files["CITATIONS.cff"].decode())


def test_credit_report_counts_counter_style(hub_home, capsys) -> None:
    _cite(hub_home)
    _reads(hub_home)
    audit = AuditLog(hub_home)
    for run, subjects in ((11, 12), (11, 12), (12, 9)):  # run 11 had two replies
        audit.append(
            "federation.reply", user="federation:insitu-analytics==1.0.0", dataset="trial-a",
            site="test-site", fingerprint="f" * 64, run_id=run, decision="allowed",
            subjects=subjects,
        )  # fmt: skip
    audit.append(
        "federation.reply", user="federation:x", dataset="trial-a", run_id=13,
        decision="refused", subjects=3,
    )  # fmt: skip
    audit.append(
        "release.approve", user="sam", request=1, researcher="ada",
        datasets=[{"dataset": "trial-a", "version": "v1", "site": "test-site"}],
    )  # fmt: skip
    (usage,) = usage_report(hub_home)
    row = usage.to_json()
    assert row == row | {
        "dataset": "trial-a", "version": "v1", "site": "test-site",
        "unique_researchers": 2,
        "total_investigations": 5, "unique_investigations": 2,  # every key read; user-days
        "total_requests": 2, "unique_requests": 1,  # series and table reads: ada only
        "federated_runs": 2, "subjects_contributed": 21,  # the refused run does not count
        "approved_releases": 1,
    }  # fmt: skip
    assert "Lovelace" in row["citation"]
    assert main(["credit", "report", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["federated_runs"] == 2
    assert main(["credit", "report"]) == 0
    assert "approved releases 1" in capsys.readouterr().out


def test_credit_page_is_public_like_the_register(hub_home) -> None:
    from insitu.hub.access_service import credit_page

    _cite(hub_home)
    _reads(hub_home)
    page = credit_page(hub_home, user="bob")
    assert "Credit" in page and "Trial A" in page and "Lovelace" in page
    assert "<script" not in page
