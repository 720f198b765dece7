"""`insitu ingest`, `insitu datasets`, `insitu verify` on real files, in-process."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import stat
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fixtures_datasets import dicom_file, make_series, run_cli, run_json, tree_bytes

from insitu.audit import AuditLog
from insitu.cli import main
from insitu.config import NodeHome, init_home
from insitu.datasets.catalog import Catalog
from insitu.datasets.reader import open_dataset
from insitu.errors import EXIT_QUARANTINED, DatasetNotFoundError

PATIENT_ID, PATIENT_NAME = "PAT-MARKER-4711", "Markerson^Jo"


def _digests(paths: list[Path]) -> dict[str, str]:
    out = {}
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One ingest of a mixed input: a good CT series, junk, a truncated file, DICOMDIR tree."""
    base = tmp_path_factory.mktemp("mixed")
    home = NodeHome(base / "home")
    init_home(home, "test-site")
    inputs = base / "inputs"
    make_series(inputs / "ct", n=10, patient_id=PATIENT_ID, patient_name=PATIENT_NAME)
    shutil.copy(dicom_file("MR_truncated.dcm"), inputs / "truncated.dcm")
    shutil.copy(dicom_file("rtplan.dcm"), inputs / "plan.dcm")
    shutil.copy(dicom_file("emri_small_jpeg_2k_lossless_too_short.dcm"), inputs / "short.dcm")
    (inputs / "notes.txt").write_text("not DICOM\n")
    tree = dicom_file("DICOMDIR").parent / "77654033"  # CT2 inside: non-uniform spacing
    sources = [inputs, tree]
    before = _digests(sources)
    originals = [pydicom.dcmread(p, stop_before_pixels=True) for p in (inputs / "ct").iterdir()]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            ["--home", str(home.root), "ingest", str(inputs), str(tree), "--dataset", "trial"]  # noqa: RUF005
            + ["--json"]
        )
    return {
        "home": home,
        "code": code,
        "report": json.loads(out.getvalue()),
        "sources": sources,
        "before": before,
        "originals": originals,
        "inputs": inputs,
    }


def test_mixed_input_publishes_good_series_and_quarantines_the_rest(mixed: dict) -> None:
    report, home = mixed["report"], mixed["home"]
    assert mixed["code"] == EXIT_QUARANTINED == report["exit_code"]
    assert report["status"] == "published" and report["version"] == "v1"
    fates = {Path(f["file"]).name: f for f in report["files"]}
    # every input file is listed with its fate
    assert set(mixed["before"]) == {f["file"] for f in report["files"]}
    assert fates["notes.txt"]["fate"] == "skipped"
    assert fates["truncated.dcm"]["fate"] == "quarantined"
    assert fates["truncated.dcm"]["reason"].startswith("truncated pixel data")
    assert fates["short.dcm"]["fate"] == "quarantined"
    assert fates["plan.dcm"]["fate"] == "quarantined"
    assert "not an image" in fates["plan.dcm"]["reason"]
    ct2 = [f for f in report["files"] if "/CT2/" in f["file"]]
    assert ct2 and all(f["fate"] == "refused" for f in ct2)
    assert all("non-uniform slice spacing" in f["reason"] for f in ct2)
    published = [f for f in report["files"] if f["fate"] == "published"]
    assert sum("/ct/" in f["file"] for f in published) == 10
    # quarantined copies are exact, with a reason, under private/
    qdir = Path(report["quarantine"])
    assert qdir.is_relative_to(home.quarantine)
    reasons = sorted(qdir.glob("*.reason.txt"))
    assert len(reasons) == sum(
        f["fate"] in ("quarantined", "refused", "held-back") for f in report["files"]
    )
    copied = {
        r.read_text().split("\n")[0].removeprefix("source: "): r.with_name(
            r.name.replace(".reason.txt", ".dcm")
        )
        for r in reasons
    }
    truncated = str(mixed["inputs"] / "truncated.dcm")
    assert copied[truncated].read_bytes() == Path(truncated).read_bytes()
    # the sources were never modified
    assert _digests(mixed["sources"]) == mixed["before"]


