"""Gate benchmark: reading a whole series through the data gate vs from disk.

    .venv/bin/python bench/run.py gate          (or: python bench/bench_gate.py)

Builds a throwaway node home with one CT-like series (chunked and compressed
as `insitu ingest` writes it), starts a real hub (`insitu up` machinery), and
measures, in one run:

1. a whole series read with zarr from a ``LocalStore`` (what the node does) vs
   through a ``GateStore`` (what a researcher's kernel does); ratio gate/disk;
2. the same with raw key reads (no decompression): the gate's worst case;
3. 20 concurrent readers through the gate, each with their own token and
   approval: errors and fair share (slowest / fastest reader);
4. time from `up` to a hub that answers, and from a spawn request to a ready
   user server.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SHAPE = (96, 512, 512)  # int16: 48 MiB raw, the size of a modest CT series
READERS = 20


def _volume() -> np.ndarray:
    """Smooth, CT-like values (air, soft tissue, bone) with noise: compresses like CT."""
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    r = np.sqrt(((y - 256) / 200.0) ** 2 + ((x - 256) / 160.0) ** 2)
    body = np.where(r < 1, 40, -1000).astype(np.int16)
    bone = np.where(r < 0.25, 700, 0).astype(np.int16)
    noise = rng.normal(0, 12, SHAPE).astype(np.int16)
    return (body + bone + noise + (z % 7)).astype(np.int16)


def _publish(home) -> Path:
    import zarr

    from insitu.datasets.catalog import Catalog
    from insitu.datasets.store_write import chunk_shape, compressor

    path = home.stores / "bench" / "v1.zarr"
    root = zarr.open_group(zarr.storage.LocalStore(path), mode="w", zarr_format=3)
    root.attrs["insitu"] = {"dataset": "bench", "version": "v1", "series": []}
    group = root.require_group("series").require_group("s1")
    arr = group.create_array(
        "0", shape=SHAPE, dtype="int16", chunks=chunk_shape(SHAPE), compressors=compressor()
    )
    arr[...] = _volume()
    sums = {}
    for f in path.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            sums[f.relative_to(path).as_posix()] = (hashlib.sha256(data).hexdigest(), len(data))
    with Catalog(home) as catalog:
        catalog.add_pending(
            dataset="bench", version="v1", title="bench", citation="", fingerprint="bench",
            staging=path, subjects=[], studies=[], series=[], checksums=sums, provenance={},
        )  # fmt: skip
        catalog.mark_published("bench", "v1")
    return path


REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))


def _interleaved(fns: dict, repeat: int = REPEAT) -> dict[str, list[float]]:
    """Wall seconds of each function, ``repeat`` times, interleaved so that every
    function sees the same load (the machine is shared)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    import requests
    import zarr

    from insitu.config import NodeHome, init_home
    from insitu.hub import access, lifecycle
    from insitu.hub.accounts import AccountStore
    from insitu.hub.services import load_plan
    from insitu.kernels.gate_store import GateStore
    from insitu.net import free_port

    tmp = Path(tempfile.mkdtemp(prefix="insitu-bench-gate-"))
    home = NodeHome(tmp / "home")
    init_home(home, "bench")
    store_path = _publish(home)
    names = [f"r{i:02d}" for i in range(READERS)]
    with AccountStore(home) as accounts:
        accounts.add("steward", "steward", "bench-password", actor="bench")
        for name in names:
            accounts.add(name, "researcher", "bench-password", actor="bench")
    for name in names:
        req = access.request(home, name, "bench", "benchmark", "bench", 1)
        access.approve(home, "steward", req.id, "benchmark")

    t0 = time.perf_counter()
    state = lifecycle.up(home, port=free_port(), actor="bench")
    up_seconds = time.perf_counter() - t0
    try:
        tokens = {}
        for name in names:
            lifecycle.hub_api(home, "POST", f"/users/{name}")
            tokens[name] = lifecycle.hub_api(home, "POST", f"/users/{name}/tokens", {})["token"]
        services, _ = load_plan(home)
        gate = next(s for s in services if s.name == "gate")
        gate_url = gate.url + gate.prefix

        local = zarr.open_array(
            zarr.storage.LocalStore(store_path, read_only=True), path="series/s1/0", mode="r"
        )
        remote = zarr.open_array(
            GateStore("bench", url=gate_url, token=tokens["r00"]), path="series/s1/0", mode="r"
        )
        assert np.array_equal(local[...], remote[...])
        reads = _interleaved({"disk": lambda: local[...], "gate": lambda: remote[...]})
        t_disk, t_gate = (statistics.median(reads[n]) for n in ("disk", "gate"))
        raw_mib = SHAPE[0] * SHAPE[1] * SHAPE[2] * 2 / 2**20

        keys = sorted(
            p.relative_to(store_path).as_posix()
            for p in (store_path / "series" / "s1" / "0").rglob("*")
            if p.is_file()
        )
        stored = sum((store_path / k).stat().st_size for k in keys)
        session = requests.Session()
        session.headers["Authorization"] = f"token {tokens['r00']}"

        def raw_disk() -> None:
            for k in keys:
                (store_path / k).read_bytes()

        def raw_gate() -> None:
            for k in keys:
                r = session.get(f"{gate_url}stores/bench/v1/{k}", timeout=60)
                r.raise_for_status()

        raws = _interleaved({"disk": raw_disk, "gate": raw_gate})
        t_raw_disk, t_raw_gate = (statistics.median(raws[n]) for n in ("disk", "gate"))

        # 20 concurrent readers, each reading the whole series through the gate.
        results: dict[str, float] = {}
        errors: list[str] = []
        barrier = threading.Barrier(READERS)

        def reader(name: str) -> None:
            try:
                arr = zarr.open_array(
                    GateStore("bench", url=gate_url, token=tokens[name]),
                    path="series/s1/0", mode="r",
                )  # fmt: skip
                barrier.wait()
                t = time.perf_counter()
                arr[...]
                results[name] = time.perf_counter() - t
            except Exception as exc:
                errors.append(f"{name}: {exc!r}")

        threads = [threading.Thread(target=reader, args=(n,)) for n in names]
        t_all = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_all = time.perf_counter() - t_all

        t0 = time.perf_counter()
        lifecycle.hub_api(home, "POST", "/users/r00/server")
        while not (lifecycle.hub_api(home, "GET", "/users/r00")["servers"].get("", {}) or {}).get(
            "ready"
        ):
            time.sleep(0.2)
        spawn_seconds = time.perf_counter() - t0
    finally:
        lifecycle.down(home, actor="bench")

    times = sorted(results.values())
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; home {tmp}")
    print(f"series {SHAPE} int16 = {raw_mib:.0f} MiB raw, {len(keys)} chunks, "
          f"{stored / 2**20:.1f} MiB stored")  # fmt: skip
    from importlib import metadata

    print(f"versions: zarr {zarr.__version__}, urllib3 {metadata.version('urllib3')}, "
          f"tornado {metadata.version('tornado')}; {REPEAT} interleaved repetitions, "
          f"median (min-max); load average {os.getloadavg()}")  # fmt: skip
    print(f"whole series, zarr decode: disk {_spread(reads['disk'])} "
          f"({raw_mib / t_disk:.0f} MiB/s), gate {_spread(reads['gate'])} "
          f"({raw_mib / t_gate:.0f} MiB/s); gate/disk = {t_gate / t_disk:.2f}x "
          "(target <= 1.3x, issue 15)")  # fmt: skip
    print(
        f"raw keys, no decode: disk {_spread(raws['disk'])}, gate {_spread(raws['gate'])} "
        f"({stored / 2**20 / t_raw_gate:.0f} MiB/s); gate/disk = {t_raw_gate / t_raw_disk:.0f}x"
    )
    print(f"{READERS} concurrent readers: {len(errors)} errors, wall {t_all:.1f} s, per reader "
          f"min {times[0]:.1f} s median {statistics.median(times):.1f} s max {times[-1]:.1f} s; "
          f"slowest/fastest = {times[-1] / times[0]:.2f}")  # fmt: skip
    print(f"insitu up -> hub answers: {up_seconds:.1f} s; spawn -> server ready: "
          f"{spawn_seconds:.1f} s; hub {state.url}")  # fmt: skip
    for line in errors[:5]:
        print("  error:", line)
    print("-> bench/BENCHMARKS.md, section 'Gate (issue 3)'")


if __name__ == "__main__":
    main()
