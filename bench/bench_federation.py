"""Federation benchmark (issue 5): Flower round overhead, model quality federated vs
pooled vs single site, and the cost of SecAgg+.

    .venv/bin/python bench/run.py federation

Environment: BENCH_SUBJECTS (per site, default 24), BENCH_SIZE (default 64),
BENCH_SLICES (default 16), BENCH_ROUNDS (default 8), BENCH_KEEP=1 keeps the
work folder. Everything runs on loopback: a SuperLink and three SuperNodes,
each with its own node home holding one site of the synthetic LOCAT-like trial.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

SITES = ("site-a", "site-b", "site-c")
DATASET = "locat"


def _env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _ingest_sites(root: Path, spec, name: str) -> dict[str, object]:
    from insitu.config import NodeHome, init_home
    from insitu.datasets.ingest import ingest
    from insitu.datasets.synthetic import generate_trial

    trial = generate_trial(root / f"trial-{name}", spec, show_progress=False)
    homes = {}
    for site in SITES:
        home = NodeHome(root / f"{name}-{site}")
        init_home(home, site)
        ingest([trial.dicom_dir(site)], DATASET, home=home, show_progress=False)
        homes[site] = home
    return homes


def _slices(home, per_subject: int = 8):
    from insitu.datasets.reader import open_dataset
    from insitu.federation.node_data import SiteData
    from insitu.federation.train_cnn import load_slices

    data = SiteData(open_dataset(DATASET, home=home), site="x", dataset=DATASET)
    return load_slices(data, per_subject)


def _concat(sets):
    from insitu.federation.train_cnn import SliceSet

    return SliceSet(
        np.concatenate([s.x for s in sets]),
        np.concatenate([s.y for s in sets]),
        [subject for s in sets for subject in s.subjects],
    )


def _train_local(train, epochs: int, lr: float):
    from insitu.federation.train_cnn import make_model, train_epochs

    model = make_model()
    start = time.perf_counter()
    for epoch in range(epochs):
        train_epochs(model, train, epochs=1, lr=lr, seed=epoch + 1)
    return model, time.perf_counter() - start


def _fedavg_in_process(site_sets, rounds: int, local_epochs: int, lr: float):
    from insitu.federation.train_app import _weighted_average
    from insitu.federation.train_cnn import get_weights, make_model, set_weights, train_epochs

    weights = get_weights(make_model())
    for rnd in range(1, rounds + 1):
        parts = []
        for data in site_sets:
            model = make_model()
            set_weights(model, weights)
            train_epochs(model, data, epochs=local_epochs, lr=lr, seed=rnd)
            parts.append((get_weights(model), len(data)))
        weights = [w.astype(np.float32) for w in _weighted_average(parts)]
    model = make_model()
    set_weights(model, weights)
    return model


def main() -> None:
    from insitu.config import NodeHome, init_home
    from insitu.datasets.synthetic import TrialSpec
    from insitu.federation import approvals, processes
    from insitu.federation.analytics import (
        AnalysisSpec,
        analytics_fingerprint,
        analyze,
        combine,
        feature_frame,
        parse_reply,
        site_summary,
    )
    from insitu.federation.node_data import SiteData
    from insitu.federation.train_app import run_training, training_fingerprint
    from insitu.federation.train_cnn import evaluate, make_model, set_weights
    from insitu.net import free_port

    subjects, size, slices = (
        _env("BENCH_SUBJECTS", 24),
        _env("BENCH_SIZE", 64),
        _env("BENCH_SLICES", 16),
    )
    rounds, lr = _env("BENCH_ROUNDS", 8), 0.005
    root = Path(tempfile.mkdtemp(prefix="insitu-bench-federation-"))
    print(f"work folder {root}; {subjects} subjects/site, {size}x{size}x{slices}, {rounds} rounds")
    homes = _ingest_sites(
        root, TrialSpec(subjects_per_site=subjects, size=size, slices=slices), "train"
    )
    tests = _ingest_sites(
        root, TrialSpec(subjects_per_site=12, size=size, slices=slices, seed=77), "test"
    )
    test_set = _concat([_slices(h) for h in tests.values()])

    coordinator = NodeHome(root / "coordinator")
    init_home(coordinator, "coordinator")
    address = f"127.0.0.1:{free_port()}"
    results: dict[str, object] = {}
    try:
        processes.start_coordinator(coordinator, address, insecure=True)
        for home in homes.values():
            processes.start_site(home, address, DATASET, insecure=True)
            for fp in (
                analytics_fingerprint(),
                training_fingerprint(),
                training_fingerprint(secagg=True),
            ):
                approvals.approve(home, fp, DATASET, days=1, user="bench")

        # 1. round overhead: one analytics round through Flower vs the same computation here.
        spec = AnalysisSpec(DATASET, "hu_mean", by="KVP", min_sites=3)
        start = time.perf_counter()
        analyze(
            address=address,
            insecure=True,
            dataset=DATASET,
            feature="hu_mean",
            by="KVP",
            min_sites=3,
        )
        results["analytics_flower_s"] = time.perf_counter() - start
        start = time.perf_counter()
        replies = []
        for site, home in homes.items():
            from insitu.datasets.reader import open_dataset

            data = SiteData(open_dataset(DATASET, home=home), site=site, dataset=DATASET)
            content = site_summary(feature_frame(data, spec), spec, site=site, min_cell_count=10)
            replies.append(parse_reply(content))
        combine(replies, spec)
        results["analytics_local_s"] = time.perf_counter() - start

        # 2. quality: federated (FedAvg, `rounds` x 1 local epoch) vs pooled vs one site.
        start = time.perf_counter()
        fed = run_training(
            address=address,
            insecure=True,
            rounds=rounds,
            min_sites=3,
            wait_for_sites=3,
            lr=lr,
            round_timeout=600,
            timeout=7200,
        )
        results["federated_s"] = time.perf_counter() - start
        assert fed.completed, fed.logs[-3000:]
        fed_model = make_model()
        set_weights(fed_model, [np.asarray(w, dtype=np.float32) for w in fed.result["weights"]])
        site_sets = {site: _slices(home) for site, home in homes.items()}
        pooled_model, pooled_s = _train_local(_concat(list(site_sets.values())), rounds, lr)
        single_model, single_s = _train_local(site_sets["site-a"], rounds, lr)
        results["pooled_s"], results["single_s"] = pooled_s, single_s
        # The same FedAvg maths in one process (no Flower): is a gap transport or algorithm?
        sim1 = _fedavg_in_process(list(site_sets.values()), rounds, 1, lr)
        sim3 = _fedavg_in_process(list(site_sets.values()), rounds, 3, lr)
        for name, model in (
            ("federated", fed_model),
            ("pooled", pooled_model),
            ("single", single_model),
            ("sim1", sim1),
            ("sim3", sim3),
        ):
            results[f"{name}_loss"], results[f"{name}_acc"] = evaluate(model, test_set)

        # 3. SecAgg+ cost: the same training, 2 rounds, with and without SecAgg+.
        start = time.perf_counter()
        plain = run_training(
            address=address,
            insecure=True,
            rounds=2,
            min_sites=3,
            wait_for_sites=3,
            lr=lr,
            round_timeout=600,
            timeout=3600,
        )
        results["plain2_s"] = time.perf_counter() - start
        for home in homes.values():
            _set_policy(home, secure_aggregation=True)
        start = time.perf_counter()
        secagg = run_training(
            address=address, insecure=True, rounds=2, min_sites=3, secagg=True, timeout=3600
        )
        results["secagg2_s"] = time.perf_counter() - start
        assert plain.completed and secagg.completed
    finally:
        for home in [*homes.values(), coordinator]:
            processes.stop(home)
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
    _report(results, rounds, len(test_set))


def _set_policy(home, **values) -> None:
    import dataclasses

    from insitu.config import load_config

    config = load_config(home)
    config = dataclasses.replace(config, policy=dataclasses.replace(config.policy, **values))
    home.config_path.write_text(config.to_toml())


def _report(r: dict, rounds: int, n_test: int) -> None:
    print("\nBENCHMARKS.md section 'federation':")
    print("| measure | value | baseline | ratio |")
    print("| --- | --- | --- | --- |")
    print(
        f"| one analytics run (3 sites, hu_mean by KVP) | {r['analytics_flower_s']:.1f} s | "
        f"same computation in one process: {r['analytics_local_s']:.2f} s | "
        f"{r['analytics_flower_s'] / r['analytics_local_s']:.0f}x |"
    )
    print(
        f"| federated training, {rounds} rounds | {r['federated_s']:.0f} s "
        f"({r['federated_s'] / rounds:.1f} s/round) | pooled, {rounds} epochs in one process: "
        f"{r['pooled_s']:.1f} s | {r['federated_s'] / r['pooled_s']:.0f}x |"
    )
    print(
        f"| held-out accuracy ({n_test} slices) | federated {r['federated_acc']:.3f} | "
        f"pooled {r['pooled_acc']:.3f}; site-a only {r['single_acc']:.3f} | "
        f"**{r['federated_acc'] / r['pooled_acc']:.3f}** x pooled (target >= 0.99) |"
    )
    print(
        f"| held-out loss | federated {r['federated_loss']:.3f} | pooled {r['pooled_loss']:.3f}; "
        f"site-a only {r['single_loss']:.3f} | |"
    )
    for key, what in (("sim1", "1 local epoch"), ("sim3", "3 local epochs per round")):
        print(
            f"| same FedAvg in one process (no Flower), {what} | accuracy {r[key + '_acc']:.3f}, "
            f"loss {r[key + '_loss']:.3f} | pooled {r['pooled_acc']:.3f} | "
            f"{r[key + '_acc'] / r['pooled_acc']:.3f} x pooled |"
        )
    print(
        f"| SecAgg+ (2 rounds, 3 sites) | {r['secagg2_s']:.0f} s | plain FedAvg 2 rounds: "
        f"{r['plain2_s']:.0f} s | {r['secagg2_s'] / r['plain2_s']:.1f}x |"
    )


if __name__ == "__main__":
    main()
