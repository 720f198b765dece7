"""DICOM SR (TID 1500) and SEG made by highdicom from real slices join their dataset."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fixtures_datasets import make_series, run_cli
from pydicom.sr.codedict import codes

from insitu.datasets.catalog import Catalog
from insitu.datasets.deid import Deidentifier
from insitu.datasets.derived import SR_TABLE
from insitu.datasets.ingest import ingest
from insitu.datasets.reader import open_dataset


def sources(folder: Path) -> list[pydicom.Dataset]:
    files = [pydicom.dcmread(p) for p in folder.glob("*.dcm")]
    return sorted(files, key=lambda d: float(d.ImagePositionPatient[2]))


def make_seg(images, mask, path: Path) -> Path:
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=label,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for n, label, kind in ((1, "tumour", codes.SCT.Tumor), (2, "organ", codes.SCT.Organ))
    ]
    seg = hd.seg.Segmentation(
        source_images=images, pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=100,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="insitu tests",
        manufacturer_model_name="tests", software_versions="1", device_serial_number="1",
        series_description="Tumour seg",
    )  # fmt: skip
    seg.save_as(path)
    return path


def make_sr(images, path: Path, diameter: float = 12.5) -> Path:
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name="Reader^One"
        ),
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="lesion 1"),
        finding_type=codes.SCT.Tumor,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(images[2])],
        measurements=[
            hd.sr.Measurement(name=codes.SCT.Diameter, value=diameter, unit=codes.UCUM.Millimeter)
        ],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=images, content=report, series_number=101, series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="insitu tests",
    )  # fmt: skip
    sr.save_as(path)
    return path


@pytest.fixture
def trial(home, tmp_path):
    folder = make_series(tmp_path / "ct", n=6, patient_id="PAT-SEG")
    assert ingest([folder], "trial", home=home).exit_code == 0
    return home, sources(folder)


def test_seg_and_sr_join_their_series(trial, tmp_path, capsys):
    home, images = trial
    mask = np.zeros((len(images), images[0].Rows, images[0].Columns), dtype=np.uint8)
    mask[1:4, 40:80, 50:90] = 1
    mask[3:5, 10:20, 10:20] = 2
    seg = make_seg(images, mask, tmp_path / "seg.dcm")
    sr = make_sr(images, tmp_path / "sr.dcm")
    code, out, err = run_cli(["ingest-derived", "trial", str(seg), str(sr)], capsys)
    assert code == 0, err
    assert "1 SR measurements, 1 label volumes" in out
    ds = open_dataset("trial", home=home)
    series_id = ds.series["series_id"][0]
    deid = Deidentifier(home.site_key())
    assert series_id == deid.uid(str(images[0].SeriesInstanceUID))
    # SEG: a label volume on the series grid, aligned with the image
    labels = ds.labels(series_id)
    image = ds.image(series_id)
    assert labels.shape == image.shape
    for dim in ("z", "y", "x"):
        assert np.array_equal(labels[dim].values, image[dim].values)
    # slices stored by position: the mask's slice k is at images[k]'s position
    z_of = {round(float(d.ImagePositionPatient[2]), 3): k for k, d in enumerate(images)}
    values = labels.values
    for z_index in range(values.shape[0]):
        position = float(np.asarray(image.attrs["affine"]) @ [0, 0, z_index, 1] @ [0, 0, 1, 0])
        k = z_of[round(position, 3)]
        assert np.array_equal(values[z_index], mask[k])
    segments = {s["number"]: s["label"] for s in labels.attrs["segments"]}
    assert segments == {1: "tumour", 2: "organ"}
    assert labels.attrs["seg_id"] == deid.uid(str(pydicom.dcmread(seg).SOPInstanceUID))
    # SR: one row, keyed like the images
    table = ds.tables[SR_TABLE]
    assert len(table) == 1
    row = table.iloc[0]
    assert row["series_id"] == series_id
    assert row["subject_id"] == ds.series["subject_id"][0]
    assert row["measurement"] == "Diameter" and row["value"] == 12.5 and row["unit"] == "mm"
    assert row["finding"] == "Tumor" and row["tracking_id"] == "lesion 1"
    # the same objects again publish nothing new
    code, out2, err = run_cli(["ingest-derived", "trial", str(seg), str(sr), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out2)["version"] == ds.version
    # the earlier version is untouched; nothing identifying was published
    assert ds.version != open_dataset("trial", version="v1", home=home).version
    published = b"".join(p.read_bytes() for p in home.stores.rglob("*") if p.is_file())
    for secret in (b"PAT-SEG", b"Reader^One", str(images[0].SeriesInstanceUID).encode()):
        assert secret not in published


def test_foreign_and_off_grid_objects_refused(trial, tmp_path, capsys):
    home, images = trial
    other = sources(make_series(tmp_path / "other", n=6, patient_id="PAT-OTHER", seed=3))
    foreign = make_sr(other, tmp_path / "foreign.dcm")
    code, _out, err = run_cli(["ingest-derived", "trial", str(foreign)], capsys)
    assert code == 1 and "foreign.dcm: its subject has no images in this dataset" in err
    assert "PAT-OTHER" not in err
    # a SEG whose frames sit between the slices is refused, never resampled
    shifted = []
    for d in images:
        d = pydicom.dcmread(d.filename)
        d.ImagePositionPatient = [*d.ImagePositionPatient[:2], d.ImagePositionPatient[2] + 1.0]
        shifted.append(d)
    mask = np.zeros((len(images), images[0].Rows, images[0].Columns), dtype=np.uint8)
    mask[2, 5:9, 5:9] = 1
    off = make_seg(shifted, mask, tmp_path / "off.dcm")
    good = make_sr(images, tmp_path / "good.dcm", diameter=7.0)
    code, out, _err = run_cli(["ingest-derived", "trial", str(off), str(good)], capsys)
    assert code == 1
    assert "refused off.dcm: SEG frame 1 does not lie on a slice" in out
    ds = open_dataset("trial", home=home)
    assert list(ds.tables[SR_TABLE]["value"]) == [7.0]
    with pytest.raises(KeyError, match="no label volumes"):
        ds.labels(ds.series["series_id"][0])


def test_plain_ingest_adds_derived_objects_to_their_images(home, tmp_path):
    """A folder (or a PACS pull, or a C-STORE batch) with images, SEG and SR in one go."""
    folder = make_series(tmp_path / "ct", n=4, patient_id="PAT-D")
    images = sources(folder)
    mask = np.zeros((len(images), images[0].Rows, images[0].Columns), dtype=np.uint8)
    mask[1, 3:9, 3:9] = 1
    make_seg(images, mask, folder / "seg.dcm")
    make_sr(images, folder / "sr.dcm")
    report = ingest([folder], "mixed", home=home)
    assert report.exit_code == 0
    fates = {f.file.rsplit("/", 1)[-1]: f for f in report.files}
    for name in ("seg.dcm", "sr.dcm"):
        assert fates[name].fate == "published"
        assert fates[name].reason == "SR/SEG added in v1"
    # one command, one version: the images and their derived objects together
    assert report.version == "v1"
    with Catalog(home) as catalog:
        assert [v["version"] for v in catalog.versions("mixed")] == ["v1"]
        assert [t["name"] for t in catalog.tables("mixed", "v1")] == [SR_TABLE]
        assert catalog.provenance("mixed", "v1")["inputs"]["published_files"] == 6
    ds = open_dataset("mixed", home=home)
    assert ds.version == "v1"
    series_id = ds.series["series_id"][0]
    assert int(ds.labels(series_id).sum()) == 36
    assert list(ds.tables[SR_TABLE]["series_id"]) == [series_id]
    # the same folder again: nothing new
    again = ingest([folder], "mixed", home=home)
    assert again.status == "unchanged" and again.version == "v1"
    with Catalog(home) as catalog:
        assert [v["version"] for v in catalog.versions("mixed")] == ["v1"]


def test_a_refused_derived_object_leaves_one_version_of_the_images(home, tmp_path):
    folder = make_series(tmp_path / "ct", n=4, patient_id="PAT-E")
    other = sources(make_series(tmp_path / "other", n=4, patient_id="PAT-F"))
    mask = np.zeros((len(other), other[0].Rows, other[0].Columns), dtype=np.uint8)
    mask[1, 3:9, 3:9] = 1
    make_seg(other, mask, folder / "foreign-seg.dcm")
    report = ingest([folder], "alone", home=home)
    fates = {f.file.rsplit("/", 1)[-1]: f for f in report.files}
    assert fates["foreign-seg.dcm"].fate == "refused"
    assert "subject has no images" in fates["foreign-seg.dcm"].reason
    assert report.version == "v1"
    with Catalog(home) as catalog:
        assert [v["version"] for v in catalog.versions("alone")] == ["v1"]
        assert catalog.tables("alone", "v1") == []
