"""Synthetic ophthalmic images written as real DICOM: fundus photographs (OP) and OCT (OPT).

No real eye image may serve as test data (retinal vessels identify a person),
so tests and demos draw their own: a circular field of view on an orange-red
retina, a bright optic disc, a darker macula with its fovea, and a vessel tree
that branches out of the disc (arteries lighter, veins darker). Every subject
gets its own tree from its seed, as every person has their own.

Encodings (what a fundus camera or PACS sends):

- ``jpeg-baseline``: JPEG baseline 8-bit, YBR_FULL_422, encoded by Pillow and
  encapsulated with pydicom (pydicom has no JPEG baseline encoder);
- ``jpeg2000-lossless``: JPEG 2000 lossless, RGB, pydicom's encoder (openjpeg);
- ``rle``: RLE lossless, RGB, pydicom's own encoder;
- ``native``: uncompressed RGB.

OCT volumes are multi-frame Ophthalmic Tomography objects (8-bit grey
B-scans) whose spacing comes from the shared Pixel Measures (Pixel Spacing,
Spacing Between Slices); they have no patient position, as real OCT has not.
"""

from __future__ import annotations

import io
import math
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ENCODINGS",
    "OCT_SOP_CLASS",
    "OP_SOP_CLASS",
    "fundus_image",
    "oct_volume",
    "write_fundus",
    "write_oct",
]

OP_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.5.1"  # Ophthalmic Photography 8 Bit Image
OCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.5.4"  # Ophthalmic Tomography Image
ENCODINGS = ("jpeg-baseline", "jpeg2000-lossless", "rle", "native")


def _branch(
    draw: Any,
    rng: random.Random,
    x: float,
    y: float,
    angle: float,
    length: float,
    width: float,
    colour: tuple[int, int, int],
    depth: int,
) -> None:
    """One vessel segment that wanders, then forks into two thinner ones."""
    points = [(x, y)]
    steps = 6
    for _ in range(steps):
        angle += rng.uniform(-0.25, 0.25)
        x += math.cos(angle) * length / steps
        y += math.sin(angle) * length / steps
        points.append((x, y))
    draw.line(points, fill=colour, width=max(1, round(width)), joint="curve")
    if depth <= 0 or width < 1.2:
        return
    for turn in (-1, 1):
        _branch(
            draw, rng, x, y, angle + turn * rng.uniform(0.3, 0.7), length * rng.uniform(0.6, 0.8),
            width * 0.72, colour, depth - 1,
        )  # fmt: skip


