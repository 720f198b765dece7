"""Where a DICOM file's pixel data lie, and whether they are all there.

The ingest parses each header once (``stop_before_pixels``); pydicom then
leaves the file position at the Pixel Data element. This module reads that
element's own header from the file's bytes, checks that its value is
complete (a defined length that fits the file and the image size; an
encapsulated sequence that ends with its delimiter) and tells where the
value is, so that the pixels can be attached to the parsed header later
without parsing the file a second time.

A truncated file is recognised here with its real reason ("truncated pixel
data: 8130 of 8192 bytes") instead of failing later as "cannot be decoded"
or, when the file ends before its pixels, as "not an image".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["PixelExtent", "image_size_problem", "locate_pixels", "native_length"]

PIXEL_TAGS = {
    0x7FE00010: "PixelData",
    0x7FE00008: "FloatPixelData",
    0x7FE00009: "DoubleFloatPixelData",
}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"}
_ITEM, _SEQ_DELIMITER = 0xE000FFFE, 0xE0DDFFFE  # (FFFE,E000), (FFFE,E0DD) read little-endian
_UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class PixelExtent:
    """The pixel element of one file: its keyword, VR and the byte range of its value."""

    keyword: str
    vr: str  # "" in implicit VR files (pydicom then infers it)
    start: int
    end: int  # for encapsulated data: the start of the sequence delimiter
    encapsulated: bool


class PixelProblem(ValueError):
    """The pixel data of a file are incomplete or malformed (the message says how)."""


def _whole(header: Any, keyword: str, default: int | None = None) -> int | None:
    """An integer attribute, or ``PixelProblem`` naming a malformed value."""
    # one lookup (get), not a test and a lookup: every scanned file checks 12 of these
    value = header.get(keyword)
    if value in (None, ""):
        return default
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise PixelProblem(
            f"malformed header: {keyword} is {str(value)[:32]!r}, not a whole number"
        ) from None


def image_size_problem(header: Any) -> str:
    """Why the image attributes cannot describe pixels ("" when they can)."""
    try:
        for keyword in ("Rows", "Columns", "NumberOfFrames", "SamplesPerPixel", "BitsAllocated"):
            value = _whole(header, keyword)
            if value is not None and value < 0:
                return f"malformed header: {keyword} is {value}"
        if (_whole(header, "Rows") or 0) == 0 or (_whole(header, "Columns") or 0) == 0:
            return "malformed header: an image of 0 rows or columns"
    except PixelProblem as exc:
        return str(exc)
    return ""


def native_length(header: Any) -> int:
    """Bytes of uncompressed pixel data the image attributes describe."""
    rows = _whole(header, "Rows", 0) or 0
    columns = _whole(header, "Columns", 0) or 0
    frames = _whole(header, "NumberOfFrames", 1) or 1
    samples = _whole(header, "SamplesPerPixel", 1) or 1
    bits = _whole(header, "BitsAllocated", 16) or 16
    if samples == 3 and str(header.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        samples = 2  # chroma subsampled 2:1 horizontally: two values per pixel on average
    return (rows * columns * frames * samples * bits + 7) // 8


def _encapsulated_end(data: bytes, start: int) -> int:
    """Walk the fragments of an encapsulated value; return where its delimiter starts."""
    pos, count = start, 0
    while True:
        if pos + 8 > len(data):
            raise PixelProblem(
                f"truncated pixel data: the file ends inside the compressed frames "
                f"(after {count} fragment(s), at byte {len(data)})"
            )
        tag, length = struct.unpack_from("<II", data, pos)
        if tag == _SEQ_DELIMITER:
            return pos
        if tag != _ITEM or length == _UNDEFINED:
            raise PixelProblem(
                f"corrupt pixel data: fragment {count + 1} at byte {pos} is not a DICOM item"
            )
        pos += 8 + length
        count += 1
        if pos > len(data):
            raise PixelProblem(
                f"truncated pixel data: fragment {count} needs {length} bytes, the file "
                f"ends {pos - len(data)} bytes short"
            )


def locate_pixels(
    data: bytes, pos: int, header: Any, *, little_endian: bool, implicit_vr: bool
) -> PixelExtent | None:
    """The pixel element starting at ``pos`` (None when the file has none there).

    Raises ``PixelProblem`` when the element is cut short or does not match
    the image size (a native value shorter than Rows x Columns x frames needs).
    """
    if pos + 8 > len(data):
        return None
    fmt = "<HH" if little_endian else ">HH"
    group, element = struct.unpack_from(fmt, data, pos)
    keyword = PIXEL_TAGS.get((group << 16) | element)
    if keyword is None:
        return None
    ulong = "<I" if little_endian else ">I"
    if implicit_vr:
        vr, (length,), start = "", struct.unpack_from(ulong, data, pos + 4), pos + 8
    else:
        raw_vr = data[pos + 4 : pos + 6]
        vr = raw_vr.decode("ascii", "replace")
        if raw_vr in _LONG_VRS:
            if pos + 12 > len(data):
                raise PixelProblem("truncated pixel data: the file ends in the element header")
            (length,), start = struct.unpack_from(ulong, data, pos + 8), pos + 12
        else:
            (length,), start = struct.unpack_from(fmt[0] + "H", data, pos + 6), pos + 8
    if length == _UNDEFINED:
        return PixelExtent(keyword, vr, start, _encapsulated_end(data, start), True)
    end = start + length
    if end > len(data):
        raise PixelProblem(
            f"truncated pixel data: the file holds {len(data) - start} of the {length} bytes "
            "its pixel data declare"
        )
    if keyword == "PixelData":
        needed = native_length(header)
        if length + 1 < needed:  # one byte of slack: odd lengths are padded to even
            raise PixelProblem(
                f"truncated pixel data: {length} bytes where the image size "
                f"({_whole(header, 'Rows', 0)} x {_whole(header, 'Columns', 0)}, "
                f"{_whole(header, 'NumberOfFrames', 1)} frame(s)) needs {needed}"
            )
    return PixelExtent(keyword, vr, start, end, False)
