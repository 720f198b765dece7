"""The federated notebooks run headless against the demo's three sites joined to a real
Flower federation on loopback (coordinator + three SuperNodes, apps approved by the steward)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from insitu.config import NodeHome, load_config

pytestmark = pytest.mark.slow
SITES = ("site-a", "site-b", "site-c")

from test_notebooks_examples import outputs, run_notebook  # noqa: E402


def _small_cells(home: NodeHome) -> None:
    # The test demo has 4 subjects per site (2 per arm): let such cells out.
    config = load_config(home)
    policy = dataclasses.replace(config.policy, min_cell_count=2, min_subjects=4)
    home.config_path.write_text(dataclasses.replace(config, policy=policy).to_toml())


@pytest.fixture(scope="module")
def federation(
    demo_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, NodeHome], dict[str, str]]]:
    """`insitu demo --federation`'s loopback federation, on a copy of the session's demo."""
    from fixtures_experience import DEMO_SPEC

    from insitu.demo import federation_env, prepare, start_federation, stop_federation

    root = tmp_path_factory.mktemp("fed-demo") / "demo"
    shutil.copytree(demo_root, root, symlinks=True)
    setup = prepare(root, DEMO_SPEC, quiet=True)  # finds everything in place
    homes = {site.name: site.home for site in setup.sites}
    for home in homes.values():
        _small_cells(home)
    address = start_federation(setup)
    try:
        # alice of site-a submits: her identity signed by site-a, her coordinator token.
        yield address, homes, federation_env(setup)
    finally:
        stop_federation(setup)


def test_federated_analysis_notebook(federation, tmp_path: Path) -> None:
    address, _homes, env = federation
    nb = run_notebook(
        "04-federated-analysis.ipynb",
        tmp_path,
        env,
        # 5 bins: the test sites serve 4 subjects each, and a 4-bin histogram would have one
        # entry per subject served, which each site's checker refuses (the demo has 12).
        params=f'FEDERATION = None\nADDRESS = "{address}"\nDATASET = "locat"\n'
        "BINS = [0, 50, 100, 150, 200, 400]",
    )
    text = outputs(nb)
    assert "sites: ['site-a', 'site-b', 'site-c']" in text, text
    assert "refused: []" in text
    assert "100.0" in text and "120.0" in text  # the two dose arms


def test_federated_training_notebook(federation, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    address, homes, env = federation
    nb = run_notebook(
        "05-federated-training.ipynb",
        tmp_path,
        env,
        params=f'FEDERATION = None\nADDRESS = "{address}"\nROUNDS = 1',
    )
    text = outputs(nb)
    assert "round 1: sites ['site-a', 'site-b', 'site-c']" in text, text  # one round: fast
    from insitu.audit import AuditLog

    for home in homes.values():
        replies = AuditLog(home).query(kind="federation.reply")
        assert replies and all(r["details"]["decision"] == "allowed" for r in replies)
        assert {r["user"] for r in replies} == {"alice@site-a"}
