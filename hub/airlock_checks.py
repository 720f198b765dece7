"""The airlock's automatic output checks (statistical disclosure control).

Every rule has a stable id, a status (``pass``, ``review`` or ``fail``), a
summary a researcher and a steward can read, and says who implements it:
``acro`` when ACRO's own check ran (its ``SDCChecks`` methods, on evidence
ACRO's ``TableModelDetails`` computed), ``insitu`` when ACRO cannot check an
already-produced output and the rule is ours. docs/reference/airlock-checks.md
lists every rule and threshold.

A ``fail`` can only be approved with a written override reason; a ``review``
asks the steward to look; ``pass`` means the rule found nothing.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import sqlite3
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from insitu.config import NodeHome, PolicySection
from insitu.errors import OutputTooLargeError, UnsupportedOutputError

__all__ = [
    "ALLOWED_SUFFIXES",
    "CheckResult",
    "SiteIdentifiers",
    "check_admissible",
    "overall_status",
    "run_checks",
    "site_identifiers",
]

# File types the airlock accepts, by suffix, and how they are checked.
ALLOWED_SUFFIXES: dict[str, str] = {
    ".csv": "table",
    ".json": "json",
    ".png": "image",
    ".pdf": "pdf",
    ".txt": "text",
    ".md": "text",
    ".ipynb": "notebook",
    ".pt": "weights",
    ".safetensors": "weights",
    ".npz": "weights",
}

# Column names that are counts (of subjects, series, ...) in a produced table.
_COUNT_NAME = re.compile(r"^(n|count|counts|freq|frequency|n_.*|.*_n|.*count.*)$", re.IGNORECASE)
# Column names that identify a subject, study or series.
_ID_NAME = re.compile(
    r"(subject|patient|participant|study|series|sop|instance).*(id|uid)$|pseudonym|^(pid|uid)$",
    re.IGNORECASE,
)
# A DICOM UID: digits in at least five dot-separated components, or a 2.25 UUID UID.
_UID = re.compile(r"\b(?:2\.25\.\d{10,}|\d+(?:\.\d+){4,})\b")
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*[A-Za-z0-9]")
_DATE = re.compile(r"\b(\d{4})-?(\d{2})-?(\d{2})\b")

_SINGLE_CHANNEL_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one rule on one output."""

    rule: str
    status: str  # "pass" | "review" | "fail"
    summary: str
    by: str = "insitu"  # "acro" when ACRO's own check produced it

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class SiteIdentifiers:
    """What of the site's data must never appear in a released output."""

    texts: frozenset[str] = frozenset()  # subject pseudonyms, study and series UIDs
    dates: frozenset[str] = frozenset()  # study dates, as YYYYMMDD
    slice_shapes: frozenset[tuple[int, int]] = frozenset()
    volume_shapes: frozenset[tuple[int, ...]] = frozenset()
    population_sizes: frozenset[int] = field(default_factory=frozenset)  # subjects, series


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


# --- what the site holds ---------------------------------------------------


def _normal_date(text: str) -> str | None:
    match = _DATE.fullmatch(text.strip())
    return "".join(match.groups()) if match else None


def site_identifiers(home: NodeHome) -> SiteIdentifiers:
    """Pseudonyms, UIDs, dates and image shapes of every published version.

    Read from the catalog (``insitu.datasets.catalog``'s tables); a node
    without a catalog gives empty sets (the generic UID pattern still applies).
    A catalog that cannot be read raises, so the checks fail rather than pass.
    """
    if not home.catalog_path.exists():
        return SiteIdentifiers()
    conn = sqlite3.connect(f"file:{home.catalog_path}?mode=ro", uri=True, timeout=30)
    try:
        published = "(SELECT dataset, version FROM versions WHERE status = 'published')"
        texts: set[str] = set()
        dates: set[str] = set()
        slices: set[tuple[int, int]] = set()
        volumes: set[tuple[int, ...]] = set()
        sizes: set[int] = set()
        for (subject,) in conn.execute(
            f"SELECT subject_id FROM subjects WHERE (dataset, version) IN {published}"  # noqa: S608
        ):
            texts.add(subject)
        for study, date in conn.execute(
            f"SELECT study_id, study_date FROM studies WHERE (dataset, version) IN {published}"  # noqa: S608
        ):
            texts.add(study)
            if date and (normal := _normal_date(date)):
                dates.add(normal)
        for series, shape in conn.execute(
            f"SELECT series_id, shape FROM series WHERE (dataset, version) IN {published}"  # noqa: S608
        ):
            texts.add(series)
            dims = tuple(int(d) for d in json.loads(shape))
            volumes.add(dims)
            if len(dims) >= 2:
                slices.update(
                    (dims[i], dims[j]) for i in range(len(dims)) for j in range(len(dims)) if i != j
                )
        for n_subjects, n_series in conn.execute(
            "SELECT n_subjects, n_series FROM versions WHERE status = 'published'"
        ):
            sizes.update(n for n in (n_subjects, n_series) if n)
    finally:
        conn.close()
    return SiteIdentifiers(
        texts=frozenset(t for t in texts if t),
        dates=frozenset(dates),
        slice_shapes=frozenset(slices),
        volume_shapes=frozenset(volumes),
        population_sizes=frozenset(sizes),
    )


