"""Both corpora (tests/disclosure_corpus.py) through the public release API: the airlock.

Every adversarial attempt must fail or be refused; at most 5 % of the legitimate
outputs may be flagged worse than review (docs/reference/airlock-checks.md has the
results, bench/bench_disclosure.py measures them).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from disclosure_corpus import ATTACKS, LEGITIMATE
from fixtures_disclosure import corpus_home

from insitu.config import NodeHome
from insitu.errors import PolicyViolationError
from insitu.hub.airlock import Airlock


@pytest.fixture(scope="module")
def lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airlock]:
    home: NodeHome = corpus_home(Path(tmp_path_factory.mktemp("corpus")))
    with Airlock(home) as airlock:
        yield airlock


def submit(lock: Airlock, entry: tuple[str, bytes, dict | None]) -> str:
    filename, data, evidence = entry
    try:
        request = lock.submit("mallory", data, filename, purpose="corpus", evidence=evidence)
    except PolicyViolationError:
        return "refused"
    return request.status


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_fails_or_is_refused(lock: Airlock, name: str):
    outcome = submit(lock, ATTACKS[name]())
    assert outcome in ("fail", "refused"), (name, lock.list()[-1].checks)


def test_the_corpora_are_large_enough():
    assert len(ATTACKS) >= 60 and len(LEGITIMATE) >= 30
    classes = {name.split("/")[0] for name in ATTACKS}
    assert {
        "type",
        "png",
        "pdf",
        "csv",
        "json",
        "npz",
        "pt",
        "safetensors",
        "ipynb",
        "zip",
    } <= classes


def test_legitimate_outputs_are_at_most_reviewed(lock: Airlock):
    outcomes = {name: submit(lock, make()) for name, make in LEGITIMATE.items()}
    flagged = {name: o for name, o in outcomes.items() if o not in ("pass", "review")}
    assert len(flagged) <= 0.05 * len(outcomes), flagged
