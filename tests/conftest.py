"""Shared fixtures: throwaway node homes. Component fixtures live in their own
conftest-style modules (tests/fixtures_*.py) and are registered below."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from insitu.config import NodeHome, init_home


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