# --- ACRO ------------------------------------------------------------------


def _acro() -> Any:
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
    """What ACRO's checks need of a table model, for a table that already exists.

    ACRO's ``TableModelDetails`` rebuilds a table from microdata; in the
    airlock only the cell counts (and, with evidence, ACRO's interim tables)
    exist, so this gives its checks the same answers from those.
    """

    model_type = "table"
    command = "pivot_table"

    def __init__(self, counts: Any, dimensions: list[str]) -> None:
        self._counts = counts
        self._dimensions = dimensions

    def get_dimension_names(self) -> list[str]:
        return self._dimensions

    def get_allfalse_table(self) -> Any:
        return self._counts.astype(bool) & False


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


def _acro_result(check: str, status: str, summary: str) -> CheckResult:
    rule = _ACRO_RULES.get(check, check)
    status = status.lower() if status.lower() in ("pass", "review", "fail") else "review"
    return CheckResult(rule, status, f"{check}: {summary.strip()}", by="acro")


def _acro_count_checks(counts: Any, dimensions: list[str], policy: PolicySection) -> list[Any]:
    """ACRO's threshold and zeros checks on a produced table's count columns."""
    sdc = _acro()
    checks = sdc.SDCChecks(_risk_appetite(policy))
    evidence = sdc.SDCEvidence(interim_tables={"count_table": counts})
    model = _ProducedTable(counts, dimensions)
    results = []
    for name, method in (
        ("MinimumThresholdCheck", checks.check_min_threshold),
        ("PresenceOfZeroCheck", checks.check_presence_of_zero),
    ):
        status, summary, _mask = method("FrequencyTable", evidence, model)
        results.append(_acro_result(name, status, summary))
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


def _acro_evidence_checks(
    table: Any, evidence: dict[str, Any], policy: PolicySection
) -> list[CheckResult]:
    """ACRO's full checks for each analysis, run on the evidence ACRO recorded."""
    import numpy as np

    sdc = _acro()
    checks = sdc.SDCChecks(_risk_appetite(policy))
    try:
        interim = {name: _frame(p) for name, p in evidence["interim"].items()}
        analyses = [str(a) for a in evidence["analyses"]]
        dimensions = [str(d) for d in evidence.get("dimensions", [])]
    except (KeyError, TypeError, ValueError) as exc:
        return [CheckResult("evidence", "fail", f"the table's ACRO evidence is unreadable: {exc}")]
    counts = interim.get("count_table")
    if counts is None:
        return [CheckResult("evidence", "fail", "the table's ACRO evidence has no cell counts")]
    model = _ProducedTable(counts, dimensions)
    ev = sdc.SDCEvidence(interim_tables=interim, dof=counts - 1)
    results: dict[str, CheckResult] = {}
    for analysis in analyses:
        if analysis not in checks.analyses:
            results[analysis] = CheckResult(
                "manual-review", "review", f"ACRO does not know the analysis {analysis!r}", "acro"
            )
            continue
        outcome = checks.run_checks_for_analysis(analysis, ev, model)
        summaries = dict(
            line.split(": ", 1) for line in outcome.summaries.split("\n ") if ": " in line
        )
        for check, status in outcome.fair_dict.get("check_status", {}).items():
            result = _acro_result(check, status, summaries.get(check, status))
            key = result.rule
            # The strictest outcome of a rule across analyses is the one that counts.
            order = {"pass": 0, "review": 1, "fail": 2}
            if key not in results or order[result.status] > order[results[key].status]:
                results[key] = result
    # The evidence must describe this table: same cells, same counts and totals.
    consistent = _evidence_matches(table, counts, interim, analyses, np)
    return [*results.values(), consistent]


