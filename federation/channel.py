"""Frames between the site's runner and a sandboxed app, over one Unix socket pair.

A frame is one kind byte, a 4-byte big-endian length and the payload. The
runner reads the app's frames with a size limit per kind and never
unpickles them: requests are JSON, the reply is Flower's protobuf.

Kinds, runner -> app: ``T`` the task (pickle), ``D`` data (pickle), ``X`` a
data error (UTF-8 text written by the site). App -> runner: ``Q`` a data
request (JSON), ``R`` the reply (Message protobuf), ``E`` the app failed
(payload ignored: its words never leave).
"""

from __future__ import annotations

import socket
import struct

__all__ = ["Channel", "ChannelClosedError"]

_HEADER = struct.Struct(">cI")


class ChannelClosedError(ConnectionError):
    """The other side closed the socket (or sent a frame over the limit)."""


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, kind: bytes, payload: bytes) -> None:
        self.sock.sendall(_HEADER.pack(kind, len(payload)) + payload)

    def _read(self, n: int) -> bytes:
        chunks: list[bytes] = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise ChannelClosedError("the other side closed the channel")
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def recv(self, limits: dict[bytes, int] | None = None) -> tuple[bytes, bytes]:
        """One frame; with ``limits``, refuse unknown kinds and payloads over the limit."""
        kind, size = _HEADER.unpack(self._read(_HEADER.size))
        if limits is not None and (kind not in limits or size > limits[kind]):
            raise ChannelClosedError("a frame of an unknown kind or over the size limit")
        return kind, self._read(size)

    def close(self) -> None:
        self.sock.close()
