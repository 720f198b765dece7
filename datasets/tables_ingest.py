"""``insitu ingest-table``: a clinical or measurement table joins a dataset.

The table is de-identified like the images it belongs to, with the same keys:

- the subject column holds the site's original patient IDs; each becomes the
  pseudonym the images got (``Deidentifier.pseudonym``). Rows whose subject is
  not in the dataset are refused, and the report names those rows (by CSV line,
  never by the identifier);
- date columns (declared with ``--date-columns``, or detected: every value a
  date) are shifted by the subject's own shift (``Deidentifier.shift_date``),
  so intervals between a table's dates and the image dates stay true;
- free text is refused, column by column, with the reason (see
  :func:`text_problem`): names, identifiers, contact details, long free text,
  or a column whose name says it holds such things. ``--drop COL`` leaves a
  column out;
- numbers, booleans and short codes keep their types.

The result is published as a new immutable version through
:func:`insitu.datasets.tables.add_tables` (the datasets component's table
mechanism) and read back as ``open_dataset(name).tables[table]``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from insitu.config import NodeHome, load_config, resolve_home
from insitu.errors import SourceError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["TableReport", "ingest_table", "prepare_table", "text_problem"]

# Column names that announce identifying content (lower-case substrings).
IDENTIFYING_NAMES = (
    "name", "patient", "mrn", "address", "street", "postcode", "zip", "phone", "email",
    "mail", "birth", "dob", "comment", "note", "remark", "text", "free", "physician",
    "doctor", "accession", "ssn", "insurance", "contact",
)  # fmt: skip
MAX_CODE_CHARS = 40  # longer values are free text
MAX_CODE_WORDS = 4
_PATTERNS = {
    "a person name in DICOM form (Family^Given)": re.compile(r"\w\^\w"),
    "a date inside text": re.compile(r"\b(19|20)\d\d[-./]?[01]\d[-./]?[0-3]\d\b"),
    "an e-mail address": re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+"),
    "a phone number": re.compile(r"\+?\d[\d ()/-]{7,}\d"),
    "a number of 6 or more digits (an identifier)": re.compile(r"\d{6,}"),
    "a title and name": re.compile(r"\b(Mr|Mrs|Ms|Dr|Prof)\.?\s+[A-Z]"),
}
_DATE = re.compile(r"^\s*((?:19|20)\d\d)-?([01]\d)-?([0-3]\d)\s*$")


@dataclass
class TableReport:
    """What happened to a table; safe to print (no identifiers, no values)."""

    table: str
    rows: int = 0
    columns: list[str] = field(default_factory=list)
    dates_shifted: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    version: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "rows": self.rows,
            "columns": self.columns,
            "dates_shifted": self.dates_shifted,
            "dropped": self.dropped,
            "version": self.version,
        }


def _lines(rows: Sequence[int]) -> str:
    """CSV line numbers of 0-based data rows (line 1 is the header)."""
    shown = [str(r + 2) for r in rows[:20]]
    more = f" and {len(rows) - 20} more" if len(rows) > 20 else ""
    return ", ".join(shown) + more


def text_problem(column: str, values: Sequence[str], known_ids: set[str]) -> str | None:
    """Why a text column may identify someone, or None when it holds short codes."""
    lowered = column.lower()
    for word in IDENTIFYING_NAMES:
        if word in lowered:
            return f"its name contains {word!r}"
    for i, value in enumerate(values):
        text = value.strip()
        if not text:
            continue
        if text in known_ids:
            return f"line {i + 2} holds a patient ID of this dataset"
        if len(text) > MAX_CODE_CHARS or len(text.split()) > MAX_CODE_WORDS:
            return (
                f"line {i + 2} is free text (over {MAX_CODE_CHARS} characters or "
                f"{MAX_CODE_WORDS} words)"
            )
        for what, pattern in _PATTERNS.items():
            if pattern.search(text):
                return f"line {i + 2} looks like {what}"
    return None


def _as_date(value: Any) -> str | None:
    """``YYYYMMDD`` from 'YYYYMMDD' or 'YYYY-MM-DD'; None for an empty cell."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value).strip()
    if not text:
        return None
    match = _DATE.match(text)
    if not match:
        raise ValueError(text)
    return "".join(match.groups())


def _looks_like_dates(values: Any) -> bool:
    present = [str(v) for v in values if str(v).strip() and str(v) != "nan"]
    return bool(present) and all(_DATE.match(v) for v in present)