def _evidence_matches(
    table: Any, counts: Any, interim: dict[str, Any], analyses: list[str], np: Any
) -> CheckResult:
    cells = counts.to_numpy(dtype=float).ravel()
    if len(table) != counts.shape[0]:
        return CheckResult(
            "evidence",
            "fail",
            f"the ACRO evidence has {counts.shape[0]} rows but the table has {len(table)}: "
            "the evidence does not belong to this table",
        )
    import pandas as pd
    from acro.table_utils import AGGFUNC_TO_TYPE  # ACRO's names of the analyses

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
            return CheckResult(
                "evidence",
                "fail",
                f"column {column!r} does not match the ACRO evidence: the table was changed "
                "after ACRO checked it",
            )
        matched.append(str(column))
    if uncovered:
        return CheckResult(
            "evidence",
            "review",
            f"column(s) {', '.join(uncovered)} are not statistics ACRO checked for this table: "
            "the steward must check them by hand",
        )
    if not matched:
        return CheckResult(
            "evidence",
            "review",
            "no count, sum or mean column to compare with the ACRO evidence: the steward "
            "should confirm the table is the one ACRO checked",
        )
    return CheckResult("evidence", "pass", f"columns {', '.join(matched)} match the ACRO evidence")


# --- tables ------------------------------------------------------------------


def _table_checks(
    table: Any,
    policy: PolicySection,
    ids: SiteIdentifiers,
    evidence: dict[str, Any] | None,
) -> list[CheckResult]:
    import pandas as pd

    results: list[CheckResult] = []
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
    numeric = [c for c in numeric if not pd.api.types.is_bool_dtype(table[c])]
    labels = [c for c in table.columns if c not in numeric]
    # Identifier columns, by name or by content.
    by_name = [str(c) for c in table.columns if _ID_NAME.search(str(c))]
    by_value = [str(c) for c in labels if ids.texts and table[c].astype(str).isin(ids.texts).any()]
    if by_name or by_value:
        results.append(
            CheckResult(
                "identifier-columns",
                "fail",
                "column(s) "
                + ", ".join(sorted(set(by_name + by_value)))
                + " hold subject, study or series identifiers: aggregate over them instead",
            )
        )
    else:
        results.append(CheckResult("identifier-columns", "pass", "no identifier columns"))
    if evidence is not None:
        results.extend(_acro_evidence_checks(table, evidence, policy))
        return [*results, _row_per_subject(table, labels, True, policy, ids)]
    counts_cols = [c for c in numeric if _COUNT_NAME.match(str(c))]
    integer_table = bool(numeric) and all(pd.api.types.is_integer_dtype(table[c]) for c in numeric)
    if not counts_cols and integer_table and not labels[1:]:
        counts_cols = numeric  # a frequency table: every number is a count
    if counts_cols:
        counts = table[counts_cols].astype(float)
        results.extend(_acro_count_checks(counts, [str(c) for c in labels], policy))
    elif numeric:
        results.append(
            CheckResult(
                "threshold",
                "review",
                "no count column (n, count, ...): the number of subjects behind each "
                "statistic is unknown; add it, or build the table with "
                "insitu.kernels.sdc.pivot_table",
            )
        )
    magnitude = [c for c in numeric if c not in counts_cols]
    if magnitude:
        results.append(
            CheckResult(
                "dominance",
                "review",
                "the p% and n-k dominance rules need the contributions behind each cell, "
                f"which a finished table lacks (columns {', '.join(map(str, magnitude))}): "
                "build the table with insitu.kernels.sdc.pivot_table so ACRO records them",
            )
        )
    results.append(_row_per_subject(table, labels, bool(counts_cols), policy, ids))
    return results


