"""A read-only Zarr v3 store that reads a dataset through the site's data gate.

Inside a researcher's server there is no path to the stores, only the gate's
URL (``$INSITU_GATE_URL``) and the user's JupyterHub token
(``$JUPYTERHUB_API_TOKEN``), both set by the hub. :class:`GateStore` turns
zarr's key reads into HTTP requests with that token, so
``insitu.datasets.reader.Dataset(GateStore(...))`` reads exactly what
``Dataset(LocalStore(path))`` reads on the node, and every read passes the
gate's access check and lands in the audit log.

Whole-key reads that zarr issues together (it reads the chunks of a selection
concurrently) leave as one multi-key request (``POST batch/...``, framing in
:mod:`insitu.gate_batch`): the gate checks the token, the approval and the
version once per batch and ledgers every key, and each chunk is handed to zarr
as its frame arrives, so decoding overlaps the transfer. Reads of a byte range,
``exists`` and ``getsize`` stay one request each.

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
from collections.abc import AsyncIterator, Callable, Iterable
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

from insitu import gate_batch
from insitu.errors import BatchTooLargeError, ConfigError, DatasetNotFoundError, ServiceError
from insitu.http import raise_for_status

__all__ = ["GateStore"]

KEY_MISSING = "KeyMissingError"
GATE = "the site's gate"
TIMEOUT = 60
# Keys per multi-key request; such requests under way at once per event loop; and how
# many gets must wait before a second one starts while one is under way (else they wait
# for it to end). zarr keeps only 10 chunk reads going per selection (async.concurrency),
# so batches are small after the first; a second request in flight hides the round trip.
# Measured in bench/bench_gate.py (BENCHMARKS.md, "Gate").
BATCH_KEYS = 64
BATCHES_IN_FLIGHT = 2
BATCH_MIN_BUSY = 4

# A batch is a read: retried like a GET (urllib3 retries no POST by default).
_BATCH_RETRIES = urllib3.Retry(
    total=2, redirect=0, status=0, raise_on_status=False, allowed_methods=None
)

Deliver = Callable[[int, "bytes | None"], None]


def _env(name: str, what: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise ConfigError(
            f"${name} is not set: {what} (the hub sets it in every user server; on the node "
            "itself insitu reads stores directly)"
        )
    return value


class _Batcher:
    """Gathers the whole-key gets of one event loop into multi-key requests.

    Gets issued in the same turn of the loop go out together; while a request is
    under way, new gets wait until ``BATCH_MIN_BUSY`` of them can start another (at
    most ``BATCHES_IN_FLIGHT``) or it ends.
    ``fetch(keys, deliver)`` runs in a worker thread and calls ``deliver(index,
    data)`` per frame, which resolves that key's get in the loop at once.
    """

    def __init__(self, fetch: Callable[[list[str], Deliver], None]) -> None:
        self._fetch = fetch
        self._waiting: list[tuple[str, asyncio.Future[bytes | None]]] = []
        self._in_flight = 0
        self._scheduled = False

    async def get(self, key: str) -> bytes | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        self._waiting.append((key, future))
        self._schedule(loop)
        return await future

    def _ready(self) -> bool:
        if not self._waiting or self._scheduled or self._in_flight >= BATCHES_IN_FLIGHT:
            return False
        return self._in_flight == 0 or len(self._waiting) >= BATCH_MIN_BUSY

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._ready():
            self._scheduled = True
            loop.call_soon(self._send, loop)  # after the other gets of this turn

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        batch = [(k, f) for k, f in self._waiting[:BATCH_KEYS] if not f.done()]
        del self._waiting[:BATCH_KEYS]
        if batch:
            self._in_flight += 1
            sent = loop.run_in_executor(None, self._run, loop, batch)
            sent.add_done_callback(lambda _: self._done(loop))
        self._schedule(loop)

    def _done(self, loop: asyncio.AbstractEventLoop) -> None:
        self._in_flight -= 1
        self._schedule(loop)

    def _run(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[str, asyncio.Future[bytes | None]]],
    ) -> None:
        def deliver(index: int, data: bytes | None) -> None:
            loop.call_soon_threadsafe(_resolve, batch[index][1], data)

        try:
            self._fetch([key for key, _ in batch], deliver)
        except BaseException as exc:  # every get still waiting fails with the gate's error
            for _, future in batch:
                loop.call_soon_threadsafe(_fail, future, exc)


def _resolve(future: asyncio.Future[bytes | None], data: bytes | None) -> None:
    if not future.done():
        future.set_result(data)


def _fail(future: asyncio.Future[bytes | None], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


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
        where = f"{quote(dataset, safe='')}/{quote(self.version, safe='')}"
        self._base = f"{self.url}stores/{where}/"
        self._batch_url = f"{self.url}batch/{where}"
        self._batching = True  # until a gate without the batch route answers 405

    def _open_pool(self) -> None:
        retries = urllib3.Retry(total=2, redirect=0, status=0, raise_on_status=False)
        self._pool = urllib3.PoolManager(maxsize=32, block=False, retries=retries)
        weakref.finalize(self, self._pool.clear)
        # One batcher per event loop that reads (zarr's own, a test's, a dask worker's).
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = (
            weakref.WeakKeyDictionary()
        )

    def __getstate__(self) -> dict[str, Any]:
        # dask ships stores to gateway workers: the connection pool stays behind
        # (sockets do not pickle); the worker opens its own.
        state = self.__dict__.copy()
        del state["_pool"], state["_batchers"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open_pool()

    def _request(
        self, method: str, url: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> urllib3.BaseHTTPResponse:
        try:
            return self._pool.request(
                method, url, headers={**self._headers, **(headers or {})}, timeout=TIMEOUT, **kwargs
            )
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> ServiceError:
        return ServiceError(
            f"the site's gate at {self.url} does not answer ({type(exc).__name__}): ask the "
            "site's admin whether the hub is up (`insitu status`)"
        )

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
        if byte_range is None:
            data = await self._batcher().get(key)
        else:
            data = await asyncio.to_thread(self._get_sync, key, byte_range)
        return None if data is None else prototype.buffer.from_bytes(data)

    def _batcher(self) -> _Batcher:
        loop = asyncio.get_running_loop()
        found = self._batchers.get(loop)
        if found is None:
            found = self._batchers[loop] = _Batcher(self._get_many_sync)
        return found

    def _get_many_sync(self, keys: list[str], deliver: Deliver) -> None:
        """Whole keys in one request (worker thread); halves a batch the gate finds too
        large, and reads key by key from a gate without the batch route."""
        if not self._batching:
            self._get_each_sync(keys, deliver)
            return
        response = self._request(
            "POST",
            self._batch_url,
            {"Content-Type": "application/json"},
            body=json.dumps({"keys": keys}).encode(),
            preload_content=False,
            retries=_BATCH_RETRIES,
        )
        finished = False
        try:
            if response.status in (404, 405) and not response.headers.get("X-Insitu-Error"):
                self._batching = False  # an older gate: no batch route
                self._get_each_sync(keys, deliver)
            elif response.status >= 400:
                self._check(response)
            else:
                for index, data in gate_batch.read_frames(response.read, keys):
                    deliver(index, data)
            finished = True
        except BatchTooLargeError:
            if len(keys) == 1:
                self._get_each_sync(keys, deliver)
            else:
                half = len(keys) // 2
                self._get_many_sync(keys[:half], deliver)
                self._get_many_sync(keys[half:], lambda i, d: deliver(half + i, d))
            finished = True
        except urllib3.exceptions.HTTPError as exc:
            raise self._unreachable(exc) from None
        finally:
            if not finished:
                response.close()  # a connection cut mid-answer is never reused
            response.release_conn()

    def _get_each_sync(self, keys: list[str], deliver: Deliver) -> None:
        for index, key in enumerate(keys):
            deliver(index, self._get_sync(key, None))

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
