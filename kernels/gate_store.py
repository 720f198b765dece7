"""A read-only Zarr v3 store that reads a dataset through the site's data gate.

Inside a researcher's server there is no path to the stores, only the gate's
URL (``$INSITU_GATE_URL``) and the user's JupyterHub token
(``$JUPYTERHUB_API_TOKEN``), both set by the hub. :class:`GateStore` turns
zarr's key reads into HTTP requests with that token, so
``insitu.datasets.reader.Dataset(GateStore(...))`` reads exactly what
``Dataset(LocalStore(path))`` reads on the node, and every read passes the
gate's access check and lands in the audit log.

The gate's refusals become insitu errors carrying the gate's reason:
401 -> AuthenticationError, 403 -> AccessDeniedError (how to request access,
the expiry date), 404 -> DatasetNotFoundError; a missing key is simply absent.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype

from insitu.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigError,
    DatasetNotFoundError,
    InvalidRequestError,
    ServiceError,
)

__all__ = ["GateStore", "gate_session", "raise_for_gate"]

KEY_MISSING = "KeyMissingError"
TIMEOUT = 60


def gate_session(token: str, pool: int = 32) -> requests.Session:
    """An HTTP session that sends the hub token and keeps connections alive."""
    session = requests.Session()
    session.headers["Authorization"] = f"token {token}"
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def raise_for_gate(response: requests.Response) -> None:
    """Turn a gate (or access service) refusal into the matching insitu error."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
        message = body.get("message") or response.reason
    except ValueError:
        message = response.reason or str(response.status_code)
    status = response.status_code
    if status == 401:
        raise AuthenticationError(
            f"the site's gate does not accept this server's token ({message}); restart your "
            "server from the hub home page"
        )
    if status == 403:
        raise AccessDeniedError(message)
    if status == 404:
        raise DatasetNotFoundError(message)
    if status == 400:
        raise InvalidRequestError(message)
    raise ServiceError(f"the site's gate answered {status}: {message}")


def _env(name: str, what: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ConfigError(
            f"${name} is not set: {what} (the hub sets it in every user server; on the node "
            "itself insitu reads stores directly)"
        )
    return value


class GateStore(Store):
    """Read-only access to one dataset version through the gate."""

    supports_writes = False
    supports_deletes = False
    supports_partial_writes = False
    supports_listing = True

    def __init__(
        self,
        dataset: str,
        version: str | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
    ) -> None:
        super().__init__(read_only=True)
        self.url = (url or _env("INSITU_GATE_URL", "the gate's URL")).rstrip("/") + "/"
        token = token or _env("JUPYTERHUB_API_TOKEN", "the hub token of this server")
        self._session = gate_session(token)
        weakref.finalize(self, self._session.close)
        self.dataset = dataset
        # Pin "latest" once, so every key of this store comes from one version.
        info = self._get_json(f"datasets/{quote(dataset, safe='')}")
        self.version = info["newest"] if version in (None, "latest") else version
        if self.version not in info["versions"]:
            raise DatasetNotFoundError(
                f"dataset {dataset!r} has no version {self.version!r}; versions: "
                + ", ".join(info["versions"])
            )
        self._base = f"{self.url}stores/{quote(dataset, safe='')}/{quote(self.version, safe='')}/"
        self._is_open = True

    def _get_json(self, path: str, **params: str) -> Any:
        response = self._session.get(self.url + path, params=params or None, timeout=TIMEOUT)
        raise_for_gate(response)
        return response.json()

    def __repr__(self) -> str:
        return f"GateStore({self.dataset!r}, {self.version!r}, url={self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GateStore) and (other.url, other.dataset, other.version) == (
            self.url,
            self.dataset,
            self.version,
        )

    def __hash__(self) -> int:
        return hash((self.url, self.dataset, self.version))

    def with_read_only(self, read_only: bool = False) -> GateStore:
        if not read_only:
            raise ValueError("a GateStore is read-only: data at a site is never changed remotely")
        return self

    # --- reading ---------------------------------------------------------------

    def _fetch(self, key: str, byte_range: ByteRequest | None, method: str) -> requests.Response:
        headers = {}
        if isinstance(byte_range, RangeByteRequest):
            if byte_range.end <= byte_range.start:
                headers["Range"] = f"bytes={byte_range.start}-{byte_range.start}"
            else:
                headers["Range"] = f"bytes={byte_range.start}-{byte_range.end - 1}"
        elif isinstance(byte_range, OffsetByteRequest):
            headers["Range"] = f"bytes={byte_range.offset}-"
        elif isinstance(byte_range, SuffixByteRequest):
            headers["Range"] = f"bytes=-{byte_range.suffix}"
        return self._session.request(
            method, self._base + quote(key, safe="/"), headers=headers, timeout=TIMEOUT
        )

    @staticmethod
    def _missing(response: requests.Response) -> bool:
        if response.status_code != 404:
            return False
        if not response.content:  # HEAD: no body; the gate says which 404 in a header
            return response.headers.get("X-Insitu-Error") == KEY_MISSING
        try:
            return bool(response.json().get("error") == KEY_MISSING)
        except ValueError:
            return False

    def _get_sync(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        response = self._fetch(key, byte_range, "GET")
        if self._missing(response):
            return None
        raise_for_gate(response)
        data = response.content
        if isinstance(byte_range, RangeByteRequest) and byte_range.end <= byte_range.start:
            return b""
        return data

    async def get(
        self,
        key: str,
        prototype: BufferPrototype,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        data = await asyncio.to_thread(self._get_sync, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(
            await asyncio.gather(*(self.get(key, prototype, rng) for key, rng in key_ranges))
        )

    def _head(self, key: str) -> requests.Response:
        return self._fetch(key, None, "HEAD")

    async def exists(self, key: str) -> bool:
        response = await asyncio.to_thread(self._head, key)
        if self._missing(response):
            return False
        raise_for_gate(response)
        return True

    async def getsize(self, key: str) -> int:
        response = await asyncio.to_thread(self._head, key)
        if self._missing(response):
            raise FileNotFoundError(key)
        raise_for_gate(response)
        return int(response.headers["Content-Length"])

    # --- listing -------------------------------------------------------------

    def _list_sync(self, prefix: str, children: bool) -> list[str]:
        params = {"prefix": prefix}
        if children:
            params["dir"] = "1"
        path = f"list/{quote(self.dataset, safe='')}/{quote(self.version, safe='')}"
        keys: list[str] = self._get_json(path, **params)["keys"]
        return keys

    async def list(self) -> AsyncIterator[str]:  # type: ignore[override]
        for key in await asyncio.to_thread(self._list_sync, "", False):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        for key in await asyncio.to_thread(self._list_sync, "", False):
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        for key in await asyncio.to_thread(self._list_sync, prefix.rstrip("/"), True):
            yield key

    # --- writing is refused ------------------------------------------------------

    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()

    async def delete(self, key: str) -> None:
        self._check_writable()

    def close(self) -> None:
        self._session.close()
        super().close()
