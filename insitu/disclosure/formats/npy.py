"""NumPy .npy arrays (and .npz archives of them): header parsed, every data byte accounted for.

Only plain numeric dtypes are read; object arrays (pickles) fail without
being loaded.
"""

from __future__ import annotations

import ast
import math
import struct

import numpy as np

from insitu.disclosure._types import Verdict
from insitu.disclosure.arrays import scan_array
from insitu.disclosure.formats.zipfile import read_members
from insitu.disclosure.scan import Scan, join
from insitu.disclosure.text import scan_text

__all__ = ["parse_npy", "scan_npy", "scan_npz"]

_MAGIC = b"\x93NUMPY"


def parse_npy(scan: Scan, data: bytes, where: str) -> np.ndarray | None:
    """The array of an .npy file, or None (with a finding) when it is not plain numbers."""
    if not data.startswith(_MAGIC) or len(data) < 10:
        raise scan.stop("file-type", "not a NumPy .npy array", where)
    major = data[6]
    if major == 1:
        (length,) = struct.unpack("<H", data[8:10])
        start = 10
    elif major in (2, 3):
        (length,) = struct.unpack("<I", data[8:12])
        start = 12
    else:
        raise scan.stop("malformed", f"unknown .npy version {major}", where)
    try:
        header = ast.literal_eval(data[start : start + length].decode("latin-1"))
        descr, fortran, shape = header["descr"], header["fortran_order"], tuple(header["shape"])
    except (ValueError, SyntaxError, KeyError, TypeError) as exc:
        raise scan.stop("malformed", f"an unreadable .npy header ({exc})", where) from None
    if set(header) != {"descr", "fortran_order", "shape"}:
        scan.add("hidden-data", Verdict.FAIL, f"extra header keys {sorted(header)}", where)
    if not isinstance(descr, str):
        raise scan.stop("not-understood", "a structured dtype", where)
    dtype = np.dtype(descr)
    if dtype.kind not in "biufc" or dtype.hasobject:
        raise scan.stop(
            "unsafe-code" if dtype.hasobject else "malformed",
            f"an array of {dtype} (only numbers are released; object arrays are pickles)",
            where,
        )
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise scan.stop("malformed", f"an invalid shape {shape}", where)
    body = data[start + length :]
    needed = math.prod(shape) * dtype.itemsize
    if len(body) > needed:
        scan.add(
            "hidden-data",
            Verdict.FAIL,
            f"{len(body) - needed} bytes after the {'x'.join(map(str, shape))} array's data",
            where,
        )
    elif len(body) < needed:
        raise scan.stop("malformed", "the array's data is shorter than its shape", where)
    scan.unpacked(needed, where)
    return np.frombuffer(body[:needed], dtype=dtype).reshape(shape, order="F" if fortran else "C")


def scan_npy(scan: Scan, data: bytes, where: str) -> None:
    array = parse_npy(scan, data, where or "npy")
    if array is not None:
        scan_array(scan, array, where or "npy")


def scan_npz(scan: Scan, data: bytes, where: str) -> None:
    place = where or "npz"

    def member(name: str, content: bytes, at: str) -> None:
        if not name.endswith(".npy"):
            scan.add("hidden-data", Verdict.FAIL, "a member that is not an .npy array", at)
            from insitu.disclosure.engine import scan_nested

            scan_nested(scan, content, name, at)
            return
        array = parse_npy(scan, content, at)
        if array is not None:
            scan_array(scan, array, at)

    names = read_members(scan, data, place, member)
    scan_text(
        scan, "\n".join(n.removesuffix(".npy") for n in names), join(place, "keys"), grids=False
    )
