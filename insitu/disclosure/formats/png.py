"""PNG: every chunk read and its CRC checked, text chunks read, nothing after IEND.

Pixels (every frame of an animated PNG) are decoded by :mod:`.image` once the
structure is accounted for.
"""

from __future__ import annotations

import struct
import zlib

from insitu.disclosure._types import Verdict
from insitu.disclosure.formats import image
from insitu.disclosure.scan import Scan, inflate, join
from insitu.disclosure.text import scan_text

__all__ = ["scan_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Chunks whose meaning the engine knows (everything else is a hiding place).
_STRUCTURE = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"acTL", b"fcTL", b"fdAT"}
_SMALL = {
    b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"pHYs", b"bKGD", b"tIME", b"sBIT", b"hIST", b"sPLT",
    b"cICP", b"mDCv", b"cLLi",
}  # fmt: skip
_SMALL_LIMIT = 1024  # bytes: these chunks hold a few numbers, never more
_TEXT = {b"tEXt", b"zTXt", b"iTXt"}
_ICC_LIMIT = 1 << 20


def _text_chunk(scan: Scan, kind: bytes, body: bytes, where: str) -> str:
    keyword, _, rest = body.partition(b"\0")
    if kind == b"tEXt":
        value = rest.decode("latin-1")
    elif kind == b"zTXt":
        value = inflate(scan, rest[1:], where).decode("latin-1")
    else:  # iTXt: flag, method, language \0 translated keyword \0 text
        flag = rest[:1]
        _language, _, rest = rest[2:].partition(b"\0")
        _translated, _, text = rest.partition(b"\0")
        raw = inflate(scan, text, where) if flag == b"\x01" else text
        value = raw.decode("utf-8", "replace")
    return keyword.decode("latin-1") + ": " + value


_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


def _expected_size(width: int, height: int, bits: int, channels: int, interlaced: bool) -> int:
    def rows(w: int, h: int) -> int:
        return 0 if w == 0 or h == 0 else h * (1 + (w * channels * bits + 7) // 8)

    if not interlaced:
        return rows(width, height)
    return sum(
        rows((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy) for x0, y0, dx, dy in _ADAM7
    )


def _check_pixels(scan: Scan, header: bytes, idat: bytes, place: str) -> None:
    """The image data holds exactly the pixels the header declares, nothing beside them."""
    if len(header) != 13:
        raise scan.stop("malformed", "no valid IHDR chunk", place)
    width, height, bits, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", header)
    if colour not in _CHANNELS:
        raise scan.stop("malformed", f"unknown colour type {colour}", place)
    if width * height > scan.ctx.limits.max_image_pixels:
        raise scan.stop(
            "unpack-limits",
            f"a {width}x{height} image, over disclosure.max_image_pixels",
            place,
        )
    raw = inflate(scan, idat, join(place, "IDAT"))
    expected = _expected_size(width, height, bits, _CHANNELS[colour], interlace == 1)
    if len(raw) != expected:
        scan.add(
            "hidden-data",
            Verdict.FAIL,
            f"the image data decompresses to {len(raw)} bytes, but a {width}x{height} image "
            f"needs {expected}",
            join(place, "IDAT"),
        )


def scan_png(scan: Scan, data: bytes, where: str) -> None:
    place = where or "png"
    pos = len(_SIGNATURE)
    texts: list[str] = []
    idat: list[bytes] = []
    header = b""
    seen_end = False
    while pos < len(data):
        if pos + 12 > len(data):
            raise scan.stop("malformed", "a truncated chunk", place)
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise scan.stop("malformed", f"chunk {kind!r} runs past the end of the file", place)
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise scan.stop("malformed", f"chunk {kind!r} has a wrong CRC", place)
        name = kind.decode("latin-1")
        at = join(place, f"chunk {name}")
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind in _TEXT:
            texts.append(_text_chunk(scan, kind, body, at))
        elif kind == b"iCCP":
            if length > _ICC_LIMIT:
                scan.add("hidden-data", Verdict.FAIL, f"a {length}-byte colour profile", at)
            else:
                profile_name, _, rest = body.partition(b"\0")
                inflate(scan, rest[1:], at)
                texts.append(profile_name.decode("latin-1"))
        elif kind in _SMALL:
            if length > _SMALL_LIMIT:
                scan.add(
                    "hidden-data",
                    Verdict.FAIL,
                    f"a {length}-byte {name} chunk (a few bytes normally)",
                    at,
                )
        elif kind not in _STRUCTURE and kind != b"eXIf":
            scan.add(
                "hidden-data",
                Verdict.FAIL,
                f"a {length}-byte private chunk {name!r} the engine cannot interpret",
                at,
            )
        elif kind == b"eXIf":
            texts.append(image.exif_text(body))
        pos += 12 + length
        if kind == b"IEND":
            seen_end = True
            break
    if not seen_end:
        raise scan.stop("malformed", "no IEND chunk: the image is truncated", place)
    if pos < len(data):
        scan.add(
            "hidden-data",
            Verdict.FAIL,
            f"{len(data) - pos} bytes after the image's end (IEND)",
            place,
        )
    _check_pixels(scan, header, b"".join(idat), place)
    scan.ok("hidden-data", "every byte belongs to the format's structure")
    if texts:
        scan_text(scan, "\n".join(texts), join(place, "text chunks"))
    image.scan_frames(scan, data, place)
