"""TIFF: every byte of the file accounted for, then every page decoded.

A TIFF is a header, a chain of IFDs (one per page; EXIF, GPS and sub-IFDs hang
off tags), tag values stored outside their IFD, and the strips or tiles of
pixel data the IFDs point at. Anything else in the file (bytes between pages,
after the last page, between strips) is read by nobody's viewer and is a
hiding place: ``hidden-data``, fail. Tags the engine does not know (private
tags can carry any bytes) need a person (``not-understood``). BigTIFF is not
parsed (review). A file whose every byte belongs to the structure and whose
tags are all known can pass.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from insitu.disclosure._types import Verdict
from insitu.disclosure.formats import image
from insitu.disclosure.scan import Scan, join

__all__ = ["tiff_layout"]

# Bytes per value of each TIFF field type (TIFF 6.0 and its extensions).
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
# Tags of TIFF 6.0 baseline and extensions, EXIF/GPS, ICC and those Pillow writes.
_KNOWN = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 264, 265, 266, 269, 270, 271, 272, 273, 274, 277,
     278, 279, 280, 281, 282, 283, 284, 285, 286, 287, 288, 289, 290, 291, 296, 297, 301, 305,
     306, 315, 316, 317, 318, 319, 320, 321, 322, 323, 324, 325, 330, 332, 333, 334, 336, 337,
     338, 339, 340, 341, 342, 347, 512, 513, 514, 515, 517, 518, 519, 520, 521, 529, 530, 531,
     532, 700, 33432, 33434, 33437, 34665, 34675, 34850, 34853, 34855, 34864, 36864, 36867,
     36868, 37121, 37377, 37378, 37379, 37380, 37381, 37383, 37384, 37385, 37386, 37510,
     40960, 40961, 40962, 40963, 41728, 41985, 41986, 41987, 41988, 41989, 41990}
    | set(range(32))  # GPS IFD tags
)  # fmt: skip
_IFD_POINTERS = (330, 34665, 34853, 40965)  # sub-IFDs, EXIF, GPS, interoperability
_DATA = ((273, 279), (324, 325))  # strip offsets/counts, tile offsets/counts
_MAX_IFDS = 10_000
_MAX_PAD = 16  # zero bytes between structures that count as alignment


def _values(data: bytes, end: str, kind: int, count: int, at: int) -> list[int]:
    code = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I"}.get(kind)
    if code is None:
        return []
    return list(struct.unpack_from(f"{end}{count}{code}", data, at))


_APPENDED = (b"II*\x00\x08\x00\x00\x00", b"MM\x00*\x00\x00\x00\x08")


def _padding(gap: bytes) -> bool:
    """Writers align values and IFDs on word boundaries (Pillow pages on 16 bytes): a few
    zero bytes are structure. Pillow's multi-page writer also leaves each appended page's
    own 8-byte header (magic, first IFD at 8) in place. Anything else is not structure."""
    rest = gap.lstrip(b"\x00")
    return len(gap) - len(rest) < _MAX_PAD and rest in (b"", *_APPENDED)


def tiff_layout(scan: Scan, data: bytes, place: str) -> list[int]:
    """Walk the structure; add findings for unaccounted bytes and unknown tags.

    Returns the unknown tag numbers (empty: every tag is known).
    """
    if data[:4] in (b"II+\x00", b"MM\x00+"):
        scan.add("not-understood", Verdict.REVIEW, "a BigTIFF is not read byte by byte", place)
        return []
    end = "<" if data[:2] == b"II" else ">"
    size = len(data)
    covered: list[tuple[int, int, str]] = [(0, 8, "header")]
    unknown: set[int] = set()

    def claim(start: int, length: int, what: str) -> None:
        if start < 0 or length < 0 or start + length > size:
            raise scan.stop("malformed", f"{what} points outside the file", place)
        if length:
            covered.append((start, start + length, what))

    queue: list[tuple[int, bool]] = [(struct.unpack_from(f"{end}I", data, 4)[0], True)]
    seen: set[int] = set()
    while queue:
        offset, chain = queue.pop(0)
        while offset:
            if offset in seen or len(seen) >= _MAX_IFDS:
                raise scan.stop("malformed", "IFDs form a loop or are too many", place)
            seen.add(offset)
            if offset + 2 > size:
                raise scan.stop("malformed", "an IFD points outside the file", place)
            (n,) = struct.unpack_from(f"{end}H", data, offset)
            claim(offset, 2 + 12 * n + 4, "an IFD")
            entries: dict[int, list[int]] = {}
            for i in range(n):
                pos = offset + 2 + 12 * i
                tag, kind, count = struct.unpack_from(f"{end}HHI", data, pos)
                length = _TYPE_SIZE.get(kind, 1) * count
                at = pos + 8 if length <= 4 else struct.unpack_from(f"{end}I", data, pos + 8)[0]
                if length > 4:
                    claim(at, length, f"tag {tag}'s value")
                if tag not in _KNOWN:
                    unknown.add(tag)
                if tag in _IFD_POINTERS or any(tag in pair for pair in _DATA):
                    entries[tag] = _values(data, end, kind, count, at)
            for tag in _IFD_POINTERS:
                queue.extend((o, False) for o in entries.get(tag, []))
            for offsets_tag, counts_tag in _DATA:
                offsets, counts = entries.get(offsets_tag, []), entries.get(counts_tag, [])
                if len(offsets) != len(counts):
                    raise scan.stop("malformed", "strip offsets and byte counts differ", place)
                for o, c in zip(offsets, counts, strict=True):
                    claim(o, c, "image data")
            (offset,) = struct.unpack_from(f"{end}I", data, offset + 2 + 12 * n)
            if not chain:
                break
    covered.sort()
    gaps: list[tuple[int, int]] = []
    reach = 0
    for start, stop, _what in [*covered, (size, size, "the end")]:
        if start > reach and not _padding(data[reach:start]):
            gaps.append((reach, start))
        reach = max(reach, stop)
    if gaps:
        hidden = sum(b - a for a, b in gaps)
        first = ", ".join(f"bytes {a}..{b - 1}" for a, b in gaps[:3])
        scan.add(
            "hidden-data",
            Verdict.FAIL,
            f"{hidden} bytes belong to no page, tag or strip ({first}"
            + (", ..." if len(gaps) > 3 else "")
            + "): a hiding place",
            place,
        )
    return sorted(unknown)


def scan_layout(
    scan: Scan, data: bytes, place: str, *, before_frames: Callable[[], None] | None = None
) -> None:
    """The layout findings first (a broken layout stops before any reader sees the file),
    then ``before_frames`` (the caller reads the tags' text), then every page decoded."""
    try:
        unknown = tiff_layout(scan, data, place)
    except struct.error:
        raise scan.stop("malformed", "a truncated TIFF structure", place) from None
    if unknown:
        scan.add(
            "not-understood",
            Verdict.REVIEW,
            f"TIFF tags the engine does not know ({', '.join(map(str, unknown[:8]))}): "
            "their values may carry anything",
            join(place, "tags"),
        )
    if before_frames is not None:
        before_frames()
    image.scan_frames(scan, data, place)
