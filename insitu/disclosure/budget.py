"""The information budget of one release: numeric values and bytes that leave."""

from __future__ import annotations

from insitu.disclosure._types import Verdict
from insitu.disclosure.scan import Scan

__all__ = ["apply_budget"]


def apply_budget(scan: Scan) -> None:
    """REVIEW when the output carries more values or bytes than one release may."""
    budget = scan.ctx.budget
    values, size = scan.stats["numeric_values"], scan.stats["bytes"]
    scan.ok("budget", f"{values} numeric values and {size} bytes, within the release budget")
    if values > budget.values:
        scan.add(
            "budget",
            Verdict.REVIEW,
            f"{values} numeric values, over the budget of {budget.values} per release "
            "(disclosure.budget_values): release fewer, more aggregated results",
        )
    if size > budget.bytes:
        scan.add(
            "budget",
            Verdict.REVIEW,
            f"{size} bytes, over the budget of {budget.bytes} per release "
            "(disclosure.budget_bytes)",
        )
