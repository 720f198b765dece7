"""Retiring a dataset version: its data is no longer read, its citation and credit stay.

Real stores and catalog rows (``publish_tiny_store``), real archive packages, the CLI
as a steward uses it. The gate's 410 is tested behind a real hub in test_gate_http.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cff_schema import validate_cff
from fixtures_hub import publish_tiny_store

from insitu.audit import AuditLog
from insitu.cli import main
from insitu.config import NodeHome
from insitu.datasets.archive import export
from insitu.datasets.citation import cff, datacite
from insitu.datasets.citations_db import citation_for
from insitu.datasets.listing import published_datasets
from insitu.datasets.reader import open_dataset
from insitu.datasets.store_write import checksum_tree
from insitu.errors import VersionRetiredError
from insitu.hub import access
from insitu.hub.credit import usage_report
from insitu.hub.stores import list_versions, resolve

REASON = "superseded by v2 (re-read with corrected spacing)"


@pytest.fixture
def site(hub_home: NodeHome) -> NodeHome:
    """trial-a v1 (the template's) and v2; ada approved, a read of v1 in the audit log."""
    publish_tiny_store(hub_home, "trial-a", version="v2", seed=1)
    found = access.request(hub_home, "ada", "trial-a", "tumour size", "P1", 30)
    access.approve(hub_home, "sam", found.id, "ok")
    AuditLog(hub_home).append(
        "read",
        user="ada",
        dataset="trial-a",
        version="v1",
        via="gate",
        series="s1",
        requests=3,
        bytes=9,
    )
    return hub_home


def _retire(*args: str) -> list[str]:
    return ["dataset", "retire", "trial-a", "--reason", REASON, *args]


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one clear line
    return err


def test_researchers_cannot_retire_and_the_refusal_is_audited(site, capsys) -> None:
    assert main(_retire("--version", "v1", "--only-copy", "--as", "ada")) == 4
    assert "ada is a researcher: only a steward or admin may do this" in _err(capsys)
    (refused,) = AuditLog(site).query(kind="dataset.retire")
    assert refused["user"] == "ada" and refused["details"]["decision"] == "refused"
    assert resolve(site, "trial-a", "v1")[0] == "v1"  # nothing retired
    assert main(_retire("--version", "v1", "--only-copy", "--as", "nobody")) == 4
    assert "not a user of this site" in _err(capsys)


def test_the_only_copy_is_never_retired_or_deleted_by_accident(site, capsys) -> None:
    assert main(_retire("--version", "v1", "--as", "sam")) == 1
    err = _err(capsys)
    assert "only copy" in err and "insitu archive export trial-a --version v1" in err
    assert "--only-copy" in err
    assert main(_retire("--version", "v1", "--as", "sam", "--only-copy", "--delete-data")) == 1
    assert "not deleted: run `insitu archive export trial-a --version v1" in _err(capsys)
    assert (site.stores / "trial-a" / "v1.zarr" / "zarr.json").is_file()
    assert resolve(site, "trial-a", "v1")[0] == "v1"
    assert not AuditLog(site).query(kind="dataset.retire")


def test_a_retired_version_is_refused_and_its_citation_and_credit_stay(
    site, tmp_path, capsys
) -> None:
    package = export(site, "trial-a", "v1", tmp_path / "pkg")
    before = {(r.dataset, r.version): r.to_json() for r in usage_report(site)}
    assert main(_retire("--version", "v1", "--as", "sam")) == 0
    out = capsys.readouterr().out
    assert "trial-a v1 retired (store kept on disk, not readable; archive package" in out
    assert str(package) in out
    # Reads: one line saying when and why; 'latest' is the newest version not retired.
    with pytest.raises(VersionRetiredError) as refused:
        open_dataset("trial-a", "v1", home=site)
    message = str(refused.value)
    assert message.startswith("trial-a v1 was retired on 20") and f"({REASON})" in message
    assert "\n" not in message
    with pytest.raises(VersionRetiredError):
        resolve(site, "trial-a", "v1")
    assert resolve(site, "trial-a", "latest")[0] == "v2"
    assert open_dataset("trial-a", home=site).attrs["version"] == "v2"
    assert list_versions(site, "trial-a") == ["v2"]
    (listed,) = published_datasets(site)
    assert listed["versions"] == ["v2"] and listed["retired"] == ["v1"]
    # The approval covers v2, which stays readable: it stands.
    assert access.check_read(site, "ada", "trial-a").status == "approved"
    # The citation still resolves and says "retired"; CFF and DataCite too.
    cited = citation_for(site, "trial-a", "v1")
    assert cited.retired and cited.retired_on
    text = cff(cited)
    validate_cff(text)
    assert "Retired on " in text and '"retired"' in text
    status = [d for d in datacite(cited)["descriptions"] if d["descriptionType"] == "TechnicalInfo"]
    assert status and "stays citable" in status[0]["description"]
    assert not citation_for(site, "trial-a", "v2").retired
    assert main(["dataset", "citation", "trial-a", "--version", "v1"]) == 0
    assert "Retired on" in capsys.readouterr().out
    # Credit counts and the register keep every entry.
    after = {(r.dataset, r.version): r.to_json() for r in usage_report(site)}
    assert after[("trial-a", "v1")]["retired"] == cited.retired_on
    assert {k: v | {"retired": ""} for k, v in after.items()} == before
    assert after[("trial-a", "v1")]["total_investigations"] == 3
    assert len(access.register(site, dataset="trial-a")) == 1
    (entry,) = AuditLog(site).query(kind="dataset.retire")
    assert entry["user"] == "sam" and entry["details"]["reason"] == REASON
    assert entry["details"]["archive"] == str(package) and not entry["details"]["data_deleted"]
    # Retiring twice says so.
    assert main(_retire("--version", "v1", "--as", "sam")) == 1
    assert "already retired on" in _err(capsys)


def test_retiring_the_last_readable_version_closes_open_requests(site, capsys) -> None:
    pending = access.request(site, "bob", "trial-a", "volumes", "P2", 10)
    assert main(_retire("--version", "v2", "--as", "sam", "--only-copy")) == 0
    assert access.check_read(site, "ada", "trial-a")  # v1 is still readable
    assert main(_retire("--version", "v1", "--as", "root_admin", "--only-copy")) == 0
    assert f"closed access requests #1, #{pending.id}" in capsys.readouterr().out
    states = {r.user: r for r in access.register(site, dataset="trial-a")}
    assert states["ada"].status == "revoked" and "trial-a v1 was retired" in (
        states["ada"].revoke_reason or ""
    )
    assert states["bob"].status == "denied" and REASON in (states["bob"].decision_reason or "")
    with pytest.raises(VersionRetiredError, match="retired on"):
        resolve(site, "trial-a", "latest")
    with pytest.raises(VersionRetiredError):
        access.request(site, "bob", "trial-a", "again", "P2", 10)
    kinds = [e["kind"] for e in AuditLog(site).query(dataset="trial-a")]
    assert kinds.count("dataset.retire") == 2 and "access.revoke" in kinds


def test_delete_data_needs_an_intact_package_and_import_restores(
    site, tmp_path, monkeypatch, capsys
) -> None:
    before = checksum_tree(site.stores / "trial-a" / "v1.zarr")
    package = export(site, "trial-a", "v1", tmp_path / "pkg")
    # A damaged package is no copy: named with --archive it is refused, not used.
    broken = tmp_path / "broken"
    shutil.copytree(package, broken)
    chunk = next(p for p in (broken / "data" / "store").rglob("c/*/*/*") if p.is_file())
    chunk.write_bytes(b"\0" + chunk.read_bytes()[1:])
    args = _retire("--version", "v1", "--as", "sam", "--delete-data")
    assert main([*args, "--archive", str(broken)]) == 1
    assert "fails `insitu archive verify`" in _err(capsys)
    assert (site.stores / "trial-a" / "v1.zarr").is_dir()
    # The export the audit log names is found and checked; the store goes.
    assert main(args) == 0
    assert "store deleted" in capsys.readouterr().out
    assert not (site.stores / "trial-a" / "v1.zarr").exists()
    assert not list(site.staging.glob("retired-*"))
    assert main(["verify", "trial-a"]) == 0  # a deleted retired store is no damage
    with pytest.raises(VersionRetiredError):
        open_dataset("trial-a", "v1", home=site)
    again = ["archive", "export", "trial-a", "--version", "v1", "--out", str(tmp_path / "x")]
    assert main(again) == 1
    assert f"its package is {package}" in _err(capsys)
    assert citation_for(site, "trial-a", "v1").retired
    (entry,) = AuditLog(site).query(kind="dataset.retire")
    assert entry["details"]["data_deleted"] is True
    # The package brings it back, checked file by file, and readable again.
    monkeypatch.setenv("INSITU_HOME", str(site.root))
    assert main(["archive", "import", str(package)]) == 0
    assert "trial-a v1: restored" in capsys.readouterr().out
    assert checksum_tree(resolve(site, "trial-a", "v1")[1]) == before
    assert open_dataset("trial-a", "v1", home=site).attrs["version"] == "v1"
    assert not citation_for(site, "trial-a", "v1").retired
    crate = json.loads((package / "data" / "citation.json").read_text())
    assert not crate["citation"]["retired"]  # exported before retirement: nothing to undo
    assert isinstance(package, Path)
