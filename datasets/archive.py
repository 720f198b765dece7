"""Archive packages: one dataset version as a BagIt bag with an RO-Crate inside.

``export`` writes a self-contained folder that outlives the node::

    bagit.txt                     BagIt 1.0
    bag-info.txt                  site, dataset, version, Payload-Oxum, bagging date
    manifest-sha256.txt           every payload file's SHA-256
    tagmanifest-sha256.txt        the SHA-256 of the three tag files above
    data/                         the RO-Crate root (RO-Crate 1.1 in a bag's payload)
      ro-crate-metadata.json      what, who, how: de-identification, provenance, citation
      store/<version>.zarr/       the published Zarr store, byte for byte
      catalog.json                the version's catalog rows (subjects ... checksums)
      citation.json               the credit ledger's row; CITATION.cff, datacite.json
      register.json               the access register's entries for the dataset
      releases.json               approved releases that used this version

``verify`` recomputes every checksum (payload and tag files, Payload-Oxum, the
store's own catalog checksums) and checks the crate. ``import_package`` brings a
verified package into another node with the same version, values, catalog rows
and citation; anything wrong refuses the whole package and leaves the node as
it was (the store is staged, checked, recorded ``pending``, then moved).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from insitu import __version__
from insitu.config import NodeHome, load_config
from insitu.datasets.catalog import Catalog
from insitu.errors import InvalidRequestError, VerificationError

__all__ = ["PackageCheck", "export", "import_package", "verify"]

BAGIT_VERSION = "1.0"
CRATE_CONTEXT = "https://w3id.org/ro/crate/1.1/context"
CRATE_PROFILE = "https://w3id.org/ro/crate/1.1"
CRATE_NAME = "ro-crate-metadata.json"
TAG_FILES = ("bagit.txt", "bag-info.txt", "manifest-sha256.txt")
_ROW_TABLES = ("subjects", "studies", "series", "tables", "checksums", "provenance")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _files(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirs, names in os.walk(root):
        dirs.sort()
        out.extend(Path(dirpath) / n for n in sorted(names))
    return out


def catalog_rows(catalog: Catalog, dataset: str, version: str) -> dict[str, Any]:
    """Every catalog row of one version (what an import must reproduce exactly)."""
    ds = catalog.dataset_row(dataset) or {}
    ver = catalog.version_row(dataset, version) or {}
    out: dict[str, Any] = {
        "dataset": {k: ds[k] for k in ("name", "title", "citation")},
        "version": {k: v for k, v in ver.items() if k != "staging"},
    }
    for table in _ROW_TABLES:
        out[table] = catalog.version_table(table, dataset, version)
    return out


def _crate(
    citation: Any,
    rows: dict[str, Any],
    root_attrs: dict[str, Any],
    store_rel: str,
    parts: list[dict[str, Any]],
) -> dict[str, Any]:
    from insitu.datasets.citation import LICENCES

    version = rows["version"]
    provenance = root_attrs.get("provenance", {})
    deid = root_attrs.get("deid", {}).get("profile", {})
    people = [
        {
            "@id": c.orcid or f"#creator-{i}",
            "@type": "Person",
            "name": c.name,
            "familyName": c.family,
            "givenName": c.given,
            **({"affiliation": c.affiliation} if c.affiliation else {}),
        }
        for i, c in enumerate(citation.creators)
    ]
    root: dict[str, Any] = {
        "@id": "./",
        "@type": "Dataset",
        "name": citation.title,
        "description": f"De-identified imaging dataset {citation.dataset}, version "
        f"{citation.version}, as published by site {citation.site} (insitu).",
        "version": citation.version,
        "datePublished": str(version["created"]),
        "identifier": f"https://doi.org/{citation.doi}"
        if citation.doi
        else f"insitu:{citation.site}/{citation.dataset}/{citation.version}",
        "creditText": citation.text(),
        "publisher": {"@id": "#site"},
        "author": [{"@id": p["@id"]} for p in people] or [{"@id": "#site"}],
        "hasPart": [{"@id": p["@id"]} for p in parts],
        "mentions": [{"@id": "#ingest"}],
    }
    if citation.licence:
        root["license"] = {"@id": LICENCES[citation.licence]}
    graph: list[dict[str, Any]] = [
        {
            "@id": CRATE_NAME,
            "@type": "CreativeWork",
            "conformsTo": {"@id": CRATE_PROFILE},
            "about": {"@id": "./"},
        },
        root,
        {"@id": "#site", "@type": "Organization", "name": citation.site},
        *people,
        {
            "@id": "#deidentification",
            "@type": "CreativeWork",
            "name": str(deid.get("name", "de-identification profile")),
            "version": str(deid.get("edition", deid.get("version", ""))),
            "description": "The DICOM PS3.15 confidentiality profile and options applied at "
            "ingest (data/store: attrs['insitu']['deid'] holds it in full).",
        },
        {
            "@id": "#insitu",
            "@type": "SoftwareApplication",
            "name": "insitu",
            "version": str(provenance.get("software", f"insitu {__version__}")).split()[-1],
        },
        {
            "@id": "#ingest",
            "@type": "CreateAction",
            "name": f"insitu ingest {provenance.get('ingest_id', '')}".strip(),
            "endTime": str(provenance.get("created", version["created"])),
            "instrument": [{"@id": "#insitu"}, {"@id": "#deidentification"}],
            "result": {"@id": store_rel},
            "description": f"{provenance.get('inputs', {}).get('images', '?')} DICOM images "
            f"de-identified into {version['n_series']} series of {version['n_subjects']} "
            "subjects; input fingerprint " + str(version["fingerprint"]),
        },
        *parts,
    ]
    if citation.licence:
        graph.append(
            {
                "@id": LICENCES[citation.licence],
                "@type": "CreativeWork",
                "name": citation.licence,
                "identifier": citation.licence,
            }
        )
    return {"@context": CRATE_CONTEXT, "@graph": graph}


def _part(rel: str, name: str, fmt: str, data: Path) -> dict[str, Any]:
    path = data / rel
    if rel.endswith("/"):
        return {"@id": rel, "@type": "Dataset", "name": name}
    return {
        "@id": rel,
        "@type": "File",
        "name": name,
        "encodingFormat": fmt,
        "contentSize": str(path.stat().st_size),
        "sha256": _sha256(path),
    }


def export(
    home: NodeHome,
    dataset: str,
    version: str | None,
    out: Path,
    *,
    register: Sequence[dict[str, Any]] = (),
    releases: Sequence[dict[str, Any]] = (),
) -> Path:
    """Write the archive package of a published version into ``out`` (new or empty).

    ``register`` (the access register's entries for the dataset) and
    ``releases`` (approved releases that used the version) are the hub's
    records: ``insitu.hub.archive_package.export_package`` gathers them.
    """
    import zarr
    from zarr.storage import LocalStore

    from insitu.audit import AuditLog
    from insitu.datasets.citation import cff, datacite
    from insitu.datasets.citations_db import citation_for, citation_row

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InvalidRequestError(f"{out} is not empty: give a new folder for the package")
    with Catalog(home) as catalog:
        row = catalog.version(dataset, version)
        version = str(row["version"])
        store = catalog.store_path(dataset, version)
        retired = catalog.retirement(dataset, version)
        if not store.is_dir() and retired and retired["data_deleted_at"]:
            raise InvalidRequestError(
                f"{dataset} {version} was retired and its store deleted on "
                f"{retired['data_deleted_at']}: its package is {retired['archive'] or 'elsewhere'}"
            )
        rows = catalog_rows(catalog, dataset, version)
        steward_row = citation_row(catalog, dataset, version)
    citation = citation_for(home, dataset, version)
    data = out / "data"
    store_rel = f"store/{version}.zarr/"
    (data / "store").mkdir(parents=True)
    for src in _files(store):
        target = data / "store" / f"{version}.zarr" / src.relative_to(store)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    group = zarr.open_group(LocalStore(store, read_only=True), mode="r")
    group_attrs: dict[str, Any] = group.attrs.asdict()
    root_attrs: dict[str, Any] = dict(group_attrs.get("insitu", {}))
    files: list[tuple[str, str, str, Any]] = [
        ("catalog.json", "the version's catalog rows", "application/json", rows),
        (
            "citation.json",
            "the credit ledger's citation (steward's entry, or derived)",
            "application/json",
            {"citation": citation.to_json(), "steward_row": steward_row},
        ),
        ("datacite.json", "DataCite metadata kernel 4", "application/json", datacite(citation)),
        ("CITATION.cff", "Citation File Format 1.2.0", "application/x-yaml", cff(citation)),
        (
            "register.json",
            "access register entries for the dataset",
            "application/json",
            list(register),
        ),
        (
            "releases.json",
            "approved releases that used this version",
            "application/json",
            list(releases),
        ),
        (
            "deidentification.json",
            "de-identification profile and provenance of the ingest",
            "application/json",
            {"deid": root_attrs.get("deid", {}), "provenance": root_attrs.get("provenance", {})},
        ),
    ]
    parts = [
        {
            **_part(store_rel, "Zarr v3 store (OME-Zarr 0.5 series)", "", data),
            "conformsTo": {"@id": "https://ngff.openmicroscopy.org/0.5/"},
        }
    ]
    for name, what, fmt, content in files:
        text = content if isinstance(content, str) else json.dumps(content, indent=1)
        (data / name).write_text(text)
        parts.append(_part(name, what, fmt, data))
    crate = _crate(citation, rows, root_attrs, store_rel, parts)
    (data / CRATE_NAME).write_text(json.dumps(crate, indent=1))
    _write_bag(out, data, citation, dataset, version)
    AuditLog(home).append(
        "archive.export", user=os.environ.get("USER"), dataset=dataset, version=version,
        files=len(_files(data)), out=str(out.resolve()),
    )  # fmt: skip
    return out


def _write_bag(out: Path, data: Path, citation: Any, dataset: str, version: str) -> None:
    payload = _files(data)
    lines = [f"{_sha256(p)}  {p.relative_to(out).as_posix()}" for p in payload]
    (out / "manifest-sha256.txt").write_text("\n".join(lines) + "\n")
    (out / "bagit.txt").write_text(
        f"BagIt-Version: {BAGIT_VERSION}\nTag-File-Character-Encoding: UTF-8\n"
    )
    octets = sum(p.stat().st_size for p in payload)
    info = {
        "Source-Organization": citation.site,
        "Bagging-Date": datetime.now(UTC).date().isoformat(),
        "Bag-Software-Agent": f"insitu {__version__}",
        "External-Identifier": f"insitu:{citation.site}/{dataset}/{version}",
        "External-Description": citation.text().replace("\n", " "),
        "Payload-Oxum": f"{octets}.{len(payload)}",
    }
    (out / "bag-info.txt").write_text("".join(f"{k}: {v}\n" for k, v in info.items()))
    tags = [f"{_sha256(out / name)}  {name}" for name in TAG_FILES]
    (out / "tagmanifest-sha256.txt").write_text("\n".join(tags) + "\n")


@dataclass
class PackageCheck:
    """The outcome of :func:`verify`: ``problems`` empty when the package is intact."""

    path: str
    dataset: str = ""
    version: str = ""
    files: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def _manifest(path: Path, check: PackageCheck) -> dict[str, str]:
    out: dict[str, str] = {}
    if not path.is_file():
        check.problems.append(f"{path.name} is missing")
        return out
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name or ".." in Path(name).parts or name.startswith("/"):
            check.problems.append(f"{path.name} line {number} is malformed")
            continue
        out[name] = digest
    return out


def verify(folder: Path) -> PackageCheck:
    """Check every checksum of a package and its RO-Crate; never raises for a bad package."""
    folder = Path(folder)
    check = PackageCheck(str(folder))
    bagit = folder / "bagit.txt"
    if not bagit.is_file() or f"BagIt-Version: {BAGIT_VERSION}" not in bagit.read_text():
        check.problems.append("bagit.txt is missing or not BagIt 1.0: not an insitu package")
        return check
    for name, digest in _manifest(folder / "tagmanifest-sha256.txt", check).items():
        if name not in TAG_FILES:
            continue
        if not (folder / name).is_file() or _sha256(folder / name) != digest:
            check.problems.append(f"tag file {name} does not match tagmanifest-sha256.txt")
    manifest = _manifest(folder / "manifest-sha256.txt", check)
    present = {p.relative_to(folder).as_posix() for p in _files(folder / "data")}
    for name in sorted(present - set(manifest)):
        check.problems.append(f"{name} is not in the manifest (added after export)")
    for name, digest in sorted(manifest.items()):
        if name not in present:
            check.problems.append(f"{name} is missing")
        elif _sha256(folder / name) != digest:
            check.problems.append(f"{name} does not match its SHA-256 (changed after export)")
    check.files = len(present)
    info = _bag_info(folder)
    octets = sum((folder / n).stat().st_size for n in present)
    if info.get("Payload-Oxum") != f"{octets}.{len(present)}":
        check.problems.append("bag-info.txt Payload-Oxum does not match the payload")
    _check_crate(folder / "data", check)
    return check


def _bag_info(folder: Path) -> dict[str, str]:
    path = folder / "bag-info.txt"
    if not path.is_file():
        return {}
    pairs = (line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _check_crate(data: Path, check: PackageCheck) -> None:
    try:
        crate = json.loads((data / CRATE_NAME).read_text())
        rows = json.loads((data / "catalog.json").read_text())
    except (OSError, ValueError) as exc:
        check.problems.append(f"{CRATE_NAME} or catalog.json cannot be read: {exc}")
        return
    graph = {e.get("@id"): e for e in crate.get("@graph", []) if isinstance(e, dict)}
    descriptor = graph.get(CRATE_NAME, {})
    if crate.get("@context") != CRATE_CONTEXT or descriptor.get("conformsTo") != {
        "@id": CRATE_PROFILE
    }:
        check.problems.append(f"{CRATE_NAME} is not an RO-Crate 1.1 metadata document")
    root = graph.get("./")
    if root is None or root.get("@type") != "Dataset":
        check.problems.append(f"{CRATE_NAME} has no root data entity './'")
        return
    for ref in root.get("hasPart", []):
        entity = graph.get(ref.get("@id"), {})
        target = data / str(ref.get("@id"))
        if not target.exists():
            check.problems.append(f"the crate lists {ref.get('@id')}, which is missing")
        elif entity.get("@type") == "File" and entity.get("sha256") != _sha256(target):
            check.problems.append(f"{ref.get('@id')} does not match the crate's sha256")
    try:
        check.dataset = rows["dataset"]["name"]
        check.version = rows["version"]["version"]
    except (KeyError, TypeError):
        check.problems.append("catalog.json has no dataset and version")
        return
    store = data / "store" / f"{check.version}.zarr"
    recorded = {r["key"]: r["sha256"] for r in rows.get("checksums", [])}
    found = {p.relative_to(store).as_posix() for p in _files(store)} if store.is_dir() else set()
    if found != set(recorded):
        check.problems.append(
            f"the store's files differ from the catalog's list ({len(found ^ set(recorded))} "
            "files missing or extra)"
        )
    for key in sorted(found & set(recorded)):
        if _sha256(store / key) != recorded[key]:
            check.problems.append(f"store file {key} does not match its catalog checksum")


def import_package(home: NodeHome, folder: Path, *, actor: str = "") -> dict[str, Any]:
    """Bring a verified package in as the same dataset version; all or nothing.

    Status ``imported`` (a new version here), ``unchanged`` (already here, same
    checksums) or ``restored`` (a retired version whose store was deleted: its catalog
    rows stayed as a tombstone, its store comes back and the retirement is lifted).
    """
    from insitu.audit import AuditLog
    from insitu.datasets.publish import publish_lock, recover

    folder = Path(folder)
    check = verify(folder)
    if not check.ok:
        raise VerificationError(
            f"{folder} failed verification, nothing imported: " + "; ".join(check.problems[:5])
        )
    data = folder / "data"
    rows = json.loads((data / "catalog.json").read_text())
    cited = json.loads((data / "citation.json").read_text())
    dataset, version = check.dataset, check.version
    expected = {r["key"]: (r["sha256"], r["size"]) for r in rows["checksums"]}
    target = home.stores / dataset / f"{version}.zarr"
    with publish_lock(home), Catalog(home) as catalog:
        recover(home, catalog)
        here = catalog.version_row(dataset, version)
        if here is not None:
            if (
                here["fingerprint"] != rows["version"]["fingerprint"]
                or catalog.checksums(dataset, version) != expected
            ):
                raise InvalidRequestError(
                    f"this node already has {dataset} {version} with other contents: a "
                    "package never replaces a published version"
                )
            if target.exists():
                return {"dataset": dataset, "version": version, "status": "unchanged"}
            _restore(home, data / "store" / f"{version}.zarr", target, expected)
            # The store is back and checked: the version is readable again.
            catalog.lift_retirement(dataset, version)
            status = "restored"
        else:
            if target.exists():
                raise InvalidRequestError(
                    f"{target} exists without a catalog row: move it away before importing"
                )
            _import_new(home, catalog, data, rows, cited, expected)
            recover(home, catalog)
            status = "imported"
    AuditLog(home).append(
        "archive.import", user=actor or os.environ.get("USER"), dataset=dataset,
        version=version, source=_bag_info(folder).get("External-Identifier", ""),
        site=load_config(home).site.name, status=status,
    )  # fmt: skip
    return {"dataset": dataset, "version": version, "status": status}


def _staged_copy(home: NodeHome, source: Path, expected: dict[str, Any]) -> Path:
    """Copy a package's store into private/staging and check it there."""
    from insitu.datasets.store_write import checksum_tree

    staged = home.staging / f"import-{secrets.token_hex(4)}" / "store.zarr"
    try:
        shutil.copytree(source, staged)
        if checksum_tree(staged) != expected:
            raise VerificationError(f"{source}: the copied store does not match its checksums")
    except BaseException:
        shutil.rmtree(staged.parent, ignore_errors=True)
        raise
    return staged


def _restore(home: NodeHome, source: Path, target: Path, expected: dict[str, Any]) -> None:
    """A retired version's store back under its tombstone (catalog rows and citation)."""
    from insitu.datasets.store_write import freeze_tree

    staged = _staged_copy(home, source, expected)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged.rename(target)
    shutil.rmtree(staged.parent, ignore_errors=True)
    freeze_tree(target)


def _import_new(
    home: NodeHome,
    catalog: Catalog,
    data: Path,
    rows: dict[str, Any],
    cited: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    """Record the exporter's rows ``pending``, then move the store in (recover publishes)."""
    from insitu.datasets.citations_db import store_citation_row

    ver = rows["version"]
    dataset, version = rows["dataset"]["name"], ver["version"]
    staged = _staged_copy(home, data / "store" / f"{version}.zarr", expected)
    try:
        catalog.add_pending(
            dataset=dataset, version=version, title=rows["dataset"]["title"],
            citation=rows["dataset"]["citation"], fingerprint=ver["fingerprint"],
            staging=staged, subjects=rows["subjects"], studies=rows["studies"],
            series=[r | {"shape": json.loads(r["shape"]), "spacing": json.loads(r["spacing"])}
                    for r in rows["series"]],
            checksums=expected,
            provenance={r["key"]: json.loads(r["value"]) for r in rows["provenance"]},
            tables=[(r["name"], r["n_rows"], json.loads(r["columns"])) for r in rows["tables"]],
        )  # fmt: skip
        catalog.set_created(dataset, version, ver["created"])
        # The citation stays the origin's (its site, its creators), also when it was
        # derived there: an import never re-attributes a version to this site.
        steward = cited.get("steward_row") or {
            "meta": cited["citation"], "set_by": "", "updated": ver["created"],
        }  # fmt: skip
        store_citation_row(
            catalog, dataset, version, steward["meta"], steward["set_by"], steward["updated"]
        )
    except BaseException:
        catalog.drop_citation(dataset, version)
        catalog.drop_pending(dataset, version)
        shutil.rmtree(staged.parent, ignore_errors=True)
        raise
    target = home.stores / dataset / f"{version}.zarr"
    target.parent.mkdir(parents=True, exist_ok=True)
    staged.rename(target)
    shutil.rmtree(staged.parent, ignore_errors=True)
