"""Viewer benchmark: latency per slice change, from the local store and through the gate.

    .venv/bin/python bench/run.py viewer        (or: python bench/bench_viewer.py)

Builds a one-site demo (synthetic LOCAT-like CT, real ingest) at two sizes: the
demo's 128x128x40 and a clinical 512x512x100 series, and measures, in one run:

1. the slice viewer's latency per slider move to a slice not seen yet (read the
   plane lazily, window it, encode the PNG), axial and coronal, from the local
   store (what a kernel on the node does);
2. the same through the data gate with the researcher's own token (what a
   kernel in a hosted notebook does), when the hub is in this build;
3. the baseline a researcher would otherwise use: pydicom reading that slice's
   DICOM file and the same windowing and PNG encoding; and reading the whole
   series with pydicom before the first slice can show (what loading a volume
   into a viewer costs).

Latencies are medians (and 90th percentiles) over distinct slices; the PNG
encoding is the same in every row, so the ratios compare the reads.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"demo 128x128x40": (128, 40), "clinical 512x512x100": (512, 100)}
MOVES = 30


def _median_p90(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]


def _viewer_open(image, plane: str) -> float:
    """Seconds to show the first plane (coronal: reads the series into memory once)."""
    from insitu.widgets.viewer import SliceViewer

    start = time.perf_counter()
    SliceViewer(image, plane=plane)
    return time.perf_counter() - start


def _viewer_moves(image, plane: str, moves: int) -> list[float]:
    """Seconds per slider move to a slice the viewer has not shown yet."""
    from insitu.widgets.viewer import PLANES, SliceViewer

    viewer = SliceViewer(image, plane=plane)
    n = int(image.sizes[PLANES[plane][0]])
    order = np.random.default_rng(1).permutation(n)[: min(moves, n - 1)]
    order = [int(k) for k in order if int(k) != viewer.index()]
    times = []
    for k in order:
        start = time.perf_counter()
        viewer.slider.value = k + 1  # 1-based; the observer reads, windows and encodes
        times.append(time.perf_counter() - start)
    return times


def _pydicom_moves(files: list[Path], moves: int) -> list[float]:
    import pydicom

    from insitu.widgets._render import apply_window, gray_png

    order = np.random.default_rng(1).permutation(len(files))[:moves]
    times = []
    for k in order:
        start = time.perf_counter()
        ds = pydicom.dcmread(files[int(k)])
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        gray_png(apply_window(hu, 40, 400), (384, 384))
        times.append(time.perf_counter() - start)
    return times


def _pydicom_volume(files: list[Path]) -> float:
    import pydicom

    start = time.perf_counter()
    slices = [pydicom.dcmread(f) for f in files]
    slices.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    np.stack([d.pixel_array for d in slices])
    return time.perf_counter() - start


def _login_env(root: Path, url: str, home) -> dict[str, str]:
    """Log in as the demo's approved researcher; the environment of their server."""
    import requests

    from insitu.hub.services import load_plan

    password = json.loads((root / "logins.json").read_text())["alice"]
    with requests.Session() as browser:
        browser.get(url + "/hub/login", timeout=60).raise_for_status()
        browser.post(
            url + "/hub/login",
            data={"username": "alice", "password": password, "_xsrf": browser.cookies["_xsrf"]},
            allow_redirects=False,
            timeout=60,
        ).raise_for_status()
        xsrf = [c.value for c in browser.cookies if c.name == "_xsrf"][-1]
        answer = browser.post(
            url + "/hub/api/users/alice/tokens",
            json={"note": "bench", "scopes": ["access:services!service=gate"]},
            headers={"X-XSRFToken": xsrf},
            timeout=60,
        )
        answer.raise_for_status()
    services, _plan = load_plan(home)
    env = {"JUPYTERHUB_API_TOKEN": answer.json()["token"], "INSITU_USER": "alice"}
    for service in services:
        if service.name == "gate":
            env.update(service.user_environment)
    return env


