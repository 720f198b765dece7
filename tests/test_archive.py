"""Archive packages: export, verify, import elsewhere bit for bit; tampering refused whole."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cff_schema import validate_cff

from insitu.audit import AuditLog
from insitu.cli import main
from insitu.config import NodeHome, init_home
from insitu.datasets.archive import catalog_rows, verify
from insitu.datasets.catalog import Catalog
from insitu.datasets.citation import parse_creator
from insitu.datasets.citations_db import citation_for, set_citation
from insitu.datasets.reader import open_dataset

ADA = "Lovelace, Ada;0000-0002-1825-0097;Analytical Engines"


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> NodeHome:
    """A site with one ingested, cited version that an approved release used."""
    from fixtures_datasets import make_series

    from insitu.datasets.ingest import ingest

    root = tmp_path_factory.mktemp("origin")
    home = NodeHome(root / "home")
    init_home(home, "origin-site")
    make_series(root / "ct", n=4)
    assert ingest([root / "ct"], "trial-ct", home=home, title="CT", show_progress=False).version
    set_citation(
        home, actor="sam", dataset="trial-ct", title="Trial CT, baseline",
        creators=[parse_creator(ADA)], licence="CC-BY-4.0", doi="10.5281/zenodo.1003150",
    )  # fmt: skip
    AuditLog(home).append(
        "release.approve", user="sam", request=7, researcher="ada", sha256="ab" * 32,
        datasets=[{"dataset": "trial-ct", "version": "v1", "site": "origin-site"}],
    )  # fmt: skip
    return home


@pytest.fixture(scope="module")
def package(origin: NodeHome, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from insitu.hub.archive_package import export_package

    return export_package(origin, "trial-ct", None, tmp_path_factory.mktemp("pkg") / "trial-ct-v1")


def _other_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NodeHome:
    home = NodeHome(tmp_path / "other")
    init_home(home, "archive-site")
    monkeypatch.setenv("INSITU_HOME", str(home.root))
    return home


def test_package_is_a_bag_with_an_ro_crate(package: Path) -> None:
    assert (package / "bagit.txt").read_text().startswith("BagIt-Version: 1.0\n")
    info = (package / "bag-info.txt").read_text()
    assert "External-Identifier: insitu:origin-site/trial-ct/v1" in info
    assert "Payload-Oxum: " in info
    tags = (package / "tagmanifest-sha256.txt").read_text()
    assert {line.split()[1] for line in tags.splitlines()} == {
        "bagit.txt", "bag-info.txt", "manifest-sha256.txt",
    }  # fmt: skip
    crate = json.loads((package / "data" / "ro-crate-metadata.json").read_text())
    assert crate["@context"] == "https://w3id.org/ro/crate/1.1/context"
    graph = {e["@id"]: e for e in crate["@graph"]}
    root = graph["./"]
    assert root["@type"] == "Dataset" and root["version"] == "v1"
    assert root["identifier"] == "https://doi.org/10.5281/zenodo.1003150"
    assert graph["https://orcid.org/0000-0002-1825-0097"]["@type"] == "Person"
    assert {p["@id"] for p in root["hasPart"]} >= {
        "store/v1.zarr/", "catalog.json", "CITATION.cff", "register.json", "releases.json",
        "deidentification.json", "datacite.json",
    }  # fmt: skip
    assert graph["#ingest"]["@type"] == "CreateAction"
    assert graph["#deidentification"]["name"] != "de-identification profile"  # the real one
    releases = json.loads((package / "data" / "releases.json").read_text())
    assert [r["request"] for r in releases] == [7]
    validate_cff((package / "data" / "CITATION.cff").read_text())


def test_verify_then_import_elsewhere_is_bit_for_bit(
    origin: NodeHome, package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    assert verify(package).ok, verify(package).problems
    other = _other_site(tmp_path, monkeypatch)
    assert main(["archive", "verify", str(package)]) == 0
    assert main(["archive", "import", str(package)]) == 0
    assert "trial-ct v1: imported" in capsys.readouterr().out
    a, b = open_dataset("trial-ct", home=origin), open_dataset("trial-ct", home=other)
    assert a.attrs == b.attrs
    for row in a.attrs["series"]:
        left, right = a.image(row["series_id"]), b.image(row["series_id"])
        assert np.array_equal(left.values, right.values) and left.dtype == right.dtype
        assert left.attrs.keys() == right.attrs.keys()
        assert a.header(row["series_id"]) == b.header(row["series_id"])
    with Catalog(origin) as ca, Catalog(other) as cb:
        assert catalog_rows(ca, "trial-ct", "v1") == catalog_rows(cb, "trial-ct", "v1")
    assert citation_for(origin, "trial-ct") == citation_for(other, "trial-ct")
    assert citation_for(other, "trial-ct").site == "origin-site"  # never re-attributed
    assert main(["verify", "trial-ct"]) == 0  # the node's own checksum check agrees
    # Importing the same package again changes nothing.
    assert main(["archive", "import", str(package)]) == 0
    assert "unchanged" in capsys.readouterr().out
    # Retired: the store goes, its catalog rows and citation stay (the tombstone) ...
    store = other.stores / "trial-ct" / "v1.zarr"
    for path in [store, *store.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    shutil.rmtree(store)
    assert citation_for(other, "trial-ct").title == "Trial CT, baseline"
    # ... and the package brings the same store back under it.
    assert main(["archive", "import", str(package)]) == 0
    assert "restored" in capsys.readouterr().out
    assert main(["verify", "trial-ct"]) == 0
    statuses = [e["details"]["status"] for e in AuditLog(other).query(kind="archive.import")]
    assert statuses == ["imported", "restored"]


@pytest.mark.parametrize(
    "damage",
    ["chunk-byte", "catalog-row", "extra-file", "missing-file", "bag-info", "manifest-line"],
)
def test_tampering_is_detected_and_nothing_is_imported(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str, capsys
) -> None:
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    store = copy / "data" / "store" / "v1.zarr"
    chunk = next(p for p in sorted(store.rglob("*")) if p.is_file() and p.name != "zarr.json")
    if damage == "chunk-byte":
        data = bytearray(chunk.read_bytes())
        data[len(data) // 2] ^= 0x01
        chunk.write_bytes(bytes(data))
    elif damage == "catalog-row":
        path = copy / "data" / "catalog.json"
        rows = json.loads(path.read_text())
        rows["subjects"][0]["n_series"] += 1
        path.write_text(json.dumps(rows))
    elif damage == "extra-file":
        (store / "planted.bin").write_bytes(b"x")
    elif damage == "missing-file":
        chunk.unlink()
    elif damage == "bag-info":
        path = copy / "bag-info.txt"
        path.write_text(path.read_text().replace("origin-site", "other-site"))
    else:  # a manifest line rewritten to match a changed file: the tag manifest catches it
        data = bytearray(chunk.read_bytes())
        data[0] ^= 0x01
        chunk.write_bytes(bytes(data))
        import hashlib

        manifest = copy / "manifest-sha256.txt"
        rel = chunk.relative_to(copy).as_posix()
        lines = [
            f"{hashlib.sha256(bytes(data)).hexdigest()}  {rel}" if line.endswith(rel) else line
            for line in manifest.read_text().splitlines()
        ]
        manifest.write_text("\n".join(lines) + "\n")
    check = verify(copy)
    assert not check.ok
    other = _other_site(tmp_path, monkeypatch)
    assert main(["archive", "verify", str(copy)]) == 5
    assert main(["archive", "import", str(copy)]) == 5
    assert "nothing imported" in capsys.readouterr().err
    with Catalog(other) as catalog:
        assert catalog.datasets() == [] and catalog.pending() == []
    assert not (other.stores / "trial-ct").exists()
    assert not any(other.staging.glob("import-*")) if other.staging.exists() else True
