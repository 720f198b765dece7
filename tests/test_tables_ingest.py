"""insitu ingest-table: measurement tables keyed, shifted and checked like the images."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fixtures_datasets import make_series, run_cli

from insitu.datasets.catalog import Catalog
from insitu.datasets.deid import Deidentifier
from insitu.datasets.ingest import ingest
from insitu.datasets.reader import open_dataset
from insitu.datasets.tables_ingest import text_problem

STUDY_DATE = "20040119"  # CT_small.dcm's Study Date, kept by make_series


@pytest.fixture
def trial(home, tmp_path: Path):
    for k, pid in enumerate(("PAT-A", "PAT-B")):
        make_series(tmp_path / f"s{k}", n=4, patient_id=pid, seed=k)
    report = ingest([tmp_path / "s0", tmp_path / "s1"], "trial", home=home)
    assert report.exit_code == 0
    return home


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def versions(home) -> list[str]:
    with Catalog(home) as catalog:
        return [v["version"] for v in catalog.versions("trial")]


def test_table_keys_dates_and_types(trial, tmp_path, capsys):
    csv = write_csv(
        tmp_path / "measurements.csv",
        f"""
patient,scan_date,followup,diameter_mm,lesions,arm,responder
PAT-A,{STUDY_DATE},2004-03-01,7.5,2,A,true
PAT-B,{STUDY_DATE},,11.25,0,B,false
PAT-A,2004-02-19,,8.0,1,A,true
""",
    )
    code, out, err = run_cli(
        ["ingest-table", "trial", str(csv), "--subject-column", "patient",
         "--date-columns", "followup"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "dates shifted: scan_date, followup" in out
    ds = open_dataset("trial", home=trial)
    table = ds.tables["measurements"]
    assert list(table.columns) == [
        "subject_id", "scan_date", "followup", "diameter_mm", "lesions", "arm", "responder",
    ]  # fmt: skip
    # the same pseudonyms as the images
    assert set(table["subject_id"]) == set(ds.subjects["subject_id"])
    deid = Deidentifier(trial.site_key())
    assert table["subject_id"][0] == deid.pseudonym("PAT-A")
    # the same shift as the images: the scan date equals the series' study date
    series = ds.series.set_index("subject_id")
    for _, row in table.iloc[:2].iterrows():
        assert row["scan_date"].strftime("%Y%m%d") == str(
            series.loc[row["subject_id"], "study_date"]
        ).replace("-", "")
    assert table["scan_date"][0].strftime("%Y%m%d") != STUDY_DATE
    # intervals kept within a subject: 31 days between the two scans of PAT-A
    assert (table["scan_date"][2] - table["scan_date"][0]).days == 31
    assert pd.isna(table["followup"][1])
    # types kept
    assert table["diameter_mm"].dtype == "float64"
    assert table["lesions"].dtype == "int64"
    assert table["responder"].dtype == bool
    assert list(table["arm"]) == ["A", "B", "A"]
    # the same table again publishes nothing new
    before = versions(trial)
    code, _out, err = run_cli(
        ["ingest-table", "trial", str(csv), "--subject-column", "patient",
         "--date-columns", "followup"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert versions(trial) == before
    # nothing identifying was published
    published = b"".join(p.read_bytes() for p in trial.stores.rglob("*") if p.is_file())
    assert b"PAT-A" not in published and b"PAT-B" not in published


def test_unknown_subjects_refused_by_line(trial, tmp_path, capsys):
    before = versions(trial)
    csv = write_csv(
        tmp_path / "m.csv",
        """
patient,diameter_mm
PAT-A,7.5
PAT-Z,8.0
PAT-B,9.0
PAT-Y,1.0
""",
    )
    code, _out, err = run_cli(
        ["ingest-table", "trial", str(csv), "--subject-column", "patient"], capsys
    )
    assert code == 1
    assert "2 row(s) name a subject that has no images" in err
    assert "line(s) 3, 5" in err
    assert "PAT-Z" not in err and "PAT-Y" not in err
    assert versions(trial) == before


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("reader", "Doe^Jane", "person name"),
        ("finding", "mild dilatation of the appendix with periappendiceal fat stranding", "free"),
        ("comment", "ok", "its name contains 'comment'"),
        ("referrer_email", "a@b.org", "its name contains 'email'"),
        ("contact_info", "x", "its name contains 'contact'"),
        ("site_code", "a@b.org", "e-mail"),
        ("code", "1234567", "6 or more digits"),
        ("code", "seen 2004-01-19", "date inside text"),
        ("code", "PAT-B", "patient ID of this dataset"),
    ],
)
def test_identifying_text_refused(trial, tmp_path, capsys, column, value, reason):
    before = versions(trial)
    csv = tmp_path / "m.csv"
    pd.DataFrame({"patient": ["PAT-A", "PAT-B"], column: ["x", value]}).to_csv(csv, index=False)
    code, _out, err = run_cli(
        ["ingest-table", "trial", str(csv), "--subject-column", "patient"], capsys
    )
    assert code == 1
    assert repr(column) in err and reason in err
    assert value not in err
    assert versions(trial) == before


def test_drop_leaves_a_column_out_and_bad_dates_refused(trial, tmp_path, capsys):
    csv = tmp_path / "m.csv"
    pd.DataFrame(
        {"patient": ["PAT-A"], "notes": ["call Mr Smith"], "d": ["tomorrow"], "v": [1.5]}
    ).to_csv(csv, index=False)
    args = ["ingest-table", "trial", str(csv), "--subject-column", "patient", "--drop", "notes"]
    code, _out, err = run_cli([*args, "--date-columns", "d"], capsys)
    assert code == 1 and "'d': not a date" in err and "line(s) 2" in err
    code, _out, err = run_cli([*args, "d", "--table", "visit", "--json"], capsys)
    assert code == 0, err
    table = open_dataset("trial", home=trial).tables["visit"]
    assert list(table.columns) == ["subject_id", "v"]


def test_missing_column_and_file(trial, tmp_path, capsys):
    csv = write_csv(tmp_path / "m.csv", "id,v\nPAT-A,1\n")
    code, _out, err = run_cli(
        ["ingest-table", "trial", str(csv), "--subject-column", "patient"], capsys
    )
    assert code == 1 and "no column(s) 'patient'" in err and "'id'" in err
    code, _out, err = run_cli(
        ["ingest-table", "trial", str(tmp_path / "nope.csv"), "--subject-column", "id"], capsys
    )
    assert code == 1 and "no such table file" in err


def test_text_problem_accepts_short_codes():
    assert text_problem("arm", ["A", "B", "placebo"], set()) is None
    assert text_problem("diagnosis", ["no appendicitis", "appendicitis"], set()) is None
