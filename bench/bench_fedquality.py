"""Federated model quality against pooled training at equal compute (issue 15, Sheller 2020).

    BENCH_JOBS=3 nice -n 10 .venv/bin/python bench/run.py fedquality

Task: the shipped CNN (federation/train_cnn.py, upper vs lower abdominal slice)
on a synthetic trial made harder than the demo's so that pooled training
plateaus clearly below ceiling: 32x32 pixel slices (BENCH_SIZE) in volumes of
20 (BENCH_SLICES), few subjects per site (BENCH_SUBJECTS, 10) and scanner
noise BENCH_NOISE (8) times the trial's (each arm's noise SD, 11 HU standard
dose and 22 HU low dose, scaled up: a dose 64 times lower). The sites stay
heterogeneous: each keeps its own scanner factor (1.0/1.12/0.92), randomised
arms and body sizes. Held-out test set: a second trial (seed 77,
BENCH_TEST_SUBJECTS per site, 48: 1152 slices), same noise.
The noise is the one change to the trial: the bench scales the generator's
noise table while it writes the DICOM (``_noisier``), so the stores the sites
ingest, in one process and in the deployment below, hold the same images.

Protocol (equal total compute): pooled = E epochs (BENCH_EPOCHS, 240) over the
union of the three sites' slices; each federated arm = E / L rounds, L local
epochs per round at each site, aggregated weighted by examples. Arms
(BENCH_STRATEGIES, space separated): ``fedavg`` (L = BENCH_LOCAL, 3),
``fedavg:l=5`` (more local epochs, fewer rounds), ``fedprox:mu=0.01`` (the
app's ``proximal-mu``), ``fedavgm:m=0.5`` (server momentum 0.5, server lr
``slr`` 1; bench only, the app has no server optimiser). All: Adam lr 0.005,
batch 16, the same initial weights per seed (seed 0: train_cnn.make_model's
own; others re-initialised with that seed), shuffles seeded per epoch / round.
Each site's slices are sorted by content (``stable_order``) before training:
``load_slices`` orders them by the subjects' pseudonyms, which each node
home's random de-identification key changes in every ingest, so without the
sort a seed's run was not reproducible; with it, it is bit-exact across runs
(one thread), which makes the arms' A/B paired.

Seeds: the first arm (the app's default, FedAvg with 3 local epochs) and
pooled over BENCH_SEEDS (12) seeds, the other arms over the first
BENCH_COMPARE_SEEDS (3). Test accuracy every BENCH_EVERY (15) epochs;
per seed the figure is the plateau (mean of the checkpoints in the last third
of the curve) and the accuracy at E. Printed: per arm the per-seed ratio arm /
pooled (median, min-max), the ratio of the mean plateau accuracies with a 95 %
paired bootstrap interval (seeds resampled for both arms together, and test
subjects resampled as clusters of their 8 slices, the same for both arms; also
the seeds-only interval) and the share of resamples >= 0.99; the median
curves. BENCH_JOBS (1) worker processes run the (arm, seed) tasks, one torch
thread each; the numbers do not depend on it. BENCH_CACHE (unset) names a
directory where each task's per-slice results are kept (keyed by the data,
arm, seed and protocol) with the two trials' slices, so an interrupted study
resumes without a new ingest, and BENCH_FIRST_SEED lets a second process take
other seeds into the same cache (a run over all seeds then only summarises).

The curves run the FedAvg maths in one process (the same train_cnn and
_weighted_average the app uses): a round through a real federation costs
~30-100 s on this 2-core machine, almost all of it process start-up (see
bench_round). With BENCH_DEPLOY=R, R rounds also run in deployment mode (a
real SuperLink and three SuperNodes with their own node homes and disclosure
engines, the shipped app, seed 0, the same trial) and are compared with the
in-process FedAvg after R rounds: equal accuracy confirms that the one-process
curve is what the federation computes (the sites' own slice order and torch
threads make it close, not bit-exact). BENCH_SEEDS=0 BENCH_DEPLOY=R runs the
deployment point alone. The sites' disclosure engines check every update: the
CNN's linear layer holds 2 x 256 = 512 values, so volumes whose planes hold
256 or 512 values (16x16 slices, or 16 slices of 32: a 16x32 coronal plane)
are refused as pixel data (rule image-resolution); 20 slices of 32x32 pass.

Environment: BENCH_SUBJECTS (10), BENCH_SIZE (32), BENCH_SLICES (20),
BENCH_NOISE (8), BENCH_TEST_SUBJECTS (48), BENCH_EPOCHS (240), BENCH_LOCAL (3),
BENCH_EVERY (15), BENCH_SEEDS (12), BENCH_COMPARE_SEEDS (3),
BENCH_STRATEGIES ("fedavg fedavg:l=5 fedprox:mu=0.01 fedavgm:m=0.5"),
BENCH_FIRST_SEED (0: seeds first, first + 1, ...), BENCH_JOBS (1),
BENCH_CACHE (unset), BENCH_DEPLOY (0).
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SITES = ("site-a", "site-b", "site-c")
DATASET = "locat"
LR = 0.005
STRATEGIES = "fedavg fedavg:l=5 fedprox:mu=0.01 fedavgm:m=0.5"
START = time.perf_counter()


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

    return SliceSet(
        np.concatenate([s.x for s in sets]),
        np.concatenate([s.y for s in sets]),
        [who for s in sets for who in s.subjects],
    )


def stable_order(data: Any) -> Any:
    """The same slices sorted by their content (sha256 of pixels and label).

    ``load_slices`` orders a site's subjects by their pseudonyms, which each node
    home's random de-identification key changes in every ingest; sorted by
    content, a seed's shuffles see the same sequence in every run.
    """
    from insitu.federation.train_cnn import SliceSet

    keys = [
        hashlib.sha256(x.tobytes() + int(y).to_bytes(8, "little")).hexdigest()
        for x, y in zip(data.x, data.y, strict=True)
    ]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    subjects = [data.subjects[i] for i in order] if data.subjects else []
    return SliceSet(data.x[order], data.y[order], subjects)


def subject_groups(subjects: list[str]) -> np.ndarray:
    """Each slice's subject as 0, 1, ... in order of first appearance (stable_order keeps it)."""
    index: dict[str, int] = {}
    return np.asarray([index.setdefault(s, len(index)) for s in subjects], dtype=np.int64)