def _row_per_subject(
    table: Any, labels: list[Any], has_counts: bool, policy: PolicySection, ids: SiteIdentifiers
) -> CheckResult:
    rows = len(table)
    if rows >= policy.min_cell_count and not has_counts:
        if rows in ids.population_sizes:
            return CheckResult(
                "row-per-subject",
                "fail",
                f"{rows} rows: as many as the subjects or series of a dataset here; "
                "this looks like one row per subject",
            )
        unique = [str(c) for c in labels if table[c].nunique() == rows]
        if unique:
            return CheckResult(
                "row-per-subject",
                "fail",
                f"{rows} rows, each with its own value of {', '.join(unique)}: this looks "
                "like one row per subject or record; release aggregates",
            )
    return CheckResult("row-per-subject", "pass", f"{rows} rows of aggregates")


def _read_table(path: Path) -> Any:
    import pandas as pd

    return pd.read_csv(path)


# --- text --------------------------------------------------------------------


def _text_checks(text: str, ids: SiteIdentifiers, where: str = "") -> CheckResult:
    found: list[str] = []
    for token in _TOKEN.findall(text):
        normal = _normal_date(token)
        if token in ids.texts or (normal is not None and normal in ids.dates):
            found.append(token)
    found.extend(_UID.findall(text))
    if found:
        shown = ", ".join(sorted(set(found))[:3])
        more = len(set(found)) - 3
        return CheckResult(
            "identifiers-in-text",
            "fail",
            f"{where}pseudonyms, UIDs or study dates of the site's data: {shown}"
            + (f" and {more} more" if more > 0 else ""),
        )
    return CheckResult("identifiers-in-text", "pass", f"{where}no identifiers or dates found")


# --- images and arrays -----------------------------------------------------


def _image_check(data: bytes, ids: SiteIdentifiers, where: str = "") -> CheckResult:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            mode = image.mode
    except (UnidentifiedImageError, OSError) as exc:
        return CheckResult("image-resolution", "fail", f"{where}not a readable image: {exc}")
    if (height, width) in ids.slice_shapes:
        return CheckResult(
            "image-resolution",
            "fail",
            f"{where}a {width}x{height} image: the size of a slice of a series here, so "
            "likely pixel for pixel from the data; release a figure (matplotlib) instead",
        )
    if mode in _SINGLE_CHANNEL_MODES and min(width, height) >= 64:
        return CheckResult(
            "image-resolution",
            "review",
            f"{where}a {width}x{height} single-channel ({mode}) image looks like a pixel "
            "dump rather than a figure: the steward should confirm it is not from a series",
        )
    return CheckResult("image-resolution", "pass", f"{where}a {width}x{height} {mode} figure")


def _array_shapes(path: Path, suffix: str) -> list[tuple[str, tuple[int, ...]]]:
    """Name and shape of every array in a weights file, without running its code."""
    if suffix == ".safetensors":
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        return [
            (name, tuple(int(d) for d in meta["shape"]))
            for name, meta in header.items()
            if name != "__metadata__"
        ]
    if suffix == ".npz":
        import numpy as np

        with np.load(path, allow_pickle=False) as arrays:
            return [(name, tuple(arrays[name].shape)) for name in arrays.files]
    import torch  # .pt: only tensors and plain containers (weights_only)

    state = torch.load(path, map_location="cpu", weights_only=True)
    found: list[tuple[str, tuple[int, ...]]] = []

    def walk(obj: Any, name: str) -> None:
        if isinstance(obj, torch.Tensor):
            found.append((name, tuple(obj.shape)))
        elif isinstance(obj, dict):
            for key, value in obj.items():
                walk(value, f"{name}.{key}" if name else str(key))
        elif isinstance(obj, list | tuple):
            for i, value in enumerate(obj):
                walk(value, f"{name}[{i}]")

    walk(state, "")
    return found


def _weights_check(path: Path, ids: SiteIdentifiers) -> CheckResult:
    suffix = path.suffix.lower()
    try:
        shapes = _array_shapes(path, suffix)
    except (OSError, ValueError, KeyError, RuntimeError, struct.error, zipfile.BadZipFile) as exc:
        return CheckResult(
            "image-resolution", "fail", f"cannot read the arrays in {path.name}: {exc}"
        )
    except Exception as exc:  # torch's unpickler refuses anything but weights
        return CheckResult(
            "image-resolution",
            "fail",
            f"{path.name} holds more than plain weights ({type(exc).__name__}): save a "
            "state_dict of tensors",
        )
    image_like = [
        f"{name} {'x'.join(map(str, shape))}"
        for name, shape in shapes
        if shape in ids.volume_shapes or (len(shape) >= 2 and shape[-2:] in ids.slice_shapes)
    ]
    if image_like:
        return CheckResult(
            "image-resolution",
            "fail",
            "arrays shaped like a slice or volume of a series here: "
            + ", ".join(image_like[:3])
            + (f" and {len(image_like) - 3} more" if len(image_like) > 3 else "")
            + "; a steward may override for weights that only share the shape",
        )
    return CheckResult(
        "image-resolution", "pass", f"{len(shapes)} arrays, none shaped like a series' image"
    )


