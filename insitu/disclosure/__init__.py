"""The disclosure-control engine: what may leave a site, decided by content.

One engine for every exit (the airlock, the federation's egress policy), one
registry of named rules (:data:`RULES`). Default-deny: a report is PASS only
for outputs the engine fully parsed and understood; anything it cannot account
for is at least REVIEW, and content that does not match its declared type is
FAIL. See docs/reference/airlock-checks.md for every rule.

    check_file(data, name=..., ctx=...)      any submitted file       -> Report
    check_text(text, where=..., ctx=...)     a piece of text          -> Report
    check_arrays(arrays, ctx=..., where=...) arrays parsed by a caller -> Report
    check_grid(grid, ctx=..., where=...)     one numeric array        -> list[Finding]

This package is the ground floor: it imports nothing from insitu.hub,
insitu.federation, insitu.kernels or insitu.widgets.
"""

from __future__ import annotations

from insitu.disclosure._types import Finding, Report, Verdict
from insitu.disclosure.context import DisclosureContext, SiteIdentifiers
from insitu.disclosure.engine import check_arrays, check_file, check_text
from insitu.disclosure.grid import check_grid
from insitu.disclosure.rules import RULES, Rule

__all__ = [
    "RULES",
    "DisclosureContext",
    "Finding",
    "Report",
    "Rule",
    "SiteIdentifiers",
    "Verdict",
    "check_arrays",
    "check_file",
    "check_grid",
    "check_text",
]
