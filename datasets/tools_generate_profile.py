"""Regenerate ``profile_e1_1.json``: the action table of DICOM PS3.15 Table E.1-1.

The table is never typed by hand. ``idiscore`` (which we cannot depend on: it
pins pydicom<3) ships a machine-readable copy scraped from the standard's
chapter E. This script reads that file from the wheel *without importing it*
(``ast``), checks it, and writes the JSON that ``insitu.datasets.deid`` loads.

Regenerate::

    .venv/bin/pip download --no-deps idiscore==1.2.0 -d /tmp/idis
    .venv/bin/python -m insitu.datasets.tools_generate_profile \\
        /tmp/idis/idiscore-1.2.0-py3-none-any.whl

and commit the changed ``datasets/profile_e1_1.json``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

from pydicom.datadict import keyword_for_tag

RULES_FILE = "idiscore/_public_dicom.py"
CODES_FILE = "idiscore/dicom.py"
OUTPUT = Path(__file__).with_name("profile_e1_1.json")

# The scraped page is ".../medical/dicom/current/...": the edition is the one
# that was current on the scrape date. DICOM publishes five editions a year;
# 2024c was published in July 2024 and 2024d only in October 2024, so the
# edition current on 2024-09-19 is 2024c. Editions by first day of currency:
EDITIONS = [
    ("2024-01-01", "2024a"),
    ("2024-04-01", "2024b"),
    ("2024-07-01", "2024c"),
    ("2024-10-01", "2024d"),
    ("2024-12-01", "2024e"),
]


class ProfileSourceError(ValueError):
    """The idiscore file does not have the shape this parser knows."""


def _edition_for(date: str) -> str:
    """The edition current on an ISO date (see EDITIONS)."""
    current = ""
    for start, name in EDITIONS:
        if date >= start:
            current = name
    if not current or date >= "2025-02-01":
        raise ProfileSourceError(
            f"no known DICOM edition for scrape date {date}: extend EDITIONS with the "
            "edition published around that date"
        )
    return current


def parse_action_codes(source: str) -> dict[str, str]:
    """``ActionCodes`` attribute name -> table code (``DUMMY`` -> ``D``), from idiscore/dicom.py."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "ActionCodes":
            codes: dict[str, str] = {}
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Assign)
                    and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)
                    and isinstance(stmt.value, ast.Call)
                    and stmt.value.args
                    and isinstance(stmt.value.args[0], ast.Constant)
                ):
                    codes[stmt.targets[0].id] = str(stmt.value.args[0].value)
            return codes
    raise ProfileSourceError("no class ActionCodes in idiscore/dicom.py")


def _identifier(call: ast.expr) -> tuple[str, str]:
    """(kind, tag) of a ``SingleTag``, ``RepeatingGroup`` or ``PrivateTags`` call.

    kind is "tag", "repeating" or "private".
    """
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
        raise ProfileSourceError(f"unexpected tag identifier: {ast.dump(call)}")
    kind = call.func.id
    if kind == "PrivateTags":
        return "private", "private"
    arg = call.args[0]
    if not isinstance(arg, ast.Constant) or not isinstance(arg.value, str):
        raise ProfileSourceError(f"tag is not a string literal: {ast.dump(call)}")
    tag = arg.value.replace(" ", "").replace("(", "").replace(")", "").replace(",", "").lower()
    if kind == "SingleTag" and re.fullmatch(r"[0-9a-f]{8}", tag):
        return "tag", tag
    if kind == "RepeatingGroup" and re.fullmatch(r"[0-9a-fx]{8}", tag):
        return "repeating", tag
    raise ProfileSourceError(f"unknown tag identifier {kind}({arg.value!r})")


def _keyword(kind: str, tag: str) -> str:
    if kind == "tag":
        return keyword_for_tag(int(tag, 16)) or ""
    if kind == "private":
        return "(private attributes)"
    return f"(repeating group {tag})"


