"""Jupyter notebooks: every cell, output, attachment and metadata field read.

Sources, stream outputs, error names, values and tracebacks, and every
metadata string go through the text rules; images in outputs and attachments
are checked as image files; JSON outputs as JSON; HTML and other text
outputs as text (with their embedded data URIs); anything else needs review.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from insitu.disclosure._types import Verdict
from insitu.disclosure.formats.textual import decode, scan_json_value
from insitu.disclosure.scan import Scan, join
from insitu.disclosure.text import scan_text

__all__ = ["scan_notebook"]

_IMAGES = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif"}
_TEXTS = ("text/plain", "text/html", "text/markdown", "text/latex", "image/svg+xml")


def _joined(value: Any) -> str:
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value)


def _strings(value: Any) -> list[str]:
    """Every key and string of a JSON value (metadata)."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (str(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def _bundle(scan: Scan, bundle: Any, where: str, texts: list[str]) -> bool:
    """A MIME bundle (output data or attachment); True when it printed a table."""
    from insitu.disclosure.engine import scan_nested

    table = False
    if not isinstance(bundle, dict):
        raise scan.stop("malformed", "a MIME bundle that is not an object", where)
    for mime, value in bundle.items():
        at = join(where, mime)
        if mime in _IMAGES:
            try:
                data = base64.b64decode(_joined(value).replace("\n", ""), validate=True)
            except (binascii.Error, ValueError):
                scan.add("malformed", Verdict.FAIL, "an image that is not base64", at)
                continue
            scan_nested(scan, data, f"output.{_IMAGES[mime]}", at)
        elif mime == "application/json" or mime.endswith("+json"):
            scan_json_value(scan, value, at)
        elif mime in _TEXTS:
            text = _joined(value)
            texts.append(text)
            table = table or "<table" in text or (mime == "text/plain" and text.count("\n") >= 2)
        else:
            scan.add("not-understood", Verdict.REVIEW, f"an output of type {mime}", at)
            texts.append(_joined(value))
    return table


def scan_notebook(scan: Scan, data: bytes, where: str) -> None:
    place = where or "notebook"
    try:
        notebook = json.loads(decode(scan, data, place))
        cells = notebook["cells"]
        if not isinstance(cells, list):
            raise TypeError("cells is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        raise scan.stop("file-type", f"not a readable notebook: {exc}", place) from None
    texts: list[str] = _strings(notebook.get("metadata", {}))
    sources: list[str] = []
    tables = False
    for number, cell in enumerate(cells, start=1):
        at = join(place, f"cell {number}")
        if not isinstance(cell, dict):
            raise scan.stop("malformed", "a cell that is not an object", at)
        sources.append(_joined(cell.get("source", "")))
        texts.extend(_strings(cell.get("metadata", {})))
        for name, bundle in (cell.get("attachments") or {}).items():
            texts.append(str(name))
            _bundle(scan, bundle, join(at, f"attachment {name}"), texts)
        for output in cell.get("outputs", []) or []:
            if not isinstance(output, dict):
                raise scan.stop("malformed", "an output that is not an object", at)
            kind = output.get("output_type")
            texts.extend(_strings(output.get("metadata", {})))
            if kind == "stream":
                texts.append(_joined(output.get("text", "")))
            elif kind == "error":
                texts.extend([str(output.get("ename", "")), str(output.get("evalue", ""))])
                texts.extend(str(line) for line in output.get("traceback", []) or [])
            elif kind in ("display_data", "execute_result", "update_display_data"):
                tables = _bundle(scan, output.get("data", {}), join(at, "output"), texts) or tables
            else:
                scan.add("not-understood", Verdict.REVIEW, f"an output of type {kind!r}", at)
                texts.extend(_strings(output))
    for key in set(notebook) - {"cells", "metadata", "nbformat", "nbformat_minor"}:
        scan.add("hidden-data", Verdict.FAIL, f"an extra top-level field {key!r}", place)
    scan_text(scan, "\n".join(sources), join(place, "sources"), counts=False)
    scan_text(scan, "\n".join(texts), join(place, "outputs and metadata"))
    if tables:
        scan.add(
            "notebook-tables",
            Verdict.REVIEW,
            "tables printed in the notebook's outputs are not checked for cell counts: the "
            "steward should read them (or release the tables as tables)",
            place,
        )