def test_published_series_matches_pydicom_in_slice_order(mixed: dict) -> None:
    ds = open_dataset("trial", home=mixed["home"])
    ct = ds.series[ds.series.n_files == 10]
    assert len(ct) == 1
    row = ct.iloc[0]
    assert row["modality"] == "CT" and row["shape"] == (10, 128, 128)
    assert row["dtype"] == "int16"
    assert row.subject_id.startswith("sub-")
    image = ds.image(row.series_id)
    assert image.dims == ("z", "y", "x") and image.attrs["units"] == "HU"
    originals = sorted(mixed["originals"], key=lambda h: float(h.ImagePositionPatient[2]))
    # coordinates in LPS mm: z from Image Position (Patient), y/x from origin + spacing
    np.testing.assert_allclose(image.z, [float(h.ImagePositionPatient[2]) for h in originals])
    first = originals[0]
    np.testing.assert_allclose(float(image.x[0]), float(first.ImagePositionPatient[0]))
    np.testing.assert_allclose(
        float(image.y[1] - image.y[0]), float(first.PixelSpacing[0]), rtol=1e-6
    )
    affine = image.attrs["affine"]
    for k, h in enumerate(originals):
        np.testing.assert_allclose(
            affine @ [0, 0, k, 1], [*map(float, h.ImagePositionPatient), 1], atol=1e-3
        )
    by_uid = {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p
        for p in (mixed["inputs"] / "ct").iterdir()
    }
    values = image.values
    for k, h in enumerate(originals):
        full = pydicom.dcmread(by_uid[h.SOPInstanceUID])
        expected = full.pixel_array.astype(np.int64) * int(full.RescaleSlope) + int(
            full.RescaleIntercept
        )
        np.testing.assert_array_equal(values[k], expected)


def test_nothing_identifying_outside_private(mixed: dict) -> None:
    home: NodeHome = mixed["home"]
    markers = {PATIENT_ID, PATIENT_NAME, PATIENT_NAME.replace("^", " ")}
    for h in mixed["originals"]:
        markers |= {str(h.SeriesInstanceUID), str(h.StudyInstanceUID), str(h.SOPInstanceUID)}
    published = tree_bytes(home.root, skip=("private/",))
    assert any(k.startswith("stores/trial/v1.zarr/") for k in published)
    for rel, data in published.items():
        for marker in markers:
            assert marker.encode() not in data, f"{marker!r} in {rel}"
            assert marker not in rel
    entries = list(AuditLog(home).entries())
    ingest = [e for e in entries if e["kind"] == "ingest"]
    assert ingest and ingest[-1]["dataset"] == "trial"
    assert ingest[-1]["details"]["version"] == "v1"
    # the pseudonym link lives in private/ only
    assert (home.private / "links.sqlite").is_file()


def test_store_layout_and_attrs(mixed: dict) -> None:
    home: NodeHome = mixed["home"]
    store = home.stores / "trial" / "v1.zarr"
    root = json.loads((store / "zarr.json").read_text())["attributes"]["insitu"]
    assert root["dataset"] == "trial" and root["version"] == "v1"
    assert root["deid"]["profile"]["edition"]
    assert root["provenance"]["inputs"]["files"] == len(mixed["report"]["files"])
    assert root["provenance"]["software"].startswith("insitu ")
    assert root["subjects"] and root["series"]
    sid = next(s["series_id"] for s in root["series"] if s["n_files"] == 10)
    group = json.loads((store / "series" / sid / "zarr.json").read_text())["attributes"]
    ms = group["ome"]["multiscales"][0]
    assert group["ome"]["version"] == "0.5"
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert {a["unit"] for a in ms["axes"]} == {"millimeter"}
    assert [d["path"] for d in ms["datasets"]] == ["0"]  # 128 x 128: no preview level
    assert len(group["insitu"]["affine"]) == 4
    assert group["insitu"]["header"]["00080060"]["Value"] == ["CT"]
    level0 = json.loads((store / "series" / sid / "0" / "zarr.json").read_text())
    assert level0["dimension_names"] == ["z", "y", "x"]
    blosc = next(c for c in level0["codecs"] if c["name"] == "blosc")["configuration"]
    assert blosc["cname"] == "zstd" and blosc["shuffle"] == "bitshuffle"  # store format 3
    # read-only once published
    for path in store.rglob("*"):
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert not list(home.staging.glob("trial-*"))