def fundus_image(size: int = 256, *, seed: int = 0, laterality: str = "R") -> np.ndarray:
    """A (size, size, 3) uint8 RGB colour fundus photograph."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)  # noqa: S311 (test pictures, not secrets)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2
    r = np.hypot(xx - c, yy - c) / (size / 2)
    shade = np.clip(1.0 - 0.35 * r**2, 0, 1)
    base = np.stack([200 * shade, 85 * shade, 40 * shade], axis=-1)
    side = 1 if laterality.upper() == "R" else -1
    disc = (c + side * 0.28 * size, c + rng.uniform(-0.04, 0.04) * size)
    macula = (c - side * 0.08 * size, c + rng.uniform(-0.03, 0.03) * size)
    dm = np.hypot(xx - macula[0], yy - macula[1]) / (0.12 * size)
    base *= (1 - 0.35 * np.exp(-(dm**2)))[..., None]  # macula, darkest at the fovea
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for k in range(4):  # two arcades of arteries and veins leave the disc
        up = -1 if k % 2 == 0 else 1
        colour = (150, 30, 20) if k < 2 else (105, 15, 20)
        angle = math.atan2(up * 1.0, -side * rng.uniform(0.3, 0.8))
        _branch(draw, rng, *disc, angle, 0.22 * size, 0.022 * size, colour, depth=4)
    rd = 0.075 * size
    draw.ellipse(
        [disc[0] - rd, disc[1] - rd * 1.1, disc[0] + rd, disc[1] + rd * 1.1],
        fill=(250, 215, 150),
    )
    image = image.filter(ImageFilter.GaussianBlur(0.6))
    out = np.asarray(image).copy()
    out[r > 0.96] = 0  # the camera's circular field of view
    noise = np.random.default_rng(seed).integers(0, 4, out.shape, dtype=np.uint8)
    return np.where(out > 0, np.clip(out.astype(np.int16) + noise, 0, 255), 0).astype(np.uint8)


def oct_volume(
    frames: int = 16, rows: int = 96, columns: int = 128, *, seed: int = 0
) -> np.ndarray:
    """(frames, rows, columns) uint8 B-scans: retinal layers over a foveal pit."""
    rng = np.random.default_rng(seed)
    z, x = np.mgrid[0:frames, 0:columns].astype(np.float64)
    pit = 8 * np.exp(-(((x - columns / 2) / (columns / 8)) ** 2 + ((z - frames / 2) / 4) ** 2))
    top = rows * 0.3 + pit
    volume = np.zeros((frames, rows, columns), dtype=np.float64)
    depth = np.arange(rows, dtype=np.float64)[None, :, None]
    for offset, brightness in ((0, 200), (10, 90), (22, 150), (34, 230)):
        volume += brightness * np.exp(-(((depth - (top[:, None, :] + offset)) / 2.5) ** 2))
    volume += rng.normal(0, 6, volume.shape)
    return np.clip(volume, 0, 255).astype(np.uint8)


def _base(sop_class: Any, modality: str, subject: int, seed: int) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    sop_class = UID(sop_class)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    ds.PatientName = f"Eye^Subject{subject:03d}"
    ds.PatientID = f"EYE-{subject:04d}"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "F" if subject % 2 else "M"
    when = date(2024, 3, 1) + timedelta(days=seed % 300)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = "101500"
    ds.AccessionNumber = f"ACC{seed:06d}"
    ds.InstitutionName = "Synthetic Eye Clinic"
    ds.ReferringPhysicianName = "Doe^John"
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ds.Manufacturer = "insitu synthetic"
    ds.BurnedInAnnotation = "NO"
    ds.ImageLaterality = ds.Laterality = "R"
    return ds


def write_fundus(
    path: Path, *, subject: int = 1, seed: int = 0, encoding: str = "jpeg-baseline",
    size: int = 256, quality: int = 95,
) -> Path:  # fmt: skip
    """One colour fundus photograph (OP) as a DICOM file in ``encoding``."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

    if encoding not in ENCODINGS:
        raise ValueError(f"encoding {encoding!r}: choose one of {', '.join(ENCODINGS)}")
    rgb = fundus_image(size, seed=seed)
    ds = _base(OP_SOP_CLASS, "OP", subject, seed)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "COLOR"]
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelSpacing = ["0.0120", "0.0120"]  # mm at the retina (a 45° camera, ~3 mm/256 px)
    ds.HorizontalFieldOfView = 45
    ds.PhotometricInterpretation = "RGB"
    ds.LossyImageCompression = "00"
    if encoding == "jpeg-baseline":
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality, subsampling=2)
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    else:
        ds.PixelData = rgb.tobytes()
        if encoding == "jpeg2000-lossless":
            ds.compress(JPEG2000Lossless, rgb)
        elif encoding == "rle":
            ds.compress(RLELossless, rgb)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_oct(path: Path, *, subject: int = 1, seed: int = 0, frames: int = 16) -> Path:
    """One OCT volume (OPT, multi-frame) with its spacing in the shared Pixel Measures."""
    from pydicom.dataset import Dataset

    volume = oct_volume(frames, seed=seed)
    ds = _base(OCT_SOP_CLASS, "OPT", subject, seed)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.NumberOfFrames = volume.shape[0]
    ds.Rows, ds.Columns = volume.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    measures = Dataset()
    measures.PixelSpacing = ["0.0039", "0.0469"]  # axial (rows) and lateral (columns) mm
    measures.SliceThickness = "0.1200"
    measures.SpacingBetweenSlices = "0.1200"
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in range(volume.shape[0]):
        content = Dataset()
        content.InStackPositionNumber = k + 1
        content.StackID = "1"
        item = Dataset()
        item.FrameContentSequence = [content]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = volume.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
