"""One ingest over every test file of pydicom, pydicom-data and deid-data (issue 15).

These ~280 files were written by others to break DICOM readers: every
transfer syntax, truncated and malformed files, DICOMDIR trees, RT objects,
derived objects, zip archives. The ingest must give each file a fate
(published, skipped, quarantined, refused, held back) with a reason of a
known class, never end in a traceback, and clean its staging.

highdicom's test files live only in its source repository (neither its
wheel nor its sdist ships them), so a copy is vendored under
tests/data/highdicom (MIT, origin in its ORIGIN.md) and ingested too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import zipfile
from pathlib import Path

import pydicom
import pytest

from insitu.cli import main
from insitu.config import NodeHome, init_home
from insitu.errors import EXIT_QUARANTINED

# Every reason the ingest gives starts like one of these (the class of the reason).
REASON_CLASSES = {
    "not-dicom": r"not a DICOM file$",
    "dicomdir": r"DICOMDIR \(a media index",
    "derived": r"a derived object \(DICOM SEG or SR\)",
    "not-image": r"not an image \((SOP class [^)]+|no SOP Class UID), no pixel data\)",
    "truncated": r"truncated( pixel data| or incomplete)?:",
    "corrupt-header": r"(corrupt DICOM header|malformed header|malformed DICOM header):",
    "corrupt-pixels": r"corrupt pixel data:",
    "undecodable": r"pixel data cannot be decoded:",
    "duplicate": (
        r"(the same bytes as|a copy of the same instance|conflicting copy:"
        r"|a lossy-compressed copy of)"
    ),
    "series": r"(series refused:|refused with its series:|one series holds)",
    "held-back": r"(held back|burned|Burned)",
    "no-series-uid": r"no Series Instance UID",
    "deid": r"de-identification",
    "derived-alone": r"nothing to publish for",  # a SEG/SR whose images are not published
    # a SEG/SR refused by the derived-object step (its images are not in the dataset, ...)
    "derived-refused": (
        r"(its subject has no images|its source series is not|it must reference exactly one"
        r"|it measures a series|a SEG frame|the SEG|cannot be read as an SR or SEG"
        r"|modality \S+ is not SR or SEG|not readable DICOM)"
    ),
    "tiled": r"a tiled whole-slide image \(",
    "other": r"cannot be ingested:",
}

# What is known about particular files (file name -> (fate, reason class)).
KNOWN = {
    "CT_small.dcm": ("published", ""),
    "MR_small.dcm": ("published", ""),
    "eCT_Supplemental.dcm": ("published", ""),  # enhanced CT, multi-frame
    "explicit_VR-UN.dcm": ("published", ""),
    "MR_small_RLE.dcm": ("skipped", "duplicate"),  # MR_small.dcm re-encoded: same pixels
    "MR_small_bigendian.dcm": ("skipped", "duplicate"),
    "MR_truncated.dcm": ("quarantined", "truncated"),
    "emri_small_jpeg_2k_lossless_too_short.dcm": ("quarantined", "truncated"),
    "badVR.dcm": ("quarantined", "corrupt-header"),  # Number of Frames '1A'
    "JPEG-lossy.dcm": ("quarantined", "undecodable"),
    "rtplan.dcm": ("quarantined", "not-image"),
    "rtstruct.dcm": ("quarantined", "not-image"),
    "waveform_ecg.dcm": ("quarantined", "not-image"),
    # 4:2:2 subsampled, so 2 bytes a pixel: not truncated, the same pixels as an RGB copy
    "SC_ybr_full_422_uncompressed.dcm": ("skipped", "duplicate"),
    "GREYSCALE_CINE.dcm": ("held-back", "held-back"),  # a zip member (deid-data)
    "DICOMDIR": ("skipped", "dicomdir"),
    # highdicom: a slide's tiles are never stacked as slices; a label map SEG is derived
    "sm_image.dcm": ("quarantined", "tiled"),
    "sm_image_jpegls.dcm": ("quarantined", "tiled"),
    "sm_annotations.dcm": ("quarantined", "not-image"),
    "seg_image_sm_control_labelmap.dcm": ("refused", "derived-refused"),
    "ct_image.dcm": ("skipped", "duplicate"),  # pydicom's CT_small.dcm, re-encoded
    "dx_image.dcm": ("published", ""),
    # a lossy JPEG 2000 derivative of 693_UNCR (its Source Image Sequence) at the same position
    "693_J2KI.dcm": ("skipped", "duplicate"),
    "README.txt": ("skipped", "not-dicom"),
}


def _corpus() -> list[Path]:
    import deid_data
    import pydicom.data

    pydicom_files = Path(pydicom.data.__file__).parent / "test_files"
    data_store = Path(pydicom.data.get_testdata_file("693_UNCR.dcm")).parent
    deid = Path(deid_data.__file__).parent / "data"
    highdicom = Path(__file__).parent / "data" / "highdicom"
    return [pydicom_files, data_store, deid, highdicom]


def _inputs(folders: list[Path]) -> list[str]:
    names = []
    for folder in folders:
        for root, _dirs, files in os.walk(folder):
            for name in files:
                path = Path(root) / name
                if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
                    with zipfile.ZipFile(path) as archive:
                        names += [
                            f"{path}!{m.filename}" for m in archive.infolist() if not m.is_dir()
                        ]
                else:
                    names.append(str(path))
    return names


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = NodeHome(tmp_path_factory.mktemp("corpus") / "home")
    init_home(home, "test-site")
    folders = _corpus()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        args = ["--home", str(home.root), "ingest", *map(str, folders), "--dataset", "corpus"]
        code = main([*args, "--json"])
    return {
        "home": home,
        "code": code,
        "report": json.loads(out.getvalue()),
        "stderr": err.getvalue(),
        "inputs": _inputs(folders),
    }


def _reason_class(reason: str) -> str:
    for name, pattern in REASON_CLASSES.items():
        if re.match(pattern, reason) or (name == "held-back" and re.search(pattern, reason)):
            return name
    return "UNKNOWN"


def test_every_file_has_a_fate_and_no_traceback(corpus: dict) -> None:
    report = corpus["report"]
    assert corpus["code"] == EXIT_QUARANTINED == report["exit_code"]
    assert report["status"] == "published"
    assert "Traceback" not in corpus["stderr"]
    assert sorted(f["file"] for f in report["files"]) == sorted(corpus["inputs"])
    assert {f["fate"] for f in report["files"]} <= {
        "published", "skipped", "quarantined", "refused", "held-back",
    }  # fmt: skip
    published = [f for f in report["files"] if f["fate"] == "published"]
    assert len(published) >= 25 and len(report["series"]) >= 15
    assert report["series_counts"]["published"] == len(report["series"])


def test_every_reason_is_of_a_known_class(corpus: dict) -> None:
    unknown = [
        (Path(f["file"]).name, f["reason"])
        for f in corpus["report"]["files"]
        if f["fate"] != "published" and _reason_class(f["reason"]) == "UNKNOWN"
    ]
    assert unknown == []
    reasons = [f["reason"] for f in corpus["report"]["files"]]
    assert not any("(SOP class )" in r for r in reasons)


def test_known_files_get_their_fate(corpus: dict) -> None:
    by_name: dict[str, list[dict]] = {}
    for f in corpus["report"]["files"]:
        by_name.setdefault(Path(f["file"].split("!")[-1]).name, []).append(f)
    for name, (fate, reason_class) in KNOWN.items():
        for f in by_name[name]:
            got = (f["fate"], _reason_class(f["reason"]) if f["reason"] else "")
            assert got == (fate, reason_class), (f["file"], f["reason"])


def test_quarantine_holds_every_file_not_published_and_staging_is_clean(corpus: dict) -> None:
    report, home = corpus["report"], corpus["home"]
    # a SEG/SR whose images are not published stays where it is, for `insitu ingest-derived`
    held = [
        f
        for f in report["files"]
        if f["fate"] in ("quarantined", "refused", "held-back")
        and _reason_class(f["reason"]) not in ("derived-alone", "derived-refused")
    ]
    reasons = list(Path(report["quarantine"]).glob("*.reason.txt"))
    assert len(reasons) == len(held)
    assert [p for p in home.staging.iterdir() if not p.name.startswith(".")] == []
    # a published copy decodes like pydicom for a file pydicom reads
    from insitu.datasets.reader import open_dataset

    ds = open_dataset("corpus", home=home)
    assert len(ds.series) == len(report["series"])
    assert pydicom.__version__  # the corpus is pydicom's own: its version is in the report
