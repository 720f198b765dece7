"""The credit ledger's citations: validated on the way in, exported as CFF, DataCite, BibTeX."""

from __future__ import annotations

import json

import pytest
from cff_schema import validate_cff

from insitu.audit import AuditLog
from insitu.cli import main
from insitu.datasets.citation import (
    Citation,
    Creator,
    bibtex,
    cff,
    cff_references,
    datacite,
    normalise_doi,
    normalise_orcid,
    orcid_checksum_ok,
    parse_creator,
)
from insitu.errors import InvalidRequestError

ADA = "0000-0002-1825-0097"  # ORCID's own documented example iD
CITED = Citation(
    dataset="trial-a",
    version="v1",
    title="Trial A baseline CT",
    site="test-site",
    creators=(Creator("Lovelace", "Ada", f"https://orcid.org/{ADA}", "Analytical Engines"),),
    licence="CC-BY-4.0",
    doi="10.5281/zenodo.1003150",
    date="2026-11-30",
)


def test_orcid_check_digit_and_spellings() -> None:
    assert orcid_checksum_ok(ADA)
    assert orcid_checksum_ok("0000-0002-1694-233X")  # X stands for 10
    assert normalise_orcid(f"https://orcid.org/{ADA}") == f"https://orcid.org/{ADA}"
    assert normalise_orcid(ADA.replace("-", "")) == f"https://orcid.org/{ADA}"
    with pytest.raises(InvalidRequestError, match="check digit"):
        normalise_orcid("0000-0002-1825-0098")  # one digit mistyped
    with pytest.raises(InvalidRequestError, match="not an ORCID"):
        normalise_orcid("ada@example.org")


def test_doi_syntax_and_licence_choices() -> None:
    assert normalise_doi("https://doi.org/10.5281/zenodo.1003150") == "10.5281/zenodo.1003150"
    assert normalise_doi("doi:10.1000/xyz(1)") == "10.1000/xyz(1)"
    for bad in ("10.12/short-registrant", "zenodo.1003150", "10.5281/with space"):
        with pytest.raises(InvalidRequestError, match="not a DOI"):
            normalise_doi(bad)
    with pytest.raises(InvalidRequestError, match=r"CC-BY-4\.0"):  # the error lists the choices
        Citation("d", "v1", "t", "s", licence="GPL-ish")
    assert Citation("d", "v1", "t", "s", licence="cc-by-4.0").licence == "CC-BY-4.0"


def test_creator_spellings() -> None:
    assert parse_creator(f"Lovelace, Ada;{ADA}") == Creator("Lovelace", "Ada", normalise_orcid(ADA))
    assert parse_creator("Ada King Lovelace") == Creator("Lovelace", "Ada King")
    with pytest.raises(InvalidRequestError, match="check digit"):
        parse_creator("Lovelace, Ada;0000-0002-1825-0091")


def test_citation_cff_is_valid_cff_1_2_0() -> None:
    data = validate_cff(cff(CITED))
    assert data["type"] == "dataset" and data["version"] == "v1"
    assert data["authors"][0]["orcid"] == f"https://orcid.org/{ADA}"
    assert data["authors"][-1] == {"name": "test-site"}  # the site shares the credit
    assert data["license"] == "CC-BY-4.0" and data["doi"] == "10.5281/zenodo.1003150"
    # A derived citation (no steward entry yet) is valid too: the site is its author.
    validate_cff(cff(Citation("trial-b", "v2", "trial-b", "test-site", date="2026-12-01")))
    # Several datasets: one reference each.
    many = validate_cff(cff_references("Release 3", [CITED, CITED], authors="ada"))
    assert [r["type"] for r in many["references"]] == ["data", "data"]


def test_datacite_kernel_4_fields() -> None:
    meta = datacite(CITED)
    assert meta["schemaVersion"] == "http://datacite.org/schema/kernel-4"
    # the six mandatory properties of kernel 4
    doi = {"identifier": "10.5281/zenodo.1003150", "identifierType": "DOI"}
    assert meta["identifiers"] == [doi]
    assert meta["titles"] == [{"title": "Trial A baseline CT"}]
    assert meta["publisher"] == {"name": "test-site"}
    assert meta["publicationYear"] == "2026"
    assert meta["types"]["resourceTypeGeneral"] == "Dataset"
    person = meta["creators"][0]
    assert person["nameType"] == "Personal" and person["familyName"] == "Lovelace"
    assert person["nameIdentifiers"][0] == {
        "nameIdentifier": f"https://orcid.org/{ADA}",
        "nameIdentifierScheme": "ORCID",
        "schemeUri": "https://orcid.org",
    }
    assert meta["rightsList"][0]["rightsIdentifier"] == "cc-by-4.0"
    assert meta["rightsList"][0]["rightsIdentifierScheme"] == "SPDX"
    assert "@misc{test_site_trial_a_v1" in bibtex([CITED])


def test_cite_is_a_stewards_audited_act(hub_home, capsys) -> None:
    args = ["dataset", "cite", "trial-a", "--title", "Trial A", "--licence", "CC-BY-4.0",
            "--creator", f"Lovelace, Ada;{ADA}", "--doi", "10.5281/zenodo.1003150"]  # fmt: skip
    assert main([*args, "--as", "ada"]) == 4  # a researcher may not
    assert "only a steward or admin" in capsys.readouterr().err
    bad = [a.replace(ADA, "0000-0002-1825-0098") for a in args]
    assert main([*bad, "--as", "sam"]) == 1
    assert "check digit" in capsys.readouterr().err
    assert AuditLog(hub_home).query(kind="dataset.cite") == []
    assert main([*args, "--as", "sam"]) == 0
    entry = AuditLog(hub_home).query(kind="dataset.cite")[-1]
    assert entry["user"] == "sam" and entry["details"]["version"] == "v1"
    capsys.readouterr()
    assert main(["dataset", "citation", "trial-a", "--format", "cff"]) == 0
    data = validate_cff(capsys.readouterr().out)
    assert data["title"] == "Trial A" and data["authors"][0]["family-names"] == "Lovelace"
    from insitu.datasets.listing import published_datasets

    (listed,) = published_datasets(hub_home)  # what the gate and the dataset browser show
    assert listed["citation"].startswith("Ada Lovelace (20")
    assert main(["dataset", "citation", "trial-a", "--format", "datacite"]) == 0
    assert json.loads(capsys.readouterr().out)["rightsList"][0]["rights"] == "CC-BY-4.0"
