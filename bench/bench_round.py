"""Round time of a real federation (issue 13: the sandbox and the checker vs before).

    .venv/bin/python bench/run.py round            # this checkout
    /path/to/other/.venv/bin/python bench/bench_round.py   # another checkout's code

The script uses only APIs both versions have (processes, approvals, analyze,
run_training), so running it with another checkout's interpreter measures
that checkout's code on the same machine. Environment: BENCH_REPEATS
(default 5), BENCH_SUBJECTS (per site, 12), BENCH_SIZE (32), BENCH_SLICES (8).
Prints medians with min-max of: one analytics run (3 sites, one query
message each) and one FedAvg training round of the demo CNN (3 sites).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

SITES = ("site-a", "site-b", "site-c")
DATASET = "locat"


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} s (min {min(xs):.1f}, max {max(xs):.1f}, n={len(xs)})"


def main() -> None:
    import insitu
    from insitu.config import NodeHome, init_home
    from insitu.datasets.ingest import ingest
    from insitu.datasets.synthetic import TrialSpec, generate_trial
    from insitu.federation import approvals, processes
    from insitu.federation.analytics import analytics_fingerprint, analyze
    from insitu.federation.train_app import run_training, training_fingerprint

    repeats = _env("BENCH_REPEATS", 5)
    spec = TrialSpec(
        subjects_per_site=_env("BENCH_SUBJECTS", 12),
        size=_env("BENCH_SIZE", 32),
        slices=_env("BENCH_SLICES", 8),
    )
    root = Path(tempfile.mkdtemp(prefix="insitu-bench-round-"))
    print(f"code: {Path(insitu.__file__).resolve().parent.parent}")
    trial = generate_trial(root / "trial", spec, show_progress=False)
    homes = {}
    for site in SITES:
        home = NodeHome(root / site)
        init_home(home, site)
        ingest([trial.dicom_dir(site)], DATASET, home=home, show_progress=False)
        homes[site] = home
    coordinator = NodeHome(root / "coordinator")
    init_home(coordinator, "coordinator")
    address = f"127.0.0.1:{processes.free_port()}"
    analytics: list[float] = []
    training: list[float] = []
    try:
        processes.start_coordinator(coordinator, address, insecure=True)
        for home in homes.values():
            processes.start_site(home, address, DATASET, insecure=True)
            for fp in (analytics_fingerprint(), training_fingerprint()):
                approvals.approve(home, fp, DATASET, days=1, user="bench")
        for _ in range(repeats):
            start = time.perf_counter()
            analyze(address=address, insecure=True, dataset=DATASET, feature="hu_mean", min_sites=3)
            analytics.append(time.perf_counter() - start)
            start = time.perf_counter()
            run = run_training(
                address=address, insecure=True, rounds=1, min_sites=3, wait_for_sites=3
            )
            assert run.completed, run.logs[-2000:]
            training.append(time.perf_counter() - start)
    finally:
        for home in [*homes.values(), coordinator]:
            processes.stop(home)
        shutil.rmtree(root, ignore_errors=True)
    print(f"analytics run (3 sites): {_spread(analytics)}")
    print(f"training, 1 round (3 sites): {_spread(training)}")


if __name__ == "__main__":
    main()
