"""The entry points: one output (a file, a text, parsed arrays) in, one report out.

``check_file`` sniffs the content, compares it with what the name promises,
and hands it to the parser of its kind (``insitu.disclosure.formats``); a
parser opens every container and passes what it finds (text, tables, arrays,
images, nested files) to the same rules. Default-deny: the report is PASS
only when every part was parsed and understood.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from insitu.disclosure._types import Report, Verdict
from insitu.disclosure.arrays import scan_array
from insitu.disclosure.budget import apply_budget
from insitu.disclosure.context import DisclosureContext
from insitu.disclosure.grid import check_grid
from insitu.disclosure.scan import Scan, StopScan, join
from insitu.disclosure.sniff import FAMILY, declared_kind, sniff
from insitu.disclosure.text import scan_text

__all__ = [
    "Extracted",
    "check_arrays",
    "check_file",
    "check_grid",
    "check_text",
    "extract_arrays",
    "scan_nested",
]

Handler = Callable[[Scan, bytes, str], None]


def _handlers() -> dict[str, Handler]:
    from insitu.disclosure.formats import HANDLERS

    return HANDLERS


def _scan_file(scan: Scan, data: bytes, name: str, where: str) -> str:
    declared = declared_kind(name)
    sniffed = sniff(data)
    suffix = PurePosixPath(name).suffix.lower() or "no suffix"
    expected = FAMILY.get(declared or "", declared)
    place = where or name
    if declared is None:
        scan.add(
            "file-type",
            Verdict.REVIEW if sniffed == "text" else Verdict.FAIL,
            f"{name!r}: {suffix} is not a kind of output the engine understands "
            f"(its content is {sniffed})",
            place,
        )
        kind = sniffed
    elif sniffed == "binary" and expected == "text" and (legacy := _legacy_text(data)):
        scan.add(
            "file-type",
            Verdict.REVIEW,
            f"{suffix} text that is not UTF-8 (read as Windows-1252): re-save it as UTF-8",
            place,
        )
        scan_text(scan, legacy, place)
        return "text"
    elif sniffed != expected:
        scan.add(
            "file-type",
            Verdict.FAIL,
            f"named {suffix} ({declared}) but its content is {sniffed}: a file's kind is "
            "decided by its content",
            place,
        )
        kind = sniffed
    else:
        scan.ok("file-type", f"the content is {declared}, as the name says")
        kind = declared
    handler = _handlers().get(kind)
    if handler is None:
        scan.add(
            "unsafe-code" if kind == "pickle" else "file-type",
            Verdict.FAIL,
            f"{kind} content cannot be released"
            + (" (a pickle runs code when loaded)" if kind == "pickle" else ""),
            place,
        )
        return kind
    try:
        handler(scan, data, where)
    except StopScan as stop:
        scan.findings.append(stop.finding)
    return kind


def _legacy_text(data: bytes) -> str | None:
    """Text in Windows-1252 (a CSV saved by an older spreadsheet), or None."""
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    printable = all(ch in "\t\n\r\f" or ord(ch) >= 32 for ch in text)
    return text if printable and "\x7f" not in text else None


def scan_nested(scan: Scan, data: bytes, name: str, where: str) -> str:
    """A file inside another (an archive member, a decoded payload)."""
    if scan.depth >= scan.ctx.limits.max_nesting:
        scan.add(
            "unpack-limits",
            Verdict.FAIL,
            f"containers nested deeper than disclosure.max_nesting ({scan.ctx.limits.max_nesting})",
            where,
        )
        return "nested"
    scan.depth += 1
    try:
        return _scan_file(scan, data, name, where)
    finally:
        scan.depth -= 1


def check_file(
    data: bytes,
    *,
    name: str,
    ctx: DisclosureContext,
    evidence: dict[str, Any] | None = None,
) -> Report:
    """Check one submitted file; ``evidence`` is ACRO's, for tables built by the SDC helpers."""
    scan = Scan(ctx, evidence=evidence, nested=scan_nested)
    scan.stats["bytes"] = len(data)
    limit = ctx.policy.max_release_bytes
    if len(data) > limit:
        scan.add(
            "size",
            Verdict.FAIL,
            f"{len(data)} bytes, over the release limit of {limit} (policy.max_release_bytes)",
        )
        return scan.report(sniff(data[:4096]))
    scan.ok("size", f"{len(data)} bytes <= {limit} bytes")
    kind = _scan_file(scan, bytes(data), name, "")
    apply_budget(scan)
    return scan.report(kind)


def check_text(text: str, *, where: str, ctx: DisclosureContext) -> Report:
    """Check text that leaves (a message, a metric name, a label)."""
    scan = Scan(ctx, nested=scan_nested)
    scan.stats["bytes"] = len(text.encode("utf-8", "replace"))
    try:
        scan_text(scan, text, where)
    except StopScan as stop:
        scan.findings.append(stop.finding)
    apply_budget(scan)
    return scan.report("text")


def check_arrays(
    arrays: Mapping[str, np.ndarray], *, ctx: DisclosureContext, where: str = ""
) -> Report:
    """Check arrays already parsed by the caller (federated replies): names and values."""
    scan = Scan(ctx, nested=scan_nested)
    for name, array in arrays.items():
        place = join(where, str(name))
        value = np.asarray(array)
        scan.stats["bytes"] += int(value.nbytes)
        try:
            scan_text(scan, str(name), place, grids=False)
            scan_array(scan, value, place)
        except StopScan as stop:
            scan.findings.append(stop.finding)
    apply_budget(scan)
    return scan.report("arrays")


@dataclass(frozen=True)
class Extracted:
    """One array the parsers found in an output: where, its values, image frame or data."""

    where: str
    array: np.ndarray
    image: bool  # a decoded image frame (rows x columns x channels), not a tensor


def extract_arrays(data: bytes, *, kind: str, ctx: DisclosureContext) -> list[Extracted]:
    """Every array and image frame the parser of ``kind`` finds in ``data`` (images of a
    PDF, tensors of npz/pt/safetensors), within the engine's limits: the same parse as
    :func:`check_file`, for those who must show the content (the steward's preview).
    A part the engine refuses to read ends the extraction with what was found so far."""
    handler = _handlers().get(kind)
    if handler is None:
        return []
    scan = Scan(ctx, nested=scan_nested)
    scan.kept = []
    with contextlib.suppress(StopScan):
        handler(scan, bytes(data), "")
    return [Extracted(where, np.asarray(array), image) for where, array, image in scan.kept]
