"""ACRO's own checks, run on tables the engine found (and on ACRO evidence sent with them).

ACRO (``acro.sdcchecks.SDCChecks``) implements the statistical disclosure
control rules of tables: thresholds, zeros, dominance (n-k, p%), degrees of
freedom. ``insitu.kernels.sdc.pivot_table`` lets ACRO record the evidence its
checks need next to a table; here the checks run with the site's thresholds.
"""

from __future__ import annotations

import logging
from typing import Any

from insitu.config import PolicySection
from insitu.disclosure._types import Finding, Verdict
from insitu.disclosure.rules import finding

__all__ = ["count_checks", "evidence_checks", "import_acro"]

_ACRO_RULES = {
    "MinimumThresholdCheck": "threshold",
    "PresenceOfZeroCheck": "zeros",
    "NKCheck": "dominance-nk",
    "PPercentCheck": "dominance-p",
    "MinimumDoFCheck": "degrees-of-freedom",
    "PresenceOfLinkedTableCheck": "linked-tables",
    "RequiredZeroCheck": "zeros-policy",
    "StatbarnDataCheck": "manual-review",
    "AllSameValuesCheck": "all-same",
    "MissingCheck": "missing",
}


def import_acro() -> Any:
    """Import ACRO's checks without letting ACRO reconfigure the process's logging."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from acro import sdcchecks  # ACRO's package import calls logging.basicConfig(INFO)

    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("acro").setLevel(logging.WARNING)
    return sdcchecks


def _risk_appetite(policy: PolicySection) -> dict[str, Any]:
    """ACRO's risk appetite (its default.yaml keys) from insitu.toml [policy]."""
    return {
        "safe_threshold": policy.min_cell_count,
        "safe_dof_threshold": policy.min_cell_count,
        "safe_nk_n": policy.nk_n,
        "safe_nk_k": policy.nk_k,
        "safe_pratio_p": policy.p_ratio,
        "check_missing_values": False,
        "zeros_are_disclosive": policy.zeros_disclosive,
    }


class _ProducedTable:
    """What ACRO's checks need of a table model, for a table that already exists."""

    model_type = "table"
    command = "pivot_table"

    def __init__(self, counts: Any, dimensions: list[str]) -> None:
        self._counts = counts
        self._dimensions = dimensions

    def get_dimension_names(self) -> list[str]:
        return self._dimensions

    def get_allfalse_table(self) -> Any:
        return self._counts.astype(bool) & False


def _result(check: str, status: str, summary: str, where: str) -> Finding:
    rule = _ACRO_RULES.get(check, "manual-review")
    status = status.lower()
    verdict = Verdict(status) if status in ("pass", "review", "fail") else Verdict.REVIEW
    return finding(rule, verdict, f"{check}: {summary.strip()}", where)


def count_checks(
    counts: Any, dimensions: list[str], policy: PolicySection, where: str
) -> list[Finding]:
    """ACRO's threshold and zeros checks on a table's counts (a DataFrame)."""
    sdc = import_acro()
    checks = sdc.SDCChecks(_risk_appetite(policy))
    evidence = sdc.SDCEvidence(interim_tables={"count_table": counts})
    model = _ProducedTable(counts, dimensions)
    results = []
    for name, method in (
        ("MinimumThresholdCheck", checks.check_min_threshold),
        ("PresenceOfZeroCheck", checks.check_presence_of_zero),
    ):
        status, summary, _mask = method("FrequencyTable", evidence, model)
        results.append(_result(name, status, summary, where))
    return results


def _frame(payload: dict[str, Any]) -> Any:
    import pandas as pd

    index = payload["index"]
    if index and isinstance(index[0], list):
        index = pd.MultiIndex.from_tuples([tuple(i) for i in index])
    columns = payload["columns"]
    if columns and isinstance(columns[0], list):
        columns = pd.MultiIndex.from_tuples([tuple(c) for c in columns])
    return pd.DataFrame(payload["data"], index=index, columns=columns)