def test_datasets_json_and_text(mixed: dict, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(mixed["home"].root)
    code, listing = run_json(["--home", home, "datasets"], capsys)
    assert code == 0
    (entry,) = listing
    assert entry["name"] == "trial"
    (version,) = entry["versions"]
    assert version["version"] == "v1" and version["series"] >= 2 and version["subjects"] >= 1
    assert version["bytes"] > 0
    code, out, _ = run_cli(["--home", home, "datasets"], capsys)
    assert code == 0 and "trial" in out and "v1" in out


def test_missing_dataset_names_what_exists(mixed: dict) -> None:
    with pytest.raises(DatasetNotFoundError, match="trial"):
        open_dataset("nope", home=mixed["home"])
    with pytest.raises(DatasetNotFoundError, match="v1"):
        open_dataset("trial", "v9", home=mixed["home"])


@pytest.mark.parametrize("command", ["ingest", "datasets", "verify"])
def test_help_on_every_subcommand(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"usage: insitu {command}" in capsys.readouterr().out


def test_idempotent_new_version_and_old_unchanged(
    home: NodeHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = make_series(tmp_path / "a", n=6)
    code, report = run_json(["ingest", str(first), "--dataset", "d"], capsys)
    assert code == 0 and report["version"] == "v1"
    v1 = home.stores / "d" / "v1.zarr"
    snapshot = tree_bytes(v1)
    # the same input again: no new version
    code, again = run_json(["ingest", str(first), "--dataset", "d"], capsys)
    assert code == 0 and again["status"] == "unchanged" and again["version"] == "v1"
    assert {f["fate"] for f in again["files"]} == {"unchanged"}
    # a zip of a second series plus the first: a new version, the old one untouched
    second = make_series(tmp_path / "b", n=4, patient_id="P2", seed=3)
    archive = tmp_path / "b.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(second.iterdir()):
            zf.write(p, f"b/{p.name}")
    one = str(sorted(first.iterdir())[0])  # given twice: once alone, once in its folder
    code, report = run_json(["ingest", str(first), one, str(archive), "--dataset", "d"], capsys)
    assert code == 0 and report["version"] == "v2"
    assert [f["fate"] for f in report["files"] if f["file"] == one][-1] == "skipped"
    assert any("b.zip!b/" in f["file"] and f["fate"] == "published" for f in report["files"])
    assert tree_bytes(v1) == snapshot
    with Catalog(home) as catalog:
        assert [v["version"] for v in catalog.versions("d")] == ["v1", "v2"]
        assert catalog.store_path("d") == home.stores / "d" / "v2.zarr"
    assert len(open_dataset("d").series) == 2
    assert len(open_dataset("d", "v1").series) == 1
    code, out, _ = run_cli(["verify", "d"], capsys)
    assert code == 0 and "d v1: ok" in out and "d v2: ok" in out


def test_verify_detects_a_flipped_byte(
    home: NodeHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_json(["ingest", str(make_series(tmp_path / "a", n=4)), "--dataset", "d"], capsys)
    store = home.stores / "d" / "v1.zarr"
    chunk = next(p for p in sorted(store.rglob("*")) if p.is_file() and "/c/" in p.as_posix())
    chunk.chmod(0o644)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    code, out, err = run_cli(["verify", "d", "--version", "v1"], capsys)
    assert code == 5
    assert "FAILED" in out and "changed: series/" in err
    assert "no longer match their checksums" in err


def test_burned_in_ultrasound_held_back_unless_allowed(
    home: NodeHome, capsys: pytest.CaptureFixture[str]
) -> None:
    us = str(dicom_file("OBXXXX1A_rle_2frame.dcm"))
    code, report = run_json(["ingest", us, "--dataset", "us"], capsys)
    assert code == EXIT_QUARANTINED and report["status"] == "nothing-published"
    (fate,) = report["files"]
    assert fate["fate"] == "held-back" and "burned-in" in fate["reason"]
    code, report = run_json(["ingest", us, "--dataset", "us", "--allow-burned-in"], capsys)
    assert code == 0 and report["version"] == "v1"
    image = open_dataset("us").image(report["series"][0]["series_id"])
    assert image.shape == (2, 600, 800) and image.dtype == np.uint8


def test_undecodable_jpeg_quarantined_once_allowed(
    home: NodeHome, capsys: pytest.CaptureFixture[str]
) -> None:
    """pydicom's JPEG-lossy.dcm (a secondary capture no decoder accepts)."""
    path = str(dicom_file("JPEG-lossy.dcm"))
    code, report = run_json(["ingest", path, "--dataset", "j", "--allow-burned-in"], capsys)
    assert code == EXIT_QUARANTINED and report["status"] == "nothing-published"
    (fate,) = report["files"]
    assert fate["fate"] == "quarantined" and "cannot be decoded" in fate["reason"]


def test_bad_dataset_name_and_no_input(home: NodeHome, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_cli(["ingest", "/nonexistent", "--dataset", "Bad Name"], capsys)
    assert code == 1 and "dataset name" in err
    # a path that does not exist is an immediate error, not a quarantined "file" (issue 15)
    code, _out, err = run_cli(["ingest", "/nonexistent/x.dcm", "--dataset", "ok"], capsys)
    assert code == 1 and "/nonexistent/x.dcm: no such file or folder" in err


def test_ultrasound_cine_and_still_of_one_series(
    home: NodeHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """deid-data: a greyscale cine (in a zip) and a still share one series UID."""
    import deid_data

    us = Path(deid_data.__file__).parent / "data" / "ultrasounds"
    inputs = [str(us / "GREYSCALE_CINE.zip"), str(us / "GREYSCALE_IMAGE.dcm")]
    code, report = run_json(["ingest", *inputs, "--dataset", "us"], capsys)
    assert code == EXIT_QUARANTINED and {f["fate"] for f in report["files"]} == {"held-back"}
    code, report = run_json(["ingest", *inputs, "--dataset", "us", "--allow-burned-in"], capsys)
    assert code == 0
    series = open_dataset("us").series
    assert len(series) == 2 and series.series_uid.nunique() == 1
    shapes = sorted(tuple(s) for s in series["shape"])
    assert shapes == [(1, 768, 1024), (27, 600, 800)]
    cine = series[series["shape"].map(lambda s: s[0]) == 27].series_id.iloc[0]
    image = open_dataset("us").image(cine)
    assert not image.attrs["patient_geometry"] and image.dtype == np.uint8


def test_one_corrupt_slice_names_the_file_and_refuses_its_series(
    home: NodeHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_series(tmp_path / "s", n=5)
    bad = sorted(folder.iterdir())[2]
    ds = pydicom.dcmread(bad)
    ds.PixelData = ds.PixelData[:1000]  # a slice cut short inside its pixel data
    ds.save_as(bad, enforce_file_format=True)
    code, report = run_json(["ingest", str(folder), "--dataset", "c"], capsys)
    assert code == EXIT_QUARANTINED and report["status"] == "nothing-published"
    fates = {f["file"]: f for f in report["files"]}
    assert fates[str(bad)]["fate"] == "quarantined"
    assert fates[str(bad)]["reason"].startswith("truncated pixel data")  # found by the scan
    others = [f for name, f in fates.items() if name != str(bad)]
    assert len(others) == 4
    assert all(f["fate"] == "refused" and "with its series" in f["reason"] for f in others)


def test_parallel_build_gives_the_same_store(
    home: NodeHome, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """Series built in two spawned processes: same fates and voxels as in-process."""
    inputs = tmp_path / "in"
    make_series(inputs / "a", n=6, patient_id="A")
    make_series(inputs / "b", n=5, patient_id="B", seed=2)
    make_series(inputs / "gap", positions=[0, 2.5, 7.5, 10], patient_id="C", seed=3)
    runs = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("INSITU_INGEST_WORKERS", workers)
        code, report = run_json(["ingest", str(inputs), "--dataset", f"p{workers}"], capsys)
        assert code == EXIT_QUARANTINED  # the series with a gap is refused
        dataset = open_dataset(f"p{workers}")
        images = {s: dataset.image(s).values for s in dataset.series.series_id}
        runs[workers] = (sorted((f["file"], f["fate"]) for f in report["files"]), images)
    assert runs["1"][0] == runs["2"][0]
    assert runs["1"][1].keys() == runs["2"][1].keys() and len(runs["1"][1]) == 2
    for sid, values in runs["1"][1].items():
        np.testing.assert_array_equal(values, runs["2"][1][sid])


def test_the_node_home_inside_an_input_folder_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    node = NodeHome(tmp_path / "export" / "home")  # the admin's home sits in the export
    init_home(node, "test-site")
    monkeypatch.setenv("INSITU_HOME", str(node.root))
    make_series(tmp_path / "export" / "ct", n=3)
    code, _ = run_json(["ingest", str(tmp_path / "export"), "--dataset", "h"], capsys)
    assert code == 0
    code, report = run_json(["ingest", str(tmp_path / "export"), "--dataset", "h2"], capsys)
    assert code == 0 and report["version"] == "v1"
    inside = [f for f in report["files"] if f["file"].startswith(str(node.root))]
    assert inside and {f["fate"] for f in inside} == {"skipped"}
    assert sum(f["fate"] == "published" for f in report["files"]) == 3
