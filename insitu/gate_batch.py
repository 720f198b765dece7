"""The gate's multi-key read on the wire: written by the gate, read by ``GateStore``.

``POST batch/<dataset>/<version>`` with ``{"keys": [...]}`` answers every
key in one response, so a whole series costs a few requests instead of one per
chunk (issue 15). The body is length-prefixed frames, one per requested key, in
the order asked, then an end frame; nothing in a frame is interpreted from the
data, so no key's bytes can be mistaken for another frame::

    MAGIC                                  b"insitu-keys/1\\n"
    per key: HEAD.pack(kind, len(key), n)  kind b"K" (n data bytes follow the key)
             key (UTF-8)                        or b"M" (missing; n == 0)
             data
    end:     HEAD.pack(b"E", 0, count)     count == the number of key frames

The reader checks the magic, that frame *i* names the *i*-th key asked, the
lengths, the end frame's count and that nothing follows it: a truncated or
reordered answer is an error, never a wrong chunk.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence

from insitu.errors import ServiceError

__all__ = [
    "CONTENT_TYPE",
    "MAGIC",
    "MAX_BYTES",
    "MAX_KEYS",
    "answer_length",
    "end_frame",
    "key_frame",
    "read_frames",
]

MAGIC = b"insitu-keys/1\n"
CONTENT_TYPE = "application/vnd.insitu.keys"
# Bounds of one request: the gate refuses more (BatchTooLargeError), the client asks for less.
MAX_KEYS = 256
MAX_BYTES = 64 * 2**20
HEAD = struct.Struct(">cHQ")  # kind, key length, data length
PRESENT, MISSING, END = b"K", b"M", b"E"


def key_frame(key: str, data: bytes | None) -> bytes:
    """The frame head and key for ``key``; its ``data`` (when present) follows it."""
    name = key.encode()
    kind = MISSING if data is None else PRESENT
    return HEAD.pack(kind, len(name), 0 if data is None else len(data)) + name


def end_frame(count: int) -> bytes:
    return HEAD.pack(END, 0, count)


def answer_length(keys: Sequence[str], found: Sequence[tuple[str, int] | None]) -> int:
    """Bytes of the whole answer for ``keys``; ``found[i]`` is (file, size) or None (missing)."""
    pairs = zip(keys, found, strict=True)
    frames = sum(HEAD.size + len(key.encode()) + (f[1] if f else 0) for key, f in pairs)
    return len(MAGIC) + frames + HEAD.size


def _malformed(why: str) -> ServiceError:
    return ServiceError(f"the site's gate sent a malformed multi-key answer ({why})")


def read_frames(
    read: Callable[[int], bytes], keys: Sequence[str]
) -> Iterator[tuple[int, bytes | None]]:
    """(index into ``keys``, data or None when missing), frame by frame as they arrive.

    ``read(n)`` returns up to ``n`` bytes (b"" at the end of the answer).
    """

    def exact(n: int) -> bytes:
        parts, left = [], n
        while left:
            part = read(left)
            if not part:
                raise _malformed(f"cut short: {n - left} of {n} bytes")
            parts.append(part)
            left -= len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    if exact(len(MAGIC)) != MAGIC:
        raise _malformed("unknown format")
    for index, key in enumerate(keys):
        kind, key_len, size = HEAD.unpack(exact(HEAD.size))
        if exact(key_len).decode(errors="replace") != key or kind not in (PRESENT, MISSING):
            raise _malformed(f"frame {index} is not the key asked for")
        if kind == MISSING:
            if size:
                raise _malformed(f"frame {index} is missing yet has data")
            yield index, None
        else:
            yield index, exact(size) if size else b""
    kind, key_len, count = HEAD.unpack(exact(HEAD.size))
    if (kind, key_len, count) != (END, 0, len(keys)) or read(1):
        raise _malformed("no proper end frame")
