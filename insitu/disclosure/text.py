"""Rules on text, wherever it was found: identifiers, dates, encoded payloads, counts, grids."""

from __future__ import annotations

import base64
import binascii
import re

import numpy as np

from insitu.disclosure._types import Verdict
from insitu.disclosure.grid import check_grid
from insitu.disclosure.identifiers import find_dates, find_uids, matcher_for, normalise
from insitu.disclosure.scan import Scan, join
from insitu.disclosure.sniff import sniff

__all__ = ["numbers_in", "scan_text"]

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?(?![\w.])", re.IGNORECASE)
_SMALL_N = re.compile(r"(?<![a-z0-9_])n\s*[=:]\s*(\d+)(?![\d.])")
_NUMERIC_LINE = re.compile(
    r"^[\s,;|\[\]()]*(?:[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?[\s,;|\[\]()]*){2,}$"
)


def _shown(items: list[str]) -> str:
    unique = sorted(set(items))
    return ", ".join(unique[:3]) + (f" and {len(unique) - 3} more" if len(unique) > 3 else "")


def numbers_in(text: str) -> list[float]:
    return [float(m) for m in _NUMBER.findall(text)]


def _identifiers(scan: Scan, text: str, where: str, *, counts: bool = True) -> None:
    ids = scan.ctx.identifiers
    normal = normalise(text)
    found = matcher_for(ids.texts, scan.ctx.limits.min_identifier_length).find(normal)
    found += find_uids(normal)
    found += find_dates(normal, ids.dates)
    scan.ok("identifiers-in-text", "no pseudonyms, UIDs or dates of the site's data")
    if found:
        scan.add(
            "identifiers-in-text",
            Verdict.FAIL,
            f"pseudonyms, UIDs or study dates of the site's data: {_shown(found)}",
            where,
        )
    if not counts:
        return
    small = [int(n) for n in _SMALL_N.findall(normal)]
    small = [n for n in small if n < scan.ctx.policy.min_cell_count]
    scan.ok("small-counts-in-text", "no counts below the minimum written in text")
    if small:
        scan.add(
            "small-counts-in-text",
            Verdict.FAIL,
            f"counts below policy.min_cell_count ({scan.ctx.policy.min_cell_count}) written in "
            f"text: n={', n='.join(map(str, sorted(set(small))))}",
            where,
        )


def _payloads(scan: Scan, text: str, where: str) -> None:
    minimum = scan.ctx.limits.base64_min_length
    pattern = re.compile(rf"[A-Za-z0-9+/_-]{{{minimum},}}={{0,2}}")
    scan.ok("encoded-payload", "no encoded files in text")
    for number, match in enumerate(pattern.finditer(text)):
        run = match.group(0)
        if not (re.search(r"[A-Za-z]", run) and re.search(r"\d", run)):
            continue
        try:
            data = base64.b64decode(
                run + "=" * (-len(run) % 4), altchars=b"-_" if "-" in run or "_" in run else None
            )
        except (binascii.Error, ValueError):
            continue
        place = join(where, f"base64 run {number + 1}")
        kind = sniff(data)
        if kind == "text":
            if scan.depth < scan.ctx.limits.max_nesting:
                scan.depth += 1
                try:
                    scan_text(scan, data.decode("utf-8"), place)
                finally:
                    scan.depth -= 1
            continue
        scan.add(
            "encoded-payload",
            Verdict.FAIL,
            f"{len(run)} characters of base64 encode a {kind} file of {len(data)} bytes",
            place,
        )
        if scan.nested is not None:  # without it the FAIL above stands alone
            scan.nested(scan, data, f"payload.{kind}", place)


def _grids(scan: Scan, text: str, where: str) -> None:
    """Blocks of lines of numbers (np.savetxt, printed arrays) are grids."""
    block: list[list[float]] = []
    start = 0

    def flush(end: int) -> None:
        if len(block) >= 2 and len({len(r) for r in block}) == 1:
            grid = np.array(block)
            for finding in check_grid(
                grid, ctx=scan.ctx, where=join(where, f"lines {start}-{end}")
            ):
                scan.findings.append(finding)
        elif len(block) == 1 and len(block[0]) >= 16:
            vector = np.array(block[0])
            for finding in check_grid(vector, ctx=scan.ctx, where=join(where, f"line {end}")):
                scan.findings.append(finding)

    for number, line in enumerate(text.splitlines(), start=1):
        if _NUMERIC_LINE.match(line):
            values = numbers_in(re.sub(r"[,;|\[\]()]", " ", line))
            if block and len(values) != len(block[0]):
                flush(number - 1)
                block = []
            if not block:
                start = number
            block.append(values)
        elif block:
            flush(number - 1)
            block = []
    if block:
        flush(len(text.splitlines()))


def scan_text(
    scan: Scan, text: str, where: str, *, grids: bool = True, counts: bool = True
) -> None:
    """Every text rule on ``text``; numeric lines are also checked as grids.

    ``counts=False`` for program code, where ``n = 3`` is an assignment, not a count.
    """
    scan.stats["text_chars"] += len(text)
    _identifiers(scan, text, where, counts=counts)
    _payloads(scan, text, where)
    if grids:
        scan.count_values(len(_NUMBER.findall(text)))
        _grids(scan, text, where)