def parse_rule_sets(source: str, codes: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every ``X = RawNemaRuleSet(name=, code=, rules=[(identifier, ActionCodes.Y), ...])``."""
    tree = ast.parse(source)
    sets: dict[str, dict[str, Any]] = {}
    for node in tree.body:
        if not (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "RawNemaRuleSet"
        ):
            continue
        var = node.targets[0]
        if not isinstance(var, ast.Name):
            raise ProfileSourceError("rule set assigned to something other than a name")
        kw = {k.arg: k.value for k in node.value.keywords}
        if not {"name", "code", "rules"} <= kw.keys():
            raise ProfileSourceError(f"rule set {var.id} lacks name, code or rules")
        rules_node = kw["rules"]
        if not isinstance(rules_node, ast.List):
            raise ProfileSourceError(f"rules of {var.id} is not a list literal")
        rules: list[list[str]] = []
        seen: dict[str, str] = {}
        for item in rules_node.elts:
            if not (isinstance(item, ast.Tuple) and len(item.elts) == 2):
                raise ProfileSourceError(f"rule in {var.id} is not a pair")
            ident, action = item.elts
            if not (isinstance(action, ast.Attribute) and action.attr in codes):
                raise ProfileSourceError(f"unknown action in {var.id}: {ast.dump(action)}")
            kind, tag = _identifier(ident)
            code = codes[action.attr]
            if tag in seen and seen[tag] != code:
                raise ProfileSourceError(f"{var.id}: {tag} has actions {seen[tag]} and {code}")
            if tag in seen:
                continue
            seen[tag] = code
            rules.append([tag, code, _keyword(kind, tag)])
        sets[var.id] = {
            "name": ast.literal_eval(kw["name"]),
            "code": ast.literal_eval(kw["code"]),
            "rules": sorted(rules),
        }
    if "basic_profile" not in sets:
        raise ProfileSourceError("no basic_profile rule set in the source")
    return sets


def parse_provenance(source: str) -> tuple[str, str]:
    """(scraped URL, scrape date) from the module docstring."""
    doc = ast.get_docstring(ast.parse(source)) or ""
    url = re.search(r"https?://\S+", doc)
    date = re.search(r"scrape date:\s*(\d{4}-\d{2}-\d{2})", doc)
    if not url or not date:
        raise ProfileSourceError("docstring lacks the scraped URL or the scrape date")
    return url.group(0), date.group(1)


def build(wheel: Path) -> dict[str, Any]:
    """The JSON document for one idiscore wheel."""
    match = re.fullmatch(r"idiscore-([^-]+)-.*\.whl", wheel.name)
    if not match:
        raise ProfileSourceError(f"{wheel.name} is not an idiscore wheel")
    with zipfile.ZipFile(wheel) as zf:
        rules_src = zf.read(RULES_FILE).decode("utf-8")
        codes_src = zf.read(CODES_FILE).decode("utf-8")
    url, date = parse_provenance(rules_src)
    codes = parse_action_codes(codes_src)
    return {
        "standard": "DICOM PS3.15 Annex E, Table E.1-1 (Application Level Confidentiality "
        "Profile Attributes)",
        "edition": _edition_for(date),
        "edition_basis": f"the edition current on the scrape date {date} of {url}",
        "source": {
            "package": "idiscore",
            "version": match.group(1),
            "file": RULES_FILE,
            "sha256": hashlib.sha256(rules_src.encode("utf-8")).hexdigest(),
            "wheel_sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
            "scraped_from": url,
            "scrape_date": date,
        },
        "generated_by": "datasets/tools_generate_profile.py (ast, no import of idiscore)",
        "action_codes": dict(sorted(codes.items())),
        "rule_sets": parse_rule_sets(rules_src, codes),
    }


def dumps(doc: dict[str, Any]) -> str:
    """Indented JSON with one rule per line, so a diff of two editions reads well."""
    text = json.dumps(doc, indent=1)
    return (
        re.sub(
            r"\[\s*(\"[^\"]*\"),\s*(\"[^\"]*\"),\s*(\"[^\"]*\")\s*\]",
            lambda m: f"[{m.group(1)}, {m.group(2)}, {m.group(3)}]",
            text,
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="idiscore-*.whl from `pip download`")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="JSON to write")
    args = parser.parse_args(argv)
    doc = build(args.wheel)
    args.output.write_text(dumps(doc), encoding="utf-8")
    counts = {k: len(v["rules"]) for k, v in doc["rule_sets"].items()}
    print(f"wrote {args.output}: edition {doc['edition']}, rules per set {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
