"""Eye images: synthetic fundus photographs (OP) and OCT (OPT) as real DICOM, ingested
as colour and 3-D images with their spacing, de-identified, never-leave, and viewable."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fixtures_datasets import dicom_file
from PIL import Image
from pydicom.uid import generate_uid

from insitu.config import NodeHome, init_home
from insitu.datasets.ingest import ingest
from insitu.datasets.reader import open_dataset
from insitu.datasets.synthetic_eye import fundus_image, write_fundus, write_oct
from insitu.never_leave import never_leave_reason

ENCODED = ("jpeg-baseline", "jpeg2000-lossless", "rle")
REAL = (
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL (dcmtk)
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG lossless process 14, RGB (GDCM)
    "US1_J2KR.dcm",  # JPEG 2000 lossless, YBR_RCT
)


@pytest.fixture(scope="module")
def eye_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("eye-dicom")
    files = {
        enc: write_fundus(folder / f"fundus-{enc}.dcm", subject=k + 1, seed=k, encoding=enc)
        for k, enc in enumerate(ENCODED)
    }
    files["oct"] = write_oct(folder / "oct.dcm", subject=1, seed=7)
    # Real encoders' colour images from pydicom's test sets (no ophthalmic file exists
    # there), relabelled as fundus photographs; their pixel bytes stay as they were.
    for k, name in enumerate(REAL):
        real = pydicom.dcmread(dicom_file(name))
        real.Modality, real.SOPClassUID = "OP", "1.2.840.10008.5.1.4.1.1.77.1.5.1"
        real.file_meta.MediaStorageSOPClassUID = real.SOPClassUID
        real.BurnedInAnnotation = "NO"
        real.PatientID, real.PatientName = f"EYE-99{k:02d}", "Real^Encoder"
        real.StudyInstanceUID, real.SeriesInstanceUID = generate_uid(), generate_uid()
        real.save_as(folder / f"real-{k}.dcm", enforce_file_format=True)
        files[name] = folder / f"real-{k}.dcm"
    return files


@pytest.fixture(scope="module")
def eye_home(tmp_path_factory: pytest.TempPathFactory, eye_files: dict[str, Path]) -> NodeHome:
    home = NodeHome(tmp_path_factory.mktemp("eye-site") / "home")
    init_home(home, "eye-site")
    report = ingest(list(eye_files.values()), "eyes", home=home, title="Eyes", show_progress=False)
    assert report.status == "published", report.to_json()
    assert report.counts() == {"published": len(eye_files)}, report.to_json()
    return home


def _synthetic_fundus(home: NodeHome) -> str:
    """The series id of a generated fundus (not the relabelled test pattern)."""
    return next(r["series_id"] for r in _by_modality(home)["OP"] if r["spacing"][1] == 0.012)


def _by_modality(home: NodeHome) -> dict[str, list[dict]]:
    ds = open_dataset("eyes", home=home)
    out: dict[str, list[dict]] = {}
    for row in ds.attrs["series"]:
        out.setdefault(row["modality"], []).append(row)
    return out


def test_fundus_photographs_are_colour_images_with_their_spacing(eye_home, eye_files) -> None:
    ds = open_dataset("eyes", home=eye_home)
    rows = _by_modality(eye_home)["OP"]
    assert len(rows) == 6 and all(r["color"] for r in rows)
    decoded = {
        str(pydicom.dcmread(eye_files[k]).PatientID): pydicom.dcmread(eye_files[k]).pixel_array
        for k in (*ENCODED, *REAL)
    }
    seen = set()
    for row in rows:
        image = ds.image(row["series_id"])
        assert image.dims == ("z", "y", "x", "c") and image.sizes["c"] == 3
        assert image.dtype == np.uint8
        values = image.isel(z=0).values
        # the same pixels pydicom decodes from the file (JPEG decoded once, never again)
        match = [pid for pid, px in decoded.items() if px.shape == values.shape
                 and np.array_equal(px, values)]  # fmt: skip
        assert len(match) == 1
        seen.add(match[0])
        if not match[0].startswith("EYE-99"):
            assert row["spacing"][1:] == [0.012, 0.012]  # Pixel Spacing at the retina
    assert len(seen) == 6
    # lossless encodings keep the generator's image exactly
    lossless = pydicom.dcmread(eye_files["rle"]).pixel_array
    assert np.array_equal(lossless, fundus_image(256, seed=2))


def test_oct_is_a_3d_volume_with_its_frame_spacing(eye_home, eye_files) -> None:
    ds = open_dataset("eyes", home=eye_home)
    (row,) = _by_modality(eye_home)["OPT"]
    image = ds.image(row["series_id"])
    assert image.dims == ("z", "y", "x") and image.shape == (16, 96, 128)
    assert row["spacing"] == [0.12, 0.0039, 0.0469]  # Spacing Between Slices, Pixel Spacing
    frames = pydicom.dcmread(eye_files["oct"]).pixel_array
    assert np.array_equal(image.values, frames)


def test_eye_series_are_never_leave_and_deidentified(eye_home) -> None:
    ds = open_dataset("eyes", home=eye_home)
    for row in ds.attrs["series"]:
        assert row["never_leave"] == never_leave_reason(row["modality"])
        assert "identify a person" in row["never_leave"]
        header = ds.header(row["series_id"])
        text = str(header)
        for planted in ("Eye^Subject", "EYE-000", "Synthetic Eye Clinic", "Doe^John", "ACC0"):
            assert planted not in text
        assert header["00080060"]["Value"] == [row["modality"]]  # modality kept
    assert never_leave_reason("CT") == ""
    assert never_leave_reason("", "1.2.840.10008.5.1.4.1.1.77.1.5.2")  # OP 24-bit, no modality


def test_viewer_shows_fundus_in_colour_and_oct_in_grey(eye_home) -> None:
    pytest.importorskip("ipywidgets")
    from insitu.widgets.viewer import SliceViewer

    ds = open_dataset("eyes", home=eye_home)
    rows = _by_modality(eye_home)
    fundus = SliceViewer(ds.image(_synthetic_fundus(eye_home)))
    shown = Image.open(io.BytesIO(bytes(fundus.view.value)))
    assert shown.mode == "RGB"
    pixels = np.asarray(shown.convert("RGB"), dtype=np.int16)
    assert (pixels[..., 0] - pixels[..., 2]).mean() > 40  # a red-orange retina, not grey
    oct_view = SliceViewer(ds.image(rows["OPT"][0]["series_id"]))
    assert Image.open(io.BytesIO(bytes(oct_view.view.value))).mode == "L"
    oct_view.slider.value = 4  # the fourth B-scan (the slider counts from 1)
    assert oct_view.position_mm() == pytest.approx(3 * 0.12, abs=1e-6)


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_a_fundus_photograph_or_oct_scan_is_refused_at_the_airlock(eye_home) -> None:
    from insitu.hub.airlock import Airlock

    ds = open_dataset("eyes", home=eye_home)
    rows = _by_modality(eye_home)
    fundus = ds.image(_synthetic_fundus(eye_home)).isel(z=0).values
    bscan = ds.image(rows["OPT"][0]["series_id"]).isel(z=5).values
    attempts = {
        "fundus.png": fundus,
        "fundus-mirrored.png": fundus[:, ::-1].copy(),
        "fundus-grey.png": np.asarray(Image.fromarray(fundus).convert("L")),
        "vessels-green-channel.png": fundus[..., 1].copy(),
        "bscan.png": bscan,
    }
    with Airlock(eye_home) as airlock:
        for name, pixels in attempts.items():
            request = airlock.submit("ada", _png(pixels), name, purpose="a figure for the paper")
            assert request.status == "fail", (name, request.checks)
            assert "image-resolution" in request.failed_rules or any(
                "provenance" in rule for rule in request.failed_rules
            ), (name, request.failed_rules)


def test_a_resized_or_cropped_fundus_is_refused_by_its_fingerprint(eye_home) -> None:
    """Not the plane's size: the provenance fingerprints recognise the retina."""
    from insitu.hub.airlock import Airlock

    ds = open_dataset("eyes", home=eye_home)
    fundus = ds.image(_synthetic_fundus(eye_home)).isel(z=0).values
    rows, cols = fundus.shape[:2]
    image = Image.fromarray(fundus)
    attempts = {
        "fundus-half.png": np.asarray(image.resize((cols // 2, rows // 2))),
        "fundus-resized-grey.png": np.asarray(
            image.convert("L").resize((cols * 2 // 3, rows // 2))
        ),
        "fundus-centre.png": fundus[rows // 8 : rows * 7 // 8, cols // 8 : cols * 7 // 8].copy(),
    }
    with Airlock(eye_home) as airlock:
        for name, pixels in attempts.items():
            request = airlock.submit("ada", _png(pixels), name, purpose="a figure for the paper")
            assert request.status == "fail", (name, request.checks)
            assert "pixel-provenance" in request.failed_rules, (name, request.failed_rules)


def test_a_never_leave_match_cannot_be_overridden_and_the_attempt_is_audited(eye_home) -> None:
    """Issue 17: the index carries the series' never-leave flag into the finding, and the
    airlock refuses every approval of it (with or without an override), audited."""
    from insitu.audit import AuditLog
    from insitu.disclosure.provenance import FingerprintIndex
    from insitu.errors import NeverLeaveError, PolicyViolationError
    from insitu.hub.airlock import Airlock

    series_id = _synthetic_fundus(eye_home)
    index = FingerprintIndex.for_home(eye_home)
    assert "identify a person" in index.never_leave(series_id)
    fundus = open_dataset("eyes", home=eye_home).image(series_id).isel(z=0).values
    rows, cols = fundus.shape[:2]
    crop = fundus[rows // 6 : rows * 5 // 6, cols // 5 : cols * 4 // 5]
    small = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((150, 110)))
    with Airlock(eye_home) as airlock:
        request = airlock.submit("ada", _png(small), "retina.png", purpose="figure 2")
        assert {"pixel-provenance", "never-leave"} <= set(request.failed_rules), request.checks
        check = next(c for c in request.checks if c["rule"] == "never-leave")
        assert series_id in check["summary"] and "identify a person" in check["summary"]
        for override in ("the ethics board agreed", None):
            with pytest.raises(NeverLeaveError) as refused:
                airlock.approve(request.id, steward="sam", reason="ok", override=override)
            message = str(refused.value)
            assert "\n" not in message and "never-leave" in message and "deny" in message
            assert isinstance(refused.value, PolicyViolationError | PermissionError)
            assert refused.value.http_status == 403  # the REST API's answer
        assert airlock.get(request.id).state == "submitted"
        assert airlock.deny(request.id, steward="sam", reason="retina").state == "denied"
    log = AuditLog(eye_home).entries()
    refusals = [e["details"] for e in log if e["kind"] == "release.override_refused"]
    assert [e["override"] for e in refusals[-2:]] == ["the ethics board agreed", None]
    assert all(e["request"] == request.id and e["rule"] == "never-leave" for e in refusals[-2:])


def test_rebuild_carries_the_never_leave_flag_into_an_older_index(eye_home) -> None:
    import json

    from insitu.datasets.fingerprints import rebuild
    from insitu.disclosure.provenance import FingerprintIndex, fingerprints_dir

    manifest = fingerprints_dir(eye_home) / "index.json"
    data = json.loads(manifest.read_text())
    flagged = set(data.pop("never_leave"))
    assert flagged == {r["series_id"] for rows in _by_modality(eye_home).values() for r in rows}
    manifest.write_text(json.dumps(data))  # an index written before it kept the flag
    assert not FingerprintIndex.for_home(eye_home).never_leave(_synthetic_fundus(eye_home))
    assert rebuild(eye_home).series == 0  # nothing new to fingerprint ...
    index = FingerprintIndex.for_home(eye_home)
    assert {s for s in index.series_ids() if index.never_leave(s)} == flagged  # ... flags back
