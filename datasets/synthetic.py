"""A clearly synthetic, LOCAT-like multi-site trial written as CT DICOM.

Modelled on the LOCAT trial design (low-dose versus standard-dose CT in
adolescents and young adults with suspected appendicitis, randomised at
several hospitals): three hospitals, subjects randomised 1:1 to a low-dose or
a standard-dose arm, one contrast-enhanced abdominal CT series per subject, and
a measurement table per site (appendix diameter, diagnosis, arm, scan date).

Nothing here is real: every patient is ``SYNTHETIC^...``, the study
description says so, and the images are a geometric phantom with body wall,
spine, liver, spleen, kidneys, vessels, bowel with air and an appendix that is
dilated (with peri-appendiceal fat stranding) when the subject has
appendicitis. Image noise follows the dose: the low-dose arm gets about twice
the noise SD of the standard arm (a quarter of the dose), scaled by body size
and a per-site scanner factor, so "compare the noise between arms" has an
answer.

The demo writes DICOM so that it runs the real ingest path. Generation is
deterministic for a given :class:`TrialSpec` (same seed, same bytes' content),
and :func:`generate_trial` reuses an existing output with the same spec.

    python -m insitu.datasets.synthetic OUT [--subjects 12] [--size 128] [--slices 40]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from insitu.errors import ConfigError

if TYPE_CHECKING:  # numpy loads where pixels are made: `insitu --help` stays light
    import numpy as np

__all__ = [
    "ARMS",
    "SITES",
    "SubjectTruth",
    "Trial",
    "TrialSpec",
    "generate_trial",
    "phantom_hu",
]

SITES = ("site-a", "site-b", "site-c")
ARMS = ("low-dose", "standard-dose")
STUDY_DESCRIPTION = "insitu synthetic LOCAT-like demo"
TABLE_NAME = "measurements.csv"
MANIFEST_NAME = "manifest.json"
TABLE_COLUMNS = (
    "subject_id",
    "site",
    "arm",
    "age",
    "sex",
    "scan_date",
    "appendix_diameter_mm",
    "diagnosis",
    "ctdi_vol_mgy",
)

# Physical field of view: sizes change the sampling, never the anatomy.
_FOV_MM = 380.0
_COVERAGE_MM = 200.0
# Noise SD (HU) in a uniform organ for an average body at the standard dose;
# a quarter of the dose doubles it (noise ~ 1/sqrt(dose)).
_NOISE_SD = {"standard-dose": 11.0, "low-dose": 22.0}
_CTDI = {"standard-dose": 8.0, "low-dose": 2.0}
_SITE_NOISE = {0: 1.0, 1: 1.12, 2: 0.92}
_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass(frozen=True)
class TrialSpec:
    """What to generate. The defaults are the demo's size (ingests in seconds)."""

    subjects_per_site: int = 12
    size: int = 128  # rows = columns
    slices: int = 40
    seed: int = 2013
    sites: tuple[str, ...] = SITES
    appendicitis_rate: float = 0.4

    def __post_init__(self) -> None:
        if self.subjects_per_site < 2:
            raise ConfigError(
                f"subjects per site must be at least 2 (one per arm), not {self.subjects_per_site}"
            )
        if not 16 <= self.size <= 1024:
            raise ConfigError(f"image size must be 16..1024 pixels, not {self.size}")
        if not 2 <= self.slices <= 1000:
            raise ConfigError(f"slices must be 2..1000, not {self.slices}")
        if not self.sites or len(set(self.sites)) != len(self.sites):
            raise ConfigError(f"sites must be distinct names, not {self.sites!r}")
        if not 0.0 <= self.appendicitis_rate <= 1.0:
            raise ConfigError(f"appendicitis_rate must lie in [0, 1], not {self.appendicitis_rate}")

    @property
    def pixel_spacing_mm(self) -> float:
        return round(_FOV_MM / self.size, 4)  # exactly what the headers say

    @property
    def slice_thickness_mm(self) -> float:
        return round(_COVERAGE_MM / self.slices, 4)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sites"] = list(self.sites)
        return data


