"""Ingest and read benchmarks (issue 2): insitu vs dcm2niix and vs pydicom.

Builds a trial-sized input from real 512x512 CT slices of the pydicom-data
wheel (each series from one real slice, shifted per slice so that no two
slices are equal), then measures, in one run on this machine:

- ingest time as a whole process (`insitu ingest`) vs `dcm2niix -z y`;
- store size vs the DICOM bytes;
- reading a whole series: insitu (`Dataset.image(...).values`) vs pydicom
  reading the files (dcmread, decode, rescale, sort by position, stack);
- reading one slice (a fresh Dataset each time: open + image + slice);
- the chunk-shape study behind store_write.CHUNK_DEPTH / CHUNK_PLANE.

Only a few distinct real 512x512 CT slices ship in installable packages, so
each series repeats one real slice, shifted by a few pixels per slice and with
independent noise (sd 3 HU) inside the field of view; without the noise,
identical content would flatter compression across slices.

Run: ``.venv/bin/python bench/run.py ingest`` (env BENCH_SERIES, BENCH_SLICES
change the input size; BENCH_KEEP=1 keeps the work folder).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# real 512x512 CT slices (pydicom-data), decoded and written uncompressed like a PACS export
# (bad_sequence.dcm, the third one, is left out: dcm2niix converts only 3 of its slices)
SOURCES = ["693_UNCR.dcm", "explicit_VR-UN.dcm"]


NOISE_SD = 3.0  # raw units (HU): independent per slice, like acquisition noise


def _slice(pixels: np.ndarray, k: int, rng: np.random.Generator, series: int) -> np.ndarray:
    """Slice k of a series: the real slice shifted a little, plus fresh noise inside the
    field of view, so neighbouring slices are alike but never equal (as in a real CT)."""
    shift = (k % 16 + 7 * series, k // 16 + 5 * series)
    shifted = np.roll(pixels, shift, axis=(0, 1)).astype(np.int32)
    inside = shifted > pixels.min()  # outside the reconstruction circle stays padding
    noise = np.rint(rng.normal(0.0, NOISE_SD, pixels.shape)).astype(np.int32)
    shifted[inside] += noise[inside]
    info = np.iinfo(pixels.dtype)
    return np.clip(shifted, info.min, info.max).astype(pixels.dtype)


def build_input(folder: Path, n_series: int, n_slices: int) -> int:
    """Write ``n_series`` CT series of ``n_slices`` slices; returns the DICOM bytes."""
    total = 0
    for s in range(n_series):
        base = pydicom.dcmread(get_testdata_file(SOURCES[s % len(SOURCES)]))
        pixels = base.pixel_array
        base.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        base.PixelData = pixels.tobytes()
        base.PatientID = f"BENCH-{s:03d}"
        base.PatientName = f"Bench^Patient{s}"
        series_uid, study_uid = generate_uid(), generate_uid()
        out = folder / f"series{s:02d}"
        out.mkdir(parents=True)
        rng = np.random.default_rng(s)
        for k in range(n_slices):
            ds = copy.deepcopy(base)
            ds.SeriesInstanceUID, ds.StudyInstanceUID = series_uid, study_uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [-120.0, -110.0, 50.0 - k * 1.25]
            ds.InstanceNumber = int(rng.integers(1, 10_000))
            ds.PixelData = _slice(pixels, k, rng, s).tobytes()
            path = out / f"IM{k:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            total += path.stat().st_size
    return total


CPU: dict[str, float] = {}  # label -> CPU seconds (all threads / child processes)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], env: dict[str, str] | None = None, label: str = "") -> float:
    """Wall seconds of a whole process; its CPU seconds go to CPU[label]."""
    cpu0 = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode not in (0,):
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    if label:
        CPU[label] = _children_cpu() - cpu0
    return took


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _pydicom_series(files: list[Path]) -> np.ndarray:
    """What a researcher does without insitu: read, decode, rescale, order, stack."""
    slices = []
    for f in files:
        ds = pydicom.dcmread(f)
        values = ds.pixel_array.astype(np.int16) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        slices.append((float(ds.ImagePositionPatient[2]), values))
    slices.sort(key=lambda t: t[0])
    return np.stack([v for _, v in slices])


def _median(fn: object, repeat: int, label: str = "") -> float:
    """Median wall seconds; the median CPU seconds (this process, all threads) go to
    CPU[label]: on a machine shared with other jobs, CPU time is the steadier figure."""
    times, cpus = [], []
    for _ in range(repeat):
        cpu0 = time.process_time()
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu0)
    if label:
        CPU[label] = statistics.median(cpus)
    return statistics.median(times)


def chunk_study(volume: np.ndarray, work: Path) -> list[dict[str, object]]:
    """Size and read times of one series for several chunk shapes."""
    import zarr
    from zarr.storage import LocalStore

    from insitu.datasets.store_write import compressor

    rows = []
    rng = np.random.default_rng(0)
    nz, ny, nx = volume.shape
    for chunks in [(1, 512, 512), (4, 256, 256), (8, 256, 256), (16, 128, 128), (32, 64, 64)]:
        path = work / f"chunks-{'x'.join(map(str, chunks))}.zarr"
        start = time.perf_counter()
        array = zarr.create_array(
            LocalStore(path), shape=volume.shape, dtype=volume.dtype, chunks=chunks,
            compressors=compressor(int(np.prod(chunks)) * volume.dtype.itemsize),
            fill_value=0,
        )  # fmt: skip
        array[...] = volume
        write = time.perf_counter() - start
        reader = zarr.open_array(LocalStore(path, read_only=True), mode="r")
        zs = rng.integers(0, nz, 10)
        one_slice = statistics.median(
            _median(lambda z=int(z), r=reader: r[z], 1) for z in zs
        )  # fmt: skip
        p = min(64, nz)
        starts = [(int(rng.integers(0, nz - p + 1)), int(rng.integers(0, ny - p + 1)),
                   int(rng.integers(0, nx - p + 1))) for _ in range(10)]  # fmt: skip
        patch = statistics.median(
            _median(lambda s=s, r=reader, p=p: r[tuple(slice(a, a + p) for a in s)], 1)
            for s in starts
        )
        full = _median(lambda r=reader: r[...], 3)
        rows.append(
            {
                "chunks": "x".join(map(str, chunks)),
                "ratio": _tree_size(path) / volume.nbytes,
                "files": sum(1 for p in path.rglob("*") if p.is_file()),
                "write_s": write,
                "slice_ms": one_slice * 1e3,
                "patch64_ms": patch * 1e3,
                "full_s": full,
            }
        )
    return rows


def main() -> None:
    n_series = int(os.environ.get("BENCH_SERIES", "4"))
    n_slices = int(os.environ.get("BENCH_SLICES", "120"))
    work = Path(tempfile.mkdtemp(prefix="insitu-bench-ingest-"))
    try:
        _main(work, n_series, n_slices)
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


def _main(work: Path, n_series: int, n_slices: int) -> None:
    inputs = work / "dicom"
    dicom_bytes = build_input(inputs, n_series, n_slices)
    print(f"input: {n_series} series x {n_slices} slices of 512x512 CT, "
          f"{dicom_bytes / 1e6:.0f} MB DICOM", flush=True)  # fmt: skip
    home = work / "home"
    env = {**os.environ, "INSITU_HOME": str(home)}
    insitu = str(VENV_BIN / "insitu")
    _run([insitu, "init", "--site", "bench"], env)
    for f in inputs.rglob("*.dcm"):  # warm the page cache for both tools equally
        f.read_bytes()
    t_insitu = _run([insitu, "ingest", str(inputs), "--dataset", "bench", "--json"], env, "ingest")
    # the same ingest in one process (INSITU_INGEST_WORKERS=1), into a second dataset
    one = {**env, "INSITU_INGEST_WORKERS": "1"}
    t_insitu_1 = _run(
        [insitu, "ingest", str(inputs), "--dataset", "bench1", "--json"], one, "ingest_1proc"
    )
    nifti = work / "nifti"
    nifti.mkdir()
    dcm2niix = shutil.which("dcm2niix")
    t_dcm2niix = (
        _run([dcm2niix, "-z", "y", "-b", "n", "-o", str(nifti), str(inputs)], label="dcm2niix")
        if dcm2niix
        else float("nan")
    )
    store = home / "stores" / "bench" / "v1.zarr"
    store_bytes = _tree_size(store)
    level0 = sum(_tree_size(p / "0") for p in (store / "series").iterdir())
    nifti_bytes = _tree_size(nifti)

    from zarr.storage import LocalStore

    from insitu.datasets.reader import Dataset

    dataset = Dataset(LocalStore(store, read_only=True))
    sid = dataset.series.series_id[0]
    files = sorted(inputs.glob("series00/*.dcm"))
    # which stored series is series00? the one whose first slice matches
    reference = _pydicom_series(files)
    for candidate in dataset.series.series_id:
        if np.array_equal(dataset.image(candidate)[0].values, reference[0]):
            sid = candidate
    assert np.array_equal(dataset.image(sid).values, reference), "round trip differs"
    t_pydicom = _median(lambda: _pydicom_series(files), 3, "pydicom")
    # the same series as RLE lossless (archived trial data is often compressed)
    rle = work / "rle"
    rle.mkdir()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(RLELossless, encoding_plugin="pylibjpeg")
        ds.save_as(rle / f.name, enforce_file_format=True)
    rle_files = sorted(rle.iterdir())
    assert np.array_equal(_pydicom_series(rle_files), reference)
    t_pydicom_rle = _median(lambda: _pydicom_series(rle_files), 3, "pydicom_rle")
    # ... and as JPEG 2000 lossless, the usual compressed transfer syntax of archives
    j2k = work / "j2k"
    j2k.mkdir()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        ds.save_as(j2k / f.name, enforce_file_format=True)
    j2k_files = sorted(j2k.iterdir())
    assert np.array_equal(_pydicom_series(j2k_files), reference)
    t_pydicom_j2k = _median(lambda: _pydicom_series(j2k_files), 1, "pydicom_j2k")
    t_read = _median(
        lambda: Dataset(LocalStore(store, read_only=True)).image(sid).values, 3, "insitu_read"
    )
    zs = np.random.default_rng(1).integers(0, n_slices, 20)
    slice_times = []
    for z in zs:
        start = time.perf_counter()
        _ = Dataset(LocalStore(store, read_only=True)).image(sid).isel(z=int(z)).values
        slice_times.append(time.perf_counter() - start)
    t_slice = statistics.median(slice_times)
    image = dataset.image(sid)
    t_slice_open = _median(lambda: image.isel(z=n_slices // 2).values, 10, "slice")

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "input_mb": dicom_bytes / 1e6,
        "ingest_s": t_insitu,
        "dcm2niix_s": t_dcm2niix,
        "ingest_ratio": t_insitu / t_dcm2niix,
        "ingest_1proc_s": t_insitu_1,
        "ingest_1proc_ratio": t_insitu_1 / t_dcm2niix,
        "store_ratio": store_bytes / dicom_bytes,
        "store_ratio_level0": level0 / dicom_bytes,
        "nifti_gz_ratio": nifti_bytes / dicom_bytes,
        "series_read_insitu_s": t_read,
        "series_read_pydicom_s": t_pydicom,
        "series_read_speedup": t_pydicom / t_read,
        "series_read_pydicom_rle_s": t_pydicom_rle,
        "series_read_speedup_vs_rle": t_pydicom_rle / t_read,
        "series_read_pydicom_j2k_s": t_pydicom_j2k,
        "series_read_speedup_vs_j2k": t_pydicom_j2k / t_read,
        "slice_ms_fresh_open": t_slice * 1e3,
        "slice_ms_open_image": t_slice_open * 1e3,
        "cpu_s": CPU,
        "cpu_ingest_ratio": CPU["ingest"] / CPU["dcm2niix"] if "dcm2niix" in CPU else None,
        "cpu_ingest_1proc_ratio": (
            CPU["ingest_1proc"] / CPU["dcm2niix"] if "dcm2niix" in CPU else None
        ),
        "cpu_read_speedup": CPU["pydicom"] / CPU["insitu_read"],
        "cpu_read_speedup_vs_rle": CPU["pydicom_rle"] / CPU["insitu_read"],
        "cpu_read_speedup_vs_j2k": CPU["pydicom_j2k"] / CPU["insitu_read"],
        "load_average": os.getloadavg(),
    }
    print(json.dumps(results, indent=2))
    print("\nchunk study (one series, level 0):")
    study = chunk_study(reference, work)
    print("| chunks | size/raw | files | write s | 1 slice ms | 64^3 patch ms | full s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in study:
        print(
            f"| {row['chunks']} | {row['ratio']:.3f} | {row['files']} | {row['write_s']:.2f} | "
            f"{row['slice_ms']:.1f} | {row['patch64_ms']:.1f} | {row['full_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
