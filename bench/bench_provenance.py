"""Pixel-provenance benchmark: detection rates and check time per grid.

    .venv/bin/python bench/run.py provenance     (or: python bench/bench_provenance.py)

Index: the demo trial's site (12 CT series of 128x128x40 made by the synthetic
trial's phantom, as ingest fingerprints them) plus a colour fundus-like photo.
Attacks: transformed slices of those series (tests/provenance_corpus.py).
Legitimate: figures a trial researcher releases and images of OTHER people
(pydicom's test images). Baseline: what a checker without fingerprints could
do, an exact match of a grid's bytes with a plane of a series in any of its 8
flips/transposes (the "raw array" test). Times: seconds per grid, median of 5
runs over the corpus (each run's median), with min..max of those 5.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

RUNS = int(__import__("os").environ.get("BENCH_RUNS", "5"))


def _exact_hashes(volumes: list[np.ndarray]) -> set[bytes]:
    import hashlib

    out = set()
    for v in volumes:
        for axis in range(3):
            for plane in np.moveaxis(v, axis, 0):
                for variant in (plane, plane.T):
                    for flipped in (variant, variant[::-1], variant[:, ::-1], variant[::-1, ::-1]):
                        out.add(hashlib.sha256(np.ascontiguousarray(flipped).tobytes()).digest())
    return out


def _baseline(grid: np.ndarray, hashes: set[bytes]) -> bool:
    import hashlib

    g = np.ascontiguousarray(np.asarray(grid, dtype=np.float32))
    return hashlib.sha256(g.tobytes()).digest() in hashes


def main() -> None:
    from provenance_corpus import (
        SPACING,
        attacks,
        fundus,
        legitimate,
        random_crops,
        site_volumes,
    )

    from insitu.disclosure.provenance import FingerprintIndex, fingerprint_series

    volumes = site_volumes(12, size=128, slices=40)
    colour = fundus()
    index = FingerprintIndex()
    start = time.perf_counter()
    for j, v in enumerate(volumes):
        index.add("trial", "v1", f"ct-{j}", fingerprint_series(v, spacing=SPACING))
    index.add("fundus", "v1", "photo", fingerprint_series(colour))
    fp_time = (time.perf_counter() - start) / (len(volumes) + 1)
    start = time.perf_counter()
    planes = index.planes
    build = time.perf_counter() - start
    hashes = _exact_hashes(volumes)

    bad = attacks(volumes, colour)
    good = legitimate()

    def check(grid: np.ndarray) -> object:
        g = np.asarray(grid)
        return index.match_vector(g) if g.ndim == 1 else index.match_grid(g)

    tp = {name: check(g) is not None for name, g in bad.items()}
    crops = random_crops(volumes)
    crop_hits = {}
    crop_any = {}  # a match naming another series still fails the output
    for name, g in crops.items():
        found = check(g)
        crop_hits[name] = getattr(found, "series_id", None) == f"ct-{name[1]}"
        crop_any[name] = found is not None
    fp = {name: check(g) is not None for name, g in good.items()}
    base_tp = sum(_baseline(g, hashes) for g in bad.values())
    runs: list[float] = []
    for _ in range(RUNS):
        per = []
        for g in [*bad.values(), *good.values()]:
            t0 = time.perf_counter()
            check(g)
            per.append(time.perf_counter() - t0)
        runs.append(statistics.median(per))
    legit_runs: list[float] = []
    for _ in range(RUNS):
        per = []
        for g in good.values():
            t0 = time.perf_counter()
            check(g)
            per.append(time.perf_counter() - t0)
        legit_runs.append(statistics.median(per))

    print("BENCHMARKS.md section: Pixel provenance")
    print(f"index: {len(index)} series, {planes} planes (built in {build:.2f} s); ")
    print(f"fingerprint per series: {fp_time:.2f} s")
    print(
        f"true positives: {sum(tp.values())}/{len(tp)} = {sum(tp.values()) / len(tp):.1%} "
        f"(baseline exact-bytes match: {base_tp}/{len(tp)} = {base_tp / len(tp):.1%})"
    )
    print(f"false positives: {sum(fp.values())}/{len(fp)} = {sum(fp.values()) / len(fp):.1%}")
    n_crops = sum(crop_hits.values())
    print(
        f"random crops (right series named): {n_crops}/{len(crop_hits)} = "
        f"{n_crops / len(crop_hits):.1%}"
    )
    n_any = sum(crop_any.values())
    print(
        f"random crops detected (any series): {n_any}/{len(crop_any)} = "
        f"{n_any / len(crop_any):.1%}; another series named: {n_any - n_crops}"
    )
    for kind in ("raw", "window", "resized 1.7x flipped", "transposed affine", "noise 5 %"):
        part = [hit for name, hit in crop_hits.items() if name.endswith(kind)]
        det = sum(hit for name, hit in crop_any.items() if name.endswith(kind))
        print(f"  {kind}: {sum(part)}/{len(part)} (detected: {det})")
    print("crops missed:", ", ".join(n for n, hit in crop_any.items() if not hit) or "none")
    print("missed:", ", ".join(n for n, hit in tp.items() if not hit) or "none")
    print("false alarms:", ", ".join(n for n, hit in fp.items() if hit) or "none")
    print(
        f"check time per grid, all: median {statistics.median(runs) * 1000:.0f} ms "
        f"(5 runs, {min(runs) * 1000:.0f}..{max(runs) * 1000:.0f})"
    )
    print(
        f"check time per grid, legitimate figures: median "
        f"{statistics.median(legit_runs) * 1000:.0f} ms "
        f"(5 runs, {min(legit_runs) * 1000:.0f}..{max(legit_runs) * 1000:.0f})"
    )


if __name__ == "__main__":
    main()
