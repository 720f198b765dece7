"""GIF: every block walked to the trailer; comments and application data read."""

from __future__ import annotations

import struct

from insitu.disclosure._types import Verdict
from insitu.disclosure.formats import image
from insitu.disclosure.scan import Scan, join
from insitu.disclosure.text import scan_text

__all__ = ["scan_gif"]


def _sub_blocks(scan: Scan, data: bytes, pos: int, place: str) -> tuple[bytes, int]:
    out = bytearray()
    while True:
        if pos >= len(data):
            raise scan.stop("malformed", "a truncated data block", place)
        size = data[pos]
        pos += 1
        if size == 0:
            return bytes(out), pos
        out += data[pos : pos + size]
        pos += size


def scan_gif(scan: Scan, data: bytes, where: str) -> None:
    place = where or "gif"
    if len(data) < 13:
        raise scan.stop("malformed", "a truncated header", place)
    flags = data[10]
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    texts: list[str] = []
    ended = False
    while pos < len(data):
        block = data[pos]
        pos += 1
        if block == 0x3B:
            ended = True
            break
        if block == 0x21:  # extension
            label = data[pos] if pos < len(data) else -1
            body, pos = _sub_blocks(scan, data, pos + 1, place)
            if label == 0xFE:
                texts.append(body.decode("latin-1"))
            elif label == 0xFF:
                if not body.startswith((b"NETSCAPE2.0", b"ANIMEXTS1.0")) or len(body) > 16:
                    scan.add(
                        "hidden-data",
                        Verdict.FAIL,
                        f"{len(body)} bytes of application data",
                        join(place, "extension"),
                    )
            elif label == 0x01:
                texts.append(body[12:].decode("latin-1"))
            elif label != 0xF9:
                scan.add("hidden-data", Verdict.FAIL, f"an unknown extension 0x{label:02X}", place)
        elif block == 0x2C:  # image descriptor, local colour table, LZW data
            if pos + 9 > len(data):
                raise scan.stop("malformed", "a truncated image descriptor", place)
            (local,) = struct.unpack("B", data[pos + 8 : pos + 9])
            pos += 9 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0) + 1
            _pixels, pos = _sub_blocks(scan, data, pos, place)
        else:
            raise scan.stop("malformed", f"an unknown block 0x{block:02X}", place)
    if not ended:
        raise scan.stop("malformed", "no trailer: the image is truncated", place)
    if pos < len(data):
        scan.add("hidden-data", Verdict.FAIL, f"{len(data) - pos} bytes after the trailer", place)
    scan.ok("hidden-data", "every byte belongs to the format's structure")
    if texts:
        scan_text(scan, "\n".join(texts), join(place, "comments"))
    image.scan_frames(scan, data, place)


def scan_tiff(scan: Scan, data: bytes, where: str) -> None:
    """TIFF: every tag's text read, every byte accounted for (insitu.disclosure.formats.tiff),
    every page decoded."""
    from insitu.disclosure.formats.tiff import scan_layout

    place = where or "tiff"
    scan_layout(scan, data, place, before_frames=lambda: _scan_tags(scan, data, place))


def _scan_tags(scan: Scan, data: bytes, place: str) -> None:
    scan_text(scan, "\n".join(_tiff_tags(scan, data, place)), join(place, "tags"), grids=False)


def _tiff_tags(scan: Scan, data: bytes, place: str) -> list[str]:
    """The text of every tag of every page (descriptions, software, dates, names)."""
    import io

    from PIL import Image

    texts: list[str] = []
    try:
        with Image.open(io.BytesIO(data)) as img:
            for number in range(int(getattr(img, "n_frames", 1))):
                img.seek(number)
                for value in getattr(img, "tag_v2", {}).values():
                    items = value if isinstance(value, tuple) else (value,)
                    texts.extend(
                        v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in items
                    )
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        raise scan.stop("malformed", f"the TIFF cannot be read: {exc}", place) from None
    return texts
