"""Plain text, CSV/TSV and JSON outputs."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from insitu.disclosure.arrays import scan_array
from insitu.disclosure.scan import Scan, join
from insitu.disclosure.tables import scan_rows, scan_table
from insitu.disclosure.text import scan_text

__all__ = ["decode", "scan_csv", "scan_json", "scan_json_value", "scan_plain"]

_MAX_JSON_DEPTH = 64


def decode(scan: Scan, data: bytes, where: str) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise scan.stop("file-type", f"not UTF-8 text ({exc.reason})", where) from None
    scan.unpacked(len(text), where)
    return text


def scan_plain(scan: Scan, data: bytes, where: str) -> None:
    scan_text(scan, decode(scan, data, where), where)


def scan_csv(scan: Scan, data: bytes, where: str) -> None:
    text = decode(scan, data, where)
    scan_text(scan, text, where, grids=False)
    first = text.split("\n", 1)[0]
    delimiter = max(",\t;|", key=first.count) if first else ","
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        raise scan.stop("malformed", f"not a readable CSV table: {exc}", where) from None

    def frame() -> Any:
        import pandas as pd

        return pd.read_csv(io.StringIO(text), sep=delimiter)

    scan_rows(scan, rows, where or "table", frame=frame)


def _rectangular(value: list[Any]) -> bool:
    """A (nested) list of numbers of one shape."""
    if not value:
        return False
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return True
    if all(isinstance(v, list) for v in value):
        lengths = {len(v) for v in value}
        return len(lengths) == 1 and all(_rectangular(v) for v in value)
    return False


def _table(value: Any) -> tuple[list[str], list[list[Any]]] | None:
    """Column names and rows when a JSON value is a table (records or columns)."""
    if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
        names = list(dict.fromkeys(k for r in value for k in r))
        if all(not isinstance(r.get(k), dict | list) for r in value for k in names):
            return names, [[r.get(k, "") for k in names] for r in value]
    if (
        isinstance(value, dict)
        and value
        and all(isinstance(v, list) for v in value.values())
        and len({len(v) for v in value.values()}) == 1
        and all(not isinstance(x, dict | list) for v in value.values() for x in v)
    ):
        names = [str(k) for k in value]
        columns = list(value.values())
        return names, [list(row) for row in zip(*columns, strict=True)]
    return None


def scan_json_value(scan: Scan, value: Any, where: str) -> None:
    """Every string (keys too) to the text rules; numeric lists as arrays; tables as tables."""
    import numpy as np

    strings: list[str] = []
    scalars = 0

    def walk(node: Any, path: str, depth: int) -> None:
        nonlocal scalars
        if depth > _MAX_JSON_DEPTH:
            raise scan.stop("unpack-limits", "JSON nested deeper than 64 levels", path)
        if isinstance(node, dict):
            table = _table(node)
            if table is not None:
                scan_table(scan, *table, path or "table")
                strings.extend(str(k) for k in node)
                return
            for key, item in node.items():
                strings.append(str(key))
                walk(item, join(path, str(key)), depth + 1)
        elif isinstance(node, list):
            if _rectangular(node):
                scan_array(scan, np.array(node, dtype=float), path or "array")
                return
            table = _table(node)
            if table is not None:
                scan_table(scan, *table, path or "table")
                strings.extend(table[0])
                strings.extend(str(c) for row in table[1] for c in row if isinstance(c, str))
                return
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]", depth + 1)
        elif isinstance(node, str):
            strings.append(node)
        elif isinstance(node, int | float) and not isinstance(node, bool):
            scalars += 1

    walk(value, where, 0)
    scan.count_values(scalars)
    scan_text(scan, "\n".join(strings), where or "strings")


def scan_json(scan: Scan, data: bytes, where: str) -> None:
    text = decode(scan, data, where)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise scan.stop("malformed", f"not valid JSON: {exc}", where) from None
    scan_json_value(scan, value, where)
