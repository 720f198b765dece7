"""Disclosure engine (issue 12): both corpora, verdict counts and check time per file type.

    python bench/run.py disclosure

The corpora are the test suite's (tests/disclosure_corpus.py: adversarial release
attempts and legitimate outputs, against a site of 12 subjects with 6x48x40 series).
Baseline: the airlock checks before the engine (hub/airlock_checks.py at commit
eb7413e, read from git), run on the same files in the same run. Times are medians of
5 runs of one check per file, with the spread (min-max), grouped by sniffed type.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "eb7413e"
RUNS = 5


def _baseline() -> types.ModuleType:
    source = subprocess.run(
        ["git", "show", f"{BASELINE_COMMIT}:hub/airlock_checks.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    module = types.ModuleType("airlock_checks_baseline")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, "airlock_checks_baseline", "exec"), module.__dict__)  # noqa: S102
    return module


def _timed(fn, runs: int = RUNS) -> tuple[float, float, float, object]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times), result


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from disclosure_corpus import ATTACKS, LEGITIMATE
    from fixtures_disclosure import corpus_home

    from insitu.config import load_config
    from insitu.datasets.disclosure_context import disclosure_context
    from insitu.disclosure import check_file
    from insitu.errors import PolicyViolationError
    from insitu.hub.airlock_checks import check_admissible

    base = _baseline()
    tmp = Path(tempfile.mkdtemp())
    home = corpus_home(tmp)
    config = load_config(home)
    ctx = disclosure_context(home, config)
    ids = base.site_identifiers(home)
    check_file(b"warm-up\n", name="a.txt", ctx=ctx)
    for corpus_name, corpus in (("adversarial", ATTACKS), ("legitimate", LEGITIMATE)):
        engine_counts: Counter[str] = Counter()
        base_counts: Counter[str] = Counter()
        times: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for name, make in sorted(corpus.items()):
            filename, data, evidence = make()
            try:
                check_admissible(filename, len(data), config.policy)
            except PolicyViolationError:
                engine_counts["refused"] += 1
                base_counts["refused"] += 1
                continue
            median, low, high, report = _timed(
                lambda d=data, f=filename, e=evidence: check_file(d, name=f, ctx=ctx, evidence=e)
            )
            engine_counts[report.verdict.value] += 1
            path = tmp / "files" / name.replace("/", "_") / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            try:
                base.check_admissible(filename, len(data), config.policy)
                b_median, _bl, _bh, results = _timed(
                    lambda p=path, e=evidence: base.run_checks(
                        p, policy=config.policy, ids=ids, evidence=e
                    )
                )
                base_counts[base.overall_status(results)] += 1
            except PolicyViolationError:
                base_counts["refused"] += 1
                b_median = float("nan")
            except Exception:  # the old checks crashed: the airlock stored "fail"
                base_counts["fail"] += 1
                b_median = float("nan")
            times[report.sniffed_type].append((median, b_median))
            ms = f"{median * 1000:8.1f} ms (min {low * 1000:.1f}, max {high * 1000:.1f})"
            print(f"  {corpus_name:11s} {name:40s} {report.verdict.value:6s} {ms}")
        print(f"{corpus_name}: {len(corpus)} files")
        print(f"  engine   : {dict(sorted(engine_counts.items()))}")
        print(f"  baseline : {dict(sorted(base_counts.items()))}")
        print("  | type | files | engine median of per-file medians (ms) | baseline (ms) | ratio |")
        for kind, pairs in sorted(times.items()):
            eng = statistics.median(p[0] for p in pairs) * 1000
            old = [p[1] for p in pairs if p[1] == p[1]]
            old_ms = statistics.median(old) * 1000 if old else float("nan")
            print(f"  | {kind} | {len(pairs)} | {eng:.1f} | {old_ms:.1f} | {eng / old_ms:.1f} |")


if __name__ == "__main__":
    main()