# --- notebooks ---------------------------------------------------------------


def _notebook_checks(path: Path, ids: SiteIdentifiers) -> list[CheckResult]:
    try:
        notebook = json.loads(path.read_text())
        cells = notebook["cells"]
    except (ValueError, KeyError, TypeError) as exc:
        return [CheckResult("notebook", "fail", f"not a readable notebook: {exc}")]
    texts: list[str] = []
    results: list[CheckResult] = []
    for number, cell in enumerate(cells, start=1):
        source = cell.get("source", "")
        texts.append("".join(source) if isinstance(source, list) else str(source))
        for output in cell.get("outputs", []):
            if "text" in output:
                text = output["text"]
                texts.append("".join(text) if isinstance(text, list) else str(text))
            for mime, value in output.get("data", {}).items():
                joined = "".join(value) if isinstance(value, list) else value
                if mime.startswith("image/png"):
                    result = _image_check(
                        base64.b64decode(joined), ids, where=f"cell {number}, image: "
                    )
                    if result.status != "pass":
                        results.append(result)
                elif mime.startswith("text/") or mime == "application/json":
                    texts.append(joined if isinstance(joined, str) else json.dumps(joined))
    if not any(r.rule == "image-resolution" for r in results):
        results.append(CheckResult("image-resolution", "pass", "no image outputs of concern"))
    results.append(_text_checks("\n".join(texts), ids, where="cells and outputs: "))
    results.append(
        CheckResult(
            "notebook-tables",
            "review",
            "tables printed in a notebook's outputs are not checked for cell counts: the "
            "steward should read them (or release the tables as tables)",
        )
    )
    return results


# --- entry point -------------------------------------------------------------


def run_checks(
    path: Path,
    *,
    policy: PolicySection,
    ids: SiteIdentifiers,
    evidence: dict[str, Any] | None = None,
) -> list[CheckResult]:
    """Run every rule that applies to the file at ``path`` (already admitted)."""
    kind = ALLOWED_SUFFIXES[path.suffix.lower()]
    results = [
        CheckResult("file-type", "pass", f"{path.suffix.lower()} is on the allow-list"),
        CheckResult(
            "size", "pass", f"{path.stat().st_size} bytes <= {policy.max_release_bytes} bytes"
        ),
    ]
    if kind == "table":
        try:
            table = _read_table(path)
        except (ValueError, UnicodeDecodeError) as exc:
            return [*results, CheckResult("table", "fail", f"not a readable CSV table: {exc}")]
        results.extend(_table_checks(table, policy, ids, evidence))
        results.append(_text_checks(path.read_text(errors="replace"), ids))
    elif kind == "json":
        text = path.read_text(errors="replace")
        results.append(_text_checks(text, ids))
        try:
            data = json.loads(text)
        except ValueError as exc:
            return [*results, CheckResult("json", "fail", f"not valid JSON: {exc}")]
        table = _json_table(data)
        if table is not None:
            results.extend(_table_checks(table, policy, ids, None))
    elif kind == "text":
        results.append(_text_checks(path.read_text(errors="replace"), ids))
    elif kind == "image":
        results.append(_image_check(path.read_bytes(), ids))
    elif kind == "weights":
        results.append(_weights_check(path, ids))
    elif kind == "notebook":
        results.extend(_notebook_checks(path, ids))
    elif kind == "pdf":
        results.append(
            CheckResult(
                "manual-review",
                "review",
                "PDF content is not checked automatically: the steward must read every page",
            )
        )
    return results


def _json_table(data: Any) -> Any:
    """A DataFrame when the JSON is a table (records or columns), else None."""
    import pandas as pd

    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        return pd.DataFrame.from_records(data)
    if (
        isinstance(data, dict)
        and data
        and all(isinstance(v, list) for v in data.values())
        and len({len(v) for v in data.values()}) == 1
    ):
        return pd.DataFrame(data)
    return None
