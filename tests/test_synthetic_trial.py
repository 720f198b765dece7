"""The synthetic LOCAT-like trial: valid CT DICOM, deterministic, dose-dependent noise."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from insitu.datasets.synthetic import (
    ARMS,
    STUDY_DESCRIPTION,
    TrialSpec,
    generate_trial,
    main,
)
from insitu.errors import ConfigError

TINY = TrialSpec(subjects_per_site=4, size=48, slices=6, seed=7)


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory):
    return generate_trial(tmp_path_factory.mktemp("trial"), TINY, show_progress=False)


def _series(path: Path) -> list[pydicom.Dataset]:
    files = [pydicom.dcmread(f) for f in sorted(path.glob("*.dcm"))]
    return sorted(files, key=lambda d: float(d.ImagePositionPatient[2]))


def _hu(slices: list[pydicom.Dataset]) -> np.ndarray:
    return np.stack(
        [d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in slices]
    )


def test_layout_and_manifest(trial) -> None:
    assert len(trial.subjects) == 3 * 4
    for site in ("site-a", "site-b", "site-c"):
        assert trial.dicom_dir(site).is_dir()
        assert trial.table_path(site).is_file()
        arms = [s.arm for s in trial.site_subjects(site)]
        assert sorted(arms) == sorted([ARMS[0], ARMS[1]] * 2), "arms are block-randomised 1:1"
    manifest = json.loads((trial.root / "manifest.json").read_text())
    assert manifest["synthetic"] is True
    assert manifest["spec"] == TINY.as_dict()


def test_dicom_is_a_proper_clearly_synthetic_ct_series(trial) -> None:
    subject = trial.subjects[0]
    slices = _series(trial.root / subject.series_dir)
    assert len(slices) == TINY.slices
    first = slices[0]
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    assert first.file_meta.MediaStorageSOPClassUID == first.SOPClassUID
    assert first.Modality == "CT"
    assert str(first.PatientName).startswith("SYNTHETIC^")
    assert first.PatientID == subject.subject_id
    assert first.StudyDescription == STUDY_DESCRIPTION
    assert first.RescaleIntercept == -1024 and first.RescaleSlope == 1
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert float(first.PixelSpacing[0]) == pytest.approx(TINY.pixel_spacing_mm, rel=1e-5)
    assert float(first.SliceThickness) == pytest.approx(TINY.slice_thickness_mm)
    zs = [float(d.ImagePositionPatient[2]) for d in slices]
    assert np.allclose(np.diff(zs), TINY.slice_thickness_mm)
    assert len({d.SOPInstanceUID for d in slices}) == TINY.slices
    assert len({d.SeriesInstanceUID for d in slices}) == 1
    # Files are numbered superior first: ingest must sort by position.
    assert slices[-1].InstanceNumber == 1
    hu = _hu(slices)
    assert hu.min() >= -1024 and hu.max() > 500  # air outside, bone inside
    assert np.median(hu[:, 0, :]) < -900  # the corners are air


def test_every_subject_has_its_own_uids(trial) -> None:
    uids = {_series(trial.root / s.series_dir)[0].StudyInstanceUID for s in trial.subjects}
    assert len(uids) == len(trial.subjects)


def test_measurement_table_matches_the_truth(trial) -> None:
    with open(trial.table_path("site-b")) as fh:
        rows = list(csv.DictReader(fh))
    truth = {s.subject_id: s for s in trial.site_subjects("site-b")}
    assert [r["subject_id"] for r in rows] == list(truth)
    for row in rows:
        s = truth[row["subject_id"]]
        assert row["arm"] == s.arm
        assert row["diagnosis"] == ("appendicitis" if s.appendicitis else "no appendicitis")
        assert abs(float(row["appendix_diameter_mm"]) - s.appendix_diameter_mm) < 2.5


def test_low_dose_arm_is_noisier(tmp_path: Path) -> None:
    spec = TrialSpec(subjects_per_site=2, size=64, slices=8, seed=3, sites=("site-a",))
    trial = generate_trial(tmp_path, spec, show_progress=False)
    sd = {}
    for s in trial.subjects:
        hu = _hu(_series(trial.root / s.series_dir))[-1]  # top slice: liver
        xs = (np.arange(spec.size) - (spec.size - 1) / 2) * spec.pixel_spacing_mm
        y, x = np.meshgrid(xs, xs, indexing="ij")
        roi = (x + 70 * s.body_scale) ** 2 + y**2 < 20**2
        assert roi.sum() > 20
        sd[s.arm] = float(hu[roi].std())
        assert abs(float(hu[roi].mean()) - 105) < 15, "the liver enhances at ~105 HU"
    assert sd["low-dose"] > 1.4 * sd["standard-dose"]


def test_deterministic_and_cached(tmp_path: Path, trial) -> None:
    again = generate_trial(tmp_path / "again", TINY, show_progress=False)
    a = trial.root / trial.subjects[5].series_dir / "IM0003.dcm"
    b = again.root / again.subjects[5].series_dir / "IM0003.dcm"
    assert a.read_bytes() == b.read_bytes()
    stamp = b.stat().st_mtime_ns
    cached = generate_trial(tmp_path / "again", TINY, show_progress=False)
    assert b.stat().st_mtime_ns == stamp, "same spec: the existing trial is reused"
    assert cached.subjects == again.subjects
    other = generate_trial(tmp_path / "again", TrialSpec(2, 32, 3, seed=8), show_progress=False)
    assert len(other.subjects) == 6 and not (again.root / "site-a/dicom/SYN-A004").exists()


def test_bad_sizes_are_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="subjects per site"):
        TrialSpec(subjects_per_site=1)
    with pytest.raises(ConfigError, match="image size"):
        TrialSpec(size=4)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--subjects", "2", "--size", "24", "--slices", "2"]) == 0
    assert "6 synthetic subjects" in capsys.readouterr().out
    assert main([str(tmp_path), "--size", "2"]) == 78