@dataclass(frozen=True)
class SubjectTruth:
    """The ground truth of one synthetic subject (the demo's answer key)."""

    site: str
    subject_id: str  # the original (pre-de-identification) Patient ID
    arm: str
    appendicitis: bool
    appendix_diameter_mm: float
    body_scale: float
    noise_sd_hu: float
    age: int
    sex: str
    scan_date: str  # YYYY-MM-DD
    series_dir: str  # relative to the trial folder
    n_slices: int


@dataclass
class Trial:
    """A generated trial on disk: per site a DICOM folder and a measurement table."""

    root: Path
    spec: TrialSpec
    subjects: list[SubjectTruth] = field(default_factory=list)

    def dicom_dir(self, site: str) -> Path:
        return self.root / site / "dicom"

    def table_path(self, site: str) -> Path:
        return self.root / site / TABLE_NAME

    def site_subjects(self, site: str) -> list[SubjectTruth]:
        return [s for s in self.subjects if s.site == site]


# --- the phantom ---------------------------------------------------------


def _ellipsoid(
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    centre: tuple[float, float, float],
    semi: tuple[float, float, float],
) -> np.ndarray:
    return (
        ((x - centre[0]) / semi[0]) ** 2
        + ((y - centre[1]) / semi[1]) ** 2
        + ((z - centre[2]) / semi[2]) ** 2
    ) <= 1.0


