"""The rules of the Citation File Format 1.2.0 schema that insitu's files touch.

Written from the published schema (https://citation-file-format.github.io/1.2.0/schema.json):
the root's required keys and ``additionalProperties: false``, persons and
entities, references, and the patterns of ORCID, DOI, dates and URLs. The
full schema (64 kB, mostly the SPDX list) is not vendored; every licence
insitu writes is an SPDX identifier, checked against insitu's own list.
"""

from __future__ import annotations

from typing import Any

ORCID = r"https://orcid\.org/[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{3}[0-9X]{1}"
DOI = r"^10\.\d{4,9}(\.\d+)?/[A-Za-z0-9:/_;\-\.\(\)\[\]\\]+$"
DATE = r"^[0-9]{4}-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])$"
URL = r"^(https|http|ftp|sftp)://.+"
TEXT = {"type": "string", "minLength": 1}

PERSON_KEYS = (
    "address", "affiliation", "alias", "city", "family-names", "given-names", "name-particle",
    "name-suffix", "post-code", "region", "tel", "fax", "email", "country", "website",
)  # fmt: skip
ENTITY_KEYS = (
    "address", "alias", "city", "country", "email", "fax", "location", "name", "post-code",
    "region", "tel", "website",
)  # fmt: skip
PERSON = {
    "type": "object",
    "additionalProperties": False,
    "properties": dict.fromkeys(PERSON_KEYS, TEXT)
    | {"orcid": {"type": "string", "pattern": ORCID, "format": "uri"}},
}
ENTITY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": dict.fromkeys(ENTITY_KEYS, TEXT)
    | {
        "orcid": {"type": "string", "pattern": ORCID},
        "date-start": {"type": "string", "pattern": DATE},
        "date-end": {"type": "string", "pattern": DATE},
    },
}  # fmt: skip
AUTHORS = {
    "type": "array",
    "minItems": 1,
    "uniqueItems": True,
    "items": {"anyOf": [PERSON, ENTITY]},
}
IDENTIFIER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "value"],
    "properties": {
        "type": {"enum": ["doi", "url", "swh", "other"]},
        "value": TEXT,
        "description": TEXT,
    },
}
COMMON = {
    "abstract": TEXT,
    "authors": AUTHORS,
    "date-released": {"type": "string", "pattern": DATE},
    "doi": {"type": "string", "pattern": DOI},
    "identifiers": {"type": "array", "minItems": 1, "items": IDENTIFIER},
    "keywords": {"type": "array", "items": TEXT},
    "license": {"type": "string", "minLength": 1},
    "title": TEXT,
    "url": {"type": "string", "pattern": URL},
    "version": {"anyOf": [TEXT, {"type": "number"}]},
}
REFERENCE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["authors", "title", "type"],
    "properties": COMMON
    | {
        "type": {"enum": ["data", "database", "dataset", "software", "generic", "article"]},
        "publisher": ENTITY,
        "notes": TEXT,
    },
}
CFF_1_2_0: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["authors", "cff-version", "message", "title"],
    "properties": COMMON
    | {
        "cff-version": {"type": "string", "pattern": r"^1\.2\.0$"},
        "message": TEXT,
        "type": {"enum": ["dataset", "software"]},
        "references": {"type": "array", "minItems": 1, "items": REFERENCE},
        "preferred-citation": REFERENCE,
    },
}


def validate_cff(text: str) -> dict[str, Any]:
    """Parse CITATION.cff text as YAML and validate it; returns the data."""
    import jsonschema
    import yaml

    data = yaml.safe_load(text)
    jsonschema.validate(data, CFF_1_2_0)
    return data
