"""Shared fixtures: throwaway node homes. Component fixtures live in their own
conftest-style modules (tests/fixtures_*.py) and are registered below."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from insitu.config import NodeHome, init_home

# Tests press Ctrl-C (SIGINT) on the demo and `insitu up --foreground`. A suite started
# in the background by a shell without job control (`make test &`, a CI runner's
# script) inherits SIGINT *ignored*, and so would every child: `insitu demo` then never
# sees the Ctrl-C and is killed after two minutes. A handler here makes children start
# with the default disposition, as in a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NodeHome]:
    """An initialised node home in a temp folder, set as INSITU_HOME."""
    node = NodeHome(tmp_path / "home")
    init_home(node, "test-site")
    monkeypatch.setenv("INSITU_HOME", str(node.root))
    yield node


pytest_plugins = [
    "fixtures_hub",
    "fixtures_datasets",
    "fixtures_experience",
    "fixtures_airlock",
    "fixtures_deid",
    "fixtures_federation",
    "fixtures_pacs",
    "fixtures_deface",
]


# In CI every dependency is installed by `make test` (pip, npm, apt, root), so a
# test that skips there would hide a missing install step: count it as a failure.
_STRICT_SKIPS = os.environ.get("CI") == "true"


def _fail_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if _STRICT_SKIPS and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where everything is installed: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    _fail_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    _fail_skip(outcome.get_result())
