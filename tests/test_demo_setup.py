"""`insitu demo`: three sites generated, ingested through the real path, users and access set."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from fixtures_experience import DEMO_SIZE_FLAGS

from insitu.audit import AuditLog
from insitu.cli import main
from insitu.config import NodeHome, load_config
from insitu.datasets.catalog import Catalog
from insitu.datasets.reader import open_dataset
from insitu.errors import AccessDeniedError
from insitu.hub import access
from insitu.hub.accounts import AccountStore


def _scan_dates(root: Path, site: str) -> set[str]:
    """The original scan dates of a site's subjects (the trial's answer key)."""
    manifest = json.loads((root / "trial" / "manifest.json").read_text())
    return {s["scan_date"] for s in manifest["subjects"] if s["site"] == site}


@pytest.fixture
def demo_dir(demo_root: Path) -> Path:
    """The session's demo (set up by `insitu.demo.prepare`, as `insitu demo` does)."""
    return demo_root


def test_three_sites_with_their_own_dataset(demo_dir: Path) -> None:
    for site in ("site-a", "site-b", "site-c"):
        home = NodeHome(demo_dir / site)
        assert load_config(home).site.name == site
        with Catalog(home) as catalog:
            (entry,) = catalog.datasets()
            assert entry["name"] == "locat"
            # v1: the images; v2: the same images and the site's measurement table.
            _images, v2 = catalog.versions(entry["name"])
            assert v2["n_subjects"] == 4 and v2["n_series"] == 4
        ds = open_dataset("locat", home=home)
        table = ds.tables["measurements"]
        assert len(table) == 4 and set(table["arm"]) == {"low-dose", "standard-dose"}
        assert all(s.startswith("sub-") for s in table["subject_id"]), "pseudonyms, not SYN-..."
        shown = {str(d)[:10] for d in table["scan_date"]}
        assert shown and not shown & _scan_dates(demo_dir, site), "scan dates are shifted"
        # Ingest, accounts and the access decision are all in an unbroken audit chain.
        assert AuditLog(home).verify().entries >= 6
        kinds = {e["kind"] for e in AuditLog(home).query()}
        assert {"ingest", "user", "access.request", "access.approve"} <= kinds
        # Nothing identifying from the DICOM reached the published side.
        published = b"".join(p.read_bytes() for p in (home.stores).rglob("*") if p.is_file())
        assert b"SYNTHETIC^SUBJECT" not in published
        assert b"SYN-A001" not in published


def test_demo_users_and_access(demo_dir: Path) -> None:
    logins = json.loads((demo_dir / "logins.json").read_text())
    assert stat.S_IMODE((demo_dir / "logins.json").stat().st_mode) == 0o600
    for site in ("site-a", "site-b", "site-c"):
        home = NodeHome(demo_dir / site)
        with AccountStore(home) as accounts:
            roles = {a.name: a.role for a in accounts.list()}
            assert roles == {
                "alice": "researcher",
                "bob": "researcher",
                "sam": "steward",
                "ada": "admin",
            }
            assert accounts.check_password("alice", logins["alice"]) is not None
        assert access.status_for(home, "alice", "locat")[0] == "approved"
        assert access.status_for(home, "bob", "locat")[0] == "none"
        with pytest.raises(AccessDeniedError):
            access.check_read(home, "bob", "locat")


def test_running_again_reuses_everything(demo_dir: Path, capsys: pytest.CaptureFixture) -> None:
    logins = (demo_dir / "logins.json").read_text()
    assert main(["demo", "--no-hub", "--dir", str(demo_dir), *DEMO_SIZE_FLAGS]) == 0
    out = capsys.readouterr().out
    assert out.count("locat v2 (4 subjects; images unchanged") == 3
    assert (demo_dir / "logins.json").read_text() == logins
    home = NodeHome(demo_dir / "site-a")
    assert len(access.register(home, user="alice")) == 1, "no second request on a re-run"


def test_bad_sizes_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    # (`insitu demo` as a console command runs in tests/test_demo_hub.py.)
    assert main(["demo", "--no-hub", "--dir", str(tmp_path / "d"), "--size", "3"]) == 78
    assert main(["demo", "--no-hub", "--federation", "--dir", str(tmp_path / "d")]) == 78
    assert not (tmp_path / "d").exists()


def test_example_notebooks_wait_in_every_demo_users_server(demo_dir: Path, tmp_path: Path) -> None:
    from insitu.config import load_config
    from insitu.demo import isolated

    if isolated():  # own accounts: the spawner copies them (tests/test_demo_hub.py)
        assert load_config(NodeHome(demo_dir / "site-a")).hub.user_accounts_dir
    else:
        users = demo_dir / "site-a" / "hub" / "users"
        for name in ("alice", "bob", "sam", "ada"):
            assert (users / name / "01-explore-a-dataset.ipynb").is_file()
    assert main(["notebooks", "copy", str(tmp_path / "mine")]) == 0
    edited = tmp_path / "mine" / "02-noise-by-dose-arm.ipynb"
    edited.write_text("{}")
    assert main(["notebooks", "copy", str(tmp_path / "mine")]) == 0
    assert edited.read_text() == "{}", "a researcher's edited copy is kept"
