"""What an output is, by its bytes; and what its name says it should be."""

from __future__ import annotations

import struct
from pathlib import PurePosixPath

__all__ = ["DECLARED", "FAMILY", "declared_kind", "sniff"]

# Suffix -> the kind of content it promises.
DECLARED: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".txt": "text",
    ".md": "text",
    ".ipynb": "notebook",
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".gif": "gif",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".pdf": "pdf",
    ".npz": "npz",
    ".npy": "npy",
    ".pt": "torch",
    ".pth": "torch",
    ".safetensors": "safetensors",
    ".zip": "zip",
}
# Declared kind -> the sniffed kind its content must have.
FAMILY: dict[str, str] = {
    "csv": "text",
    "json": "text",
    "text": "text",
    "notebook": "text",
    "npz": "zip",
    "torch": "zip",
}

_MAGIC: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"%PDF-", "pdf"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty archive
    (b"\x93NUMPY", "npy"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"(\xb5/\xfd", "zstd"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!", "rar"),
    (b"BM", "bmp"),
    (b"\x00\x00\x00\x0cjP  ", "jpeg2000"),
    (b"\x7fELF", "executable"),
    (b"MZ", "executable"),
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"SQLite format 3\x00", "sqlite"),
]


def declared_kind(name: str) -> str | None:
    """The kind a file name promises (None: a suffix the engine does not know)."""
    return DECLARED.get(PurePosixPath(name).suffix.lower())


def _is_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    (length,) = struct.unpack("<Q", data[:8])
    return 2 <= length <= len(data) - 8 and data[8:9] == b"{"


def _is_text(data: bytes) -> bool:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(ord(ch) < 32 and ch not in "\t\n\r\f" for ch in text)


def sniff(data: bytes) -> str:
    """The kind of content, from magic bytes and structure; "binary" when unknown."""
    for magic, kind in _MAGIC:
        if len(magic) >= 4 and data.startswith(magic):
            return kind
    if _is_text(data):
        return "text"  # before the short magics: a CSV may well start with "BM"
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] in (b"RIFF",) and data[8:12] == b"WEBP":
        return "webp"
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if _is_safetensors(data):
        return "safetensors"
    return "binary"
