"""PDF: every byte in an object, the xref or a trailer; every stream decoded (bounded).

Text of the document (content streams, the info dictionary, annotations,
XMP metadata, comments) goes through the text rules; embedded images are
decoded and go through the grid rules (JPEG streams as JPEG files); the
numbers of path and colour operators are drawn data (``pdfpaths``): counted
in the budget, a lattice of filled cells checked as a grid, many of them
reviewed (``vector-data``); attached
files and scripts fail; fonts programs and object streams need review.
Streams in filters other than Flate and DCT fail: the engine cannot see
what they hold.
"""

from __future__ import annotations

import re
import struct
import zlib

import numpy as np

from insitu.disclosure._types import Verdict
from insitu.disclosure.arrays import scan_array
from insitu.disclosure.formats.pdfpaths import lattice, read_paths
from insitu.disclosure.scan import Scan, inflate, join
from insitu.disclosure.text import scan_text

__all__ = ["scan_pdf"]

_OBJ = re.compile(rb"(\d+)\s+(\d+)\s+obj\b")
_WS = b" \t\r\n\f\0"
_NAME = rb"/([A-Za-z0-9_.#+-]+)"
_SCRIPT = re.compile(rb"/(JS|JavaScript|Launch|RichMedia|GoToR|SubmitForm|ImportData)\b")
_STRING_OPS = re.compile(rb"\((?:\\.|[^\\()])*\)|<[0-9A-Fa-f\s]*>", re.DOTALL)


def _skip_ws(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos] in _WS:
        pos += 1
    return pos


def _balanced_dict(data: bytes, pos: int) -> int:
    """The end of a ``<< ... >>`` starting at ``pos`` (strings with brackets allowed)."""
    depth = 0
    while pos < len(data):
        if data.startswith(b"<<", pos):
            depth += 1
            pos += 2
        elif data.startswith(b">>", pos):
            depth -= 1
            pos += 2
            if depth == 0:
                return pos
        elif data[pos : pos + 1] == b"(":
            pos = _literal_end(data, pos)
        else:
            pos += 1
    return -1


def _literal_end(data: bytes, pos: int) -> int:
    depth = 0
    while pos < len(data):
        ch = data[pos : pos + 1]
        if ch == b"\\":
            pos += 2
            continue
        if ch == b"(":
            depth += 1
        elif ch == b")":
            depth -= 1
            if depth == 0:
                return pos + 1
        pos += 1
    return len(data)


def _strings(raw: bytes) -> list[str]:
    """Literal and hex strings of PDF syntax, as text."""
    out = []
    for token in _STRING_OPS.findall(raw):
        if token.startswith(b"("):
            body = re.sub(rb"\\([nrtbf()\\])", lambda m: m.group(1), token[1:-1])
            body = re.sub(rb"\\(\d{1,3})", lambda m: bytes([int(m.group(1), 8) & 255]), body)
            out.append(_decode_text(body))
        else:
            digits = re.sub(rb"\s", b"", token[1:-1])
            try:
                out.append(
                    _decode_text(bytes.fromhex((digits + b"0" * (len(digits) % 2)).decode()))
                )
            except ValueError:
                continue
    return out


def _content_text(content: bytes) -> list[str]:
    """The text of a content stream, one string per text object (BT ... ET).

    Glyph runs are split by kerning (``[(1) 0.29 (4)] TJ``): the strings of one
    text object are joined without separators, as they are shown.
    """
    blocks = re.split(rb"\bET\b", content)
    return ["".join(_strings(block)) for block in blocks if block.strip()]


def _decode_text(body: bytes) -> str:
    if body.startswith(b"\xfe\xff"):
        return body[2:].decode("utf-16-be", "replace")
    return body.decode("latin-1")


def _value(dictionary: bytes, key: bytes) -> bytes | None:
    match = re.search(
        rb"/" + key + rb"(?![A-Za-z0-9])\s*(\[[^\]]*\]|\d+\s+\d+\s+R|/[^\s/<>\[\]()]+|-?\d+)",
        dictionary,
    )
    return match.group(1) if match else None


