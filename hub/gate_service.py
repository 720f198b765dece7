"""The data gate: serves a store's Zarr keys to approved users only.

Routes under the service prefix (``/services/gate/``):

    GET       datasets                         the catalog, with my access to each
    GET       datasets/<dataset>               versions, newest, retired versions, my access
    GET|HEAD  stores/<dataset>/<version>/<key> one Zarr key (Range requests honoured)
    POST      batch/<dataset>/<version>        several whole keys, {"keys": [...]}, in one
                                               answer (framing: insitu.gate_batch)
    GET       list/<dataset>/<version>?prefix=P[&dir=1]   keys under P (or its children)
    GET       health                           unauthenticated liveness for `insitu up`

``<version>`` may be ``latest``. Each store request is authenticated with the
user's JupyterHub token (401 without a valid one), the dataset must exist
(404), not retired (410 Gone, saying when and why; asked on every read),
:func:`insitu.hub.access.check_read` must pass *now* (403, with the
reason as JSON; nothing is cached, so a revocation stops the next read), and
the key must name a file inside the store after resolving symlinks (400 for a
malformed key, 404 otherwise). A batch passes the same checks once, before its
first byte, and every key in it is confined the same way (one malformed key
refuses the whole batch, an absent one is answered as missing); it is bounded by
``insitu.gate_batch.MAX_KEYS`` and ``MAX_BYTES`` (413). Reads and refusals are summed by a
:class:`~insitu.hub.read_ledger.ReadLedger` and flushed to the audit log every
``INSITU_GATE_FLUSH_SECONDS`` (default 30) and at shutdown.

Responses never carry a file-system path: user servers learn keys only.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from tornado import ioloop, iostream, web

from insitu import gate_batch
from insitu.config import NodeHome
from insitu.datasets.listing import published_datasets
from insitu.errors import (
    AccessDeniedError,
    BatchTooLargeError,
    DatasetNotFoundError,
    InvalidRequestError,
    VersionRetiredError,
)
from insitu.hub import access, stores
from insitu.hub.read_ledger import ReadLedger
from insitu.hub.service_app import ServiceHandler, app_settings, oauth_routes, run_service
from insitu.hub.services import HubService, ServiceContext

__all__ = ["hub_service", "make_app"]

NAME = "gate"
# zarr reads at most async.concurrency (default 10) chunks of a selection at once; in a
# user server every store is behind the gate, where more chunks under way make larger
# multi-key requests (bench/BENCHMARKS.md, "Gate": 10 -> 32 cut the gate's CPU per
# series by more than half). Researchers may still set their own.
USER_ZARR_CONCURRENCY = 32
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class KeyMissingError(DatasetNotFoundError):
    """The store has no such key (zarr treats this as 'absent', not as an error)."""


class _GateHandler(ServiceHandler):
    @property
    def ledger(self) -> ReadLedger:
        ledger: ReadLedger = self.settings["ledger"]
        return ledger

    def store(self, dataset: str, version: str) -> tuple[str, Path]:
        """(concrete version, root) for a published store; cached for fixed versions."""
        cache: dict[tuple[str, str], tuple[str, Path]] = self.settings["store_cache"]
        try:
            if version != stores.LATEST and (dataset, version) in cache:
                check_not_retired(self.home, dataset, version)
                return cache[(dataset, version)]
            resolved = stores.resolve(self.home, dataset, version)
        except VersionRetiredError:
            self.ledger.refuse(self.user, dataset, "retired")
            raise
        cache[(dataset, resolved[0])] = resolved
        return resolved

    def check(self, dataset: str) -> access.Request:
        try:
            return access.check_read(self.home, self.user, dataset)
        except AccessDeniedError as exc:
            state, _ = access.status_for(self.home, self.user, dataset)
            # An approval that still stands was refused because the account is gone.
            self.ledger.refuse(self.user, dataset, "no-account" if state == "approved" else state)
            raise exc from None


def check_not_retired(home: NodeHome, dataset: str, version: str) -> None:
    """VersionRetiredError if ``version`` was retired; asked on every read (the store
    path is cached, this answer never: a retirement stops the very next read)."""
    from insitu.datasets.catalog import RETIREMENTS_SCHEMA, retired_error, retirement_on

    with access.node_db(home, home.catalog_path, RETIREMENTS_SCHEMA) as conn:
        row = retirement_on(conn, dataset, version)
    if row is not None:
        raise retired_error(row)


def _describe(home: NodeHome, user: str, row: dict[str, Any]) -> dict[str, Any]:
    state, found = access.status_for(home, user, row["name"])
    return row | {
        "access": state,
        "request": found.id if found else None,
        "expires": found.expires_at if found and state in ("approved", "expired") else None,
    }


class DatasetsHandler(_GateHandler):
    async def get(self) -> None:
        self.write_json([_describe(self.home, self.user, r) for r in published_datasets(self.home)])


class DatasetHandler(_GateHandler):
    async def get(self, dataset: str) -> None:
        versions = stores.list_versions(self.home, dataset)
        row = {
            "name": dataset,
            "versions": versions,
            "newest": versions[-1],
            "retired": stores.retired_versions(self.home, dataset),
        }
        self.write_json(_describe(self.home, self.user, row))


class KeyHandler(_GateHandler):
    def compute_etag(self) -> None:
        # Keys of a published version never change; hashing every chunk would cost more
        # than reading it.
        return None

    async def get(self, dataset: str, version: str, key: str) -> None:
        self._serve(dataset, version, key, body=True)

    async def head(self, dataset: str, version: str, key: str) -> None:
        self._serve(dataset, version, key, body=False)

    def _serve(self, dataset: str, version: str, key: str, *, body: bool) -> None:
        version, root = self.store(dataset, version)
        self.check(dataset)
        found = stores.key_file(os.path.realpath(root), key)
        if found is None:
            raise KeyMissingError(f"no key {key!r} in {dataset} {version}")
        path, size = found
        start, end = self._range(size)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Accept-Ranges", "bytes")
        self.set_header("X-Insitu-Version", version)
        if (start, end) != (0, size):
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{max(end - 1, start)}/{size}")
        self.set_header("Content-Length", str(end - start))
        if not body:
            self.finish()
            return
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start)
        self.ledger.record(self.user, dataset, version, key, len(data))
        self.finish(data)

    def _range(self, size: int) -> tuple[int, int]:
        header = self.request.headers.get("Range")
        if not header:
            return 0, size
        match = _RANGE.match(header.strip())
        if not match or match.groups() == ("", ""):
            raise InvalidRequestError(f"unsupported Range {header!r}: use bytes=a-b, a- or -n")
        first, last = match.groups()
        if first == "":
            return max(size - int(last), 0), size
        start = int(first)
        end = size if last == "" else min(int(last) + 1, size)
        if start > size or end < start:
            raise InvalidRequestError(f"Range {header!r} lies outside the {size}-byte key")
        return start, end


class BatchHandler(_GateHandler):
    """Whole keys of one store in one answer: the per-request cost (HTTP, token, access
    and retirement checks) is paid once per batch instead of once per chunk."""

    async def post(self, dataset: str, version: str) -> None:
        version, root = self.store(dataset, version)
        self.check(dataset)
        keys = _batch_keys(self.json_body())
        real_root = os.path.realpath(root)
        files = [stores.key_file(real_root, key) for key in keys]  # a malformed key: 400
        total = sum(found[1] for found in files if found)
        if total > gate_batch.MAX_BYTES:
            raise BatchTooLargeError(
                f"these {len(keys)} keys hold {total} bytes, more than the "
                f"{gate_batch.MAX_BYTES} one answer carries: ask for fewer keys at a time"
            )
        self.set_header("Content-Type", gate_batch.CONTENT_TYPE)
        self.set_header("X-Insitu-Version", version)
        # A known length (sizes from the check above) spares chunked encoding's copies;
        # a file that changed size since would cut the answer short, never shift it.
        self.set_header("Content-Length", str(gate_batch.answer_length(keys, files)))
        self.write(gate_batch.MAGIC)
        try:
            for key, found in zip(keys, files, strict=True):
                data = _read(found)
                if data is not None:
                    self.ledger.record(self.user, dataset, version, key, len(data))
                self.write(gate_batch.key_frame(key, data))
                if data:
                    self.write(data)
                await self.flush()  # stream: the client decodes a chunk while the next comes
        except iostream.StreamClosedError:
            return  # the reader went away; what was sent is in the ledger
        self.finish(gate_batch.end_frame(len(keys)))


def _batch_keys(body: dict[str, Any]) -> list[str]:
    keys = body.get("keys")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise InvalidRequestError('a batch is {"keys": ["zarr.json", ...]}: a list of key names')
    if len(keys) > gate_batch.MAX_KEYS:
        raise BatchTooLargeError(
            f"a batch asks for at most {gate_batch.MAX_KEYS} keys, not {len(keys)}: ask for "
            "fewer keys at a time"
        )
    return keys


def _read(found: tuple[str, int] | None) -> bytes | None:
    if found is None:
        return None
    with open(found[0], "rb") as fh:
        return fh.read(found[1])


class ListHandler(_GateHandler):
    async def get(self, dataset: str, version: str) -> None:
        version, root = self.store(dataset, version)
        self.check(dataset)
        prefix = self.get_argument("prefix", "").strip("/")
        children = self.get_argument("dir", "") in ("1", "true")
        base = root
        if prefix:
            try:
                base = stores.key_path(root, prefix)
            except DatasetNotFoundError:
                self.write_json({"keys": []})
                return
        keys = _children(root, base) if children else _walk(root, base)
        self.write_json({"version": version, "keys": keys})


def _walk(root: Path, base: Path) -> list[str]:
    found: list[str] = []
    for folder, dirs, files in os.walk(base, followlinks=False):
        dirs[:] = [d for d in dirs if not Path(folder, d).is_symlink()]
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def _children(root: Path, base: Path) -> list[str]:
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if not p.is_symlink())


class HealthHandler(web.RequestHandler):
    def get(self) -> None:
        self.finish({"ok": True, "service": NAME})


def _log_refusals(handler: web.RequestHandler) -> None:
    """Log refusals and errors only: reads are accounted in the audit log, and a
    log line per chunk would cost more than serving it."""
    status = handler.get_status()
    if status >= 400:
        request = handler.request
        logging.getLogger("tornado.access").warning(
            "%d %s %s %.1fms", status, request.method, request.path, 1000 * request.request_time()
        )


def make_app(home: NodeHome, prefix: str, ledger: ReadLedger | None = None) -> web.Application:
    segment = r"([^/]+)"
    routes: list[Any] = [
        (prefix + "health", HealthHandler),
        (prefix + "datasets", DatasetsHandler),
        (prefix + f"datasets/{segment}", DatasetHandler),
        (prefix + f"stores/{segment}/{segment}/(.*)", KeyHandler),
        (prefix + f"batch/{segment}/{segment}", BatchHandler),
        (prefix + f"list/{segment}/{segment}/?", ListHandler),
        *oauth_routes(prefix),
    ]
    settings = app_settings(home, prefix) | {
        "ledger": ledger or ReadLedger(home),
        "store_cache": {},
        "log_function": _log_refusals,
        # A batch names at most MAX_KEYS keys of up to 1024 characters; nothing else is posted.
        "max_body_size": 2**20,
    }
    return web.Application(routes, **settings)


def main() -> None:
    ledger_holder: dict[str, ReadLedger] = {}
    access.keep_connections()  # asked on every read: reuse the connection, never the answer

    def build(home: NodeHome, prefix: str) -> web.Application:
        ledger = ReadLedger(home)
        ledger_holder["ledger"] = ledger
        seconds = float(os.environ.get("INSITU_GATE_FLUSH_SECONDS", "30"))
        ioloop.PeriodicCallback(lambda: _flush(ledger), seconds * 1000).start()
        return make_app(home, prefix, ledger)

    run_service(build, on_stop=lambda: _flush(ledger_holder["ledger"]))


def _flush(ledger: ReadLedger) -> None:
    """Write the summed reads to the audit log (the count of entries is not needed here)."""
    ledger.flush()


def hub_service(ctx: ServiceContext) -> HubService:
    """The gate as a hub-managed service; user servers get its URL, never a path."""
    port = ctx.port()
    env = {}
    if "INSITU_GATE_FLUSH_SECONDS" in os.environ:
        env["INSITU_GATE_FLUSH_SECONDS"] = os.environ["INSITU_GATE_FLUSH_SECONDS"]
    return HubService(
        name=NAME,
        command=[sys.executable, "-m", "insitu.hub.gate_service"],
        port=port,
        environment=env,
        user_environment={
            "INSITU_GATE_URL": f"http://127.0.0.1:{port}/services/{NAME}/",
            "ZARR_ASYNC__CONCURRENCY": str(USER_ZARR_CONCURRENCY),
        },
        ready_path="health",
    )


if __name__ == "__main__":
    main()
