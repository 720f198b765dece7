"""The federated-quality bench's own machinery (bench/bench_fedquality.py).

The study itself runs on demand (``bench/run.py fedquality``); these check the
pieces its verdict rests on: a content order that does not depend on the
sites' pseudonyms, the strategies' parsing, and the paired bootstrap.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_fedquality as bench

from insitu.federation.train_cnn import SliceSet


def _slices(n: int, seed: int) -> SliceSet:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 4, 4), dtype=np.float32)
    y = rng.integers(0, 2, n)
    return SliceSet(x, y, [f"subject-{i // 2}" for i in range(n)])


def test_stable_order_ignores_the_order_slices_come_in():
    data = _slices(12, 1)
    perm = np.random.default_rng(2).permutation(12)
    shuffled = SliceSet(data.x[perm], data.y[perm], [data.subjects[i] for i in perm])
    a, b = bench.stable_order(data), bench.stable_order(shuffled)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert a.subjects == b.subjects
    # pseudonyms renamed (another node home's key): the same groups in the same order
    renamed = SliceSet(data.x, data.y, [s.replace("subject", "pseudo") for s in data.subjects])
    c = bench.stable_order(renamed)
    assert np.array_equal(bench.subject_groups(a.subjects), bench.subject_groups(c.subjects))


def test_parse_strategies():
    arms = bench.parse_strategies("fedavg fedavg:l=5 fedprox:mu=0.01 fedavgm:slr=0.5,m=0.9", 3)
    assert arms == [
        bench.Strategy(3),
        bench.Strategy(5),
        bench.Strategy(3, mu=0.01),
        bench.Strategy(3, server_lr=0.5, momentum=0.9),
    ]
    assert [a.label for a in arms][2:] == [
        "FedProx mu 0.01, 3 local",
        "FedAvgM lr 0.5 m 0.9, 3 local",
    ]
    with pytest.raises(ValueError, match="choose from fedavg, fedprox, fedavgm"):
        bench.parse_strategies("scaffold", 3)
    with pytest.raises(ValueError, match="choose from l, mu, slr, m"):
        bench.parse_strategies("fedavg:lr=1", 3)
    with pytest.raises(ValueError, match="needs mu"):
        bench.parse_strategies("fedprox", 3)


def test_bootstrap_ratio_is_paired_and_clustered():
    rng = np.random.default_rng(0)
    pool = (rng.random((6, 40)) < 0.85).astype(float)
    groups = np.repeat(np.arange(10), 4)
    same = bench.bootstrap_ratio(pool, pool, groups, reps=200)
    assert same[:3] == (1.0, 1.0, 1.0) and same[3] == 1.0
    worse = pool.copy()
    worse[:, :4] = 0.0  # one test subject always wrong in the federated arm
    ratio, lo, hi, _share = bench.bootstrap_ratio(worse, pool, groups, reps=500)
    assert lo <= ratio < 1.0 and ratio <= hi <= 1.0
    assert ratio == pytest.approx(worse.mean() / pool.mean())
    seeds_only = bench.bootstrap_ratio(worse, pool, None, reps=500)
    assert seeds_only[0] == pytest.approx(ratio)
