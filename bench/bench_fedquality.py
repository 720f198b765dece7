"""Federated model quality against pooled training at equal compute (issue 15, Sheller 2020).

    nice -n 10 .venv/bin/python bench/run.py fedquality

Task: the shipped CNN (federation/train_cnn.py, upper vs lower abdominal slice)
on a synthetic trial made harder than the demo's so that pooled training
plateaus clearly below ceiling: 32x32 pixel slices (BENCH_SIZE) in volumes of
20 (BENCH_SLICES), few subjects per site (BENCH_SUBJECTS, 10) and scanner
noise BENCH_NOISE (8) times the trial's (each arm's noise SD, 11 HU standard
dose and 22 HU low dose, scaled up: a dose 64 times lower). The sites stay
heterogeneous: each keeps its own scanner factor (1.0/1.12/0.92), randomised
arms and body sizes. Held-out test set: a second trial (seed 77,
BENCH_TEST_SUBJECTS per site, 24), same noise.
The noise is the one change to the trial: the bench scales the generator's
noise table while it writes the DICOM (``_noisier``), so the stores the sites
ingest, in one process and in the deployment below, hold the same images.

Protocol (equal total compute): pooled = E epochs over the union of the three
sites' slices; federated = E / L rounds of FedAvg, L local epochs per round at
each site, weighted by examples. Both: Adam, lr 0.005, batch 16, the same
initial weights per seed (seed 0: train_cnn.make_model's own; others:
re-initialised with that seed), shuffles seeded per epoch / round (of slices
ordered by the sites' subject pseudonyms, which each node home's random
de-identification key makes different in every run: a seed's numbers are
not reproduced exactly by a second run, nor by the deployment). Accuracy
every BENCH_EVERY epochs (the curve); per seed the figure is the accuracy at E
and the plateau (mean of the checkpoints in the last third of the curve);
median and min-max over BENCH_SEEDS seeds, and the per-seed ratio FedAvg /
pooled of both.

The curve runs the FedAvg maths in one process (the same train_cnn and
_weighted_average the app uses): a round through a real federation costs
~30-100 s on this 2-core machine, almost all of it process start-up (see
bench_round). With BENCH_DEPLOY=R, R rounds also run in deployment mode (a
real SuperLink and three SuperNodes with their own node homes and disclosure
engines, the shipped app, seed 0, the same trial) and are compared with the
in-process FedAvg after R rounds: equal accuracy confirms that the one-process
curve is what the federation computes. BENCH_SEEDS=0 BENCH_DEPLOY=R runs the
deployment point alone. The sites' disclosure engines check every update: the
CNN's linear layer holds 2 x 256 = 512 values, so volumes whose planes hold
256 or 512 values (16x16 slices, or 16 slices of 32: a 16x32 coronal plane)
are refused as pixel data (rule image-resolution); 20 slices of 32x32 pass.

Environment: BENCH_SUBJECTS (10), BENCH_SIZE (32), BENCH_SLICES (20),
BENCH_NOISE (8), BENCH_TEST_SUBJECTS (24), BENCH_EPOCHS (480), BENCH_LOCAL (3),
BENCH_EVERY (30), BENCH_SEEDS (5), BENCH_DEPLOY (0).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

SITES = ("site-a", "site-b", "site-c")
DATASET = "locat"
LR = 0.005


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@contextlib.contextmanager
def _noisier(factor: float) -> Iterator[None]:
    """Trials generated inside get ``factor`` times the synthetic scanner noise (both arms)."""
    from unittest import mock

    from insitu.datasets import synthetic

    table = {arm: sd * factor for arm, sd in synthetic._NOISE_SD.items()}
    with mock.patch.dict(synthetic._NOISE_SD, table):
        yield


def _site_sets(root: Path, spec: Any, name: str) -> dict[str, Any]:
    from insitu.config import NodeHome, init_home
    from insitu.datasets.ingest import ingest
    from insitu.datasets.reader import open_dataset
    from insitu.datasets.synthetic import generate_trial
    from insitu.federation.node_data import SiteData
    from insitu.federation.train_cnn import load_slices

    trial = generate_trial(root / f"trial-{name}", spec, show_progress=False)
    sets = {}
    for site in SITES:
        home = NodeHome(root / f"{name}-{site}")
        init_home(home, site)
        ingest([trial.dicom_dir(site)], DATASET, home=home, show_progress=False)
        data = SiteData(open_dataset(DATASET, home=home), site=site, dataset=DATASET)
        sets[site] = load_slices(data, 8)
    return sets


def _concat(sets: list[Any]) -> Any:
    from insitu.federation.train_cnn import SliceSet

    return SliceSet(np.concatenate([s.x for s in sets]), np.concatenate([s.y for s in sets]), [])


def _model(seed: int) -> Any:
    import torch

    from insitu.federation.train_cnn import make_model

    model = make_model()
    if seed:
        torch.manual_seed(seed)
        for layer in model:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
    return model


def pooled(train: Any, test: Any, epochs: int, seed: int, every: int) -> list[float]:
    """Test accuracy every ``every`` epochs (and at the end) of pooled training."""
    from insitu.federation.train_cnn import evaluate, train_epochs

    model, curve = _model(seed), []
    for epoch in range(1, epochs + 1):
        train_epochs(model, train, epochs=1, lr=LR, seed=seed * 1000 + epoch)
        if epoch % every == 0 or epoch == epochs:
            curve.append(evaluate(model, test)[1])
    return curve


def fedavg(
    sites: list[Any], test: Any, rounds: int, local: int, seed: int, every: int
) -> list[float]:
    """FedAvg as the shipped app computes it (seed 0: exactly the app's seeds).

    Test accuracy whenever ``rounds x local`` passes a multiple of ``every`` epochs.
    """
    from insitu.federation.train_app import _weighted_average
    from insitu.federation.train_cnn import (
        evaluate,
        get_weights,
        make_model,
        set_weights,
        train_epochs,
    )

    weights, curve = get_weights(_model(seed)), []
    for rnd in range(1, rounds + 1):
        parts = []
        for data in sites:
            model = make_model()
            set_weights(model, weights)
            train_epochs(model, data, epochs=local, lr=LR, seed=seed * 1000 + rnd)
            parts.append((get_weights(model), len(data)))
        weights = [w.astype(np.float32) for w in _weighted_average(parts)]
        if (rnd * local) // every > ((rnd - 1) * local) // every or rnd == rounds:
            model = make_model()
            set_weights(model, weights)
            curve.append(evaluate(model, test)[1])
    return curve


def _deploy(rounds: int, local: int, noise: float, test: Any) -> dict[str, Any]:
    """``rounds`` rounds of the shipped app through a real federation (bench_round's)."""
    from bench_round import Worker

    from insitu.federation.train_app import run_training
    from insitu.federation.train_cnn import evaluate, make_model, set_weights

    root = Path(tempfile.mkdtemp(prefix="insitu-bench-fedquality-"))
    with _noisier(noise):  # the worker's trial: the same spec and noise as the curve's
        worker = Worker(root)
    try:
        start = time.perf_counter()
        run = run_training(
            address=worker.address,
            insecure=True,
            rounds=rounds,
            min_sites=3,
            wait_for_sites=3,
            lr=LR,
            local_epochs=local,
            round_timeout=900,
            timeout=7200,
            **worker.kwargs,
        )
        took = time.perf_counter() - start
        assert run.completed, run.logs[-2000:]
        model = make_model()
        set_weights(model, [np.asarray(w, dtype=np.float32) for w in run.result["weights"]])
        sites = [r["sites"] for r in run.result["rounds"]]
        return {"accuracy": evaluate(model, test)[1], "s": took, "sites": sites}
    finally:
        worker.close()
        shutil.rmtree(root, ignore_errors=True)


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f}, n={len(xs)})"


