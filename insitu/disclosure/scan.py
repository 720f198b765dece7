"""The state of one check: findings so far, counters, and the unpacking limits."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from insitu.disclosure._types import Finding, Report, Verdict, worst
from insitu.disclosure.context import DisclosureContext
from insitu.disclosure.rules import finding

__all__ = ["Scan", "StopScan", "inflate", "join"]

_RATIO_FLOOR = 1 << 20  # below 1 MiB decompressed, a high ratio harms nobody


class StopScan(Exception):
    """Stops reading a part of an output; the finding says why."""

    def __init__(self, found: Finding) -> None:
        super().__init__(found.message)
        self.finding = found


def join(where: str, part: str) -> str:
    """A location inside another: ``zip:a.npz/w.npy``."""
    return f"{where}/{part}" if where else part


class Scan:
    """Collects the findings and counters of one output (and everything inside it)."""

    def __init__(
        self,
        ctx: DisclosureContext,
        *,
        evidence: dict[str, Any] | None = None,
        nested: Callable[[Scan, bytes, str, str], str] | None = None,
    ) -> None:
        self.ctx = ctx
        self.evidence = evidence
        # Opens a file found inside another (the engine's scan_nested): text.py hands
        # decoded payloads back through it instead of importing the engine.
        self.nested = nested
        self.findings: list[Finding] = []
        self.stats: dict[str, int] = {
            "bytes": 0,
            "numeric_values": 0,
            "unpacked_bytes": 0,
            "grids": 0,
            "text_chars": 0,
        }
        self.depth = 0
        # (where, array, is an image frame) of every array the parsers found, when a
        # caller asked for them (extract_arrays: the steward's preview draws them).
        self.kept: list[tuple[str, Any, bool]] | None = None
        self.ran: dict[str, str] = {}  # rules that ran, with what a pass means

    def add(self, rule_id: str, verdict: Verdict, message: str, where: str = "") -> None:
        self.findings.append(finding(rule_id, verdict, message, where))

    def ok(self, rule_id: str, message: str) -> None:
        """Note that a rule ran; it shows as PASS unless it also found something."""
        finding(rule_id, Verdict.PASS, message)  # the id must be registered
        self.ran.setdefault(rule_id, message)

    def stop(self, rule_id: str, message: str, where: str = "") -> StopScan:
        """A FAIL finding as an exception, to abandon the part being read."""
        return StopScan(finding(rule_id, Verdict.FAIL, message, where))

    def count_values(self, n: int) -> None:
        self.stats["numeric_values"] += int(n)

    def unpacked(self, size: int, where: str, *, packed: int | None = None) -> None:
        """Account for ``size`` decompressed bytes; over a limit, stop."""
        limits = self.ctx.limits
        self.stats["unpacked_bytes"] += size
        if self.stats["unpacked_bytes"] > limits.max_unpacked_bytes:
            raise self.stop(
                "unpack-limits",
                f"more than {limits.max_unpacked_bytes} bytes decompressed "
                "(disclosure.max_unpacked_bytes): a decompression bomb, or far more than a "
                "result needs",
                where,
            )
        if (
            packed is not None
            and size > _RATIO_FLOOR
            and size > packed * limits.max_expansion_ratio
        ):
            raise self.stop(
                "unpack-limits",
                f"{packed} bytes expand to {size} (over disclosure.max_expansion_ratio = "
                f"{limits.max_expansion_ratio:g}): a decompression bomb",
                where,
            )

    def report(self, sniffed_type: str) -> Report:
        flagged = {f.rule_id for f in self.findings}
        passes = [
            finding(rule_id, Verdict.PASS, message)
            for rule_id, message in self.ran.items()
            if rule_id not in flagged
        ]
        findings = [*passes, *self.findings]
        verdict = worst(f.verdict for f in findings)
        return Report(verdict, findings, sniffed_type, dict(self.stats))


def inflate(scan: Scan, data: bytes, where: str, *, wbits: int = 15) -> bytes:
    """zlib/deflate data, decompressed within the scan's limits (never trusting sizes)."""
    limits = scan.ctx.limits
    room = limits.max_unpacked_bytes - scan.stats["unpacked_bytes"]
    cap = max(0, min(room, int(max(len(data), 1) * limits.max_expansion_ratio), 1 << 40))
    cap = max(cap, min(room, _RATIO_FLOOR))
    engine = zlib.decompressobj(wbits)
    try:
        out = engine.decompress(data, cap + 1)
    except zlib.error as exc:
        raise scan.stop("malformed", f"compressed data is corrupt ({exc})", where) from None
    scan.unpacked(len(out), where, packed=len(data))
    if len(out) > cap:
        raise scan.stop(
            "unpack-limits",
            f"{len(data)} compressed bytes expand beyond the limits "
            "(disclosure.max_unpacked_bytes, disclosure.max_expansion_ratio): a decompression bomb",
            where,
        )
    if not engine.eof:
        raise scan.stop("malformed", "compressed data ends before its end marker", where)
    if engine.unused_data.strip(b" \t\r\n\0"):
        raise scan.stop(
            "hidden-data",
            f"{len(engine.unused_data)} bytes after the end of compressed data",
            where,
        )
    return out
