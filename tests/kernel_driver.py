"""Drive a kernel of a running Jupyter server through its REST and websocket API,
as a browser does (no jupyter_client shortcuts: the server's own routes)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


class KernelError(Exception):
    """The code raised in the kernel: ``ename`` and ``evalue`` as the kernel reported."""

    def __init__(
        self, ename: str, evalue: str, output: str, traceback: list[str] | None = None
    ) -> None:
        super().__init__(f"{ename}: {evalue}")
        self.ename, self.evalue, self.output = ename, evalue, output
        self.traceback = traceback or []  # the lines the notebook shows


class Kernel:
    def __init__(self, server_url: str, token: str, name: str = "insitu") -> None:
        self.base = server_url.rstrip("/") + "/"
        self.headers = {"Authorization": f"token {token}"}
        answer = requests.post(
            self.base + "api/kernels", json={"name": name}, headers=self.headers, timeout=120
        )
        answer.raise_for_status()
        self.id = answer.json()["id"]
        self.session = uuid.uuid4().hex

    def _message(self, code: str) -> dict[str, Any]:
        return {
            "header": {
                "msg_id": uuid.uuid4().hex,
                "username": "test",
                "session": self.session,
                "msg_type": "execute_request",
                "version": "5.3",
                "date": datetime.now(UTC).isoformat(),
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            "channel": "shell",
            "buffers": [],
        }

    async def _run(self, code: str, timeout: float) -> str:
        url = self.base.replace("http", "ws", 1) + f"api/kernels/{self.id}/channels"
        conn = await websocket_connect(HTTPRequest(url, headers=self.headers))
        try:
            message = self._message(code)
            await conn.write_message(json.dumps(message))
            out: list[str] = []
            error: tuple[str, str, list[str]] | None = None
            idle = replied = False
            while not (idle and replied):
                raw = await asyncio.wait_for(conn.read_message(), timeout)
                if raw is None:
                    raise ConnectionError("the kernel's websocket closed")
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != message["header"]["msg_id"]:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind in ("execute_result", "display_data"):
                    out.append(content["data"].get("text/plain", "") + "\n")
                elif kind == "error":
                    error = (content["ename"], content["evalue"], content.get("traceback", []))
                elif kind == "status" and content["execution_state"] == "idle":
                    idle = True
                elif kind == "execute_reply":
                    replied = True
            text = "".join(out)
            if error is not None:
                raise KernelError(error[0], error[1], text, error[2])
            return text
        finally:
            conn.close()
            # Wait for the close handshake so the socket is closed before the loop ends.
            while await asyncio.wait_for(conn.read_message(), 30) is not None:
                pass

    def run(self, code: str, timeout: float = 300) -> str:
        """Execute ``code``; return what it printed, or raise :class:`KernelError`."""
        return asyncio.run(self._run(code, timeout))

    def close(self) -> None:
        requests.delete(self.base + f"api/kernels/{self.id}", headers=self.headers, timeout=60)