def bench_size(label: str, size: int, slices: int, work: Path) -> list[str]:
    from insitu.datasets.synthetic import TrialSpec
    from insitu.demo import prepare

    spec = TrialSpec(subjects_per_site=2, size=size, slices=slices, sites=("site-a",))
    root = work / label.split()[0]
    setup = prepare(root, spec, quiet=True)
    home = setup.site("site-a").home
    subject = setup.trial.site_subjects("site-a")[0]
    files = sorted((setup.trial.root / subject.series_dir).glob("*.dcm"))
    os.environ["INSITU_HOME"] = str(home.root)
    from insitu.datasets.reader import open_dataset

    ds = open_dataset("locat")
    row = ds.series.iloc[0]
    image = ds.image(row.series_id)
    chunks = [c[0] for c in image.data.chunks]
    rows = []
    local_axial = _median_p90(_viewer_moves(image, "axial", MOVES))
    local_coronal = _median_p90(_viewer_moves(image, "coronal", 10))
    local_coronal_open = _viewer_open(image, "coronal")
    dicom = _median_p90(_pydicom_moves(files, MOVES))
    volume = _pydicom_volume(files)
    rows.append(
        f"| {label} | local store, axial | {local_axial[0] * 1e3:.1f} | "
        f"{local_axial[1] * 1e3:.1f} | {local_axial[0] / dicom[0]:.2f} |"
    )
    rows.append(
        f"| {label} | local store, coronal: first plane (reads the series) | "
        f"{local_coronal_open * 1e3:.1f} (once) | | |"
    )
    rows.append(
        f"| {label} | local store, coronal: next planes | {local_coronal[0] * 1e3:.1f} | "
        f"{local_coronal[1] * 1e3:.1f} | {local_coronal[0] / dicom[0]:.2f} |"
    )
    try:
        from insitu.hub import lifecycle
    except ImportError:
        rows.append(f"| {label} | through the gate | not in this build | | |")
    else:
        state = lifecycle.up(home, port=0, actor="bench")
        saved = dict(os.environ)
        try:
            os.environ.pop("INSITU_HOME")
            os.environ.update(_login_env(root, state.url, home))
            from insitu.kernels.client import open_dataset as open_through_gate

            gated = open_through_gate("locat").image(row.series_id)
            gate_axial = _median_p90(_viewer_moves(gated, "axial", MOVES))
            gate_coronal = _median_p90(_viewer_moves(gated, "coronal", 10))
            gate_coronal_open = _viewer_open(gated, "coronal")
        finally:
            os.environ.clear()
            os.environ.update(saved)
            lifecycle.down(home, actor="bench")
        rows.append(
            f"| {label} | through the gate, axial | {gate_axial[0] * 1e3:.1f} | "
            f"{gate_axial[1] * 1e3:.1f} | {gate_axial[0] / dicom[0]:.2f} |"
        )
        rows.append(
            f"| {label} | through the gate, coronal: first plane (reads the series) | "
            f"{gate_coronal_open * 1e3:.1f} (once) | | |"
        )
        rows.append(
            f"| {label} | through the gate, coronal: next planes | {gate_coronal[0] * 1e3:.1f} | "
            f"{gate_coronal[1] * 1e3:.1f} | {gate_coronal[0] / dicom[0]:.2f} |"
        )
    rows.append(
        f"| {label} | pydicom: read the slice's file | {dicom[0] * 1e3:.1f} | "
        f"{dicom[1] * 1e3:.1f} | 1.00 |"
    )
    rows.append(
        f"| {label} | pydicom: load the series before the first slice | "
        f"{volume * 1e3:.0f} (once) | | |"
    )
    print(f"  {label}: store chunks along z {sorted(set(chunks))}", flush=True)
    return rows


def main() -> None:
    import platform

    print("BENCHMARKS.md section: Viewer (issue 7)")
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {sys.platform}")
    with tempfile.TemporaryDirectory(prefix="insitu-bench-viewer-") as tmp:
        rows = [
            "| series | path | median ms per slice change | p90 ms | ratio vs pydicom slice |",
            "| --- | --- | --- | --- | --- |",
        ]
        for label, (size, slices) in SIZES.items():
            rows.extend(bench_size(label, size, slices, Path(tmp)))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
