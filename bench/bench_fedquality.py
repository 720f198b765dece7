"""Federated model quality against pooled training at equal compute (issue 15, Sheller 2020).

    .venv/bin/python bench/run.py fedquality

Task: the shipped CNN (federation/train_cnn.py, upper vs lower abdominal slice)
made harder: 16x16 pixel slices (BENCH_SIZE), few subjects per site
(BENCH_SUBJECTS, 10), three sites whose scanners differ in noise (the synthetic
trial's per-site factors 1.0/1.12/0.92, and each site's own arms and body
sizes). Held-out test set: a second trial (seed 77, 12 subjects per site).

Protocol (equal total compute): pooled = E epochs over the union of the three
sites' slices; federated = E / L rounds of FedAvg, L local epochs per round at
each site, weighted by examples. Both: Adam, lr 0.005, batch 16, the same
initial weights per seed (seed 0: train_cnn.make_model's own; others:
re-initialised with that seed), data order seeded per epoch / round. Accuracy
every 30 epochs; per seed the figure is the accuracy at E; median and min-max
over BENCH_SEEDS seeds.

The curve runs the FedAvg maths in one process (the same train_cnn and
_weighted_average the app uses): E = 150 epochs x 5 seeds x 2 would take
hours through a real federation on this 2-core machine (a round costs
~30-100 s there, almost all of it process start-up, see bench_round). With
BENCH_DEPLOY=R, R rounds also run in deployment mode (a real SuperLink and
three SuperNodes, the shipped app, seed 0) and are compared with the
in-process FedAvg after R rounds: equal accuracy confirms that the one-process
curve is what the federation computes.

Environment: BENCH_SUBJECTS (10), BENCH_SIZE (16), BENCH_SLICES (16),
BENCH_EPOCHS (150), BENCH_LOCAL (3), BENCH_SEEDS (5), BENCH_DEPLOY (0).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SITES = ("site-a", "site-b", "site-c")
DATASET = "locat"
EVERY = 30
LR = 0.005


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


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


def pooled(train: Any, test: Any, epochs: int, seed: int) -> list[float]:
    from insitu.federation.train_cnn import evaluate, train_epochs

    model, curve = _model(seed), []
    for epoch in range(1, epochs + 1):
        train_epochs(model, train, epochs=1, lr=LR, seed=seed * 1000 + epoch)
        if epoch % EVERY == 0 or epoch == epochs:
            curve.append(evaluate(model, test)[1])
    return curve


def fedavg(sites: list[Any], test: Any, rounds: int, local: int, seed: int) -> list[float]:
    """FedAvg as the shipped app computes it (seed 0: exactly the app's seeds)."""
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
        if (rnd * local) % EVERY == 0 or rnd == rounds:
            model = make_model()
            set_weights(model, weights)
            curve.append(evaluate(model, test)[1])
    return curve


def _deploy(rounds: int, local: int, test: Any) -> dict[str, Any]:
    """``rounds`` rounds of the shipped app through a real federation (bench_round's)."""
    from bench_round import Worker

    from insitu.federation.train_app import run_training
    from insitu.federation.train_cnn import evaluate, make_model, set_weights

    root = Path(tempfile.mkdtemp(prefix="insitu-bench-fedquality-"))
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
        return {"accuracy": evaluate(model, test)[1], "s": took}
    finally:
        worker.close()
        shutil.rmtree(root, ignore_errors=True)


def _spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f}, n={len(xs)})"


def main() -> None:
    import torch

    from insitu.datasets.synthetic import TrialSpec

    torch.set_num_threads(1)  # reproducible per seed, and fair on a shared machine
    size, slices = _env("BENCH_SIZE", 16), _env("BENCH_SLICES", 16)
    subjects, epochs = _env("BENCH_SUBJECTS", 10), _env("BENCH_EPOCHS", 150)
    local, seeds, deploy = _env("BENCH_LOCAL", 3), _env("BENCH_SEEDS", 5), _env("BENCH_DEPLOY", 0)
    os.environ.update(BENCH_SUBJECTS=str(subjects), BENCH_SIZE=str(size))
    os.environ["BENCH_SLICES"] = str(slices)  # the deployment worker's trial: the same data
    root = Path(tempfile.mkdtemp(prefix="insitu-bench-fedquality-data-"))
    print(f"torch {torch.__version__}; {subjects} subjects/site, {size}x{size}x{slices}")
    try:
        train = _site_sets(
            root, TrialSpec(subjects_per_site=subjects, size=size, slices=slices), "t"
        )
        test_sets = _site_sets(
            root, TrialSpec(subjects_per_site=12, size=size, slices=slices, seed=77), "h"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    sites = [train[s] for s in SITES]
    test = _concat(list(test_sets.values()))
    print(f"train slices per site {[len(s) for s in sites]}, test slices {len(test)}")
    finals: dict[str, list[float]] = {"pooled": [], "fedavg": []}
    for seed in range(seeds):
        p = pooled(_concat(sites), test, epochs, seed)
        f = fedavg(sites, test, epochs // local, local, seed)
        finals["pooled"].append(p[-1])
        finals["fedavg"].append(f[-1])
        print(f"seed {seed}: pooled {[round(a, 3) for a in p]}", flush=True)
        print(f"seed {seed}: fedavg {[round(a, 3) for a in f]}", flush=True)
    print("\nBENCHMARKS.md section 'federated model quality':")
    if seeds:
        ratios = [f / p for f, p in zip(finals["fedavg"], finals["pooled"], strict=True)]
        rounds = epochs // local
        print(f"| pooled, {epochs} epochs | {_spread(finals['pooled'])} |")
        print(f"| FedAvg, {rounds} rounds x {local} local epochs | {_spread(finals['fedavg'])} |")
        print(f"| FedAvg / pooled (per seed) | {_spread(ratios)} | target >= 0.99 |")
    if deploy:
        inproc = fedavg(sites, test, deploy, local, 0)[-1]
        real = _deploy(deploy, local, test)
        print(
            f"| deployment, {deploy} rounds x {local} local epochs, seed 0 | "
            f"{real['accuracy']:.3f} ({real['s']:.0f} s) | in one process: {inproc:.3f} |"
        )


if __name__ == "__main__":
    main()