def prepare_table(
    frame: pd.DataFrame,
    *,
    subject_column: str,
    deid: Any,
    known_subjects: set[str],
    date_columns: Sequence[str] = (),
    drop: Sequence[str] = (),
    table: str = "table",
) -> tuple[pd.DataFrame, TableReport]:
    """The de-identified table: ``subject_id`` first, dates shifted, text checked.

    ``deid`` is the node's :class:`~insitu.datasets.deid.Deidentifier`;
    ``known_subjects`` the dataset's subject pseudonyms. Raises
    :class:`~insitu.errors.SourceError` naming rows and columns, never values.
    """
    import pandas as pd

    report = TableReport(table=table)
    missing = [c for c in (subject_column, *date_columns, *drop) if c not in frame.columns]
    if missing:
        raise SourceError(
            f"table {table!r} has no column(s) {', '.join(map(repr, missing))}; "
            f"its columns are {', '.join(map(repr, map(str, frame.columns)))}"
        )
    if subject_column in drop or subject_column in date_columns:
        raise SourceError(f"the subject column {subject_column!r} cannot be dropped or a date")
    originals = [str(v).strip() for v in frame[subject_column].fillna("")]
    empty = [i for i, v in enumerate(originals) if not v]
    if empty:
        raise SourceError(f"table {table!r}: no subject on line(s) {_lines(empty)}")
    pseudonyms = [deid.pseudonym(v) for v in originals]
    unknown = [i for i, p in enumerate(pseudonyms) if p not in known_subjects]
    if unknown:
        raise SourceError(
            f"table {table!r}: {len(unknown)} row(s) name a subject that has no images in "
            f"this dataset (line(s) {_lines(unknown)}); ingest their images first or remove "
            "those rows. Nothing was published."
        )
    out: dict[str, Any] = {"subject_id": pseudonyms}
    known_ids = set(originals)
    problems: list[str] = []
    for column in frame.columns:
        name = str(column)
        if column == subject_column:
            continue
        if column in drop:
            report.dropped.append(name)
            continue
        values = frame[column]
        if name == "subject_id":
            problems.append(f"{name!r}: the name is reserved for the pseudonym column")
            continue
        is_date = (
            column in date_columns
            or (values.dtype == object and _looks_like_dates(values))
            or (values.dtype.kind in "iu" and _looks_like_dates(values.astype(str)))
        )
        if is_date:
            shifted, bad = [], []
            for i, (value, original) in enumerate(zip(values, originals, strict=True)):
                try:
                    day = _as_date(value)
                except ValueError:
                    bad.append(i)
                    continue
                shifted.append(None if day is None else deid.shift_date(original, day))
            if bad:
                problems.append(
                    f"{name!r}: not a date (YYYYMMDD or YYYY-MM-DD) on line(s) {_lines(bad)}"
                )
                continue
            out[name] = pd.to_datetime(pd.Series(shifted, dtype=object), format="%Y%m%d")
            report.dates_shifted.append(name)
            continue
        if values.dtype == object:
            text = [str(v) if v == v and v is not None else "" for v in values]
            reason = text_problem(name, text, known_ids)
            if reason:
                problems.append(f"{name!r}: {reason}")
                continue
            out[name] = pd.Series(text, dtype=object)
            continue
        if name.lower() and any(w in name.lower() for w in ("patient", "mrn", "ssn", "phone")):
            problems.append(f"{name!r}: its name says it holds an identifier")
            continue
        out[name] = values.reset_index(drop=True)
    if problems:
        raise SourceError(
            f"table {table!r} refused: column(s) that may identify someone or cannot be "
            "de-identified:\n  "
            + "\n  ".join(problems)
            + "\nRemove them from the file or pass --drop COLUMN; declare dates with "
            "--date-columns. Nothing was published."
        )
    result = pd.DataFrame(out)
    report.rows = len(result)
    report.columns = [str(c) for c in result.columns]
    return result, report


def ingest_table(
    dataset: str,
    path: str | Path,
    *,
    subject_column: str,
    table: str | None = None,
    date_columns: Sequence[str] = (),
    drop: Sequence[str] = (),
    home: NodeHome | None = None,
) -> TableReport:
    """Read a CSV, de-identify it like the dataset's images and publish a new version."""
    import pandas as pd

    from insitu.datasets.deid import Deidentifier, DeidOptions
    from insitu.datasets.reader import open_dataset
    from insitu.datasets.tables import add_tables

    node = (home or resolve_home()).require_initialized()
    source = Path(path)
    name = table or source.stem
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
        raise SourceError(
            f"table name {name!r}: use letters, digits, '-' and '_' (pass --table NAME)"
        )
    try:
        # keep_default_na=False: an empty cell stays '' in text; numbers still parse
        frame = pd.read_csv(source, skipinitialspace=True)
    except FileNotFoundError:
        raise SourceError(f"no such table file: {source}") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise SourceError(f"{source} is not a readable CSV table: {type(exc).__name__}") from None
    config = load_config(node)
    deid = Deidentifier(node.site_key(), DeidOptions.from_config(config.deid))
    subjects = open_dataset(dataset, home=node).subjects
    known = set(subjects["subject_id"].astype(str))
    cleaned, report = prepare_table(
        frame,
        subject_column=subject_column,
        deid=deid,
        known_subjects=known,
        date_columns=date_columns,
        drop=drop,
        table=name,
    )
    report.version = add_tables(
        dataset, {name: cleaned}, home=node, note=f"ingest-table {name}: {len(cleaned)} rows"
    )
    return report