class _Pdf:
    def __init__(self, scan: Scan, data: bytes, place: str) -> None:
        self.scan = scan
        self.data = data
        self.place = place
        self.objects: dict[int, tuple[bytes, bytes | None]] = {}  # number -> (dict, stream)
        self.texts: list[str] = []
        self.vector_values = 0  # operands of path, colour and transform operators
        self.vectors_truncated = False

    def resolve_int(self, raw: bytes | None) -> int | None:
        if raw is None:
            return None
        ref = re.fullmatch(rb"(\d+)\s+\d+\s+R", raw)
        if ref:
            match = re.search(
                rb"(?<!\d)" + ref.group(1) + rb"\s+\d+\s+obj\s*(\d+)\s*endobj", self.data
            )
            return int(match.group(1)) if match else None
        return int(raw) if re.fullmatch(rb"-?\d+", raw) else None

    def parse(self) -> None:
        data, scan, place = self.data, self.scan, self.place
        eol = data.find(b"\n")
        pos = eol + 1 if 0 <= eol < 32 else 8
        while pos < len(data):
            pos = _skip_ws(data, pos)
            if pos >= len(data):
                break
            if data[pos : pos + 1] == b"%":
                end = data.find(b"\n", pos)
                end = len(data) if end < 0 else end
                comment = data[pos + 1 : end]
                if comment.strip() != b"%EOF" and pos > 16:
                    self.texts.append(comment.decode("latin-1"))
                    if len(comment) > 256:
                        scan.add(
                            "hidden-data", Verdict.FAIL, f"a {len(comment)}-byte comment", place
                        )
                pos = end + 1
                continue
            match = _OBJ.match(data, pos)
            if match:
                pos = self.object(int(match.group(1)), match.end())
                continue
            if data.startswith(b"xref", pos):
                end = data.find(b"trailer", pos)
                if end < 0 or not re.fullmatch(rb"xref[\s\d fn]*", data[pos:end]):
                    raise scan.stop("malformed", "an unreadable cross-reference table", place)
                pos = end
                continue
            if data.startswith(b"trailer", pos):
                start = _skip_ws(data, pos + 7)
                end = _balanced_dict(data, start)
                if end < 0:
                    raise scan.stop("malformed", "an unreadable trailer", place)
                trailer = data[start:end]
                if b"/Encrypt" in trailer:
                    raise scan.stop("hidden-data", "an encrypted PDF", place)
                self.texts.extend(_strings(trailer))
                pos = end
                continue
            match = re.compile(rb"startxref\s+\d+").match(data, pos)
            if match:
                pos = match.end()
                continue
            raise scan.stop(
                "hidden-data",
                f"{len(data) - pos} bytes from offset {pos} are not part of any PDF object",
                place,
            )

    def object(self, number: int, pos: int) -> int:
        data, scan = self.data, self.scan
        at = join(self.place, f"object {number}")
        start = _skip_ws(data, pos)
        stream: bytes | None = None
        if data.startswith(b"<<", start):
            end = _balanced_dict(data, start)
            if end < 0:
                raise scan.stop("malformed", "an unterminated dictionary", at)
            head = data[start:end]
            pos = _skip_ws(data, end)
            if data.startswith(b"stream", pos):
                pos += 6
                pos += 2 if data.startswith(b"\r\n", pos) else 1
                length = self.resolve_int(_value(head, b"Length"))
                if length is None or length < 0 or pos + length > len(data):
                    raise scan.stop("malformed", "a stream without a readable /Length", at)
                stream = data[pos : pos + length]
                pos = _skip_ws(data, pos + length)
                if not data.startswith(b"endstream", pos):
                    raise scan.stop("hidden-data", "bytes beyond the stream's /Length", at)
                pos = _skip_ws(data, pos + 9)
        else:
            end = data.find(b"endobj", start)
            if end < 0:
                raise scan.stop("malformed", "an unterminated object", at)
            head = data[start:end]
            pos = end
        if not data.startswith(b"endobj", pos):
            raise scan.stop("hidden-data", "bytes between the object and its endobj", at)
        if _SCRIPT.search(head):
            scan.add("unsafe-code", Verdict.FAIL, "a script or action that runs on opening", at)
        self.texts.extend(_strings(head))
        self.objects[number] = (head, stream)
        return pos + 6

    def streams(self) -> None:
        for number, (head, stream) in self.objects.items():
            if stream is None:
                continue
            at = join(self.place, f"object {number}")
            self.stream(head, stream, at)

    def stream(self, head: bytes, raw: bytes, at: str) -> None:
        scan = self.scan
        filters = re.findall(_NAME, _value(head, b"Filter") or b"")
        subtype = _value(head, b"Subtype") or b""
        kind = _value(head, b"Type") or b""
        if kind in (b"/EmbeddedFile",) or b"/Filespec" in head:
            scan.add("hidden-data", Verdict.FAIL, "an attached file", at)
        if filters == [b"DCTDecode"] and subtype == b"/Image":
            from insitu.disclosure.engine import scan_nested

            scan_nested(scan, raw, "image.jpg", at)
            return
        if any(f != b"FlateDecode" for f in filters):
            scan.add(
                "hidden-data",
                Verdict.FAIL,
                f"a stream in {b' '.join(filters).decode()} the engine cannot decode",
                at,
            )
            return
        decoded = inflate(scan, raw, at) if filters else raw
        if subtype == b"/Image":
            self.image(head, raw if filters else None, decoded, at)
        elif re.search(rb"/FontFile\d?", b"".join(h for h, _s in self.objects.values())) and (
            _value(head, b"Length1") is not None
            or subtype in (b"/Type1C", b"/CIDFontType0C", b"/OpenType")
        ):
            scan.add("not-understood", Verdict.REVIEW, "an embedded font program", at)
        elif kind == b"/ObjStm":
            scan.add("not-understood", Verdict.REVIEW, "an object stream", at)
            self.texts.extend(_strings(decoded))
        elif kind == b"/XRef":
            return
        elif kind == b"/Metadata" or subtype == b"/XML":
            self.texts.append(decoded.decode("utf-8", "replace"))
        else:  # a content stream (page, form, Type 3 glyph): PDF operators are text
            binary = sum(1 for b in decoded[:65536] if b < 9 or 13 < b < 32 or b > 126)
            if binary > max(16, len(decoded[:65536]) // 100):
                scan.add(
                    "hidden-data",
                    Verdict.FAIL,
                    "binary data in a stream that is neither an image nor a font",
                    at,
                )
            self.texts.extend(_content_text(decoded))
            self.vectors(decoded, at)

    def vectors(self, content: bytes, at: str) -> None:
        """Drawn data: path/colour numbers counted, a lattice of cells checked as a grid."""
        scan = self.scan
        room = scan.ctx.budget.values - self.vector_values
        if room <= 0:
            self.vectors_truncated = True
            return
        drawn = read_paths(content, max_values=room)
        self.vector_values += drawn.values
        self.vectors_truncated |= drawn.truncated
        scan.count_values(drawn.values)
        grid = lattice(drawn.cells)
        if grid is not None:
            scan_array(scan, grid, join(at, "vector cells"), count=False, image=True)

    def vector_findings(self) -> None:
        scan, limit = self.scan, self.scan.ctx.limits.max_vector_values
        scan.ok("vector-data", f"{self.vector_values} path and colour values")
        if self.vectors_truncated or self.vector_values > limit:
            more = "more than " if self.vectors_truncated else ""
            scan.add(
                "vector-data",
                Verdict.REVIEW,
                f"{more}{self.vector_values} numbers in path and colour operators, over "
                f"disclosure.max_vector_values = {limit}: drawn data (points, cells) a person "
                "must judge",
                self.place,
            )

    def image(self, head: bytes, compressed: bytes | None, decoded: bytes, at: str) -> None:
        scan = self.scan
        width = self.resolve_int(_value(head, b"Width")) or 0
        height = self.resolve_int(_value(head, b"Height")) or 0
        bits = self.resolve_int(_value(head, b"BitsPerComponent")) or 8
        space = _value(head, b"ColorSpace") or b"/DeviceGray"
        colors = 3 if b"RGB" in space else 4 if b"CMYK" in space else 1
        if b"/Indexed" in head or (b"/SMask" in head and b"/ColorSpace" not in head):
            colors = 1  # palette indices (the grid's shape is what the rules need)
        colors = self.resolve_int(_value(head, b"Colors")) or colors
        if width * height > scan.ctx.limits.max_image_pixels:
            raise scan.stop("unpack-limits", f"a {width}x{height} image", at)
        predictor = self.resolve_int(_value(head, b"Predictor")) or 1
        try:
            if predictor >= 10 and compressed is not None:
                array = _png_predicted(compressed, width, height, bits, colors)
            else:
                dtype = ">u2" if bits == 16 else "u1"
                needed = width * height * colors * (2 if bits == 16 else 1)
                if bits not in (8, 16) or len(decoded) != needed:
                    raise ValueError(f"{len(decoded)} bytes for a {width}x{height}x{colors} image")
                array = np.frombuffer(decoded, dtype=dtype).reshape(height, width, colors)
        except (ValueError, OSError) as exc:
            scan.add(
                "not-understood", Verdict.REVIEW, f"an image the engine cannot decode ({exc})", at
            )
            return
        scan_array(scan, array.squeeze(), at, count=False, image=True)


def _png_predicted(
    compressed: bytes, width: int, height: int, bits: int, colors: int
) -> np.ndarray:
    """Flate data with PNG predictors is a PNG's IDAT: let the PNG decoder undo them."""
    import io

    from PIL import Image

    colour = {1: 0, 3: 2}.get(colors)
    if colour is None:
        raise ValueError(f"{colors} colour components")

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, bits, colour, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", compressed)
        + chunk(b"IEND", b"")
    )
    with Image.open(io.BytesIO(png)) as img:
        return np.asarray(img)


def scan_pdf(scan: Scan, data: bytes, where: str) -> None:
    place = where or "pdf"
    pdf = _Pdf(scan, data, place)
    pdf.parse()
    scan.ok("hidden-data", "every byte belongs to the format's structure")
    pdf.streams()
    pdf.vector_findings()
    scan_text(scan, "\n".join(pdf.texts), join(place, "text"), grids=False)
