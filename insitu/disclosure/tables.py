"""Rules on tables, from any source (CSV/TSV, JSON records or columns, notebook outputs).

A table is a frequency table only when the SDC helpers built it (ACRO
evidence came with it): then ACRO's checks run on that evidence. Otherwise
its numbers are data as well as statistics: identifier columns and
one-row-per-subject fail whatever the values, count columns (by name, or
counts written as text such as ``n=3`` or ``3 (12%)``, or every cell of an
all-integer table) go through ACRO's threshold and zeros checks, the numeric
cells go through the grid rules, and a large grid of numbers needs review.
Multi-row headers (pivot tables) are read as one name per column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from insitu.disclosure import acro
from insitu.disclosure._types import Verdict
from insitu.disclosure.grid import check_grid
from insitu.disclosure.identifiers import matcher_for, normalise
from insitu.disclosure.scan import Scan, join

__all__ = ["parse_cell", "scan_rows", "scan_table"]

# Column names that are counts (of subjects, series, ...).
_COUNT_NAME = re.compile(
    r"^(n|count|counts|freq|frequency|n_.*|.*_n|.*count.*|.*\|n|n\|.*)$", re.IGNORECASE
)
# Column names that identify a subject, study or series.
_ID_NAME = re.compile(
    r"(subject|patient|participant|study|series|sop|instance).*(id|uid)$|pseudonym|^(pid|uid)$",
    re.IGNORECASE,
)
_PLAIN = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:e[-+]?\d+)?$", re.IGNORECASE)
_TEXT_COUNT = re.compile(
    r"^(?:n\s*[=:]\s*)?(\d+)\s*(?:\(\s*[\d.]+\s*%?\s*\)|/\s*\d+|\s*%)?$", re.IGNORECASE
)
_MISSING = {"", "na", "nan", "n/a", "none", "null", "-", "—", "nat"}
_SUPPRESSED = re.compile(r"^[<≤]\s*\d+$|^\*+$|^suppressed$", re.IGNORECASE)


def parse_cell(cell: Any) -> tuple[float | None, bool, bool]:
    """(number, written as a count in text, missing) of one cell."""
    if isinstance(cell, bool):
        return float(cell), False, False
    if isinstance(cell, int | float):
        missing = isinstance(cell, float) and math.isnan(cell)
        return (None if missing else float(cell)), False, missing
    text = normalise(str(cell)).strip() if cell is not None else ""
    if text in _MISSING or _SUPPRESSED.match(text):
        return None, False, True
    if _PLAIN.match(text) and any(ch.isdigit() for ch in text):
        try:
            return float(text.replace(",", "")), False, False
        except ValueError:
            return None, False, False
    match = _TEXT_COUNT.match(text)
    if match:
        return float(match.group(1)), True, False
    return None, False, False


def _split_header(rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """Column names (multi-row headers joined with "|") and the body."""
    header = 0
    while header < min(4, len(rows) - 1):
        if any(parse_cell(c)[0] is not None for c in rows[header]):
            break
        header += 1
    if header == 0 and rows and all(parse_cell(c)[0] is None for c in rows[0]):
        header = 1  # a table of text only
    width = max((len(r) for r in rows), default=0)
    levels: list[list[str]] = []
    for row in rows[:header]:
        filled: list[str] = []
        last = ""
        for i in range(width):
            cell = row[i].strip() if i < len(row) else ""
            last = cell or (last if i else "")
            filled.append(cell or last)
        levels.append(filled)
    names = []
    for i in range(width):
        parts = [level[i] for level in levels if level[i]]
        names.append("|".join(dict.fromkeys(parts)) or f"column {i + 1}")
    return names, rows[header:]


def scan_rows(
    scan: Scan,
    rows: list[list[str]],
    where: str,
    *,
    frame: Callable[[], Any] | None = None,
) -> None:
    """A table given as rows of cells (the first rows may be headers)."""
    rows = [r for r in rows if any(str(c).strip() for c in r)]
    if not rows:
        return
    names, body = _split_header(rows)
    width = len(names)
    if any(len(r) != width for r in body):
        scan.add(
            "not-understood",
            Verdict.REVIEW,
            "rows of different lengths: the table's shape is unclear",
            where,
        )
    body = [list(r) + [""] * (width - len(r)) for r in body]
    scan_table(scan, names, body, where, frame=frame)


def scan_table(
    scan: Scan,
    names: Sequence[str],
    body: list[list[Any]],
    where: str,
    *,
    frame: Callable[[], Any] | None = None,
) -> None:
    """Every table rule on a table with column ``names`` and ``body`` rows of cells."""
    policy = scan.ctx.policy
    parsed = [[parse_cell(c) for c in row] for row in body]
    numeric: list[int] = []
    text_counts: list[int] = []
    labels: list[int] = []
    for i in range(len(names)):
        cells = [row[i] for row in parsed]
        present = [c for c in cells if not c[2]]
        if present and all(c[0] is not None for c in present):
            numeric.append(i)
            if any(c[1] for c in present):
                text_counts.append(i)
        else:
            labels.append(i)
    _identifier_columns(scan, names, body, labels, where)
    rows = len(body)
    values = np.array(
        [[row[i][0] if row[i][0] is not None else np.nan for i in numeric] for row in parsed],
        dtype=float,
    ).reshape(rows, len(numeric))
    if scan.evidence is not None and frame is not None:
        scan.findings.extend(acro.evidence_checks(frame(), scan.evidence, policy, where))
        _row_per_subject(scan, body, labels, names, None, where, declared=True)
        _as_data(scan, values, where, declared=True)
        return
    count_cols = [i for i in numeric if _COUNT_NAME.match(str(names[i])) or i in text_counts]
    finite = values[np.isfinite(values)]
    integer_table = bool(numeric) and bool(finite.size) and bool(np.all(finite == np.round(finite)))
    if not count_cols and integer_table and len(labels) <= 1:
        count_cols = list(numeric)  # every number may be a count: check it as one
    counts = values[:, [numeric.index(i) for i in count_cols]] if count_cols else None
    if counts is not None and counts.size:
        import pandas as pd

        frame_counts = pd.DataFrame(
            np.nan_to_num(counts, nan=float(policy.min_cell_count)),
            columns=[str(names[i]) for i in count_cols],
        )
        scan.findings.extend(
            acro.count_checks(frame_counts, [str(names[i]) for i in labels], policy, where)
        )
    elif numeric:
        scan.add(
            "threshold",
            Verdict.REVIEW,
            "no count column (n, count, ...): the number of subjects behind each statistic is "
            "unknown; add it, or build the table with insitu.kernels.sdc.pivot_table",
            where,
        )
    magnitude = [str(names[i]) for i in numeric if i not in count_cols]
    if magnitude:
        scan.add(
            "dominance",
            Verdict.REVIEW,
            "the p% and n-k dominance rules need the contributions behind each cell, which a "
            f"finished table lacks (columns {', '.join(magnitude[:6])}): build the table with "
            "insitu.kernels.sdc.pivot_table so ACRO records them",
            where,
        )
    _row_per_subject(scan, body, labels, names, counts, where, declared=False)
    _as_data(scan, values, where, declared=False)


def _identifier_columns(
    scan: Scan, names: Sequence[str], body: list[list[Any]], labels: list[int], where: str
) -> None:
    ids = scan.ctx.identifiers
    matcher = matcher_for(ids.texts, scan.ctx.limits.min_identifier_length)
    flagged = [str(n) for n in names if _ID_NAME.search(normalise(str(n)))]
    for i in labels:
        text = normalise("\n".join(str(row[i]) for row in body))
        if ids.texts and matcher.find(text):
            flagged.append(str(names[i]))
    scan.ok("identifier-columns", "no identifier columns")
    if flagged:
        scan.add(
            "identifier-columns",
            Verdict.FAIL,
            f"column(s) {', '.join(sorted(set(flagged)))} hold subject, study or series "
            "identifiers: aggregate over them instead",
            where,
        )


def _row_per_subject(
    scan: Scan,
    body: list[list[Any]],
    labels: list[int],
    names: Sequence[str],
    counts: np.ndarray | None,
    where: str,
    *,
    declared: bool,
) -> None:
    rows = len(body)
    minimum = scan.ctx.policy.min_cell_count
    scan.ok("row-per-subject", "rows are aggregates")
    if rows < minimum or declared:
        return
    if counts is not None and counts.size and np.nanmin(counts) >= minimum:
        return  # every row stands for at least the minimum number of subjects
    if rows in scan.ctx.identifiers.population_sizes:
        scan.add(
            "row-per-subject",
            Verdict.FAIL,
            f"{rows} rows: as many as the subjects or series of a dataset here; this looks "
            "like one row per subject",
            where,
        )
        return
    unique = [str(names[i]) for i in labels if len({str(r[i]) for r in body}) == rows]
    if unique:
        scan.add(
            "row-per-subject",
            Verdict.FAIL,
            f"{rows} rows, each with its own value of {', '.join(unique)}: this looks like "
            "one row per subject or record; release aggregates",
            where,
        )


def _as_data(scan: Scan, values: np.ndarray, where: str, *, declared: bool) -> None:
    scan.count_values(int(np.isfinite(values).sum()))
    if not values.size:
        return
    scan.stats["grids"] += 1
    scan.ok("image-resolution", "no array, image or grid the size of the site's images")
    scan.findings.extend(check_grid(values, ctx=scan.ctx, where=join(where, "cells")))
    scan.ok("table-as-data", "a small table")
    if not declared and values.size >= scan.ctx.limits.review_grid_cells:
        scan.add(
            "table-as-data",
            Verdict.REVIEW,
            f"{values.shape[0]}x{values.shape[1]} numeric cells in a table that is not a "
            "declared frequency table: the steward should confirm they are statistics, not data",
            where,
        )