@dataclass(frozen=True)
class Strategy:
    """A federated arm: ``local`` epochs per round, FedProx ``mu``, FedAvgM server step."""

    local: int
    mu: float = 0.0
    server_lr: float = 1.0
    momentum: float = 0.0

    @property
    def label(self) -> str:
        if self.momentum or self.server_lr != 1.0:
            name = f"FedAvgM lr {self.server_lr:g} m {self.momentum:g}"
        else:
            name = f"FedProx mu {self.mu:g}" if self.mu else "FedAvg"
        return f"{name}, {self.local} local"


KINDS = ("fedavg", "fedprox", "fedavgm")
KEYS = {"l": "local", "mu": "mu", "slr": "server_lr", "m": "momentum"}


def parse_strategies(text: str, local: int) -> list[Strategy]:
    """``"fedavg fedavg:l=1 fedprox:mu=0.01 fedavgm:slr=1,m=0.5"`` (l defaults to ``local``)."""
    out = []
    for token in text.split():
        kind, _, params = token.partition(":")
        if kind not in KINDS:
            raise ValueError(f"strategy {kind!r}: choose from {', '.join(KINDS)}")
        values: dict[str, float] = {}
        for item in filter(None, params.split(",")):
            key, _, value = item.partition("=")
            if key not in KEYS:
                raise ValueError(f"strategy {token!r}: key {key!r}, choose from {', '.join(KEYS)}")
            values[KEYS[key]] = float(value)
        if kind == "fedprox" and not values.get("mu"):
            raise ValueError(f"strategy {token!r}: fedprox needs mu=... > 0")
        if kind == "fedavgm" and "momentum" not in values:
            raise ValueError(f"strategy {token!r}: fedavgm needs m=...")
        out.append(
            Strategy(
                local=int(values.pop("local", local)),
                mu=values.get("mu", 0.0),
                server_lr=values.get("server_lr", 1.0),
                momentum=values.get("momentum", 0.0),
            )
        )
    return out


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


