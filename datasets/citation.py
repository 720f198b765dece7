"""Citation metadata of a dataset version: who made it, how to cite it, under what licence.

The steward sets it (``insitu dataset cite``); it lives in the catalog (table
``citations``, never in the immutable store) and is exported as CITATION.cff
(Citation File Format 1.2.0), DataCite JSON (metadata kernel 4) and BibTeX.
A version without a steward's entry still has a citation: the one derived
from the catalog (title, site, version), with the site as its author.

Validation is on the way in: an ORCID iD must pass its ISO 7064 11,2 check
digit, a DOI must have the syntax ``10.<registrant>/<suffix>``, a licence must
be one of :data:`LICENCES` (SPDX identifiers).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from insitu.errors import InvalidRequestError

__all__ = [
    "LICENCES",
    "Citation",
    "Creator",
    "bibtex",
    "cff",
    "cff_references",
    "datacite",
    "markdown",
    "normalise_doi",
    "normalise_orcid",
    "orcid_checksum_ok",
    "parse_creator",
]

# SPDX identifiers a data steward chooses from (data licences first), with their texts.
LICENCES: dict[str, str] = {
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/legalcode",
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/legalcode",
    "CC-BY-SA-4.0": "https://creativecommons.org/licenses/by-sa/4.0/legalcode",
    "CC-BY-NC-4.0": "https://creativecommons.org/licenses/by-nc/4.0/legalcode",
    "CC-BY-NC-SA-4.0": "https://creativecommons.org/licenses/by-nc-sa/4.0/legalcode",
    "CC-BY-ND-4.0": "https://creativecommons.org/licenses/by-nd/4.0/legalcode",
    "CC-BY-NC-ND-4.0": "https://creativecommons.org/licenses/by-nc-nd/4.0/legalcode",
    "ODbL-1.0": "https://opendatacommons.org/licenses/odbl/1-0/",
    "ODC-By-1.0": "https://opendatacommons.org/licenses/by/1-0/",
    "PDDL-1.0": "https://opendatacommons.org/licenses/pddl/1-0/",
    "CDLA-Permissive-2.0": "https://cdla.dev/permissive-2-0/",
    "CDLA-Sharing-1.0": "https://cdla.dev/sharing-1-0/",
    "Apache-2.0": "https://www.apache.org/licenses/LICENSE-2.0",
    "MIT": "https://opensource.org/licenses/MIT",
}
_ORCID = re.compile(r"^(\d{4})-?(\d{4})-?(\d{4})-?(\d{3}[\dX])$")
# The CFF 1.2.0 schema's DOI pattern (the same one DataCite accepts).
_DOI = re.compile(r"^10\.\d{4,9}(\.\d+)?/[A-Za-z0-9:/_;\-.()\[\]\\]+$")
_DOI_PREFIXES = ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "doi:")
CFF_MESSAGE = "If you use this dataset, please cite it using the metadata from this file."


def orcid_checksum_ok(digits: str) -> bool:
    """ISO 7064 MOD 11-2 over the first 15 digits gives the 16th (X = 10)."""
    body = digits.replace("-", "")
    if len(body) != 16 or not body[:15].isdigit():
        return False
    total = 0
    for ch in body[:15]:
        total = (total + int(ch)) * 2
    check = (12 - total % 11) % 11
    return body[15] == ("X" if check == 10 else str(check))


def normalise_orcid(value: str) -> str:
    """``https://orcid.org/0000-0002-1825-0097`` from any usual spelling, or an error."""
    text = value.strip()
    for prefix in ("https://orcid.org/", "http://orcid.org/", "orcid.org/"):
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
    match = _ORCID.match(text.upper())
    if match is None:
        raise InvalidRequestError(
            f"{value!r} is not an ORCID iD: give 16 digits as 0000-0002-1825-0097 "
            "(or https://orcid.org/0000-0002-1825-0097)"
        )
    digits = "-".join(match.groups())
    if not orcid_checksum_ok(digits):
        raise InvalidRequestError(
            f"ORCID iD {digits} fails its check digit (ISO 7064 11,2): a digit is mistyped"
        )
    return f"https://orcid.org/{digits}"


def normalise_doi(value: str) -> str:
    """``10.1234/abc`` from a DOI, a ``doi:`` name or a resolver URL, or an error."""
    text = value.strip()
    for prefix in _DOI_PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
    if not _DOI.match(text):
        raise InvalidRequestError(
            f"{value!r} is not a DOI: give it as 10.<registrant>/<suffix>, e.g. "
            "10.5281/zenodo.1003150"
        )
    return text


def check_licence(value: str) -> str:
    for known in LICENCES:
        if value.strip().lower() == known.lower():
            return known
    raise InvalidRequestError(
        f"licence {value!r} is not one of the SPDX identifiers insitu knows: " + ", ".join(LICENCES)
    )


@dataclass(frozen=True)
class Creator:
    """A person who made the data: ``family``, ``given`` names and an optional ORCID iD."""

    family: str
    given: str = ""
    orcid: str = ""
    affiliation: str = ""

    @property
    def name(self) -> str:
        return f"{self.given} {self.family}".strip()


