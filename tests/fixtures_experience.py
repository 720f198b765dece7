"""Fixtures for the researcher's experience (issue 7): a tiny synthetic trial and a site node.

The trial is generated once per session; each test that changes a node gets
its own copy of an ingested home (copying is much faster than ingesting).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from insitu.config import NodeHome, init_home
from insitu.datasets.synthetic import Trial, TrialSpec, generate_trial

TINY_TRIAL = TrialSpec(subjects_per_site=2, size=32, slices=10, seed=11)
# Demo logins of the tiny node: a researcher with access, one without, a steward, an admin.
USERS = {"alice": "researcher", "bob": "researcher", "sam": "steward", "ada": "admin"}
PASSWORD = "synthetic-demo-pw"


@pytest.fixture(scope="session")
def tiny_trial(tmp_path_factory: pytest.TempPathFactory) -> Trial:
    return generate_trial(tmp_path_factory.mktemp("tiny-trial"), TINY_TRIAL, show_progress=False)


@pytest.fixture(scope="session")
def _site_node_template(tmp_path_factory: pytest.TempPathFactory, tiny_trial: Trial) -> NodeHome:
    from insitu.datasets.ingest import ingest
    from insitu.hub.accounts import AccountStore

    node = NodeHome(tmp_path_factory.mktemp("site-node") / "site-a")
    init_home(node, "site-a")
    report = ingest(
        [tiny_trial.dicom_dir("site-a")],
        "locat-site-a",
        home=node,
        title="LOCAT-like trial (synthetic), site A",
        citation="insitu synthetic demo data; no real patients",
        show_progress=False,
    )
    assert report.status == "published", report.to_json()
    with AccountStore(node) as accounts:
        for name, role in USERS.items():
            accounts.add(name, role, PASSWORD, actor="ada")
    return node


@pytest.fixture
def site_node(
    tmp_path: Path, _site_node_template: NodeHome, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NodeHome]:
    """An ingested site-a home with demo users, private to the test, set as INSITU_HOME."""
    node = NodeHome(tmp_path / "site-a")
    shutil.copytree(_site_node_template.root, node.root, symlinks=True)
    monkeypatch.setenv("INSITU_HOME", str(node.root))
    yield node


# The demo at a size where the notebooks' liver ROI has a few dozen pixels, shared by
# the demo, notebook and demo-hub tests (set up once: generation and three ingests).
DEMO_SPEC = TrialSpec(subjects_per_site=4, size=64, slices=8, seed=21)
DEMO_SIZE_FLAGS = ["--subjects", "4", "--size", "64", "--slices", "8", "--seed", "21"]


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from insitu.demo import prepare

    root = tmp_path_factory.mktemp("demo")
    prepare(root, DEMO_SPEC, quiet=True)
    return root