def _correct(model: Any, test: Any) -> np.ndarray:
    """Per test slice: classified correctly (bool)."""
    import torch

    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(test.x)).argmax(1).numpy()
    return np.asarray(pred == test.y)


def pooled(train: Any, test: Any, epochs: int, seed: int, every: int) -> np.ndarray:
    """Per-slice correctness (checkpoints x test slices) every ``every`` epochs, pooled."""
    from insitu.federation.train_cnn import train_epochs

    model, curve = _model(seed), []
    for epoch in range(1, epochs + 1):
        train_epochs(model, train, epochs=1, lr=LR, seed=seed * 1000 + epoch)
        if epoch % every == 0 or epoch == epochs:
            curve.append(_correct(model, test))
    return np.stack(curve)


def fedavg(
    sites: list[Any], test: Any, rounds: int, strategy: Strategy, seed: int, every: int
) -> np.ndarray:
    """Rounds of FedAvg as the shipped app computes them (seed 0: exactly the app's seeds).

    Local training is the app's ``train_epochs`` (FedProx with ``mu`` > 0, as the
    app's ``proximal-mu``), aggregation its ``_weighted_average``; FedAvgM (server
    learning rate and momentum on the averaged update, Hsu et al. 2019) is the
    bench's own: the app has none. Per-slice correctness whenever ``rounds x
    local`` passes a multiple of ``every`` epochs (and at the end).
    """
    from insitu.federation.train_app import _weighted_average
    from insitu.federation.train_cnn import get_weights, make_model, set_weights, train_epochs

    local = strategy.local
    weights, curve = get_weights(_model(seed)), []
    velocity = [np.zeros_like(w, dtype=np.float64) for w in weights]
    for rnd in range(1, rounds + 1):
        parts = []
        for data in sites:
            model = make_model()
            set_weights(model, weights)
            train_epochs(
                model, data, epochs=local, lr=LR, proximal_mu=strategy.mu, seed=seed * 1000 + rnd
            )
            parts.append((get_weights(model), len(data)))
        average = _weighted_average(parts)
        if strategy.momentum or strategy.server_lr != 1.0:
            for i, (w, a) in enumerate(zip(weights, average, strict=True)):
                velocity[i] = strategy.momentum * velocity[i] + (a - w)
            average = [w + strategy.server_lr * v for w, v in zip(weights, velocity, strict=True)]
        weights = [np.asarray(w, dtype=np.float32) for w in average]
        if (rnd * local) // every > ((rnd - 1) * local) // every or rnd == rounds:
            model = make_model()
            set_weights(model, weights)
            curve.append(_correct(model, test))
    return np.stack(curve)


# --- the study: tasks in worker processes ---------------------------------

_DATA: dict[str, Any] = {}


def _init_worker(sites: list[Any], test: Any) -> None:
    import torch

    torch.set_num_threads(1)  # reproducible per seed, and fair on a shared machine
    _DATA.update(sites=sites, test=test)


