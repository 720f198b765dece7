"""The federated notebooks run headless against the demo's three sites joined to a real
Flower federation on loopback (coordinator + three SuperNodes, apps approved by the steward)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from insitu.config import NodeHome, init_home, load_config

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
) -> Iterator[tuple[str, dict[str, NodeHome]]]:
    from insitu.federation import approvals, processes
    from insitu.federation.analytics import analytics_fingerprint

    root = tmp_path_factory.mktemp("fed-demo")
    homes = {}
    for site in SITES:
        shutil.copytree(demo_root / site, root / site, symlinks=True)
        homes[site] = NodeHome(root / site)
        _small_cells(homes[site])
    coordinator = NodeHome(root / "coordinator")
    init_home(coordinator, "coordinator")
    address = f"127.0.0.1:{processes.free_port()}"
    fingerprints = [analytics_fingerprint()]
    try:
        from insitu.federation.train_app import training_fingerprint

        fingerprints.append(training_fingerprint())
    except ImportError:  # no torch: analytics only
        pass
    try:
        processes.start_coordinator(coordinator, address, insecure=True)
        for home in homes.values():
            for fp in fingerprints:  # the site's steward approves the apps for its dataset
                approvals.approve(home, fp, "locat", days=1, user="sam")
            processes.start_site(home, address, "locat", insecure=True)
        yield address, homes
    finally:
        for home in homes.values():
            processes.stop(home)
        processes.stop(coordinator)


def test_federated_analysis_notebook(federation, tmp_path: Path) -> None:
    address, _homes = federation
    nb = run_notebook(
        "04-federated-analysis.ipynb",
        tmp_path,
        {},
        params=f'FEDERATION = None\nADDRESS = "{address}"\nDATASET = "locat"',
    )
    text = outputs(nb)
    assert "sites: ['site-a', 'site-b', 'site-c']" in text, text
    assert "refused: []" in text
    assert "100.0" in text and "120.0" in text  # the two dose arms


def test_federated_training_notebook(federation, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    address, homes = federation
    nb = run_notebook(
        "05-federated-training.ipynb",
        tmp_path,
        {},
        params=f'FEDERATION = None\nADDRESS = "{address}"\nROUNDS = 1',
    )
    text = outputs(nb)
    assert "round 1: sites ['site-a', 'site-b', 'site-c']" in text, text  # one round: fast
    from insitu.hub.audit import AuditLog

    for home in homes.values():
        replies = AuditLog(home).query(kind="federation.reply")
        assert replies and all(r["details"]["decision"] == "allowed" for r in replies)
