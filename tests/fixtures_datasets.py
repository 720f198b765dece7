"""Fixtures for the datasets tests: real DICOM files and series built from them.

Larger series are made from real slices (pydicom's CT_small.dcm, a 128x128
CT slice) with new positions and UIDs, so geometry can be varied on purpose.
"""

from __future__ import annotations

import copy
import io
import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from insitu.cli import main

SeriesFactory = Callable[..., Path]


def dicom_file(name: str) -> Path:
    """A file of pydicom's test set or the pydicom-data wheel."""
    path = get_testdata_file(name)
    assert path is not None, f"test file {name} is not installed (pydicom-data?)"
    return Path(path)


def make_series(
    folder: Path,
    n: int = 12,
    *,
    source: str = "CT_small.dcm",
    step: float = 2.5,
    positions: Sequence[float] | None = None,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    origin: Sequence[float] = (-80.0, -90.0, 30.0),
    patient_id: str = "PAT-0001",
    patient_name: str = "Doe^Jane",
    shuffle: bool = True,
    seed: int = 0,
    vary_pixels: bool = True,
) -> Path:
    """Write a series of ``n`` slices copied from one real slice; returns ``folder``.

    Positions lie along the normal of ``orientation``; instance numbers and
    file names are shuffled so that only the geometry can order the slices.
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(dicom_file(source))
    row, col = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row, col)
    depths = list(positions) if positions is not None else [k * step for k in range(n)]
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    rng = random.Random(seed)
    instance_numbers = list(range(1, len(depths) + 1))
    if shuffle:
        rng.shuffle(instance_numbers)
    pixels = base.pixel_array
    for k, depth in enumerate(depths):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID, ds.StudyInstanceUID = series_uid, study_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName = patient_id, patient_name
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in np.array(origin) + depth * normal]
        ds.InstanceNumber = instance_numbers[k]
        ds.SliceLocation = f"{depth:.4f}"
        if vary_pixels:  # each slice distinct, so a wrong order shows
            ds.PixelData = np.roll(pixels, k, axis=1).astype(pixels.dtype).tobytes()
        ds.save_as(folder / f"img{instance_numbers[k]:04d}.dcm", enforce_file_format=True)
    return folder


@pytest.fixture
def series_factory(tmp_path: Path) -> SeriesFactory:
    """make_series into a fresh folder under tmp_path."""
    counter = iter(range(10_000))

    def factory(**kwargs: object) -> Path:
        return make_series(tmp_path / f"series{next(counter)}", **kwargs)  # type: ignore[arg-type]

    return factory


def run_cli(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``insitu ARGS`` in-process; returns (exit code, stdout, stderr)."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def run_json(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, object]:
    code, out, _err = run_cli([*args, "--json"], capsys)
    return code, json.loads(out)


def tree_bytes(root: Path, skip: Sequence[str] = ()) -> dict[str, bytes]:
    """Every file's bytes under ``root`` (relative path -> bytes)."""
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if not any(rel.startswith(s) for s in skip):
                out[rel] = path.read_bytes()
    return out


def reference_pixels(path: Path) -> np.ndarray:
    """pydicom's own decode with the modality LUT, frames as stored in the file."""
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(io.BytesIO(path.read_bytes()))
    arr = ds.pixel_array
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        return arr
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    transform = None
    if shared is not None and "PixelValueTransformationSequence" in shared:
        transform = shared.PixelValueTransformationSequence[0]
    elif per_frame and "PixelValueTransformationSequence" in per_frame[0]:
        transform = per_frame[0].PixelValueTransformationSequence[0]
    if transform is not None:
        return arr * float(transform.RescaleSlope) + float(transform.RescaleIntercept)
    return apply_modality_lut(arr, ds)
