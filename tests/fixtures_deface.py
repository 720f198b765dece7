"""Real heads with faces for the defacing tests and bench.

- Colin27 (``ch2.nii.gz``) from Debian's mricron-data (.ci/apt-packages.txt).
- The pydeface mean head (``mean_reg2mean.nii.gz``), a data file of the
  pydeface wheel. pydeface itself needs FSL, so we never install it: the
  wheel is fetched once with ``pip download --no-deps pydeface==2.1.0`` into
  ``.cache/test-data`` (gitignored) and only the data file is read.

Volumes come back in insitu's convention: ``volume[z, y, x]`` with an LPS
affine over (z, y, x) indices. :func:`write_dicom_series` turns one into an
MR series of single-frame DICOM files for ingest-level tests.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
PYDEFACE = "pydeface==2.1.0"
MEAN_HEAD_MEMBER = "pydeface/data/mean_reg2mean.nii.gz"
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "test-data"


def load_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI file as (volume[z, y, x], LPS affine over (z, y, x))."""
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj)
    volume = np.ascontiguousarray(data.transpose(2, 1, 0))
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine  # RAS -> LPS
    affine[:, :3] = affine[:, [2, 1, 0]]
    return volume, affine


def mean_head_path() -> Path:
    target = CACHE / "mean_reg2mean.nii.gz"
    if target.is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = list(CACHE.glob("pydeface-*.whl"))
    if not wheels:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(CACHE),
                PYDEFACE,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        wheels = list(CACHE.glob("pydeface-*.whl"))
        if not wheels:
            pytest.skip(f"cannot download {PYDEFACE} for its mean head: {done.stderr[-300:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        target.write_bytes(wheel.read(MEAN_HEAD_MEMBER))
    return target


@pytest.fixture(scope="session")
def colin27() -> tuple[np.ndarray, np.ndarray]:
    if not COLIN27.is_file():
        pytest.fail(f"{COLIN27} missing: apt-get install mricron-data (.ci/apt-packages.txt)")
    return load_nifti(COLIN27)


@pytest.fixture(scope="session")
def mean_head() -> tuple[np.ndarray, np.ndarray]:
    return load_nifti(mean_head_path())


def write_dicom_series(
    folder: Path,
    volume: np.ndarray,
    affine: np.ndarray,
    *,
    patient_id: str = "HEAD-0001",
    body_part: str = "HEAD",
    modality: str = "MR",
) -> Path:
    """Write ``volume[z, y, x]`` as single-frame DICOM slices (uint16, unsigned)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    col = affine[:3, 2] / np.linalg.norm(affine[:3, 2])  # x index: along a row
    row = affine[:3, 1] / np.linalg.norm(affine[:3, 1])  # y index: down a column
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    data = np.clip(volume, 0, 65535).astype(np.uint16)
    for k in range(volume.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientID = patient_id
        ds.PatientName = "Head^Test"
        ds.PatientBirthDate = "19700101"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate = ds.SeriesDate = "20240102"
        ds.Modality = modality
        ds.BodyPartExamined = body_part
        ds.SeriesDescription = "T1 head"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(c) for c in affine[:3] @ np.array([k, 0, 0, 1.0])]
        ds.ImageOrientationPatient = [float(c) for c in (*col, *row)]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[2])]
        ds.SliceThickness = float(spacing[0])
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.PixelData = data[k].tobytes()
        ds.save_as(folder / f"slice{k:04d}.dcm", enforce_file_format=True)
    return folder
