"""Gate benchmark: reading a whole series through the data gate vs from disk.

    .venv/bin/python bench/run.py gate          (or: python bench/bench_gate.py)

Builds a throwaway node home with one CT-like series (chunked and compressed
as `insitu ingest` writes it), starts a real hub (`insitu up` machinery), and
measures, in one run:

1. a whole series read with zarr from a ``LocalStore`` (what the node does) vs
   through a ``GateStore`` (what a researcher's kernel does, at ``$INSITU_GATE_URL``,
   the gate's own port); ratio gate/disk (issue 15: <= 1.3x); then the same as
   ``Dataset.image()`` reads it through the gate, dask blocks of whole planes
   (``da.from_zarr``), on both stores;
2. the same with raw key reads (no decompression), one request per key and in
   multi-key batches of 64 (``POST batch/...``): the gate's floor;
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


def _single_key_store(base: type) -> type:
    """GateStore as it read before multi-key requests: one request per chunk, each in a
    thread of its own (for the before/after row of the same run)."""
    import asyncio

    class SingleKeyStore(base):
        async def get(self, key, prototype, byte_range=None):
            data = await asyncio.to_thread(self._get_sync, key, byte_range)
            return None if data is None else prototype.buffer.from_bytes(data)

    return SingleKeyStore


def _load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    import dask.array as da
    import requests
    import zarr

    from insitu.config import NodeHome, init_home
    from insitu.hub import access, lifecycle
    from insitu.hub.accounts import AccountStore
    from insitu.hub.gate_service import USER_ZARR_CONCURRENCY
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
        single = zarr.open_array(
            _single_key_store(GateStore)("bench", url=gate_url, token=tokens["r00"]),
            path="series/s1/0", mode="r",
        )  # fmt: skip
        assert np.array_equal(local[...], remote[...])
        assert np.array_equal(local[...], single[...])
        load_before = os.getloadavg()
        # What a user server runs with (the gate's user environment), for both stores.
        with zarr.config.set({"async.concurrency": USER_ZARR_CONCURRENCY}):
            reads = _interleaved({"disk": lambda: local[...], "gate": lambda: remote[...]})
        t_disk, t_gate = (statistics.median(reads[n]) for n in ("disk", "gate"))
        # zarr's default, and the gate as it was read before batches (what servers had).
        default = _interleaved(
            {"disk": lambda: local[...], "gate": lambda: remote[...], "single": lambda: single[...]}
        )
        z_disk, z_gate, t_single = (
            statistics.median(default[n]) for n in ("disk", "gate", "single")
        )
        blocks = (64, SHAPE[1], SHAPE[2])  # reader._dask_chunks for this series
        with zarr.config.set({"async.concurrency": USER_ZARR_CONCURRENCY}):
            dasked = _interleaved({
                "disk": lambda: da.from_zarr(local, chunks=blocks).compute(),
                "gate": lambda: da.from_zarr(remote, chunks=blocks).compute(),
            })  # fmt: skip
        d_disk, d_gate = (statistics.median(dasked[n]) for n in ("disk", "gate"))
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

        def raw_batch() -> None:
            for first in range(0, len(keys), 64):
                r = session.post(f"{gate_url}batch/bench/v1", json={"keys": keys[first:first + 64]},
                                 timeout=60)  # fmt: skip
                r.raise_for_status()

        raws = _interleaved({"disk": raw_disk, "gate": raw_gate, "batch": raw_batch})
        t_raw_disk, t_raw_gate, t_raw_batch = (
            statistics.median(raws[n]) for n in ("disk", "gate", "batch")
        )
        load_after = os.getloadavg()

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
          f"tornado {metadata.version('tornado')}, dask {metadata.version('dask')}; "
          f"{REPEAT} interleaved repetitions, median (min-max); load average before "
          f"{_load(load_before)}, after {_load(load_after)}")  # fmt: skip
    verdict = "met" if t_gate / t_disk <= 1.3 else "MISSED"
    print(f"zarr async.concurrency {USER_ZARR_CONCURRENCY} (what user servers get) unless said")
    print(f"whole series, zarr decode: disk {_spread(reads['disk'])} "
          f"({raw_mib / t_disk:.0f} MiB/s), gate {_spread(reads['gate'])} "
          f"({raw_mib / t_gate:.0f} MiB/s); gate/disk = {t_gate / t_disk:.2f}x "
          f"(target <= 1.3x, issue 15: {verdict})")  # fmt: skip
    print(f"  at zarr's default async.concurrency 10: disk {_spread(default['disk'])}, gate "
          f"{_spread(default['gate'])}; {z_gate / z_disk:.2f}x")  # fmt: skip
    print(f"  GateStore before issue 15's batches, one request per chunk (zarr's default 10): "
          f"{_spread(default['single'])}; {t_single / z_disk:.2f}x disk")  # fmt: skip
    print(f"same in dask blocks of 64 planes (as Dataset.image reads): disk "
          f"{_spread(dasked['disk'])}, gate {_spread(dasked['gate'])}; gate/disk = "
          f"{d_gate / d_disk:.2f}x")  # fmt: skip
    print(
        f"raw keys, no decode: disk {_spread(raws['disk'])}; gate one request per key "
        f"{_spread(raws['gate'])} ({t_raw_gate / t_raw_disk:.0f}x disk); gate in batches of 64 "
        f"{_spread(raws['batch'])} ({t_raw_batch / t_raw_disk:.0f}x disk, "
        f"{stored / 2**20 / t_raw_batch:.0f} MiB/s)"
    )
    print(f"{READERS} concurrent readers: {len(errors)} errors, wall {t_all:.1f} s, per reader "
          f"min {times[0]:.1f} s median {statistics.median(times):.1f} s max {times[-1]:.1f} s; "
          f"slowest/fastest = {times[-1] / times[0]:.2f}")  # fmt: skip
    print(f"insitu up -> hub answers: {up_seconds:.1f} s; spawn -> server ready: "
          f"{spawn_seconds:.1f} s; hub {state.url}")  # fmt: skip
    for line in errors[:5]:
        print("  error:", line)
    print("-> bench/BENCHMARKS.md, section 'Gate (issue 3; issue 15's target)'")


if __name__ == "__main__":
    main()
