"""Defacing: face detection before/after, time per series, brain voxels kept.

Run: ``.venv/bin/python bench/run.py deface`` (results: BENCHMARKS.md, "Defacing").

Heads: Colin27 (Debian mricron-data) and the pydeface mean head (data file of
the pydeface wheel, fetched by pip into .cache/test-data). For each we run
insitu's defacing and, in the same run, the reference implementation
(quickshear 1.2 from PyPI, loaded from its wheel) with the same brain mask,
and the detector (three OpenCV Haar frontal-face cascades) on the skin
rendering before and after.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CASCADES = (
    "haarcascade_frontalface_alt.xml",
    "haarcascade_frontalface_alt2.xml",
    "haarcascade_frontalface_default.xml",
)


def _quickshear_module():
    cache = ROOT / ".cache" / "test-data"
    wheels = list(cache.glob("quickshear-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache),
             "quickshear==1.2.0"],
            check=True,
        )  # fmt: skip
        wheels = list(cache.glob("quickshear-*.whl"))
    sys.path.insert(0, str(wheels[0]))  # a pure-Python wheel imports from the zip
    import quickshear

    return quickshear


def _reference_quickshear(qs, volume, affine, brain) -> tuple[np.ndarray, float]:
    """quickshear 1.2 on our arrays: build NIfTI images in RAS, as its CLI would."""
    import nibabel as nib

    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS
    ras[:, :3] = ras[:, [2, 1, 0]]  # (z, y, x) -> (x, y, z) columns
    anat = nib.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), ras)
    mask = nib.Nifti1Image(brain.transpose(2, 1, 0).astype(np.uint8), ras)
    start = time.perf_counter()
    out = qs.quickshear(anat, mask, buff=10)
    seconds = time.perf_counter() - start
    return np.asanyarray(out.dataobj).transpose(2, 1, 0), seconds


def _detect(volume, affine) -> dict[str, bool]:
    from insitu.datasets.face_check import detect_faces, render_face

    image = render_face(volume, affine, "MR")
    return {c.split("_")[-1][:-4]: detect_faces(image, (c,)).found for c in CASCADES}


def _row(name, method, volume, result_volume, brain, seconds, affine, reference=None) -> str:
    kept = float(np.mean(result_volume[brain] == volume[brain]))
    removed = float(np.mean(result_volume != volume))
    before, after = _detect(volume, affine), _detect(result_volume, affine)
    ref = ""
    if reference is not None:
        ref = f"{np.mean(result_volume[reference] == volume[reference]):.4f}"
    cells = " / ".join(f"{k}: {'yes' if before[k] else 'no'} -> {'yes' if after[k] else 'no'}"
                       for k in before)  # fmt: skip
    return (
        f"| {name} | {method} | {seconds:.2f} | {kept:.4f} | {ref or 'n/a'} | {removed:.3f} "
        f"| {cells} |"
    )


def main() -> None:
    import os

    from fixtures_deface import COLIN27, load_nifti, mean_head_path

    from insitu.datasets.deface import brain_mask, deface

    qs = _quickshear_module()
    heads = [("Colin27 (1 mm)", COLIN27), ("pydeface mean head", mean_head_path())]
    reference_mask = load_nifti(Path("/usr/share/mricron/templates/ch2bet.nii.gz"))[0] > 0
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(
        "| head | method | seconds | brain voxels kept (own mask) | kept (BET reference) "
        "| voxels changed | face found before -> after (alt / alt2 / default) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, path in heads:
        volume, affine = load_nifti(path)
        reference = reference_mask if "Colin" in name else None
        start = time.perf_counter()
        result = deface(volume, affine, "MR")
        seconds = time.perf_counter() - start
        print(_row(name, "insitu", volume, result.volume, result.brain, seconds, affine, reference))
        t0 = time.perf_counter()
        brain = brain_mask(volume, affine, "MR")
        mask_seconds = time.perf_counter() - t0
        sheared, qs_seconds = _reference_quickshear(qs, volume, affine, brain)
        print(
            _row(name, "quickshear 1.2, same mask", volume, sheared, brain,
                 qs_seconds + mask_seconds, affine, reference)
        )  # fmt: skip


if __name__ == "__main__":
    main()