def parse_creator(text: str) -> Creator:
    """``"Family, Given;ORCID"`` or ``"Given Family;ORCID[;Affiliation]"``."""
    parts = [p.strip() for p in text.split(";")]
    name = parts[0]
    if not name:
        raise InvalidRequestError(
            f"creator {text!r}: give a name, e.g. --creator 'Lovelace, Ada;0000-0002-1825-0097'"
        )
    if "," in name:
        family, given = (s.strip() for s in name.split(",", 1))
    else:
        words = name.split()
        family, given = words[-1], " ".join(words[:-1])
    orcid = normalise_orcid(parts[1]) if len(parts) > 1 and parts[1] else ""
    affiliation = parts[2] if len(parts) > 2 else ""
    return Creator(family=family, given=given, orcid=orcid, affiliation=affiliation)


@dataclass(frozen=True)
class Citation:
    """How to cite one dataset version."""

    dataset: str
    version: str
    title: str
    site: str
    creators: tuple[Creator, ...] = ()
    licence: str = ""
    doi: str = ""
    date: str = ""  # YYYY-MM-DD: the version's publication date
    recommended: str = ""  # the steward's own wording; generated when empty
    set_by: str = ""  # "" for a citation derived from the catalog only
    retired: bool = False  # ``insitu dataset retire``: still cited, its data no longer read
    retired_on: str = ""  # YYYY-MM-DD

    def __post_init__(self) -> None:
        if self.licence:
            object.__setattr__(self, "licence", check_licence(self.licence))
        if self.doi:
            object.__setattr__(self, "doi", normalise_doi(self.doi))

    @property
    def year(self) -> str:
        return self.date[:4] or str(datetime.now(UTC).year)

    def authors(self) -> str:
        names = [c.name for c in self.creators] or [self.site]
        return "; ".join(names)

    def text(self) -> str:
        """The recommended citation: the steward's wording, or one in DataCite's style."""
        if self.recommended:
            return self.recommended
        doi = f" https://doi.org/{self.doi}" if self.doi else ""
        return (
            f"{self.authors()} ({self.year}). {self.title or self.dataset} "
            f"(version {self.version}) [Data set]. {self.site}.{doi}"
        )

    def status(self) -> str:
        """'' for a version in use; for a retired one, the sentence its landing page says."""
        if not self.retired:
            return ""
        on = f" on {self.retired_on}" if self.retired_on else ""
        return (
            f"Retired{on}: this version stays citable, but its data is no longer served "
            f"at {self.site}; ask {self.site} for its archived package."
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["creators"] = [asdict(c) for c in self.creators]
        out["citation"] = self.text()
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Citation:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["creators"] = tuple(Creator(**c) for c in data.get("creators", []))
        return cls(**known)


# --- exports ---------------------------------------------------------------


def _person(c: Creator) -> dict[str, Any]:
    out: dict[str, Any] = {"family-names": c.family}
    if c.given:
        out["given-names"] = c.given
    if c.orcid:
        out["orcid"] = c.orcid
    if c.affiliation:
        out["affiliation"] = c.affiliation
    return out


def _cff_authors(c: Citation) -> list[dict[str, Any]]:
    return [_person(p) for p in c.creators] + [{"name": c.site}]


def cff(c: Citation) -> str:
    """CITATION.cff (CFF 1.2.0) of one dataset version."""
    data: dict[str, Any] = {
        "cff-version": "1.2.0",
        "message": CFF_MESSAGE,
        "type": "dataset",
        "title": c.title or c.dataset,
        "version": c.version,
        "authors": _cff_authors(c),
        "abstract": f"{c.text()} {c.status()}".strip(),
        "identifiers": [
            {
                "type": "other",
                "value": f"insitu:{c.site}/{c.dataset}/{c.version}",
                "description": "site, dataset and version at the insitu node that holds it",
            }
        ],
    }
    if c.date:
        data["date-released"] = c.date
    if c.licence:
        data["license"] = c.licence
    if c.doi:
        data["doi"] = c.doi
    if c.retired:
        data["keywords"] = ["retired"]
    return _yaml(data)


def _reference(c: Citation) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "type": "data",
        "title": c.title or c.dataset,
        "authors": _cff_authors(c),
        "version": c.version,
        "publisher": {"name": c.site},
        "notes": f"{c.text()} {c.status()}".strip(),
    }
    if c.date:
        ref["date-released"] = c.date
    if c.licence:
        ref["license"] = c.licence
    if c.doi:
        ref["doi"] = c.doi
    return ref


def cff_references(title: str, citations: Sequence[Citation], *, authors: str = "") -> str:
    """A CITATIONS.cff for a result that used several dataset versions (``references``)."""
    sites = sorted({c.site for c in citations})
    data: dict[str, Any] = {
        "cff-version": "1.2.0",
        "message": "This result used the datasets listed under references: please cite them.",
        "title": title,
        "authors": [{"name": authors}] if authors else [{"name": s} for s in sites or ["insitu"]],
    }
    if citations:
        data["references"] = [_reference(c) for c in citations]
    return _yaml(data)


