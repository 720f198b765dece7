"""Mergeable summaries: what a site sends, and how the coordinator combines them.

Every summary here is a *sufficient statistic*: merging the sites' summaries
gives the same answer as computing on the pooled values.

- :class:`Moments` keeps (n, mean, M2) (M2 = sum of squared deviations), the
  form that merges without cancellation (Chan, Golub & LeVeque 1979). A site
  computes it with ``math.fsum`` in two passes and sends its mean as two
  doubles (value and residual); the coordinator merges the few per-site
  numbers in exact rational arithmetic and rounds once, so merged moments
  match the pooled result to ~1e-16 relative (the tests ask for 1e-12).
  (n, sum, sum of squares) is the same information, but subtracting
  ``sum**2 / n`` from ``sumsq`` loses most digits when the mean is large
  compared with the spread, e.g. HU values around 1000 +- 1.
- :class:`Histogram`: integer counts on fixed edges: merging is exact.
- :class:`Sketch`: a quantile sketch like a t-digest, whose centroids each
  hold at least ``min_count`` values (so no centroid is one subject's value);
  merged quantiles are exact to within one centroid's spread.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["Histogram", "Moments", "Sketch"]


@dataclass(frozen=True)
class Moments:
    """(n, mean, M2), the mean carried as an unevaluated sum ``mean + mean_lo``.

    A site's mean of values near 1e4 is only good to ~1e-12 absolute as one
    double; the low part keeps the rest, so the merge of site means that
    differ by less than that still gives the pooled variance to ~1e-16.
    """

    n: int
    mean: float
    m2: float
    mean_lo: float = 0.0

    @classmethod
    def of(cls, values: Iterable[float]) -> Moments:
        data = [float(v) for v in values]
        n = len(data)
        if n == 0:
            return cls(0, 0.0, 0.0)
        mean = math.fsum(data) / n
        # fsum is exact before its one rounding: the residual of the rounded mean.
        mean_lo = math.fsum([*data, *([-mean] * n)]) / n
        m2 = math.fsum(((v - mean) - mean_lo) ** 2 for v in data)
        return cls(n, mean, m2, mean_lo)

    def merge(self, other: Moments) -> Moments:
        return Moments.combine([self, other])

    @classmethod
    def combine(cls, parts: Iterable[Moments]) -> Moments:
        """Merge exactly (rational arithmetic on the few per-site numbers), round once."""
        parts = [p for p in parts if p.n]
        if not parts:
            return cls(0, 0.0, 0.0)
        n = sum(p.n for p in parts)
        means = [Fraction(p.mean) + Fraction(p.mean_lo) for p in parts]
        mean = sum((p.n * m for p, m in zip(parts, means, strict=True)), Fraction(0)) / n
        m2 = sum((Fraction(p.m2) for p in parts), Fraction(0)) + sum(
            (p.n * (m - mean) ** 2 for p, m in zip(parts, means, strict=True)), Fraction(0)
        )
        hi = float(mean)
        return cls(n, hi, float(m2), float(mean - Fraction(hi)))

    @property
    def variance(self) -> float:
        """Sample variance (n - 1 in the denominator), NaN below two values."""
        return self.m2 / (self.n - 1) if self.n > 1 else math.nan

    @property
    def std(self) -> float:
        return math.sqrt(self.variance) if self.n > 1 else math.nan


@dataclass(frozen=True)
class Histogram:
    edges: tuple[float, ...]
    counts: tuple[int, ...]

    @classmethod
    def of(cls, values: Iterable[float], edges: Sequence[float]) -> Histogram:
        edges_arr = np.asarray(edges, dtype=float)
        if edges_arr.ndim != 1 or len(edges_arr) < 2 or np.any(np.diff(edges_arr) <= 0):
            raise ValueError("histogram edges must be at least two increasing numbers")
        counts, _ = np.histogram(np.asarray(list(values), dtype=float), bins=edges_arr)
        return cls(tuple(float(e) for e in edges_arr), tuple(int(c) for c in counts))

    def merge(self, other: Histogram) -> Histogram:
        if self.edges != other.edges:
            raise ValueError("cannot merge histograms with different edges")
        return Histogram(
            self.edges, tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        )

    def suppress_below(self, min_count: int) -> tuple[Histogram, list[int]]:
        """Counts 1..min_count-1 become 0; returns the histogram and the bins hidden."""
        hidden = [i for i, c in enumerate(self.counts) if 0 < c < min_count]
        counts = tuple(0 if i in hidden else c for i, c in enumerate(self.counts))
        return Histogram(self.edges, counts), hidden


@dataclass(frozen=True)
class Sketch:
    """Sorted centroids (mean, count); every count is >= the site's minimum."""

    means: tuple[float, ...]
    counts: tuple[int, ...]

    @classmethod
    def of(cls, values: Iterable[float], min_count: int, max_centroids: int = 50) -> Sketch:
        data = np.sort(np.asarray(list(values), dtype=float))
        n = len(data)
        if n < min_count or n == 0:
            return cls((), ())
        size = max(min_count, math.ceil(n / max_centroids))
        chunks = n // size
        bounds = [round(i * n / chunks) for i in range(chunks + 1)]
        means = []
        counts = []
        for lo, hi in itertools.pairwise(bounds):
            part = data[lo:hi]
            means.append(math.fsum(part.tolist()) / len(part))
            counts.append(len(part))
        return cls(tuple(means), tuple(counts))

    def merge(self, other: Sketch) -> Sketch:
        pairs = sorted(zip(self.means + other.means, self.counts + other.counts, strict=True))
        return Sketch(tuple(m for m, _ in pairs), tuple(c for _, c in pairs))

    @property
    def n(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float:
        """Interpolated quantile: each centroid stands at the middle of its mass."""
        if not self.counts:
            return math.nan
        if not 0 <= q <= 1:
            raise ValueError(f"quantile {q} is not between 0 and 1")
        counts = np.asarray(self.counts, dtype=float)
        centres = np.cumsum(counts) - counts / 2
        target = q * self.n
        return float(np.interp(target, centres, np.asarray(self.means)))
