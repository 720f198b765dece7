"""The action table of PS3.15 Table E.1-1, loaded from the generated JSON.

``profile_e1_1.json`` is written by ``tools_generate_profile.py`` from the
machine-readable copy of the standard in ``idiscore``; nothing here is typed by
hand. This module turns the basic profile plus the enabled option columns into
one lookup: tag -> :class:`Rule`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

# Rule set names in the JSON (idiscore's variable names) for the options we offer.
BASIC = "basic_profile"
OPT_MODIFIED_DATES = "retain_modified_dates"
OPT_PATIENT_CHARACTERISTICS = "retain_patient_characteristics"
OPT_DEVICE_IDENTITY = "retain_device_id"
OPT_SAFE_PRIVATE = "retain_safe_private"

# Where the table offers a choice, take the alternative that keeps the object
# valid whatever the attribute's type in its IOD (a Type 1 attribute needs a
# value, Type 2 needs presence): X/Z -> Z, X/D and Z/D and X/Z/D -> D, X/Z/U* -> U.
# Every alternative removes the original value, so none is less private.
RESOLVE_CHOICE = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}


@dataclass(frozen=True)
class Rule:
    """The action for one attribute: ``action`` is one of D, Z, X, K, C, U.

    ``fallback`` is the basic profile's action, used when ``C`` (clean) cannot
    be applied to the attribute's value (only dates and times can be cleaned
    here: free text cannot be cleaned reliably, so it gets the basic action).
    """

    action: str
    fallback: str = "X"
    source: str = BASIC


@dataclass(frozen=True)
class Repeating:
    """A repeating-group rule such as ``60xx3000``: ``tag & mask == value``."""

    mask: int
    value: int
    rule: Rule


@cache
def load_table() -> dict[str, Any]:
    """The generated JSON document (package data, read once)."""
    text = resources.files("insitu.datasets").joinpath("profile_e1_1.json").read_text("utf-8")
    table: dict[str, Any] = json.loads(text)
    return table


def _single(action: str) -> str:
    return RESOLVE_CHOICE.get(action, action)


def _repeating(pattern: str, rule: Rule) -> Repeating:
    mask = int("".join("0" if c == "x" else "f" for c in pattern), 16)
    value = int(pattern.replace("x", "0"), 16)
    return Repeating(mask, value, rule)


@dataclass(frozen=True)
class ActionTable:
    """Basic profile with the chosen option columns applied, ready for lookup."""

    tags: dict[int, Rule]
    repeating: tuple[Repeating, ...]
    private: Rule
    option_sets: tuple[str, ...]

    def rule_for(self, tag: int) -> Rule | None:
        """The rule for a public tag, or None when the table does not list it."""
        rule = self.tags.get(tag)
        if rule is not None:
            return rule
        for rep in self.repeating:
            if tag & rep.mask == rep.value:
                return rep.rule
        return None


def build_table(option_sets: tuple[str, ...]) -> ActionTable:
    """Apply each option column (K or C) over the basic profile's column."""
    doc = load_table()
    sets = doc["rule_sets"]
    unknown = [name for name in option_sets if name not in sets]
    if unknown:
        raise KeyError(f"no option rule set {unknown} in profile_e1_1.json; have {sorted(sets)}")
    tags: dict[int, Rule] = {}
    repeating: dict[str, Rule] = {}
    private = Rule("X")
    for tag, action, _keyword in sets[BASIC]["rules"]:
        rule = Rule(_single(action))
        if tag == "private":
            private = rule
        elif "x" in tag:
            repeating[tag] = rule
        else:
            tags[int(tag, 16)] = rule
    for name in option_sets:
        for tag, action, _keyword in sets[name]["rules"]:
            if tag == "private" or "x" in tag:
                continue  # private and repeating groups stay as the basic profile says
            base = tags.get(int(tag, 16), Rule("K"))
            fallback = base.fallback if base.action == "C" else base.action
            tags[int(tag, 16)] = Rule(_single(action), fallback=fallback, source=name)
    reps = tuple(_repeating(p, r) for p, r in sorted(repeating.items()))
    return ActionTable(tags, reps, private, option_sets)


def provenance() -> dict[str, Any]:
    """Where the table came from, for PROFILE and the store's provenance."""
    doc = load_table()
    return {
        "standard": doc["standard"],
        "edition": doc["edition"],
        "edition_basis": doc["edition_basis"],
        "source": doc["source"],
    }
