"""Parsers of every kind of output the engine understands, one module each.

Each handler takes ``(scan, data, where)``, parses ``data`` fully, and reports
through the scan: text to :func:`insitu.disclosure.text.scan_text`, arrays to
:func:`insitu.disclosure.arrays.scan_array`, nested files to
:func:`insitu.disclosure.engine.scan_nested`; bytes it cannot account for are
``hidden-data`` (FAIL), parts it cannot interpret ``not-understood`` (REVIEW).
"""

from __future__ import annotations

from collections.abc import Callable

from insitu.disclosure.formats import (
    gif,
    jpeg,
    notebook,
    npy,
    pdf,
    png,
    safetensors,
    textual,
    torchfile,
    zipfile,
)
from insitu.disclosure.scan import Scan

__all__ = ["HANDLERS"]

HANDLERS: dict[str, Callable[[Scan, bytes, str], None]] = {
    "text": textual.scan_plain,
    "csv": textual.scan_csv,
    "json": textual.scan_json,
    "png": png.scan_png,
    "jpeg": jpeg.scan_jpeg,
    "gif": gif.scan_gif,
    "tiff": gif.scan_tiff,
    "pdf": pdf.scan_pdf,
    "zip": zipfile.scan_zip,
    "npz": npy.scan_npz,
    "npy": npy.scan_npy,
    "torch": torchfile.scan_torch,
    "safetensors": safetensors.scan_safetensors,
    "notebook": notebook.scan_notebook,
}
