"""JPEG: every marker segment walked from SOI to EOI; nothing may follow EOI.

APP segments other than JFIF (APP0), ICC profiles (APP2) and Adobe (APP14)
are hiding places and fail; Exif/XMP (APP1) and comments are read as text.
"""

from __future__ import annotations

import struct

from insitu.disclosure._types import Verdict
from insitu.disclosure.formats import image
from insitu.disclosure.scan import Scan, join
from insitu.disclosure.text import scan_text

__all__ = ["scan_jpeg"]

_NO_LENGTH = {0x01, *range(0xD0, 0xD8)}
_KNOWN = {0xC4, 0xCC, 0xDB, 0xDD, 0xDC, 0xDF, *range(0xC0, 0xD0)}
_ICC_LIMIT = 1 << 20


def _scan_data_end(data: bytes, pos: int) -> int:
    """The position of the marker that ends entropy-coded data starting at ``pos``."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1 if following == 0xFF else 2
            continue
        return pos


def scan_jpeg(scan: Scan, data: bytes, where: str) -> None:
    place = where or "jpeg"
    pos = 2
    texts: list[str] = []
    ended = False
    while pos < len(data):
        if data[pos] != 0xFF:
            raise scan.stop("malformed", f"no marker at byte {pos}", place)
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1
        if pos >= len(data):
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9:
            ended = True
            break
        if marker in _NO_LENGTH:
            continue
        if pos + 2 > len(data):
            raise scan.stop("malformed", "a truncated segment", place)
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        body = data[pos + 2 : pos + length]
        if length < 2 or len(body) != length - 2:
            raise scan.stop("malformed", f"segment 0x{marker:02X} runs past the end", place)
        at = join(place, f"segment 0x{marker:02X}")
        pos += length
        if marker == 0xDA:
            pos = _scan_data_end(data, pos)
        elif marker == 0xFE:
            texts.append(body.decode("latin-1"))
        elif marker == 0xE0 and body[:5] in (b"JFIF\0", b"JFXX\0"):
            if body[:5] == b"JFIF\0" and len(body) > 16:
                scan.add("hidden-data", Verdict.FAIL, "a JFIF thumbnail", at)
        elif marker == 0xE1:
            if b"\xff\xd8" in body:
                scan.add("hidden-data", Verdict.FAIL, "an embedded image (Exif thumbnail)", at)
            texts.append(image.exif_text(body))
        elif marker == 0xE2 and body.startswith(b"ICC_PROFILE\0"):
            if length > _ICC_LIMIT:
                scan.add("hidden-data", Verdict.FAIL, f"a {length}-byte colour profile", at)
        elif marker == 0xEE and body.startswith(b"Adobe"):
            if length > 64:
                scan.add("hidden-data", Verdict.FAIL, f"a {length}-byte Adobe segment", at)
        elif marker not in _KNOWN:
            scan.add(
                "hidden-data",
                Verdict.FAIL,
                f"a {length}-byte segment 0x{marker:02X} the engine cannot interpret",
                at,
            )
    if not ended:
        raise scan.stop("malformed", "no end-of-image marker: the image is truncated", place)
    if data[pos:].strip(b"\0"):
        scan.add(
            "hidden-data",
            Verdict.FAIL,
            f"{len(data) - pos} bytes after the end of the image",
            place,
        )
    scan.ok("hidden-data", "every byte belongs to the format's structure")
    if texts:
        scan_text(scan, "\n".join(texts), join(place, "metadata"))
    image.scan_frames(scan, data, place)