def _plateau(curve: list[float]) -> float:
    """Mean of the checkpoints in the last third of a curve (less evaluation jitter)."""
    tail = curve[len(curve) - max(1, len(curve) // 3) :]
    return float(statistics.fmean(tail))


def main() -> None:
    import flwr
    import torch

    from insitu.datasets.synthetic import TrialSpec

    torch.set_num_threads(1)  # reproducible per seed, and fair on a shared machine
    size, slices = _env("BENCH_SIZE", 32), _env("BENCH_SLICES", 20)
    subjects, epochs = _env("BENCH_SUBJECTS", 10), _env("BENCH_EPOCHS", 480)
    local, seeds, deploy = _env("BENCH_LOCAL", 3), _env("BENCH_SEEDS", 5), _env("BENCH_DEPLOY", 0)
    noise, every = float(os.environ.get("BENCH_NOISE", 8)), _env("BENCH_EVERY", 30)
    test_subjects = _env("BENCH_TEST_SUBJECTS", 24)
    os.environ.update(BENCH_SUBJECTS=str(subjects), BENCH_SIZE=str(size))
    os.environ["BENCH_SLICES"] = str(slices)  # the deployment worker's trial: the same data
    root = Path(tempfile.mkdtemp(prefix="insitu-bench-fedquality-data-"))
    print(
        f"torch {torch.__version__}, flwr {flwr.__version__}, Python {platform.python_version()}; "
        f"{subjects} subjects/site, {size}x{size}x{slices}, noise x{noise:g}; "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    cpu = time.process_time()
    try:
        with _noisier(noise):
            spec = TrialSpec(subjects_per_site=subjects, size=size, slices=slices)
            train = _site_sets(root, spec, "t")
            spec = TrialSpec(subjects_per_site=test_subjects, size=size, slices=slices, seed=77)
            test_sets = _site_sets(root, spec, "h")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    sites = [train[s] for s in SITES]
    test = _concat(list(test_sets.values()))
    print(f"train slices per site {[len(s) for s in sites]}, test slices {len(test)}")
    rounds = epochs // local
    ticks = list(range(every, epochs + 1, every))
    print(f"checkpoints (epochs): {ticks}", flush=True)
    finals: dict[str, list[float]] = {"pooled": [], "fedavg": [], "pooled_p": [], "fedavg_p": []}
    for seed in range(seeds):
        p = pooled(_concat(sites), test, epochs, seed, every)
        f = fedavg(sites, test, rounds, local, seed, every)
        finals["pooled"].append(p[-1])
        finals["fedavg"].append(f[-1])
        finals["pooled_p"].append(_plateau(p))
        finals["fedavg_p"].append(_plateau(f))
        print(f"seed {seed}: pooled {[round(a, 3) for a in p]}", flush=True)
        print(f"seed {seed}: fedavg {[round(a, 3) for a in f]}", flush=True)
        print(f"  (CPU so far {time.process_time() - cpu:.0f} s)", flush=True)
    print("\nBENCHMARKS.md section 'federated model quality':")
    if seeds:
        at_e = [f / p for f, p in zip(finals["fedavg"], finals["pooled"], strict=True)]
        flat = [f / p for f, p in zip(finals["fedavg_p"], finals["pooled_p"], strict=True)]
        print(f"| pooled, {epochs} epochs | {_spread(finals['pooled'])} |")
        print(f"| FedAvg, {rounds} rounds x {local} local epochs | {_spread(finals['fedavg'])} |")
        print(f"| FedAvg / pooled at {epochs} (per seed) | {_spread(at_e)} | target >= 0.99 |")
        print(f"| pooled plateau (last third) | {_spread(finals['pooled_p'])} |")
        print(f"| FedAvg plateau (last third) | {_spread(finals['fedavg_p'])} |")
        print(f"| FedAvg / pooled, plateaus (per seed) | {_spread(flat)} |")
        print(f"per-seed ratios at E: {[round(x, 3) for x in at_e]}")
        print(f"per-seed plateau ratios: {[round(x, 3) for x in flat]}")
    print(f"CPU of the curves: {time.process_time() - cpu:.0f} s", flush=True)
    if deploy:
        inproc = fedavg(sites, test, deploy, local, 0, every)[-1]
        real = _deploy(deploy, local, noise, test)
        print(
            f"| deployment, {deploy} rounds x {local} local epochs, seed 0 | "
            f"{real['accuracy']:.3f} ({real['s']:.0f} s; sites per round {real['sites']}) | "
            f"in one process: {inproc:.3f} |"
        )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
