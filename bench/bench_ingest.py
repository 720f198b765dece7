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
change the input size; BENCH_KEEP=1 keeps the work folder; BENCH_CODECS=1 adds
the store-size study of the codecs every Zarr v3 reader has).
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
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

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


# Codecs every Zarr v3 reader has (Blosc), at the store's own chunk shape and larger.
# Chunks None: the store's own per level (store_write.chunk_shape: level 0 4x256x256,
# coarser levels whole planes in up to 2 MiB); "16/pyramid": level 0 16x256x256, the
# coarser levels the store's own.
CODEC_STUDY: list[tuple[str, str, int, int, tuple[int, int, int] | str | None]] = [
    ("zstd 1 + byte shuffle (store format 2)", "zstd", 1, 1, (4, 256, 256)),
    ("zstd 1 + bit shuffle (store format 3)", "zstd", 1, 2, None),
    ("zstd 1 + bit shuffle, level 0 deeper", "zstd", 1, 2, "16/pyramid"),
    ("zstd 1 + bit shuffle", "zstd", 1, 2, (4, 256, 256)),
    ("zstd 3 + bit shuffle", "zstd", 3, 2, (4, 256, 256)),
    ("zstd 5 + bit shuffle", "zstd", 5, 2, (4, 256, 256)),
    ("zstd 1 + bit shuffle", "zstd", 1, 2, (16, 256, 256)),
    ("zstd 3 + bit shuffle", "zstd", 3, 2, (16, 256, 256)),
    ("lz4 5 + bit shuffle", "lz4", 5, 2, (4, 256, 256)),
]


def codec_study(store: Path, dicom_bytes: int) -> list[dict[str, object]]:
    """Store size against encoding and decoding cost, for every level of every series.

    Each array is re-encoded chunk by chunk (one Blosc block per chunk, as
    store_write does); decoding is level 0 of the first series in two threads, the
    reader's own path.
    """
    from concurrent.futures import ThreadPoolExecutor

    import zarr
    from numcodecs import Blosc
    from zarr.storage import LocalStore

    from insitu.datasets.store_write import chunk_shape

    root = LocalStore(store, read_only=True)
    arrays: list[tuple[int, np.ndarray]] = []
    for series in sorted(p.name for p in (store / "series").iterdir() if p.is_dir()):
        group = zarr.open_group(root, path=f"series/{series}", mode="r")
        arrays += [(int(name), np.asarray(group[name])) for name in sorted(group.array_keys())]
    rows = []
    for label, cname, level, shuffle, spec in CODEC_STUDY:
        size, encode, first = 0, 0.0, []
        per_level: dict[int, int] = {}
        for i, (k, volume) in enumerate(arrays):
            if isinstance(spec, tuple):
                chunks = spec
            elif spec == "16/pyramid" and k == 0:
                chunks = (16, 256, 256)
            else:
                chunks = tuple(chunk_shape(volume.shape, k, volume.dtype.itemsize))  # type: ignore[assignment]
            codec = Blosc(cname, level, shuffle, blocksize=int(np.prod(chunks)) * 2)
            before = size
            start = time.process_time()
            for z in range(0, volume.shape[0], chunks[0]):
                for y in range(0, volume.shape[1], chunks[1]):
                    for x in range(0, volume.shape[2], chunks[2]):
                        part = volume[z : z + chunks[0], y : y + chunks[1], x : x + chunks[2]]
                        encoded = codec.encode(np.ascontiguousarray(part))
                        size += len(encoded)
                        if i == 0:
                            first.append(encoded)
            encode += time.process_time() - start
            per_level[k] = per_level.get(k, 0) + size - before

        def decode_all(blocks: list[bytes] = first, c: Blosc = codec) -> None:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(c.decode, blocks))

        shown = "x".join(map(str, spec)) if isinstance(spec, tuple) else spec or "store's"
        levels = " / ".join(f"{per_level[k] / dicom_bytes:.4f}" for k in sorted(per_level))
        rows.append({"codec": label, "chunks": shown, "levels": levels,
                     "ratio": size / dicom_bytes, "encode_s": encode,
                     "decode_s": _median(decode_all, REPEAT)})  # fmt: skip
    return rows


REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
FIRST_READ = """
import sys, time
t0 = time.perf_counter()
from zarr.storage import LocalStore
from insitu.datasets.reader import Dataset
ds = Dataset(LocalStore(sys.argv[1], read_only=True))
ds.image(sys.argv[2]).values
t1 = time.perf_counter()
Dataset(LocalStore(sys.argv[1], read_only=True)).image(sys.argv[2]).values
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def _kernel_first_read(kernel: str, store: Path, sid: str) -> tuple[float, float, float]:
    """(kernel start until ready, first read, warm read) in a fresh Jupyter kernel.

    ``insitu`` is the site's kernel (it loads the reading stack while it starts,
    insitu.kernels.preload); ``python3`` is a plain ipykernel, as before.
    The reads are timed inside the kernel, so messaging is not counted.
    """
    from jupyter_client.manager import start_new_kernel

    from insitu.kernels.kernelspec import write_kernelspec

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as share:
        write_kernelspec(Path(share))
        before = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = share  # where jupyter_client looks the spec up
        try:
            manager, client = start_new_kernel(kernel_name=kernel)
        finally:
            if before is None:
                del os.environ["JUPYTER_PATH"]
            else:
                os.environ["JUPYTER_PATH"] = before
    ready = time.perf_counter() - started
    out: list[str] = []

    def collect(msg: dict[str, object]) -> None:
        content = msg.get("content", {})
        if msg.get("msg_type") == "stream" and isinstance(content, dict):
            out.append(str(content.get("text", "")))

    try:
        code = FIRST_READ.replace("sys.argv[1]", repr(str(store))).replace("sys.argv[2]", repr(sid))
        reply = client.execute_interactive(code, timeout=300, output_hook=collect)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    first, warm = (float(v) for v in "".join(out).split())
    return ready, first, warm


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def _timed(fn: object) -> tuple[float, float]:
    cpu0, start = time.process_time(), time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start, time.process_time() - cpu0


def _proc(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall, CPU of the child and its children) of one whole process."""
    cpu0, start = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, _children_cpu() - cpu0


def _codec_decode(store: Path, sid: str) -> np.ndarray:
    """The physical limit: every chunk of level 0 read and decoded by the codec alone
    (numcodecs Blosc, two threads like Zarr), into one preallocated array."""
    from concurrent.futures import ThreadPoolExecutor

    from numcodecs import Blosc

    meta = json.loads((store / "series" / sid / "0" / "zarr.json").read_text())
    shape, chunks = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
    out = np.zeros(shape, dtype=meta["data_type"])
    codec = Blosc()
    base = store / "series" / sid / "0" / "c"

    def one(key: Path) -> None:
        idx = [int(k) for k in key.relative_to(base).parts]
        block = np.frombuffer(codec.decode(key.read_bytes()), dtype=out.dtype).reshape(chunks)
        region = tuple(
            slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, chunks, shape, strict=True)
        )
        out[region] = block[tuple(slice(0, r.stop - r.start) for r in region)]

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, [k for k in base.rglob("*") if k.is_file()]))
    return out