def _ellipse(
    x: np.ndarray, y: np.ndarray, centre: tuple[float, float], semi: tuple[float, float]
) -> np.ndarray:
    return ((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2 <= 1.0


def _segment_distance(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, a: np.ndarray, b: np.ndarray
) -> np.ndarray:
    """Distance (mm) of every voxel from the segment a-b (the appendix's axis)."""
    import numpy as np

    ab = b - a
    t = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / float(ab @ ab)
    t = np.clip(t, 0.0, 1.0)
    distance: np.ndarray = np.sqrt(
        (x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2
    )
    return distance


def phantom_hu(
    spec: TrialSpec,
    rng: np.random.Generator,
    *,
    body_scale: float = 1.0,
    appendix_diameter_mm: float = 5.0,
    appendicitis: bool = False,
) -> np.ndarray:
    """A noiseless contrast-enhanced abdominal CT phantom in HU, shape (z, y, x).

    Index 0 along z is the most inferior slice. Coordinates are patient LPS in
    mm (x to the patient's left, y to posterior), so the liver lies at negative
    x and the spine at positive y, as on a real axial CT.
    """
    import numpy as np

    n, m = spec.slices, spec.size
    dx, dz = spec.pixel_spacing_mm, spec.slice_thickness_mm
    xs = (np.arange(m) - (m - 1) / 2) * dx
    zs = (np.arange(n) - (n - 1) / 2) * dz
    # Sparse grids: 2-D structures stay 2-D and broadcast along z.
    z, y, x = np.meshgrid(zs, xs, xs, indexing="ij", sparse=True)
    s = body_scale
    vol = np.full((n, m, m), -1000.0, dtype=np.float32)

    def paint(mask: np.ndarray, hu: float) -> None:
        vol[np.broadcast_to(mask, vol.shape)] = hu

    def box(lo: tuple[float, ...], hi: tuple[float, ...]) -> tuple[slice, slice, slice]:
        """Index ranges (z, y, x) of the voxels inside a physical box (lo, hi are x, y, z)."""
        return (
            slice(*np.searchsorted(zs, [lo[2], hi[2]])),
            slice(*np.searchsorted(xs, [lo[1], hi[1]])),
            slice(*np.searchsorted(xs, [lo[0], hi[0]])),
        )

    def blob(
        centre: tuple[float, float, float], semi: tuple[float, float, float], hu: float
    ) -> None:
        """An ellipsoidal organ, computed only within its bounding box (fast)."""
        lo = tuple(c - r for c, r in zip(centre, semi, strict=True))
        hi = tuple(c + r for c, r in zip(centre, semi, strict=True))
        kz, ky, kx = box(lo, hi)
        mask = _ellipsoid(x[:, :, kx], y[:, ky, :], z[kz], centre, semi) & inside[:, ky, kx]
        vol[kz, ky, kx][mask] = hu

    # Body wall: subcutaneous fat, muscle, then visceral fat inside.
    a, b = 150.0 * s, 110.0 * s
    fat = 12.0 + 14.0 * rng.random() * s
    body = _ellipse(x, y, (0.0, 10.0), (a, b))
    paint(body, -100.0)
    paint(_ellipse(x, y, (0.0, 10.0), (a - fat, b - fat)), 50.0)
    inside = _ellipse(x, y, (0.0, 10.0), (a - fat - 9, b - fat - 9))
    paint(inside, -90.0)

    def organ(mask: np.ndarray, hu: float) -> None:
        paint(mask & inside, hu)

    # Retroperitoneum: paraspinal and psoas muscles, spine, vessels.
    py = b - fat - 25.0
    for side in (-1.0, 1.0):
        organ(_ellipse(x, y, (side * 38.0, py + 5.0), (26.0, 20.0)), 52.0)
        psoas_r = 10.0 + 0.12 * np.clip(-z, 0.0, None)  # psoas widen caudally
        organ(((x - side * 36.0) / psoas_r) ** 2 + ((y - (py - 32.0)) / psoas_r) ** 2 <= 1, 50.0)
    vy = py - 35.0
    organ(_ellipse(x, y, (0.0, vy), (21.0, 18.0)), 800.0)  # vertebral body cortex
    organ(_ellipse(x, y, (0.0, vy), (18.0, 15.0)), 230.0)  # cancellous bone
    organ(_ellipse(x, y, (0.0, vy + 27.0), (14.0, 12.0)), 700.0)  # posterior arch
    organ(_ellipse(x, y, (0.0, vy + 25.0), (8.0, 8.0)), 15.0)  # spinal canal
    organ(_ellipse(x, y, (14.0, vy - 28.0), (10.0, 10.0)) & (z > -40.0), 180.0)  # aorta
    organ(_ellipse(x, y, (-20.0, vy - 26.0), (11.0, 13.0)) & (z > -40.0), 140.0)  # IVC
    # Pelvis: iliac wings and bladder caudally.
    for side in (-1.0, 1.0):
        organ(_ellipse(x, y, (side * 105.0 * s, vy + 5.0), (14.0, 40.0)) & (z < -50.0), 650.0)
    blob((0.0, -40.0, -100.0), (45.0, 35.0, 30.0), 8.0)  # bladder

    # Solid organs (portal venous phase).
    blob((-70.0 * s, 0.0, 95.0), (85.0 * s, 80.0, 75.0), 105.0)  # liver
    blob((90.0 * s, 40.0, 100.0), (32.0, 40.0, 40.0), 112.0)  # spleen
    for side, zc in ((-1.0, 20.0), (1.0, 30.0)):
        blob((side * 68.0 * s, py - 30.0, zc), (26.0, 20.0, 50.0), 170.0)  # kidney
        blob((side * 60.0 * s, py - 34.0, zc), (8.0, 7.0, 20.0), -60.0)  # renal sinus fat

    # Colon (air and stool) framing the abdomen, and small-bowel loops.
    colon_r = 17.0
    cecum = (-80.0 * s, -5.0, -30.0)
    for cx in (-80.0 * s, 85.0 * s):
        tube = _ellipse(x, y, (cx, -5.0), (colon_r, colon_r)) & (z > -30.0) & (z < 55.0)
        organ(tube, 40.0)
        organ(tube & _ellipse(x, y, (cx, -9.0), (colon_r - 4, colon_r - 6)), -950.0)
    transverse = _ellipse(y, z, (-45.0, 55.0), (colon_r, colon_r)) & (np.abs(x) < 85.0 * s)
    organ(transverse, 40.0)
    organ(transverse & _ellipse(y, z, (-49.0, 55.0), (colon_r - 6, colon_r - 4)), -950.0)
    blob(cecum, (22.0, 20.0, 20.0), 35.0)
    for _ in range(22):
        cx = rng.uniform(-55.0, 55.0) * s
        cy = rng.uniform(-75.0, 5.0)
        cz = rng.uniform(-75.0, 40.0)
        r = rng.uniform(9.0, 14.0)
        blob((cx, cy, cz), (r, r, r * 1.8), 42.0)
        blob(
            (cx, cy, cz), (r - 3.0, r - 3.0, r * 1.8 - 3.0), -900.0 if rng.random() < 0.35 else 15.0
        )

    # The appendix: a tube hanging from the cecum into the right lower quadrant.
    base = np.array([cecum[0] + 8.0, cecum[1] - 8.0, cecum[2] - 14.0])
    tip = base + np.array([rng.uniform(5.0, 20.0), rng.uniform(-25.0, -10.0), -55.0])
    radius = appendix_diameter_mm / 2.0
    reach = radius + 9.0
    kz, ky, kx = box(
        tuple(float(v) for v in np.minimum(base, tip) - reach),
        tuple(float(v) for v in np.maximum(base, tip) + reach),
    )
    dist = _segment_distance(x[:, :, kx], y[:, ky, :], z[kz], base, tip)
    near, region = inside[:, ky, kx], vol[kz, ky, kx]
    if appendicitis:  # peri-appendiceal fat stranding
        region[(dist < reach) & (region < -50.0) & near] = -25.0
    region[(dist <= radius) & near] = 85.0 if appendicitis else 45.0  # enhancing wall
    region[(dist <= max(radius - 1.8, 0.6)) & near] = 12.0  # fluid-filled lumen
    return vol


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sd: float) -> np.ndarray:
    """Gaussian noise with a little in-plane correlation (CT noise is not white)."""
    import numpy as np

    noise = rng.standard_normal(shape).astype(np.float32)
    kernel = np.array([0.25, 0.5, 0.25], dtype=np.float32)
    for axis in (1, 2):
        noise = (
            np.roll(noise, 1, axis) * kernel[0]
            + noise * kernel[1]
            + np.roll(noise, -1, axis) * kernel[2]
        )
    return noise * np.float32(sd / float(noise.std()))


# --- the trial -------------------------------------------------------------


def _subject_plan(spec: TrialSpec, site_index: int) -> list[dict[str, Any]]:
    """Block-randomised arms (balanced per site) and each subject's truth."""
    import numpy as np

    rng = np.random.default_rng([spec.seed, site_index, 0])
    n = spec.subjects_per_site
    arms = [ARMS[i % 2] for i in range(n)]
    rng.shuffle(arms)
    plan = []
    start = dt.date(2013, 12, 1) + dt.timedelta(days=int(rng.integers(0, 60)))
    for i in range(n):
        appendicitis = bool(rng.random() < spec.appendicitis_rate)
        diameter = rng.uniform(8.5, 15.0) if appendicitis else rng.uniform(3.5, 6.0)
        plan.append(
            {
                "arm": arms[i],
                "appendicitis": appendicitis,
                "appendix_diameter_mm": round(float(diameter), 1),
                "body_scale": round(float(rng.uniform(0.85, 1.12)), 3),
                "age": int(rng.integers(15, 45)),
                "sex": "F" if rng.random() < 0.5 else "M",
                "scan_date": start + dt.timedelta(days=int(i * 9 + rng.integers(0, 7))),
            }
        )
    return plan


def _site_letter(spec: TrialSpec, site_index: int) -> str:
    name = spec.sites[site_index]
    tail = name.rsplit("-", 1)[-1]
    return tail.upper() if len(tail) == 1 and tail.isalpha() else chr(ord("A") + site_index)


def _write_series(
    path: Path,
    spec: TrialSpec,
    site_index: int,
    subject_id: str,
    subj: dict[str, Any],
    hu: np.ndarray,
) -> None:
    """One CT series, a file per slice, as a scanner would export it."""
    import numpy as np
    from pydicom.dataset import Dataset as DicomDataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    site = spec.sites[site_index]
    key = [str(spec.seed), site, subject_id]
    study_uid = generate_uid(entropy_srcs=[*key, "study"])
    series_uid = generate_uid(entropy_srcs=[*key, "series"])
    frame_uid = generate_uid(entropy_srcs=[*key, "frame"])
    date = subj["scan_date"].strftime("%Y%m%d")
    birth = dt.date(subj["scan_date"].year - subj["age"], 6, 15).strftime("%Y%m%d")
    dx, dz = spec.pixel_spacing_mm, spec.slice_thickness_mm
    x0 = -(spec.size - 1) / 2 * dx
    z0 = -(spec.slices - 1) / 2 * dz
    low = subj["arm"] == "low-dose"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_CT_IMAGE_STORAGE)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = DicomDataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = _CT_IMAGE_STORAGE
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = f"{9 + site_index:02d}{len(subject_id) % 60:02d}00"
    ds.AccessionNumber = f"SYN{site_index}{subject_id[-3:]}"
    ds.Modality = "CT"
    ds.Manufacturer = "insitu synthetic scanner"
    ds.InstitutionName = f"Synthetic Hospital {_site_letter(spec, site_index)}"
    ds.ReferringPhysicianName = "SYNTHETIC^REFERRER"
    ds.StudyDescription = STUDY_DESCRIPTION
    ds.SeriesDescription = f"Abdomen portal venous {subj['arm']} (synthetic)"
    ds.PatientName = f"SYNTHETIC^SUBJECT{subject_id.replace('-', '')}"
    ds.PatientID = subject_id
    ds.PatientBirthDate = birth
    ds.PatientSex = subj["sex"]
    ds.PatientAge = f"{subj['age']:03d}Y"
    ds.PatientComments = "Synthetic phantom subject generated by insitu; not a person."
    ds.ClinicalTrialSponsorName = "insitu synthetic demo"
    ds.ClinicalTrialProtocolID = "LOCAT-LIKE-SYNTHETIC"
    ds.ClinicalTrialSiteID = site
    ds.ClinicalTrialSubjectID = subject_id
    ds.BodyPartExamined = "ABDOMEN"
    ds.SliceThickness = f"{dz:g}"
    ds.SpacingBetweenSlices = f"{dz:g}"
    ds.KVP = "100" if low else "120"
    ds.XRayTubeCurrent = 60 if low else 240
    ds.CTDIvol = _CTDI[subj["arm"]]
    ds.PatientPosition = "FFS"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.FrameOfReferenceUID = frame_uid
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = spec.size
    ds.PixelSpacing = [f"{dx:g}", f"{dx:g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"

    stored = (np.clip(np.rint(hu), -1024, 3071) + 1024).astype(np.uint16)
    path.mkdir(parents=True, exist_ok=True)
    # Files are written superior first, as scanners number them; ingest must
    # order them by position, not by name or Instance Number.
    for number, k in enumerate(range(spec.slices - 1, -1, -1), start=1):
        sop_uid = generate_uid(entropy_srcs=[*key, "sop", str(k)])
        meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = number
        z = z0 + k * dz
        ds.ImagePositionPatient = [f"{x0:.4f}", f"{x0:.4f}", f"{z:.4f}"]
        ds.SliceLocation = f"{z:.4f}"
        ds.PixelData = stored[k].tobytes()
        ds.save_as(path / f"IM{number:04d}.dcm", enforce_file_format=True)


def _spec_matches(root: Path, spec: TrialSpec) -> Trial | None:
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("spec") != spec.as_dict() or not manifest.get("complete"):
        return None
    return Trial(root, spec, [SubjectTruth(**s) for s in manifest["subjects"]])


def generate_trial(
    out: str | Path, spec: TrialSpec | None = None, *, show_progress: bool | None = None
) -> Trial:
    """Write the trial under ``out`` (reused when ``out`` already holds the same spec).

    Layout: ``out/<site>/dicom/<subject>/<series>/IM0001.dcm``,
    ``out/<site>/measurements.csv`` and ``out/manifest.json`` (the spec and
    each subject's ground truth). The manifest is written last, so an
    interrupted run is regenerated from scratch next time.
    """
    import numpy as np

    from insitu.progress import progress

    spec = spec or TrialSpec()
    root = Path(out).expanduser().resolve()
    cached = _spec_matches(root, spec)
    if cached is not None:
        return cached
    (root / MANIFEST_NAME).unlink(missing_ok=True)
    for site in spec.sites:
        shutil.rmtree(root / site, ignore_errors=True)
    trial = Trial(root, spec)
    jobs = [(i, j) for i in range(len(spec.sites)) for j in range(spec.subjects_per_site)]
    plans = [_subject_plan(spec, i) for i in range(len(spec.sites))]
    for site_index, j in progress(
        jobs, total=len(jobs), desc="synthetic trial", enabled=show_progress
    ):
        site = spec.sites[site_index]
        subj = plans[site_index][j]
        subject_id = f"SYN-{_site_letter(spec, site_index)}{j + 1:03d}"
        rng = np.random.default_rng([spec.seed, site_index, j + 1])
        hu = phantom_hu(
            spec,
            rng,
            body_scale=subj["body_scale"],
            appendix_diameter_mm=subj["appendix_diameter_mm"],
            appendicitis=subj["appendicitis"],
        )
        sd = _NOISE_SD[subj["arm"]] * _SITE_NOISE.get(site_index, 1.0) * subj["body_scale"] ** 1.5
        hu += _smooth_noise(rng, hu.shape, sd)
        series_dir = Path(site) / "dicom" / subject_id / "CT-abdomen"
        _write_series(root / series_dir, spec, site_index, subject_id, subj, hu)
        trial.subjects.append(
            SubjectTruth(
                site=site,
                subject_id=subject_id,
                arm=subj["arm"],
                appendicitis=subj["appendicitis"],
                appendix_diameter_mm=subj["appendix_diameter_mm"],
                body_scale=subj["body_scale"],
                noise_sd_hu=round(sd, 2),
                age=subj["age"],
                sex=subj["sex"],
                scan_date=subj["scan_date"].isoformat(),
                series_dir=str(series_dir),
                n_slices=spec.slices,
            )
        )
    for site in spec.sites:
        _write_table(trial, site)
    manifest = {
        "description": STUDY_DESCRIPTION,
        "synthetic": True,
        "spec": spec.as_dict(),
        "subjects": [asdict(s) for s in trial.subjects],
        "complete": True,
    }
    (root / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n")
    return trial


def _write_table(trial: Trial, site: str) -> None:
    """The site's measurement table, as a radiologist's read-out would be exported."""
    import numpy as np

    rng = np.random.default_rng([trial.spec.seed, 99, trial.spec.sites.index(site)])
    path = trial.table_path(site)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(TABLE_COLUMNS)
        for s in trial.site_subjects(site):
            measured = max(2.0, s.appendix_diameter_mm + float(rng.normal(0.0, 0.4)))
            writer.writerow(
                [
                    s.subject_id,
                    site,
                    s.arm,
                    s.age,
                    s.sex,
                    s.scan_date,
                    f"{measured:.1f}",
                    "appendicitis" if s.appendicitis else "no appendicitis",
                    f"{_CTDI[s.arm]:.1f}",
                ]
            )


def add_size_arguments(parser: argparse.ArgumentParser, defaults: TrialSpec | None = None) -> None:
    """The size flags shared by this module's CLI and `insitu demo`."""
    d = defaults or TrialSpec()
    parser.add_argument(
        "--subjects", type=int, default=d.subjects_per_site, help="subjects per site"
    )
    parser.add_argument("--size", type=int, default=d.size, help="rows and columns per slice")
    parser.add_argument("--slices", type=int, default=d.slices, help="slices per series")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (deterministic)")


def spec_from_args(args: argparse.Namespace) -> TrialSpec:
    return TrialSpec(
        subjects_per_site=args.subjects, size=args.size, slices=args.slices, seed=args.seed
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m insitu.datasets.synthetic",
        description="Write a synthetic LOCAT-like three-site CT trial as DICOM.",
    )
    parser.add_argument("out", help="output folder")
    add_size_arguments(parser)
    args = parser.parse_args(argv)
    try:
        trial = generate_trial(args.out, spec_from_args(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(
        f"{trial.root}: {len(trial.subjects)} synthetic subjects at {', '.join(trial.spec.sites)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