def datacite(c: Citation) -> dict[str, Any]:
    """DataCite metadata kernel 4 (the JSON of DataCite's REST API ``attributes``)."""
    creators: list[dict[str, Any]] = []
    for p in c.creators:
        person: dict[str, Any] = {
            "name": f"{p.family}, {p.given}" if p.given else p.family,
            "nameType": "Personal",
            "familyName": p.family,
            "nameIdentifiers": [],
            "affiliation": [{"name": p.affiliation}] if p.affiliation else [],
        }
        if p.given:
            person["givenName"] = p.given
        if p.orcid:
            person["nameIdentifiers"] = [
                {
                    "nameIdentifier": p.orcid,
                    "nameIdentifierScheme": "ORCID",
                    "schemeUri": "https://orcid.org",
                }
            ]
        creators.append(person)
    if not creators:
        creators.append({"name": c.site, "nameType": "Organizational"})
    out: dict[str, Any] = {
        "schemaVersion": "http://datacite.org/schema/kernel-4",
        "identifiers": [],
        "creators": creators,
        "titles": [{"title": c.title or c.dataset}],
        "publisher": {"name": c.site},
        "publicationYear": c.year,
        "types": {"resourceTypeGeneral": "Dataset", "resourceType": "Imaging dataset version"},
        "version": c.version,
        "alternateIdentifiers": [
            {
                "alternateIdentifier": f"insitu:{c.site}/{c.dataset}/{c.version}",
                "alternateIdentifierType": "insitu",
            }
        ],
        "descriptions": [{"description": c.text(), "descriptionType": "Other"}]
        + ([{"description": c.status(), "descriptionType": "TechnicalInfo"}] if c.retired else []),
        "rightsList": [],
    }
    if c.date:
        out["dates"] = [{"date": c.date, "dateType": "Issued"}]
    if c.doi:
        out["doi"] = c.doi
        out["identifiers"] = [{"identifier": c.doi, "identifierType": "DOI"}]
    if c.licence:
        out["rightsList"] = [
            {
                "rights": c.licence,
                "rightsUri": LICENCES[c.licence],
                "rightsIdentifier": c.licence.lower(),
                "rightsIdentifierScheme": "SPDX",
                "schemeUri": "https://spdx.org/licenses/",
            }
        ]
    return out


def _bib_escape(text: str) -> str:
    return re.sub(r"([{}\\%&$#_])", r"\\\1", text)


def bibtex(citations: Iterable[Citation]) -> str:
    """One ``@misc`` entry per dataset version (BibTeX has no data set type)."""
    entries = []
    for c in citations:
        key = re.sub(r"[^A-Za-z0-9]+", "_", f"{c.site}_{c.dataset}_{c.version}")
        authors = (
            " and ".join(
                f"{{{_bib_escape(p.family)}}}, {_bib_escape(p.given)}".rstrip(", ")
                for p in c.creators
            )
            or f"{{{_bib_escape(c.site)}}}"
        )
        fields = {
            "author": authors,
            "title": "{" + _bib_escape(c.title or c.dataset) + "}",
            "year": c.year,
            "version": c.version,
            "publisher": _bib_escape(c.site),
            "howpublished": "Data set",
            "note": _bib_escape(
                f"Dataset {c.dataset} version {c.version} at site {c.site}"
                + (f"; licence {c.licence}" if c.licence else "")
            ),
        }
        if c.doi:
            fields["doi"] = c.doi
        body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields.items())
        entries.append(f"@misc{{{key},\n{body}\n}}\n")
    return "\n".join(entries)


def markdown(
    title: str, citations: Sequence[Citation], contributions: Sequence[dict[str, Any]] = ()
) -> str:
    """A human-readable CITATIONS.md: what to cite, and each site's contribution."""
    lines = [f"# {title}", "", "This result used the following data. Please cite:", ""]
    for c in citations:
        lines.append(
            f"- {c.text()}"
            + (f" Licence: {c.licence}." if c.licence else "")
            + (f" ({c.status()})" if c.retired else "")
        )
    if not citations:
        lines.append("- (no dataset reads were recorded for this result)")
    if contributions:
        lines += ["", "## Contributions", "", "| site | dataset | version | subjects |"]
        lines.append("|---|---|---|---|")
        for row in contributions:
            lines.append(
                f"| {row.get('site', '')} | {row.get('dataset', '')} | "
                f"{row.get('version', '')} | {row.get('subjects', '')} |"
            )
    return "\n".join(lines) + "\n"


# --- a small YAML writer: every string double-quoted (valid YAML 1.2) ------


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


def _yaml_lines(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(_yaml_lines(item, indent + 2))
            else:
                lines.append(f"{pad}{key}: {_scalar(item) if item != [] else '[]'}")
    else:
        for item in value:
            if isinstance(item, dict | list) and item:
                inner = _yaml_lines(item, indent + 2)
                lines.append(f"{pad}- {inner[0].lstrip()}")
                lines.extend(inner[1:])
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    return lines


def _yaml(data: dict[str, Any]) -> str:
    return "\n".join(_yaml_lines(data, 0)) + "\n"