def _task(
    arm: Strategy | None, seed: int, epochs: int, every: int, cache: Path | None
) -> np.ndarray:
    """One arm and seed; with ``cache`` (BENCH_CACHE) a curve already computed is reused."""
    sites, test = _DATA["sites"], _DATA["test"]
    path = None
    if cache is not None:
        digest = hashlib.sha256()
        for part in [*(s.x for s in sites), *(s.y for s in sites), test.x, test.y]:
            digest.update(np.ascontiguousarray(part).tobytes())
        digest.update(repr((arm, seed, epochs, every, LR)).encode())
        path = cache / f"{digest.hexdigest()[:24]}.npy"
        if path.exists():
            return np.load(path)
    if arm is None:
        curve = pooled(_concat(sites), test, epochs, seed, every)
    else:
        curve = fedavg(sites, test, epochs // arm.local, arm, seed, every)
    if path is not None:
        np.save(path, curve)
    return curve


def plateau_scores(curve: np.ndarray) -> np.ndarray:
    """Per test slice, the mean correctness over the last third of the checkpoints."""
    return np.asarray(curve[len(curve) - max(1, len(curve) // 3) :].mean(axis=0))


def bootstrap_ratio(
    fed: np.ndarray, pool: np.ndarray, groups: np.ndarray | None, reps: int = 4000
) -> tuple[float, float, float, float]:
    """Ratio of mean accuracies FedAvg / pooled (seeds x test slices arrays, paired by seed).

    Returns (ratio, 2.5 %, 97.5 % bootstrap quantiles, share of resamples >= 0.99).
    Seeds are resampled together for both arms; with ``groups`` (each slice's test
    subject) the test subjects are resampled too, clustered, the same for both arms.
    """
    rng = np.random.default_rng(2020)
    seeds = fed.shape[0]
    if groups is None:
        per_seed_f, per_seed_p = fed.mean(axis=1), pool.mean(axis=1)
    else:
        ngroups = int(groups.max()) + 1
        sum_f = np.stack([np.bincount(groups, weights=row, minlength=ngroups) for row in fed])
        sum_p = np.stack([np.bincount(groups, weights=row, minlength=ngroups) for row in pool])
    ratios = np.empty(reps)
    for r in range(reps):
        pick = rng.integers(0, seeds, seeds)
        if groups is None:
            ratios[r] = per_seed_f[pick].mean() / per_seed_p[pick].mean()
        else:
            count = np.bincount(rng.integers(0, ngroups, ngroups), minlength=ngroups)
            ratios[r] = (sum_f[pick] @ count).sum() / (sum_p[pick] @ count).sum()
    lo, hi = np.quantile(ratios, [0.025, 0.975])
    return float(fed.mean() / pool.mean()), float(lo), float(hi), float((ratios >= 0.99).mean())


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


def _row(label: str, xs: list[float]) -> str:
    return f"| {label} | {_spread(xs)} |"


def _curve_table(curves: dict[str, list[np.ndarray]], ticks: list[int]) -> None:
    labels = list(curves)
    print("| epochs | " + " | ".join(labels) + " |")
    print("| --- |" + " --- |" * len(labels))
    for i, tick in enumerate(ticks):
        cells = [f"{statistics.median(float(c[i].mean()) for c in curves[k]):.3f}" for k in labels]
        print(f"| {tick} | " + " | ".join(cells) + " |")


def _trials(
    subjects: int, size: int, slices: int, noise: float, test_subjects: int
) -> tuple[list[Any], Any, np.ndarray]:
    """The sites' training slices and the test slices (content order) with their subjects."""
    from insitu.datasets.synthetic import TrialSpec
    from insitu.federation.train_cnn import SliceSet

    root = Path(tempfile.mkdtemp(prefix="insitu-bench-fedquality-data-"))
    try:
        with _noisier(noise):
            spec = TrialSpec(subjects_per_site=subjects, size=size, slices=slices)
            train = _site_sets(root, spec, "t")
            spec = TrialSpec(subjects_per_site=test_subjects, size=size, slices=slices, seed=77)
            test_sets = _site_sets(root, spec, "h")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    sites = [stable_order(train[s]) for s in SITES]
    test = stable_order(
        _concat(
            [
                SliceSet(t.x, t.y, [f"{site}/{who}" for who in t.subjects])
                for site, t in test_sets.items()
            ]
        )
    )
    groups = subject_groups(test.subjects)
    return sites, test, groups


def main() -> None:
    import flwr
    import torch

    from insitu.federation.train_cnn import SliceSet

    torch.set_num_threads(1)  # reproducible per seed, and fair on a shared machine
    size, slices = _env("BENCH_SIZE", 32), _env("BENCH_SLICES", 20)
    subjects, epochs = _env("BENCH_SUBJECTS", 10), _env("BENCH_EPOCHS", 240)
    local, seeds, deploy = _env("BENCH_LOCAL", 3), _env("BENCH_SEEDS", 12), _env("BENCH_DEPLOY", 0)
    noise, every = float(os.environ.get("BENCH_NOISE", 8)), _env("BENCH_EVERY", 15)
    test_subjects, jobs = _env("BENCH_TEST_SUBJECTS", 48), _env("BENCH_JOBS", 1)
    arms = parse_strategies(os.environ.get("BENCH_STRATEGIES", STRATEGIES), local)
    compare, first = _env("BENCH_COMPARE_SEEDS", 3), _env("BENCH_FIRST_SEED", 0)
    cache = Path(os.environ["BENCH_CACHE"]) if os.environ.get("BENCH_CACHE") else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    os.environ.update(BENCH_SUBJECTS=str(subjects), BENCH_SIZE=str(size))
    os.environ["BENCH_SLICES"] = str(slices)  # the deployment worker's trial: the same data
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; torch {torch.__version__}, "
        f"flwr {flwr.__version__}, numpy {np.__version__}, Python {platform.python_version()}; "
        f"{subjects} subjects/site, {size}x{size}x{slices}, noise x{noise:g}; "
        f"{jobs} worker process(es); load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    cpu = time.process_time()
    key = f"data-{subjects}-{size}-{slices}-{noise:g}-{test_subjects}.npz"
    if cache is not None and (cache / key).exists():  # the trials of an interrupted study
        with np.load(cache / key) as saved:
            sites = [SliceSet(saved[f"x{i}"], saved[f"y{i}"], []) for i in range(len(SITES))]
            test = SliceSet(saved["test_x"], saved["test_y"], [])
            groups = saved["groups"]
    else:
        sites, test, groups = _trials(subjects, size, slices, noise, test_subjects)
        if cache is not None:
            arrays = {f"x{i}": s.x for i, s in enumerate(sites)}
            arrays.update({f"y{i}": s.y for i, s in enumerate(sites)})
            np.savez(cache / key, test_x=test.x, test_y=test.y, groups=groups, **arrays)
    n_test = len(test)
    print(
        f"train slices per site {[len(s) for s in sites]} (sorted by content), test slices "
        f"{n_test} of {int(groups.max()) + 1 if n_test else 0} subjects; one checkpoint's "
        f"accuracy has a binomial SE of ~{(0.85 * 0.15 / max(n_test, 1)) ** 0.5:.3f} at 0.85"
    )
    ticks = [*range(every, epochs + 1, every)]
    ticks += [epochs] if epochs % every else []
    plateau_from = ticks[len(ticks) - max(1, len(ticks) // 3)]
    print(
        f"protocol: pooled = {epochs} epochs over the union; each federated arm = {epochs} "
        f"epochs / L local epochs per round (equal total compute), weighted by examples; "
        f"Adam lr {LR}, batch 16; per seed the same initial weights and seeded shuffles; "
        f"plateau = mean of the checkpoints from epoch ~{plateau_from} to {epochs} "
        f"(every {every}); {seeds} seeds for pooled and {arms[0].label if arms else '-'}, "
        f"{min(compare, seeds)} for the other arms",
        flush=True,
    )
    # pooled and the first arm over every seed first, then the other arms: a study cut
    # short still has its main comparison (and BENCH_CACHE resumes it)
    tasks: list[tuple[Strategy | None, int]] = [
        (arm, seed) for seed in range(first, first + seeds) for arm in [None, *arms[:1]]
    ]
    tasks += [(arm, seed) for seed in range(first, first + min(compare, seeds)) for arm in arms[1:]]
    curves: dict[Strategy | None, dict[int, np.ndarray]] = {arm: {} for arm in [None, *arms]}

    def done(arm: Strategy | None, seed: int, curve: np.ndarray) -> None:
        curves[arm][seed] = curve
        label = arm.label if arm else "pooled"
        accs = [round(float(c.mean()), 3) for c in curve]
        print(
            f"seed {seed} {label}: plateau {plateau_scores(curve).mean():.3f}; curve {accs}",
            flush=True,
        )

    if jobs <= 1:
        _init_worker(sites, test)
        for arm, seed in tasks:
            done(arm, seed, _task(arm, seed, epochs, every, cache))
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_init_worker, initargs=(sites, test)
        ) as pool:
            futures = {pool.submit(_task, a, s, epochs, every, cache): (a, s) for a, s in tasks}
            for future in as_completed(futures):
                done(*futures[future], future.result())
    print(f"wall clock so far {time.perf_counter() - START:.0f} s", flush=True)

    print("\nBENCHMARKS.md section 'federated model quality':")
    ordered = {arm: [curves[arm][s] for s in sorted(curves[arm])] for arm in curves}
    base = {"pooled": ordered[None]}
    pool_plateau = np.stack([plateau_scores(c) for c in ordered[None]])
    pool_end = np.stack([c[-1] for c in ordered[None]])
    print(_row(f"pooled plateau, {len(pool_plateau)} seeds", list(pool_plateau.mean(axis=1))))
    print(_row("pooled at the last epoch", list(pool_end.mean(axis=1))))
    for arm in arms:
        fed = ordered[arm]
        n = len(fed)
        if not n:
            continue
        fed_plateau = np.stack([plateau_scores(c) for c in fed])
        ratios = list(fed_plateau.mean(axis=1) / pool_plateau[:n].mean(axis=1))
        end = list(np.stack([c[-1] for c in fed]).mean(axis=1) / pool_end[:n].mean(axis=1))
        both = bootstrap_ratio(fed_plateau, pool_plateau[:n], groups)
        seeds_only = bootstrap_ratio(fed_plateau, pool_plateau[:n], None)
        label = f"{arm.label}, {epochs // arm.local} rounds"
        print(_row(f"{label}: plateau", list(fed_plateau.mean(axis=1))))
        print(_row(f"{label} / pooled, plateau per seed", ratios) + " target >= 0.99 |")
        print(
            f"| {label} / pooled, plateau, mean over seeds | {both[0]:.3f}, 95% CI "
            f"{both[1]:.3f}-{both[2]:.3f} (seeds and test subjects resampled; seeds only "
            f"{seeds_only[1]:.3f}-{seeds_only[2]:.3f}); share of resamples >= 0.99: "
            f"{both[3]:.2f} | seeds below 0.99: {sum(r < 0.99 for r in ratios)} of {n} |"
        )
        print(_row(f"{label} / pooled at the last epoch, per seed", end))
        print(f"per-seed plateau ratios: {[round(float(x), 3) for x in ratios]}")
        base[arm.label] = fed
    base = {k: v for k, v in base.items() if v}
    print("\nmedian accuracy per checkpoint (epochs; federated arms at the nearest round):")
    _curve_table(base, ticks)
    print(f"CPU of this process {time.process_time() - cpu:.0f} s", flush=True)
    if deploy:
        inproc = float(fedavg(sites, test, deploy, Strategy(local), 0, every)[-1].mean())
        real = _deploy(deploy, local, noise, test)
        print(
            f"| deployment, {deploy} rounds x {local} local epochs, seed 0 | "
            f"{real['accuracy']:.3f} ({real['s']:.0f} s; sites per round {real['sites']}) | "
            f"in one process: {inproc:.3f} |"
        )
    print(
        f"wall clock {time.perf_counter() - START:.0f} s; "
        f"load average at the end {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
