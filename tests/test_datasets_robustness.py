"""Ingest loses nothing (issue 15): copies of one instance, truncated files, true reasons.

Every input here comes from files no one on this project wrote: pydicom's
test files, the pydicom-data and deid-data wheels, cut or copied the way a
failed transfer or a re-export would.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fixtures_datasets import dicom_file, make_series, run_cli, run_json

from insitu.config import NodeHome
from insitu.datasets.reader import open_dataset
from insitu.errors import EXIT_QUARANTINED, InputNotFoundError


def _fates(report: dict) -> dict[str, dict]:
    return {Path(f["file"]).name: f for f in report["files"]}


def _cut(src: Path, dst: Path, keep: int) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes()[:keep])
    return dst


@pytest.fixture
def series(tmp_path: Path) -> Path:
    """A 6-slice CT series made from pydicom's CT_small.dcm."""
    return make_series(tmp_path / "ct", n=6)


def test_truncated_copy_of_an_instance_never_costs_the_series(
    home: NodeHome, series: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid instance + a truncated copy with the same SOP Instance UID: the series is
    published whole, the cut copies are quarantined as truncated (not "duplicate slice")."""
    first = sorted(series.iterdir())[0]
    size = first.stat().st_size
    copies = tmp_path / "copies"
    _cut(first, copies / "cut_in_pixels.dcm", size - 4000)
    _cut(first, copies / "cut_before_pixels.dcm", 2000)  # the header only, partly
    code, report = run_json(["ingest", str(series), str(copies), "--dataset", "ct"], capsys)
    fates = _fates(report)
    assert report["status"] == "published" and code == EXIT_QUARANTINED
    assert report["series_counts"] == {"published": 1, "not_published": 0}
    assert fates["cut_in_pixels.dcm"]["fate"] == "quarantined"
    assert fates["cut_in_pixels.dcm"]["reason"].startswith("truncated pixel data")
    assert fates["cut_before_pixels.dcm"]["fate"] == "quarantined"
    assert "truncated" in fates["cut_before_pixels.dcm"]["reason"]
    assert "not an image" not in fates["cut_before_pixels.dcm"]["reason"]
    assert sum(f["fate"] == "published" for f in report["files"]) == 6
    assert open_dataset("ct").series.iloc[0]["shape"] == (6, 128, 128)


def test_copies_that_differ(
    home: NodeHome, series: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same SOP Instance UID, different bytes: same pixels -> skipped as a duplicate;
    different pixels -> quarantined as conflicting, the first copy kept."""
    files = sorted(series.iterdir())
    other = tmp_path / "reexport"
    other.mkdir()
    same = pydicom.dcmread(files[0])
    same.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    same.save_as(other / "same_pixels_implicit.dcm", implicit_vr=True, little_endian=True)
    changed = pydicom.dcmread(files[1])
    changed.PixelData = (changed.pixel_array + 1).astype(changed.pixel_array.dtype).tobytes()
    changed.save_as(other / "changed_pixels.dcm")
    code, report = run_json(["ingest", str(series), str(other), "--dataset", "ct"], capsys)
    fates = _fates(report)
    assert report["status"] == "published" and code == EXIT_QUARANTINED
    assert fates["same_pixels_implicit.dcm"]["fate"] == "skipped"
    assert "same pixel values" in fates["same_pixels_implicit.dcm"]["reason"]
    assert fates["changed_pixels.dcm"]["fate"] == "quarantined"
    assert fates["changed_pixels.dcm"]["reason"].startswith("conflicting copy")
    assert files[1].name in fates["changed_pixels.dcm"]["reason"]  # names the kept copy
    image = open_dataset("ct").image(open_dataset("ct").series.iloc[0]["series_id"])
    assert image.shape == (6, 128, 128)


def test_messages_say_what_is_wrong(
    home: NodeHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    ct = dicom_file("CT_small.dcm")
    _cut(ct, inputs / "ct_truncated.dcm", ct.stat().st_size - 1000)
    good_zip = inputs / "good.zip"
    with zipfile.ZipFile(good_zip, "w") as archive:
        archive.write(dicom_file("MR_small.dcm"), "mr.dcm")
    _cut(good_zip, inputs / "broken.zip", good_zip.stat().st_size - 30)
    good_zip.unlink()
    shutil.copy(dicom_file("rtplan.dcm"), inputs / "plan.dcm")
    no_sop = pydicom.dcmread(dicom_file("rtplan.dcm"))
    del no_sop.SOPClassUID
    del no_sop.file_meta.MediaStorageSOPClassUID
    no_sop.save_as(inputs / "no_sop_class.dcm")
    code, out, _err = run_cli(["ingest", str(inputs), "--dataset", "msg"], capsys)
    assert code == EXIT_QUARANTINED
    assert "truncated pixel data" in out and "not an image (SOP class CT" not in out
    assert "corrupt zip archive" in out and "(SOP class )" not in out
    assert "not an image (no SOP Class UID" in out
    assert "not an image (SOP class RT Plan Storage" in out
    # the summary keeps series and files apart and names which is which
    summary = out.strip().splitlines()[-2]
    assert summary.startswith("msg: nothing published (series: 0 published") and "files:" in summary


def test_a_missing_path_is_an_error_at_once(
    home: NodeHome, series: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = series.parent / "no-such-folder"
    code, _out, err = run_cli(["ingest", str(series), str(missing), "--dataset", "x"], capsys)
    assert code == InputNotFoundError.exit_code == 1
    assert "no such file or folder" in err and str(missing) in err
    assert "Traceback" not in err
    assert not any(home.quarantine.glob("*")) if home.quarantine.exists() else True
    assert open_dataset_missing(home)


def open_dataset_missing(home: NodeHome) -> bool:
    from insitu.datasets.catalog import Catalog

    with Catalog(home) as catalog:
        return not catalog.datasets()


def test_malformed_number_of_frames_is_quarantined(
    home: NodeHome, series: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pydicom's badVR.dcm has Number of Frames '1A': one bad file is a quarantine with
    its reason, never a traceback, and staging is cleaned."""
    other = tmp_path / "bad"
    other.mkdir()
    shutil.copy(dicom_file("badVR.dcm"), other / "badVR.dcm")
    code, report = run_json(["ingest", str(series), str(other), "--dataset", "f"], capsys)
    assert code == EXIT_QUARANTINED and report["status"] == "published"
    fate = _fates(report)["badVR.dcm"]
    assert fate["fate"] == "quarantined" and "NumberOfFrames" in fate["reason"]
    assert not [p for p in home.staging.iterdir() if not p.name.startswith(".")]


def test_published_pixels_still_match_pydicom_after_single_parse(
    home: NodeHome, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The scan parses each header once and the pixels are attached from the bytes:
    explicit/implicit/big-endian/RLE/deflated inputs still decode exactly as pydicom."""
    names = [
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "image_dfl.dcm",
    ]
    for k, name in enumerate(names):
        folder = tmp_path / f"in{k}"
        folder.mkdir()
        shutil.copy(dicom_file(name), folder / name)
        code, report = run_json(
            ["ingest", str(folder), "--dataset", f"p{k}", "--allow-burned-in"], capsys
        )
        assert code in (0, EXIT_QUARANTINED) and report["status"] == "published", name
        ds = open_dataset(f"p{k}")
        values = ds.image(ds.series.iloc[0]["series_id"]).values
        expected = pydicom.dcmread(dicom_file(name)).pixel_array
        np.testing.assert_array_equal(values[0], expected, err_msg=name)


def _lossy_copy(original: Path, dst: Path, *, linked: bool) -> Path:
    """Another instance at the original's position (as pydicom-data's 693_J2KI): with
    ``linked`` it declares itself a lossy copy naming the original in Source Image Sequence."""
    ds = pydicom.dcmread(original)
    source_uid = ds.SOPInstanceUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    if linked:
        ds.LossyImageCompression = "01"
        ref = pydicom.Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, source_uid
        ds.SourceImageSequence = [ref]
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def test_lossy_copy_beside_its_original_is_skipped_an_unlinked_one_refuses(
    home: NodeHome, series: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = sorted(series.iterdir())[0]
    linked = _lossy_copy(first, tmp_path / "a" / "lossy.dcm", linked=True)
    code, report = run_json(["ingest", str(series), str(linked), "--dataset", "ct"], capsys)
    fates = _fates(report)
    assert code == 0 and report["series_counts"] == {"published": 1, "not_published": 0}
    assert fates["lossy.dcm"]["fate"] == "skipped"
    assert fates["lossy.dcm"]["reason"].startswith(f"a lossy-compressed copy of {first}")
    assert open_dataset("ct").series.iloc[0]["shape"] == (6, 128, 128)
    # the same without the link: two images at one position, the series is refused
    unlinked = _lossy_copy(first, tmp_path / "b" / "other.dcm", linked=False)
    code, report = run_json(["ingest", str(series), str(unlinked), "--dataset", "ct2"], capsys)
    assert code == EXIT_QUARANTINED and report["series_counts"]["published"] == 0
    assert "duplicate slice position" in _fates(report)["other.dcm"]["reason"]
