"""safetensors: the JSON header read, every byte of the data region owned by one tensor.

Tensors must tile the data region exactly (no gaps, overlaps or trailing
bytes) with the size their dtype and shape need; metadata strings and tensor
names go through the text rules; every tensor through the grid rules.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from insitu.disclosure._types import Verdict
from insitu.disclosure.arrays import scan_array
from insitu.disclosure.scan import Scan, join
from insitu.disclosure.text import scan_text

__all__ = ["scan_safetensors"]

_DTYPES: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}  # fmt: skip


def _array(raw: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    array = np.frombuffer(raw, dtype=_DTYPES[dtype]).reshape(shape)
    if dtype == "BF16":  # bfloat16: the upper half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _tensor(scan: Scan, name: str, meta: Any, at: str) -> tuple[str, tuple[int, ...], int, int]:
    try:
        dtype, shape = str(meta["dtype"]), tuple(int(d) for d in meta["shape"])
        begin, end = (int(x) for x in meta["data_offsets"])
    except (KeyError, TypeError, ValueError) as exc:
        raise scan.stop(
            "malformed", f"tensor {name!r} has an unreadable entry ({exc})", at
        ) from None
    if set(meta) != {"dtype", "shape", "data_offsets"}:
        scan.add("hidden-data", Verdict.FAIL, f"extra keys in tensor entry {sorted(meta)}", at)
    if dtype not in _DTYPES:
        raise scan.stop("malformed", f"tensor {name!r} has an unknown dtype {dtype}", at)
    if (
        any(d < 0 for d in shape)
        or end - begin != math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
    ):
        raise scan.stop(
            "hidden-data",
            f"tensor {name!r} owns {end - begin} bytes but a {dtype} {shape} needs "
            f"{math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize}",
            at,
        )
    return dtype, shape, begin, end


def scan_safetensors(scan: Scan, data: bytes, where: str) -> None:
    place = where or "safetensors"
    (length,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise scan.stop("malformed", f"an unreadable header ({exc})", place) from None
    if not isinstance(header, dict):
        raise scan.stop("malformed", "the header is not a JSON object", place)
    region = data[8 + length :]
    texts: list[str] = []
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise scan.stop("malformed", "__metadata__ must map strings to strings", place)
        texts.extend(f"{k}: {v}" for k, v in metadata.items())
    tensors = []
    for name, meta in header.items():
        texts.append(str(name))
        if not isinstance(meta, dict):
            raise scan.stop("malformed", f"tensor {name!r} has no entry", place)
        tensors.append((name, *_tensor(scan, name, meta, join(place, str(name)))))
    covered = 0
    for name, _dtype, _shape, begin, end in sorted(tensors, key=lambda t: (t[3], t[4])):
        if begin != covered:
            scan.add(
                "hidden-data",
                Verdict.FAIL,
                f"bytes {min(begin, covered)}-{max(begin, covered)} of the data region "
                + ("belong to no tensor" if begin > covered else "belong to two tensors"),
                join(place, str(name)),
            )
        covered = max(covered, end)
    if covered != len(region):
        scan.add(
            "hidden-data" if covered < len(region) else "malformed",
            Verdict.FAIL,
            f"the data region has {len(region)} bytes, the tensors own {covered}",
            place,
        )
    scan.ok("hidden-data", "every byte belongs to the format's structure")
    scan_text(scan, "\n".join(texts), join(place, "header"), grids=False)
    for name, dtype, shape, begin, end in tensors:
        if end <= len(region):
            scan.unpacked(end - begin, place)
            scan_array(scan, _array(region[begin:end], dtype, shape), join(place, str(name)))
