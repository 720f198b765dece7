"""Scale-out benchmark: a whole-dataset statistic on dask-gateway, 1 vs 2 workers.

    .venv/bin/python bench/run.py scaleout      (or: python bench/bench_scaleout.py)

The researcher's real path on an embedded node (no Kubernetes): a synthetic
trial is ingested with `insitu ingest`'s code, a real hub starts with its
gate and dask-gateway (local backend, `insitu up` machinery), and a
researcher with an approval calls ``insitu.compute(workers=N)`` and computes
one statistic over every series of the dataset, read through the gate with
the researcher's own token (audited per read). The statistic is the mean
noise power spectrum of each slice (|FFT|² of the slice minus its mean,
averaged over all slices of all series): an image-quality measure of the
kind the LOCAT dose comparison needs, and CPU-bound enough for workers to
matter.

Compared in the same run, best of REPEAT:

- gateway cluster, 1 worker vs 2 workers (the scale-out ratio);
- what a researcher would otherwise use: dask's threaded scheduler in the
  kernel itself (2 threads), through the same gate;
- the node reading its own disk (no gate) with the threaded scheduler, as
  the floor.

Each worker has one thread (insitu.toml [compute] worker_cores = 1).
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPEAT = 3
SUBJECTS = 16
SIZE = 256
SLICES = 48
DATASET = "scaleout"


def statistic(ds: Any) -> float:
    """Mean noise power over every slice of every series (one dask graph).

    Per slice: mean |FFT|² of the slice minus its mean. Only dask's own array
    operations, so the graph ships to gateway workers without any of this
    module's code.
    """
    import dask
    import dask.array as da

    parts = []
    for series_id in ds.series["series_id"]:
        image = ds.image(series_id).data  # lazy, dask-backed (z, y, x)
        image = image.rechunk({1: -1, 2: -1}).astype(np.float32)  # whole slices
        image = image - image.mean(axis=(1, 2), keepdims=True)
        power = abs(da.fft.rfft2(image, axes=(1, 2))) ** 2
        parts.append(power.mean(axis=(1, 2)))
    (value,) = dask.compute(da.concatenate(parts).mean())
    return float(value)


def _best(fn: Any) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def _prepare(root: Path) -> Any:
    from insitu.config import NodeHome, init_home
    from insitu.datasets.ingest import ingest
    from insitu.datasets.synthetic import TrialSpec, generate_trial
    from insitu.hub import access
    from insitu.hub.accounts import AccountStore

    spec = TrialSpec(subjects_per_site=SUBJECTS, size=SIZE, slices=SLICES, sites=("site-a",))
    trial = generate_trial(root / "trial", spec, show_progress=False)
    home = NodeHome(root / "home")
    init_home(home, "bench")
    report = ingest(
        [trial.dicom_dir("site-a")], DATASET, home=home, title="scale-out", citation="",
        show_progress=False,
    )  # fmt: skip
    assert report.status == "published", report
    with AccountStore(home) as accounts:
        accounts.add("steward", "steward", "bench-password", actor="bench")
        accounts.add("ada", "researcher", "bench-password", actor="bench")
    req = access.request(home, "ada", DATASET, "scale-out benchmark", "bench", 1)
    access.approve(home, "steward", req.id, "benchmark")
    return home


def _researcher_environment(home: Any, token: str) -> dict[str, str]:
    """What the hub gives a user server: service URLs and the researcher's token."""
    from insitu.hub.services import load_plan

    services, _ = load_plan(home)
    env = {"JUPYTERHUB_API_TOKEN": token, "INSITU_USER": "ada"}
    for service in services:
        env.update(service.user_environment)
    return env


def main() -> None:
    import dask

    import insitu
    from insitu.datasets.reader import open_dataset
    from insitu.hub import lifecycle
    from insitu.net import free_port

    root = Path(tempfile.mkdtemp(prefix="insitu-bench-scaleout-"))
    saved = dict(os.environ)
    try:
        t0 = time.perf_counter()
        home = _prepare(root)
        prepare_s = time.perf_counter() - t0
        local = open_dataset(DATASET, home=home)
        n_series = len(local.series)
        raw_mib = n_series * SLICES * SIZE * SIZE * 2 / 2**20

        # The floor: the node's own disk, dask's threaded scheduler (no gate).
        with dask.config.set(scheduler="threads", num_workers=2):
            t_disk, reference = _best(lambda: statistic(local))

        lifecycle.up(home, port=free_port(), actor="bench")
        try:
            lifecycle.hub_api(home, "POST", "/users/ada")
            token = lifecycle.hub_api(home, "POST", "/users/ada/tokens", {})["token"]
            os.environ.update(_researcher_environment(home, token))
            os.environ.pop("INSITU_HOME", None)  # a researcher's server has no node home
            ds = insitu.open_dataset(DATASET)  # through the gate

            with dask.config.set(scheduler="threads", num_workers=2):
                t_threads, value = _best(lambda: statistic(ds))
            assert np.isclose(value, reference, rtol=1e-6), (value, reference)

            timings = {}
            for workers in (1, 2):
                client = insitu.compute(workers=workers)
                try:
                    with dask.config.set(scheduler=client.get):
                        timings[workers], value = _best(lambda: statistic(ds))
                    assert np.isclose(value, reference, rtol=1e-6), (workers, value, reference)
                finally:
                    client.close()
                    client.cluster.shutdown()
        finally:
            os.environ.clear()
            os.environ.update(saved)
            lifecycle.down(home, actor="bench")

        cpus = os.cpu_count()
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"machine: {platform.machine()}, {cpus} cores, Python {platform.python_version()}, "
            f"load average now {load}"
        )
        print(
            f"dataset: {n_series} series of {SLICES}x{SIZE}x{SIZE} int16 ({raw_mib:.0f} MiB raw), "
            f"prepared in {prepare_s:.0f} s"
        )
        print(f"statistic: mean slice noise power = {reference:.6g} (all paths agree)")
        print(f"{'path':<46} {'best of ' + str(REPEAT):>10} {'MiB/s':>8}")
        rows = [
            ("node disk, threaded dask (2 threads), no gate", t_disk),
            ("through the gate, threaded dask in the kernel", t_threads),
            ("through the gate, dask-gateway, 1 worker", timings[1]),
            ("through the gate, dask-gateway, 2 workers", timings[2]),
        ]
        for label, seconds in rows:
            print(f"{label:<46} {seconds:>9.2f}s {raw_mib / seconds:>8.1f}")
        print(f"scale-out 1 -> 2 workers: {timings[1] / timings[2]:.2f}x faster")
        print(f"2 gateway workers vs threaded kernel: {t_threads / timings[2]:.2f}x")
        print(f"2 gateway workers vs node disk floor: {timings[2] / t_disk:.2f}x the time")
        print("-> bench/BENCHMARKS.md, section 'Scale-out (dask-gateway)'")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
