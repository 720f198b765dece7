"""Zip archives (and npz, torch files): every byte accounted for, every member read.

The archive's bytes must be exactly its local headers, member data, data
descriptors, central directory and end records: anything before, between or
after them is hidden data. Members are decompressed within the scan's limits
(sizes in headers are never trusted), their CRCs checked, and handed to a
callback (by default: checked as a file of their own, by their name).
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable

from insitu.disclosure._types import Verdict
from insitu.disclosure.scan import Scan, inflate, join
from insitu.disclosure.text import scan_text

__all__ = ["Member", "read_members", "scan_zip"]

Member = Callable[[str, bytes, str], None]  # name, content, where
_LOCAL = b"PK\x03\x04"
_DESCRIPTOR = b"PK\x07\x08"


def _eocd_end(scan: Scan, data: bytes, place: str) -> tuple[int, int, bytes]:
    """(start, end) of the end-of-central-directory record, and the archive comment."""
    start = data.rfind(b"PK\x05\x06", max(0, len(data) - 65557))
    if start < 0 or start + 22 > len(data):
        raise scan.stop("malformed", "no end of central directory: not a whole zip archive", place)
    (comment_length,) = struct.unpack("<H", data[start + 20 : start + 22])
    end = start + 22 + comment_length
    return start, end, data[start + 22 : end]


def _spans(
    scan: Scan, data: bytes, infos: list[zipfile.ZipInfo], place: str
) -> list[tuple[int, int]]:
    spans = []
    for info in infos:
        offset = info.header_offset
        header = data[offset : offset + 30]
        if len(header) < 30 or not header.startswith(_LOCAL):
            raise scan.stop("malformed", f"member {info.filename!r} has no local header", place)
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        start = offset + 30 + name_length + extra_length
        local_name = data[offset + 30 : offset + 30 + name_length]
        if (
            local_name.decode("utf-8", "replace") != info.filename
            and local_name.decode("cp437", "replace") != info.filename
        ):
            scan.add(
                "hidden-data",
                Verdict.FAIL,
                f"member {info.filename!r} is named differently in its local header",
                place,
            )
        end = start + info.compress_size
        if info.flag_bits & 0x08:
            end += 16 if data[end : end + 4] == _DESCRIPTOR else 12
            if info.compress_size >= 0xFFFFFFFF or info.file_size >= 0xFFFFFFFF:
                end += 8
        spans.append((offset, end))
    return spans


def _account(scan: Scan, data: bytes, spans: list[tuple[int, int]], place: str) -> None:
    """Every byte of the archive belongs to one structure, exactly once."""
    covered = 0
    for start, end in sorted(spans):
        if start > covered:
            scan.add(
                "hidden-data",
                Verdict.FAIL,
                f"{start - covered} bytes at offset {covered} belong to no member or record",
                place,
            )
        elif start < covered:
            scan.add("hidden-data", Verdict.FAIL, f"overlapping members at offset {start}", place)
        covered = max(covered, end)
    if covered < len(data):
        scan.add(
            "hidden-data", Verdict.FAIL, f"{len(data) - covered} bytes after the archive", place
        )


def _content(scan: Scan, data: bytes, info: zipfile.ZipInfo, where: str) -> bytes:
    offset = info.header_offset
    name_length, extra_length = struct.unpack("<HH", data[offset + 26 : offset + 30])
    start = offset + 30 + name_length + extra_length
    raw = data[start : start + info.compress_size]
    if info.compress_type == zipfile.ZIP_STORED:
        content = raw
        scan.unpacked(len(content), where)
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        content = inflate(scan, raw, where, wbits=-15)
    else:
        raise scan.stop(
            "malformed",
            f"compression method {info.compress_type} (only stored and deflate are read)",
            where,
        )
    if len(content) != info.file_size or zlib.crc32(content) != info.CRC:
        raise scan.stop("malformed", "the member's size or CRC does not match its header", where)
    return content


def read_members(scan: Scan, data: bytes, where: str, member: Member) -> list[str]:
    """Check the archive's structure, then hand every member to ``member``; the names."""
    place = where or "zip"
    eocd_start, eocd_end, comment = _eocd_end(scan, data, place)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise scan.stop("malformed", f"not a readable zip archive: {exc}", place) from None
    limits = scan.ctx.limits
    if len(infos) > limits.max_members:
        raise scan.stop(
            "unpack-limits",
            f"{len(infos)} members, over disclosure.max_members ({limits.max_members})",
            place,
        )
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        scan.add("hidden-data", Verdict.FAIL, "two members with the same name", place)
    spans = _spans(scan, data, infos, place)
    cd_start = archive.start_dir
    spans.append((cd_start, eocd_start))  # central directory (and zip64 records)
    spans.append((eocd_start, eocd_end))
    _account(scan, data, spans, place)
    scan.ok("hidden-data", "every byte belongs to the format's structure")
    texts = [*names, comment.decode("utf-8", "replace")]
    scan_text(scan, "\n".join(texts), join(place, "names"), grids=False)
    for info in infos:
        at = join(place, info.filename)
        if info.flag_bits & 0x01:
            scan.add("hidden-data", Verdict.FAIL, "an encrypted member", at)
            continue
        if info.filename.startswith("/") or ".." in info.filename.split("/"):
            scan.add("malformed", Verdict.FAIL, "a member path that leaves the archive", at)
        if info.is_dir():
            continue
        member(info.filename, _content(scan, data, info, at), at)
    return names


def scan_zip(scan: Scan, data: bytes, where: str) -> None:
    """A plain zip archive: every member is checked as a file of its own."""
    from insitu.disclosure.engine import scan_nested

    def member(name: str, content: bytes, at: str) -> None:
        scan_nested(scan, content, name, at)

    read_members(scan, data, where, member)
