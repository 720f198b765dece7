"""A read-only Zarr v3 store that reads a dataset through the site's data gate.

Inside a researcher's server there is no path to the stores, only the gate's
URL (``$INSITU_GATE_URL``) and the user's JupyterHub token
(``$JUPYTERHUB_API_TOKEN``), both set by the hub. :class:`GateStore` turns
zarr's key reads into HTTP requests with that token, so
``insitu.datasets.reader.Dataset(GateStore(...))`` reads exactly what
``Dataset(LocalStore(path))`` reads on the node, and every read passes the
gate's access check and lands in the audit log.

The gate's refusals become the insitu errors the gate raised, with its reason
(``insitu.http.raise_for_status``): 401 AuthenticationError, 403
AccessDeniedError (how to request access, the expiry date), 404
DatasetNotFoundError, 410 VersionRetiredError (when and why it was retired); a
missing key is simply absent.
"""

from __future__ import annotations

import asyncio
import json
import os
import weakref
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import quote, urlencode

import urllib3
from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype

from insitu.errors import ConfigError, DatasetNotFoundError, ServiceError
from insitu.http import raise_for_status

__all__ = ["GateStore"]

KEY_MISSING = "KeyMissingError"
GATE = "the site's gate"
TIMEOUT = 60


def _env(name: str, what: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ConfigError(
            f"${name} is not set: {what} (the hub sets it in every user server; on the node "
            "itself insitu reads stores directly)"
        )
    return value


class GateStore(Store):
    """Read-only access to one dataset version through the gate.

    It passes zarr's own store conformance tests (``zarr.testing.store.StoreTests``,
    tests/test_gate_store_conformance.py) against a real gate, every write refused.
    Reads need no ``open()``: the version is pinned when the store is made.
    """

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
        read_only: bool = True,
    ) -> None:
        if not read_only:
            raise ValueError("a GateStore is read-only: data at a site is never changed remotely")
        super().__init__(read_only=True)
        self.url = (url or _env("INSITU_GATE_URL", "the gate's URL")).rstrip("/") + "/"
        token = token or _env("JUPYTERHUB_API_TOKEN", "the hub token of this server")
        # urllib3 directly: one read per body, keep-alive, thread-safe pool.
        self._headers = {"Authorization": f"token {token}"}
        self._open_pool()
        self.dataset = dataset
        # Pin "latest" once, so every key of this store comes from one version.
        info = self._gate_json(f"datasets/{quote(dataset, safe='')}")
        self.version = info["newest"] if version in (None, "latest") else version
        if self.version in info.get("retired", []):
            # The gate says when and why (410 -> VersionRetiredError).
            self._gate_json(f"stores/{quote(dataset, safe='')}/{quote(self.version, safe='')}/")
        if self.version not in info["versions"]:
            raise DatasetNotFoundError(
                f"dataset {dataset!r} has no version {self.version!r}; versions: "
                + ", ".join(info["versions"])
            )
        self._base = f"{self.url}stores/{quote(dataset, safe='')}/{quote(self.version, safe='')}/"

    def _open_pool(self) -> None:
        retries = urllib3.Retry(total=2, redirect=0, status=0, raise_on_status=False)
        self._pool = urllib3.PoolManager(maxsize=32, block=False, retries=retries)
        weakref.finalize(self, self._pool.clear)

    def __getstate__(self) -> dict[str, Any]:
        # dask ships stores to gateway workers: the connection pool stays behind
        # (sockets do not pickle); the worker opens its own.
        state = self.__dict__.copy()
        del state["_pool"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open_pool()

    def _request(
        self, method: str, url: str, headers: dict[str, str] | None = None
    ) -> urllib3.BaseHTTPResponse:
        try:
            return self._pool.request(
                method, url, headers={**self._headers, **(headers or {})}, timeout=TIMEOUT
            )
        except urllib3.exceptions.HTTPError as exc:
            raise ServiceError(
                f"the site's gate at {self.url} does not answer ({type(exc).__name__}): ask the "
                "site's admin whether the hub is up (`insitu status`)"
            ) from None

    def _gate_json(self, path: str, **params: str) -> Any:
        url = self.url + path
        if params:
            url += "?" + urlencode(params)
        response = self._request("GET", url)
        raise_for_status(
            response.status,
            response.data,
            response.reason or "",
            error=response.headers.get("X-Insitu-Error", ""),
            service=GATE,
        )
        return json.loads(response.data)

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

    def _fetch(
        self, key: str, byte_range: ByteRequest | None, method: str
    ) -> urllib3.BaseHTTPResponse:
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
        elif byte_range is not None:
            raise TypeError(f"Unexpected byte_range, got {byte_range!r}")
        return self._request(method, self._base + quote(key, safe="/"), headers)

    @staticmethod
    def _missing(response: urllib3.BaseHTTPResponse) -> bool:
        # The gate names the kind of 404 in a header (HEAD answers have no body).
        return response.status == 404 and response.headers.get("X-Insitu-Error") == KEY_MISSING

    @staticmethod
    def _check(response: urllib3.BaseHTTPResponse) -> None:
        raise_for_status(
            response.status,
            response.data,
            response.reason or "",
            error=response.headers.get("X-Insitu-Error", ""),
            service=GATE,
        )

    def _get_sync(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        response = self._fetch(key, byte_range, "GET")
        if self._missing(response):
            return None
        self._check(response)
        data: bytes = response.data
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

    def _head(self, key: str) -> urllib3.BaseHTTPResponse:
        return self._fetch(key, None, "HEAD")

    async def exists(self, key: str) -> bool:
        response = await asyncio.to_thread(self._head, key)
        if self._missing(response):
            return False
        self._check(response)
        return True

    async def getsize(self, key: str) -> int:
        response = await asyncio.to_thread(self._head, key)
        if self._missing(response):
            raise FileNotFoundError(key)
        self._check(response)
        return int(response.headers["Content-Length"])

    # --- listing -------------------------------------------------------------

    def _list_sync(self, prefix: str, children: bool) -> list[str]:
        params = {"prefix": prefix}
        if children:
            params["dir"] = "1"
        path = f"list/{quote(self.dataset, safe='')}/{quote(self.version, safe='')}"
        keys: list[str] = self._gate_json(path, **params)["keys"]
        return keys

    async def list(self) -> AsyncIterator[str]:
        for key in await asyncio.to_thread(self._list_sync, "", False):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in await asyncio.to_thread(self._list_sync, "", False):
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        for key in await asyncio.to_thread(self._list_sync, prefix.rstrip("/"), True):
            yield key

    # --- writing is refused ------------------------------------------------------

    async def set(self, key: str, value: Buffer) -> None:
        self._check_writable()

    async def delete(self, key: str) -> None:
        self._check_writable()

    def close(self) -> None:
        self._pool.clear()
        super().close()