def _patches(reader: object, shape: tuple[int, ...], n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(n):
        z, y, x = (int(rng.integers(0, d - 64 + 1)) for d in shape)
        np.asarray(reader(z, y, x))  # type: ignore[operator]


def _dicom_patch(files: list[Path]) -> object:
    def read(z: int, y: int, x: int) -> np.ndarray:
        return _pydicom_series(files[z : z + 64])[:, y : y + 64, x : x + 64]

    return read


def main() -> None:
    n_series = int(os.environ.get("BENCH_SERIES", "4"))
    n_slices = int(os.environ.get("BENCH_SLICES", "150"))
    work = Path(tempfile.mkdtemp(prefix="insitu-bench-ingest-"))
    try:
        _main(work, n_series, n_slices)
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


def _versions() -> dict[str, str]:
    from importlib import metadata

    dcm2niix = shutil.which("dcm2niix", path=str(VENV_BIN)) or "dcm2niix"
    banner = subprocess.run([dcm2niix, "-v"], capture_output=True, text=True, check=False)
    line = next((ln for ln in banner.stdout.splitlines() if "version" in ln), banner.stdout)
    return {
        "dcm2niix": f"{line.strip()} (pip package {metadata.version('dcm2niix')})",
        **{p: metadata.version(p) for p in ("pydicom", "zarr", "numcodecs", "numpy")},
    }


def _main(work: Path, n_series: int, n_slices: int) -> None:
    inputs = work / "dicom"
    dicom_bytes = build_input(inputs, n_series, n_slices)
    print(f"input: {n_series} series x {n_slices} slices of 512x512 CT, "
          f"{dicom_bytes / 1e6:.0f} MB DICOM; versions {_versions()}", flush=True)  # fmt: skip
    insitu = str(VENV_BIN / "insitu")
    dcm2niix = shutil.which("dcm2niix", path=str(VENV_BIN)) or "dcm2niix"
    for f in inputs.rglob("*.dcm"):  # warm the page cache for both tools equally
        f.read_bytes()
    rows: dict[str, list[tuple[float, float]]] = {
        "insitu": [],
        "dcm2niix -z y": [],
        "dcm2niix -z n": [],
    }
    store = work / "home-0" / "stores" / "bench" / "v1.zarr"
    for k in range(REPEAT):  # interleaved, so that both see the same load
        env = {**os.environ, "INSITU_HOME": str(work / f"home-{k}")}
        _run([insitu, "init", "--site", "bench"], env)
        rows["insitu"].append(_proc([insitu, "ingest", str(inputs), "--dataset", "bench"], env))
        for z in ("y", "n"):
            out = work / f"nifti-{z}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            rows[f"dcm2niix -z {z}"].append(
                _proc([dcm2niix, "-z", z, "-b", "n", "-o", str(out), str(inputs)])
            )
        if k:
            shutil.rmtree(work / f"home-{k}", ignore_errors=True)
        print(f"ingest rep {k}: " + ", ".join(f"{n} {v[-1][0]:.1f}s" for n, v in rows.items()),
              flush=True)  # fmt: skip
    med = {n: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for n, v in rows.items()}  # fmt: skip
    print("\n| ingest, whole process | wall s median (min-max) | CPU s median (min-max) |")
    print("| --- | --- | --- |")
    for name, v in rows.items():
        print(f"| {name} | {_spread([w for w, _ in v])} | {_spread([c for _, c in v])} |")
    for base in ("dcm2niix -z y", "dcm2niix -z n"):
        print(f"insitu / {base}: wall {med['insitu'][0] / med[base][0]:.2f}, "
              f"CPU {med['insitu'][1] / med[base][1]:.2f}")  # fmt: skip
    store_bytes = _tree_size(store)
    level0 = sum(_tree_size(p / "0") for p in (store / "series").iterdir())
    nifti = _tree_size(work / "nifti-y")
    ratio, ratio0, ratio_nii = (b / dicom_bytes for b in (store_bytes, level0, nifti))
    print(f"store / DICOM bytes: {ratio:.3f} (level 0 alone {ratio0:.3f}); "
          f"dcm2niix .nii.gz / DICOM: {ratio_nii:.3f}")  # fmt: skip

    from zarr.storage import LocalStore

    from insitu.datasets.reader import Dataset

    dataset = Dataset(LocalStore(store, read_only=True))
    files = sorted(inputs.glob("series00/*.dcm"))
    reference = _pydicom_series(files)
    sid = next(c for c in dataset.series.series_id
               if np.array_equal(dataset.image(c)[0].values, reference[0]))  # fmt: skip
    assert np.array_equal(dataset.image(sid).values, reference), "round trip differs"
    assert np.array_equal(_codec_decode(store, sid), reference), "codec decode differs"
    reads = {
        "insitu: Dataset(store).image(s).values (warm)": lambda: (
            Dataset(LocalStore(store, read_only=True)).image(sid).values
        ),
        "codec alone: Blosc decode of the same chunks": lambda: _codec_decode(store, sid),
        "pydicom: dcmread + rescale + sort + stack": lambda: _pydicom_series(files),
    }
    timings: dict[str, list[tuple[float, float]]] = {n: [] for n in reads}
    for _ in range(REPEAT):
        for name, fn in reads.items():
            timings[name].append(_timed(fn))
    print(f"\n| whole series read ({n_slices} x 512 x 512) | wall s median (min-max) | CPU s |")
    print("| --- | --- | --- |")
    for name, v in timings.items():
        print(f"| {name} | {_spread([w for w, _ in v])} | {_spread([c for _, c in v])} |")
    m = {n: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
         for n, v in timings.items()}  # fmt: skip
    ins, codec, pyd = (m[n] for n in reads)
    print(f"insitu / codec alone: wall {ins[0] / codec[0]:.2f}, CPU {ins[1] / codec[1]:.2f}; "
          f"pydicom / insitu: wall {pyd[0] / ins[0]:.2f}, CPU {pyd[1] / ins[1]:.2f}")  # fmt: skip
    firsts, warms = [], []
    for _ in range(REPEAT):
        proc = subprocess.run([sys.executable, "-c", FIRST_READ, str(store), sid],
                              capture_output=True, text=True, check=True)  # fmt: skip
        first, warm = (float(v) for v in proc.stdout.split())
        firsts.append(first)
        warms.append(warm)
    extra = [f - w for f, w in zip(firsts, warms, strict=True)]
    print(f"fresh process: first read {_spread(firsts)} s, warm read {_spread(warms)} s, "
          f"first - warm {_spread(extra)} s")  # fmt: skip
    kernels: dict[str, list[tuple[float, float, float]]] = {"insitu": [], "python3": []}
    for _ in range(REPEAT):  # interleaved: the site kernel, then a plain ipykernel
        for name, runs in kernels.items():
            runs.append(_kernel_first_read(name, store, sid))
    print("\n| fresh Jupyter kernel | start until ready s | first read s | warm read s | "
          "first - warm s | start + first read s |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for name, runs in kernels.items():
        ready, first, warm = ([r[i] for r in runs] for i in range(3))
        print(f"| {name} | {_spread(ready)} | {_spread(first)} | {_spread(warm)} | "
              f"{_spread([f - w for f, w in zip(first, warm, strict=True)])} | "
              f"{_spread([r + f for r, f in zip(ready, first, strict=True)])} |")  # fmt: skip
    image = Dataset(LocalStore(store, read_only=True)).image(sid)
    shape = image.shape
    n_patch = 10
    patch = {
        "store": lambda: _patches(lambda z, y, x: image[z:z+64, y:y+64, x:x+64].values,
                                  shape, n_patch, 7),
        "dicom": lambda: _patches(_dicom_patch(files), shape, n_patch, 7),
    }  # fmt: skip
    ptimes: dict[str, list[tuple[float, float]]] = {n: [] for n in patch}
    for _ in range(REPEAT):
        for name, fn in patch.items():
            ptimes[name].append(_timed(fn))
    rate = {n: [n_patch / w for w, _ in v] for n, v in ptimes.items()}
    cpu_rate = {n: [n_patch / c for _, c in v] for n, v in ptimes.items()}
    wall_ratio = statistics.median(rate["store"]) / statistics.median(rate["dicom"])
    cpu_ratio = statistics.median(cpu_rate["store"]) / statistics.median(cpu_rate["dicom"])
    print(f"random 64^3 patches per second: store {_spread(rate['store'])}, "
          f"DICOM files {_spread(rate['dicom'])}; ratio wall {wall_ratio:.1f}, "
          f"CPU {cpu_ratio:.1f}")  # fmt: skip
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {os.getloadavg()}")  # fmt: skip
    if os.environ.get("BENCH_CODECS") == "1":
        print("\ncodec study (all levels of every series; decode: level 0 of one series):")
        print("| codec | chunks | store / DICOM | per level | encode CPU s | decode s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for row in codec_study(store, dicom_bytes):
            print(f"| {row['codec']} | {row['chunks']} | {row['ratio']:.3f} | {row['levels']} | "
                  f"{row['encode_s']:.2f} | {row['decode_s']:.3f} |")  # fmt: skip
    if os.environ.get("BENCH_CHUNKS") == "1":
        print("\nchunk study (one series, level 0):")
        print("| chunks | size/raw | files | write s | 1 slice ms | 64^3 patch ms | full s |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for row in chunk_study(reference, work):
            print(
                f"| {row['chunks']} | {row['ratio']:.3f} | {row['files']} | "
                f"{row['write_s']:.2f} | {row['slice_ms']:.1f} | {row['patch64_ms']:.1f} | "
                f"{row['full_s']:.2f} |"
            )


if __name__ == "__main__":
    main()
