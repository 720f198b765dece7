"""Series geometry: slice order, refusals of inconsistent series, affine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from fixtures_datasets import SeriesFactory, dicom_file

from insitu.datasets.dicom_read import group_series, read_full, scan, walk_inputs
from insitu.datasets.volume import decode_volume, plan_geometry
from insitu.errors import InconsistentSeriesError


def _headers(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]


def test_slices_ordered_by_position_not_instance_number(series_factory: SeriesFactory) -> None:
    folder = series_factory(n=8, step=2.5, shuffle=True)
    headers = _headers(folder)
    geometry = plan_geometry(headers)
    depths = [headers[f.obj].ImagePositionPatient[2] for f in geometry.order]
    assert depths == sorted(depths)
    instance_numbers = [headers[f.obj].InstanceNumber for f in geometry.order]
    assert instance_numbers != sorted(instance_numbers)  # the shuffle mattered
    assert geometry.shape == (8, 128, 128)
    assert geometry.spacing == pytest.approx((2.5, 0.661468, 0.661468))
    volume = decode_volume([pydicom.dcmread(p) for p in sorted(folder.iterdir())], geometry)
    assert volume.dtype == np.int16  # CT in HU
    for k, frame in enumerate(geometry.order):
        ds = pydicom.dcmread(sorted(folder.iterdir())[frame.obj])
        expected = ds.pixel_array.astype(np.int64) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        np.testing.assert_array_equal(volume[k], expected)


def test_oblique_affine_matches_headers(series_factory: SeriesFactory) -> None:
    c, s = np.cos(0.3), np.sin(0.3)
    row = np.array([c, s, 0.0])
    col = np.cross(np.cross(row, [0.0, c, s]), row)
    col /= np.linalg.norm(col)
    orientation = (*row, *col)
    folder = series_factory(n=5, step=3.0, orientation=orientation, origin=(10.0, -20.0, 5.0))
    headers = _headers(folder)
    geometry = plan_geometry(headers)
    affine = geometry.affine
    dy, dx = (float(v) for v in headers[0].PixelSpacing)
    for k, frame in enumerate(geometry.order):
        ipp = np.array([float(v) for v in headers[frame.obj].ImagePositionPatient])
        np.testing.assert_allclose(affine @ [0, 0, k, 1], [*ipp, 1], atol=1e-3)
        # DICOM PS3.3 C.7.6.2.1.1: column i, row j -> IPP + i*dx*row + j*dy*col
        np.testing.assert_allclose(
            affine @ [7, 3, k, 1], [*(ipp + 7 * dx * row + 3 * dy * col), 1], atol=1e-3
        )


@pytest.mark.parametrize(
    ("positions", "reason"),
    [
        ([0, 2.5, 5, 10, 12.5], "1 missing slice"),
        ([0, 2.5, 2.5, 5, 7.5], "duplicate slice position"),
        ([0, 2.5, 5, 8.2, 10.5], "non-uniform slice spacing"),
    ],
)
def test_inconsistent_positions_refused(
    series_factory: SeriesFactory, positions: list[float], reason: str
) -> None:
    folder = series_factory(positions=positions)
    with pytest.raises(InconsistentSeriesError, match=reason):
        plan_geometry(_headers(folder))


def test_mixed_sizes_and_orientations_refused(series_factory: SeriesFactory) -> None:
    folder = series_factory(n=4)
    headers = _headers(folder)
    headers[1].Rows = 64
    with pytest.raises(InconsistentSeriesError, match="mixed image sizes"):
        plan_geometry(headers)
    headers = _headers(folder)
    headers[2].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    with pytest.raises(InconsistentSeriesError, match="mixed image orientations"):
        plan_geometry(headers)


def test_dicomdir_tree_ct2_refused_and_rest_grouped() -> None:
    """pydicom's DICOMDIR test tree: CT2 has non-uniform spacing, DICOMDIRs are skipped."""
    tree = dicom_file("DICOMDIR").parent / "77654033"
    items = list(scan(walk_inputs([dicom_file("DICOMDIR").parent])))
    assert {i.kind for i in items if i.source.name.endswith("DICOMDIR")} == {"skipped"}
    groups = group_series(i for i in items if i.source.name.startswith(str(tree)))
    outcomes = {}
    for uid, members in groups.items():
        folder = Path(members[0].source.name).parent.name
        try:
            plan_geometry([m.header for m in members])
            outcomes[folder] = "ok"
        except InconsistentSeriesError as exc:
            outcomes[folder] = str(exc)
        assert uid
    assert "non-uniform slice spacing" in outcomes["CT2"]
    assert outcomes["CR1"] == "ok"


def test_enhanced_ct_frames_from_functional_groups() -> None:
    path = dicom_file("eCT_Supplemental.dcm")
    items = list(scan(walk_inputs([path])))
    geometry = plan_geometry([items[0].header])
    assert geometry.patient_geometry
    assert geometry.shape == (2, 512, 512)
    assert geometry.spacing[1:] == pytest.approx((0.388672, 0.388672))
    volume = decode_volume([read_full(items[0])], geometry)
    assert volume.dtype == np.int16
    assert volume.min() >= -1024


def test_scan_all_equals_scanning_each_input_alone(tmp_path: Path) -> None:
    """scan_all parses each input while a thread hashes it: the same records, in input
    order, as scan_one of each (images, junk, a truncated file, a broken zip, DICOMDIR),
    with the sha256 of each file's bytes; more inputs than are ever hashed ahead."""
    import hashlib
    import shutil

    from insitu.datasets.dicom_read import HASH_AHEAD, scan_all, scan_one

    inputs = tmp_path / "in"
    inputs.mkdir()
    names = ["CT_small.dcm", "MR_small.dcm", "MR_truncated.dcm", "DICOMDIR", "rtplan.dcm"]
    for k in range(2 * HASH_AHEAD):
        shutil.copy(dicom_file(names[k % len(names)]), inputs / f"{k:02d}-{names[k % 5]}")
    (inputs / "junk.txt").write_text("not DICOM")
    (inputs / "broken.zip").write_bytes(b"PK\x03\x04 and nothing else")
    sources = list(walk_inputs([inputs]))
    alone = [scan_one(s) for s in sources]
    together = list(scan_all(sources))
    fields = [(i.source.name, i.kind, i.reason, i.digest, i.size) for i in together]
    assert fields == [(i.source.name, i.kind, i.reason, i.digest, i.size) for i in alone]
    assert {i.kind for i in together} == {"image", "bad", "skipped"}
    for item in together:
        if item.source.error:
            assert item.digest == ""  # unreadable: nothing was hashed
        else:
            assert item.digest == hashlib.sha256(Path(item.source.path).read_bytes()).hexdigest()
