"""The airlock's automatic output checks: the disclosure engine, applied at submission.

Every rule lives in :mod:`insitu.disclosure` (one registry, shared with the
federation's egress policy); this module only admits files (allowed suffixes,
size), runs :func:`insitu.disclosure.check_file` on the stored bytes with the
node's context, and turns the report into the per-rule results a release
request stores (one per rule: its worst verdict and what it found).
docs/reference/airlock-checks.md lists every rule and threshold.

A ``fail`` can only be approved with a written override reason; a ``review``
asks the steward to look; ``pass`` means the rule ran and found nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from insitu.config import NodeHome, PolicySection, SiteConfig
from insitu.datasets.disclosure_context import disclosure_context
from insitu.disclosure import RULES, Report, check_file
from insitu.disclosure.sniff import DECLARED
from insitu.errors import OutputTooLargeError, UnsupportedOutputError

__all__ = [
    "ALLOWED_SUFFIXES",
    "CheckResult",
    "check_admissible",
    "overall_status",
    "results_of",
    "run_checks",
]

# What a release request records as its kind (the steward's views group by it).
_KINDS = {
    "csv": "table", "json": "json", "text": "text", "notebook": "notebook", "png": "image",
    "jpeg": "image", "gif": "image", "tiff": "image", "pdf": "pdf", "npz": "weights",
    "npy": "weights", "torch": "weights", "safetensors": "weights", "zip": "archive",
}  # fmt: skip
# File types the airlock accepts, by suffix (the engine then checks the content).
ALLOWED_SUFFIXES: dict[str, str] = {suffix: _KINDS[kind] for suffix, kind in DECLARED.items()}
_MAX_MESSAGES = 5


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one rule on one output."""

    rule: str
    status: str  # "pass" | "review" | "fail"
    summary: str
    by: str = "insitu"  # "acro" when ACRO's own check produced it

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def overall_status(results: Iterable[CheckResult]) -> str:
    statuses = {r.status for r in results}
    if "fail" in statuses:
        return "fail"
    return "review" if "review" in statuses else "pass"


def check_admissible(filename: str, size: int, policy: PolicySection) -> str:
    """The file's kind; refuse types outside the allow-list and oversized files."""
    suffix = Path(filename).suffix.lower()
    kind = ALLOWED_SUFFIXES.get(suffix)
    if kind is None:
        raise UnsupportedOutputError(
            f"the airlock does not release {suffix or 'files without a suffix'} files "
            f"({filename!r}); allowed: {', '.join(sorted(ALLOWED_SUFFIXES))}"
        )
    if size > policy.max_release_bytes:
        raise OutputTooLargeError(
            f"{filename!r} is {size} bytes, over the site's release limit of "
            f"{policy.max_release_bytes} bytes (policy.max_release_bytes): release a "
            "summary instead of the data"
        )
    return kind


def results_of(report: Report) -> list[CheckResult]:
    """One result per rule: its worst verdict, and the findings of that verdict."""
    order: list[str] = []
    grouped: dict[str, list[Any]] = {}
    for found in report.findings:
        if found.rule_id not in grouped:
            order.append(found.rule_id)
        grouped.setdefault(found.rule_id, []).append(found)
    results = []
    for rule_id in order:
        findings = grouped[rule_id]
        verdict = max(f.verdict for f in findings)
        worst = [f for f in findings if f.verdict is verdict]
        texts = list(
            dict.fromkeys(f"{f.where}: {f.message}" if f.where else f.message for f in worst)
        )
        summary = "; ".join(texts[:_MAX_MESSAGES])
        if len(texts) > _MAX_MESSAGES:
            summary += f"; and {len(texts) - _MAX_MESSAGES} more"
        results.append(CheckResult(rule_id, verdict.value, summary, RULES[rule_id].by))
    return results


def run_checks(
    path: Path,
    *,
    home: NodeHome,
    config: SiteConfig,
    evidence: dict[str, Any] | None = None,
) -> list[CheckResult]:
    """Run the disclosure engine on the stored file at ``path`` (already admitted)."""
    ctx = disclosure_context(home, config)
    report = check_file(path.read_bytes(), name=path.name, ctx=ctx, evidence=evidence)
    return results_of(report)
