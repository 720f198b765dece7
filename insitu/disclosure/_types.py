"""The engine's answers: verdicts, findings and the report of one output."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Finding", "Report", "Verdict", "worst"]


class Verdict(enum.Enum):
    """An ordered outcome: ``PASS < REVIEW < FAIL`` (values "pass", "review", "fail")."""

    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    REVIEW = "review"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        return _RANK[self.value]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Verdict):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Verdict):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Verdict):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Verdict):
            return NotImplemented
        return self.rank >= other.rank


_RANK = {"pass": 0, "review": 1, "fail": 2}


def worst(verdicts: Any, default: Verdict = Verdict.PASS) -> Verdict:
    """The worst of ``verdicts`` (``default`` when there are none)."""
    return max(verdicts, default=default)


@dataclass(frozen=True)
class Finding:
    """What one rule found at one place of an output."""

    rule_id: str
    verdict: Verdict
    message: str
    where: str = ""  # e.g. "zip:member.csv/page 2"; "" for the output as a whole

    def to_dict(self) -> dict[str, str]:
        return {
            "rule_id": self.rule_id,
            "verdict": self.verdict.value,
            "message": self.message,
            "where": self.where,
        }


@dataclass(frozen=True)
class Report:
    """Everything the engine found in one output.

    ``verdict`` is the worst finding's; it is PASS only when every part of the
    output was parsed and understood (an output the engine cannot account for
    carries at least one REVIEW finding).
    """

    verdict: Verdict
    findings: list[Finding]
    sniffed_type: str
    stats: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        data["findings"] = [f.to_dict() for f in self.findings]
        return data

    def by_rule(self) -> dict[str, Verdict]:
        """The worst verdict of every rule that ran."""
        found: dict[str, Verdict] = {}
        for finding in self.findings:
            found[finding.rule_id] = max(found.get(finding.rule_id, Verdict.PASS), finding.verdict)
        return found
