"""Hypothesis: any integer pixel data and rescale round-trips exactly through a store."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pydicom
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from zarr.storage import LocalStore

from insitu.datasets.reader import Dataset
from insitu.datasets.store_write import StoreRoot, write_root_attrs, write_series
from insitu.datasets.volume import decode_volume, plan_geometry


def _slices(pixels: np.ndarray, slope: float, intercept: float) -> list[pydicom.Dataset]:
    out = []
    signed = pixels.dtype.kind == "i"
    for k, plane in enumerate(pixels):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = generate_uid()
        ds.Modality = "CT"
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = plane.dtype.itemsize * 8
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = int(signed)
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.PixelSpacing = [0.5, 0.5]
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.PixelData = plane.tobytes()
        out.append(ds)
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dtype=st.sampled_from([np.uint8, np.int8, np.uint16, np.int16]),
    shape=st.tuples(st.integers(1, 5), st.integers(1, 40), st.integers(1, 40)),
    slope=st.sampled_from([1.0, 2.0, -1.0, 0.5, 0.25, 1.5]),
    intercept=st.sampled_from([0.0, -1024.0, 1000.0, -0.5, 7.25]),
    seed=st.integers(0, 2**32 - 1),
)
def test_values_round_trip_exactly(
    dtype: type, shape: tuple[int, int, int], slope: float, intercept: float, seed: int
) -> None:
    info = np.iinfo(dtype)
    pixels = np.random.default_rng(seed).integers(info.min, info.max, shape, endpoint=True)
    pixels = pixels.astype(dtype)
    objects = _slices(pixels, slope, intercept)
    geometry = plan_geometry(objects)
    volume = decode_volume(objects, geometry)
    reference = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in objects])
    assert np.array_equal(volume.astype(np.float64), reference.astype(np.float64))
    if float(slope).is_integer() and float(intercept).is_integer():
        assert volume.dtype.kind in "iu"  # integers stay integers
        assert volume.dtype.itemsize <= 4
    with tempfile.TemporaryDirectory() as tmp:
        root = StoreRoot(Path(tmp) / "p.zarr")
        row = {"series_id": "s", "subject_id": "x", "study_id": "y", "shape": list(shape)}
        attrs = {**row, "affine": geometry.affine.tolist(), "spacing": list(geometry.spacing)}
        write_series(root, "s", volume, geometry, attrs)
        write_root_attrs(root, {"dataset": "p", "version": "v1", "series": [row]})
        image = Dataset(LocalStore(Path(tmp) / "p.zarr", read_only=True)).image("s")
        stored = image.values
    assert stored.dtype == volume.dtype
    assert np.array_equal(stored, volume)
    np.testing.assert_allclose(image.z.values, 2.0 * np.arange(shape[0]))
