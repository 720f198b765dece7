"""Merging the sites' summaries gives the pooled answer (insitu.federation.stats)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from insitu.federation.stats import Histogram, Moments, Sketch

# Values whose squared differences stay normal doubles (squares of 1e-200 underflow).
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False).filter(
    lambda v: v == 0 or abs(v) > 1e-100
)


def _split(values: list[float], cuts: list[int]) -> list[list[float]]:
    bounds = sorted({0, len(values), *(c % (len(values) + 1) for c in cuts)})
    return [values[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, min_size=2, max_size=200), st.lists(st.integers(0, 200), max_size=4))
def test_merged_moments_equal_pooled_to_1e12(values, cuts):
    parts = [Moments.of(p) for p in _split(values, cuts)]
    merged = Moments.combine(parts)
    pairwise = parts[0]
    for part in parts[1:]:
        pairwise = pairwise.merge(part)
    exact = [Fraction(v) for v in values]
    mean = sum(exact, Fraction(0)) / len(exact)
    variance = sum(((v - mean) ** 2 for v in exact), Fraction(0)) / (len(exact) - 1)
    for got in (merged, pairwise):
        assert got.n == len(values)
        assert abs(Fraction(got.mean) - mean) <= Fraction(1e-12) * max(abs(mean), Fraction(1e-300))
        assert abs(Fraction(got.variance) - variance) <= Fraction(1e-12) * variance


def test_moments_keep_digits_where_sum_of_squares_does_not():
    """Values around 1000 +- 1: (n, sum, sumsq) loses the variance, (n, mean, M2) does not."""
    rng = np.random.default_rng(0)
    values = (1e6 + rng.normal(0, 1, 3000)).tolist()
    sites = [values[:1000], values[1000:2500], values[2500:]]
    merged = Moments.combine(Moments.of(s) for s in sites)
    pooled = float(np.var(np.asarray(values) - 1e6, ddof=1))
    assert merged.variance == pytest.approx(pooled, rel=1e-9)


@given(st.lists(finite, max_size=100), st.lists(finite, max_size=100))
def test_histograms_merge_exactly(a, b):
    edges = [-1e6, -10.0, 0.0, 10.0, 1e6 + 1]
    merged = Histogram.of(a, edges).merge(Histogram.of(b, edges))
    assert merged == Histogram.of(a + b, edges)


def test_histogram_suppression_hides_small_bins_only():
    hist = Histogram.of([1, 1, 1, 5, 15, 15, 15, 15], [0, 2, 10, 20])
    shown, hidden = hist.suppress_below(3)
    assert hist.counts == (3, 1, 4)
    assert shown.counts == (3, 0, 4)
    assert hidden == [1]


def test_histogram_edges_must_increase():
    with pytest.raises(ValueError, match="increasing"):
        Histogram.of([1.0], [0, 0, 1])


def test_sketch_centroids_hold_at_least_the_minimum_and_merge_to_close_quantiles():
    rng = np.random.default_rng(1)
    sites = [rng.normal(loc, 10, n).tolist() for loc, n in ((0, 200), (5, 300), (-3, 250))]
    sketches = [Sketch.of(s, min_count=10) for s in sites]
    for sketch in sketches:
        assert min(sketch.counts) >= 10
    merged = sketches[0].merge(sketches[1]).merge(sketches[2])
    pooled = np.concatenate(sites)
    assert merged.n == len(pooled)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert merged.quantile(q) == pytest.approx(np.quantile(pooled, q), abs=1.5)


def test_sketch_of_too_few_values_is_empty():
    assert Sketch.of([1.0, 2.0], min_count=10).counts == ()
    assert math.isnan(Sketch((), ()).quantile(0.5))
