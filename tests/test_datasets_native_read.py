"""Uncompressed greyscale series are read from their files straight into the volume
(``volume.decode_native_volume``): the same values and dtype as the decoding path
(``decode_volume`` of the attached pixel elements, pydicom's modality LUT), and a
file that changes after the scan is that slice's quarantine, never a wrong volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from fixtures_datasets import dicom_file
from pydicom.pixels.processing import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from insitu.datasets.dicom_pixels import PixelProblem
from insitu.datasets.dicom_read import (
    InputFile,
    Scanned,
    native_pixel_length,
    quiet_pydicom,
    read_full,
    read_pixels_into,
    release_pixels,
    scan_one,
)
from insitu.datasets.ingest import _read_native, _SeriesRefused
from insitu.datasets.volume import decode_native_volume, decode_volume, plan_geometry

ROWS, COLUMNS = 6, 10


def _write_series(
    folder: Path,
    raw: np.ndarray,
    *,
    stored: int,
    slopes: list[float | None],
    intercepts: list[float | None],
    photometric: str = "MONOCHROME2",
    syntax: str = ExplicitVRLittleEndian,
) -> list[Path]:
    """One file per slice of ``raw`` (its dtype says bits and sign), written as stored."""
    folder.mkdir()
    base = pydicom.dcmread(dicom_file("CT_small.dcm"))
    series_uid = generate_uid()
    paths = []
    for k, plane in enumerate(raw):
        ds = base.copy()
        ds.file_meta = base.file_meta.copy()
        ds.file_meta.TransferSyntaxUID = syntax
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = raw.itemsize * 8, stored, stored - 1
        ds.PixelRepresentation = 1 if raw.dtype.kind == "i" else 0
        ds.PhotometricInterpretation = photometric
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        for keyword, value in (("RescaleSlope", slopes[k]), ("RescaleIntercept", intercepts[k])):
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.PixelData = plane.astype(raw.dtype.newbyteorder("<")).tobytes()
        if "DataSetTrailingPadding" in ds:  # the pixel data end the file
            del ds.DataSetTrailingPadding
        path = folder / f"{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian)
        paths.append(path)
    return paths


def _scan(paths: list[Path]) -> list[Scanned]:
    with quiet_pydicom():
        items = [scan_one(InputFile(str(p), str(p))) for p in paths]
    assert all(i.kind == "image" for i in items), [i.reason for i in items]
    return items


def _both(items: list[Scanned]) -> tuple[np.ndarray | None, np.ndarray]:
    geometry = plan_geometry([i.dicom for i in items])
    lengths = [native_pixel_length(i) for i in items]
    direct = decode_native_volume(
        [i.dicom for i in items], geometry, lengths, lambda k, b: read_pixels_into(items[k], b)
    )
    with quiet_pydicom():
        originals = [read_full(i) for i in items]
        decoded = decode_volume(originals, geometry)
        expected = [apply_modality_lut(ds.pixel_array, ds) for ds in originals]
    release_pixels(originals)
    order = [f.obj for f in geometry.order]
    np.testing.assert_array_equal(decoded, np.stack([expected[k] for k in order]))
    return direct, decoded


CASES: dict[str, dict[str, Any]] = {
    "int16, 14 bits stored, CT intercept (in place)": {
        "dtype": np.int16, "stored": 14, "lo": -8192, "hi": 8191,
        "slopes": 1.0, "intercepts": -1024.0,
    },
    "uint16, 12 bits stored, junk in the high bits": {
        "dtype": np.uint16, "stored": 12, "lo": 0, "hi": 65535,
        "slopes": None, "intercepts": None,
    },
    "uint16 with a negative intercept (wider result)": {
        "dtype": np.uint16, "stored": 16, "lo": 0, "hi": 65535,
        "slopes": 1.0, "intercepts": -32768.0,
    },
    "uint8, MONOCHROME1": {
        "dtype": np.uint8, "stored": 8, "lo": 0, "hi": 255,
        "slopes": None, "intercepts": None, "photometric": "MONOCHROME1",
    },
    "int32, slope 2": {
        "dtype": np.int32, "stored": 32, "lo": -1000, "hi": 1000,
        "slopes": 2.0, "intercepts": 5.0,
    },
    "fractional slope (float result)": {
        "dtype": np.int16, "stored": 16, "lo": -100, "hi": 100,
        "slopes": 0.5, "intercepts": 0.25,
    },
    "a different intercept per slice, implicit VR": {
        "dtype": np.int16, "stored": 16, "lo": -3000, "hi": 3000,
        "slopes": 1.0, "intercepts": "per slice", "syntax": ImplicitVRLittleEndian,
    },
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_direct_read_equals_decoding(tmp_path: Path, case: str) -> None:
    spec = dict(CASES[case])
    n = 5
    rng = np.random.default_rng(len(case))
    dtype = np.dtype(spec.pop("dtype"))
    raw = rng.integers(spec.pop("lo"), spec.pop("hi"), (n, ROWS, COLUMNS), endpoint=True)
    raw = raw.astype(dtype)
    slopes, intercepts = spec.pop("slopes"), spec.pop("intercepts")
    per_slice = intercepts == "per slice"
    paths = _write_series(
        tmp_path / "s",
        raw[::-1],  # files in reverse order of position: the volume follows the geometry
        slopes=[slopes] * n,
        intercepts=[float(-10 * k) for k in range(n)] if per_slice else [intercepts] * n,
        **spec,
    )
    direct, decoded = _both(_scan(paths))
    assert direct is not None
    assert direct.dtype == decoded.dtype
    np.testing.assert_array_equal(direct, decoded)


def test_value_shorter_than_the_image_is_left_to_the_decoder(tmp_path: Path) -> None:
    """One byte short passes the scan (odd lengths are padded); the decoding path, not
    the direct read, then handles it."""
    paths = _write_series(
        tmp_path / "s", np.zeros((3, ROWS, COLUMNS), np.uint16), stored=16,
        slopes=[None] * 3, intercepts=[None] * 3,
    )  # fmt: skip
    items = _scan(paths)
    extent = items[1].pixels
    assert extent is not None
    items[1].pixels = type(extent)(
        extent.keyword, extent.vr, extent.start, extent.end - 1, extent.encapsulated
    )
    geometry = plan_geometry([i.dicom for i in items])
    lengths = [native_pixel_length(i) for i in items]
    assert decode_native_volume([i.dicom for i in items], geometry, lengths, _never) is None


def _never(index: int, buffer: memoryview) -> None:
    raise AssertionError("read without need")


def test_file_cut_after_the_scan_is_that_slice_quarantined(tmp_path: Path) -> None:
    paths = _write_series(
        tmp_path / "s", np.ones((4, ROWS, COLUMNS), np.int16), stored=16,
        slopes=[1.0] * 4, intercepts=[0.0] * 4,
    )  # fmt: skip
    items = _scan(paths)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:-7])
    with pytest.raises(PixelProblem, match="the file changed while it was ingested"):
        read_pixels_into(items[2], memoryview(bytearray(ROWS * COLUMNS * 2)))
    with pytest.raises(_SeriesRefused) as refused:
        _read_native(items, plan_geometry([i.dicom for i in items]))
    assert refused.value.culprit is items[2] and refused.value.fate == "quarantined"
    assert "corrupt DICOM: PixelProblem: truncated pixel data" in refused.value.reason


def test_other_series_take_the_decoding_path(tmp_path: Path) -> None:
    """Compressed, multi-frame or colour objects are not read directly."""
    for name in ("MR_small_RLE.dcm", "emri_small.dcm", "SC_rgb.dcm"):
        path = dicom_file(name)
        items = _scan([path])
        geometry = plan_geometry([i.dicom for i in items])
        lengths = [native_pixel_length(i) for i in items]
        assert decode_native_volume([i.dicom for i in items], geometry, lengths, _never) is None


def test_image_attributes_read_once_each_with_defaults_and_reasons() -> None:
    """dicom_pixels reads each image attribute with one lookup: absent or empty values take
    their default, numbers in strings are read, a value that is no whole number is named."""
    from pydicom.dataelem import DataElement
    from pydicom.dataset import Dataset as DicomDataset

    from insitu.datasets.dicom_pixels import image_size_problem, native_length

    ds = DicomDataset()
    assert image_size_problem(ds) == "malformed header: an image of 0 rows or columns"
    ds.Rows, ds.Columns = 4, 6
    assert image_size_problem(ds) == ""
    assert native_length(ds) == 4 * 6 * 2  # 1 frame, 1 sample, 16 bits by default
    ds.NumberOfFrames, ds.BitsAllocated, ds.SamplesPerPixel = " 3 ", 8, None
    assert native_length(ds) == 4 * 6 * 3
    ds.NumberOfFrames = ""
    assert native_length(ds) == 4 * 6
    ds[0x00280008] = DataElement(0x00280008, "LO", "abc")  # NumberOfFrames, not a number
    assert image_size_problem(ds) == "malformed header: NumberOfFrames is 'abc', not a whole number"