def evidence_checks(
    table: Any, evidence: dict[str, Any], policy: PolicySection, where: str
) -> list[Finding]:
    """ACRO's full checks for each analysis, run on the evidence ACRO recorded."""
    sdc = import_acro()
    checks = sdc.SDCChecks(_risk_appetite(policy))
    try:
        interim = {name: _frame(p) for name, p in evidence["interim"].items()}
        analyses = [str(a) for a in evidence["analyses"]]
        dimensions = [str(d) for d in evidence.get("dimensions", [])]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return [
            finding("evidence", Verdict.FAIL, f"the table's ACRO evidence is unreadable: {exc}")
        ]
    counts = interim.get("count_table")
    if counts is None:
        return [finding("evidence", Verdict.FAIL, "the table's ACRO evidence has no cell counts")]
    model = _ProducedTable(counts, dimensions)
    ev = sdc.SDCEvidence(interim_tables=interim, dof=counts - 1)
    results: dict[str, Finding] = {}
    for analysis in analyses:
        if analysis not in checks.analyses:
            results[analysis] = finding(
                "manual-review", Verdict.REVIEW, f"ACRO does not know the analysis {analysis!r}"
            )
            continue
        outcome = checks.run_checks_for_analysis(analysis, ev, model)
        summaries = dict(
            line.split(": ", 1) for line in outcome.summaries.split("\n ") if ": " in line
        )
        for check, status in outcome.fair_dict.get("check_status", {}).items():
            result = _result(check, status, summaries.get(check, status), where)
            key = result.rule_id
            # The strictest outcome of a rule across analyses is the one that counts.
            if key not in results or result.verdict > results[key].verdict:
                results[key] = result
    return [*results.values(), _evidence_matches(table, counts, interim, analyses, where)]


def _evidence_matches(
    table: Any, counts: Any, interim: dict[str, Any], analyses: list[str], where: str
) -> Finding:
    import numpy as np
    import pandas as pd
    from acro.table_utils import AGGFUNC_TO_TYPE  # ACRO's names of the analyses

    cells = counts.to_numpy(dtype=float).ravel()
    if len(table) != counts.shape[0]:
        return finding(
            "evidence",
            Verdict.FAIL,
            f"the ACRO evidence has {counts.shape[0]} rows but the table has {len(table)}: "
            "the evidence does not belong to this table",
            where,
        )
    matched = []
    uncovered = []
    for column in table.columns:
        if not pd.api.types.is_numeric_dtype(table[column]):
            continue
        name = str(column).lower()
        # pivot_table names columns "<aggfunc>_<values>"; ACRO checked those analyses only.
        if AGGFUNC_TO_TYPE.get(name.split("_", 1)[0]) not in analyses and name != "n":
            uncovered.append(str(column))
            continue
        values = np.asarray(table[column], dtype=float).ravel()
        if values.shape != cells.shape:
            continue
        if "count" in name or name == "n":
            expected = cells
        elif "mean" in name and "sum" in interim:
            expected = interim["sum"].to_numpy(dtype=float).ravel() / np.where(cells, cells, 1)
        elif "sum" in name and "sum" in interim:
            expected = interim["sum"].to_numpy(dtype=float).ravel()
        else:
            continue
        if not np.allclose(values, expected, rtol=1e-6, equal_nan=True):
            return finding(
                "evidence",
                Verdict.FAIL,
                f"column {column!r} does not match the ACRO evidence: the table was changed "
                "after ACRO checked it",
                where,
            )
        matched.append(str(column))
    if uncovered:
        return finding(
            "evidence",
            Verdict.REVIEW,
            f"column(s) {', '.join(uncovered)} are not statistics ACRO checked for this table: "
            "the steward must check them by hand",
            where,
        )
    if not matched:
        return finding(
            "evidence",
            Verdict.REVIEW,
            "no count, sum or mean column to compare with the ACRO evidence: the steward "
            "should confirm the table is the one ACRO checked",
            where,
        )
    return finding(
        "evidence", Verdict.PASS, f"columns {', '.join(matched)} match the ACRO evidence", where
    )
