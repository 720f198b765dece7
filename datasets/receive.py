"""``insitu receive``: a DICOM C-STORE receiver (pynetdicom) that feeds the normal ingest.

A PACS or modality pushes a trial's studies; each instance is written as it
arrives to ``private/staging/received/<dataset>/`` (temporary name, flush,
rename: a file there is always complete) and acknowledged only then. After
a quiet period (no instance for ``batch_seconds``), and once more on
shutdown, everything received for the dataset is ingested as the next
version. Versions are snapshots, so the received folder keeps every original
(in ``private/``) and each batch's version holds all of them; an unchanged
folder publishes nothing new. A receiver that was killed loses nothing: the
next start ingests what the folder holds.

The audit log gets one ``pacs.receive`` entry per batch, with counts only.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from insitu.config import NodeHome, resolve_home
from insitu.datasets.pacs_staging import received_area
from insitu.errors import IngestError, InsituError, ServiceError

__all__ = ["Receiver"]

STATUS_OK = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
_POLL = 0.2  # seconds between checks of the quiet period and the stop flag
_DRAIN = 30.0  # seconds to let associations in progress finish at shutdown


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Receiver:
    """A C-STORE SCP bound to one dataset; :meth:`serve` runs until ``stop`` is set."""

    def __init__(
        self,
        dataset: str,
        *,
        home: NodeHome | None = None,
        host: str = "127.0.0.1",
        port: int = 11112,
        ae_title: str = "INSITU",
        batch_seconds: float = 30.0,
        allowed_aes: tuple[str, ...] = (),
        echo: Callable[[str], None] = _stderr,
    ) -> None:
        from insitu.datasets.ingest import _DATASET_NAME  # the ingest's own rule for names

        if not _DATASET_NAME.match(dataset):
            raise IngestError(
                f"dataset name {dataset!r}: use 1-64 lower-case letters, digits, '.', '_' or '-'"
            )
        self.home = (home or resolve_home()).require_initialized()
        self.dataset = dataset
        self.host, self.port, self.ae_title = host, port, ae_title
        self.batch_seconds = batch_seconds
        self.allowed_aes = allowed_aes
        self.echo = echo
        self.area = received_area(self.home, dataset)
        self._lock = threading.Lock()
        self._new = 0  # instances received since the last batch started
        self._refused = 0  # instances that could not be staged (answered "out of resources")
        self._dirty = False  # the folder holds files no successful batch has ingested
        self._last = time.monotonic()
        self._ae: Any = None
        self._server: Any = None
        self.batches = 0

    # --- the C-STORE side (runs in pynetdicom's association threads) ---------

    def _on_store(self, event: Any) -> int:
        try:
            self.area.write_content(event.encoded_dataset(include_meta=True))
        except (InsituError, OSError, AttributeError, ValueError):
            with self._lock:
                self._refused += 1
            return STATUS_OUT_OF_RESOURCES  # the sender keeps it and may retry
        with self._lock:
            self._new += 1
            self._dirty = True
            self._last = time.monotonic()
        return STATUS_OK

    def start(self) -> tuple[str, int]:
        """Bind and start accepting associations; returns the bound (host, port)."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        self.area.remove_partials()
        if self.area.files():  # left by a run that stopped before its last batch
            self._dirty = True
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        if self.allowed_aes:
            ae.require_calling_aet = list(self.allowed_aes)
        try:
            self._server = ae.start_server(
                (self.host, self.port),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
            )
        except OSError as exc:
            raise ServiceError(
                f"cannot listen on {self.host}:{self.port} ({exc.strerror or exc}): choose "
                "another --port (or pacs.receive_port in insitu.toml)"
            ) from None
        self._ae = ae
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    # --- batches (main thread) ------------------------------------------------

    def _due(self) -> bool:
        with self._lock:
            return self._dirty and time.monotonic() - self._last >= self.batch_seconds

    def ingest_batch(self) -> dict[str, Any] | None:
        """Ingest everything received for the dataset; None when nothing is new."""
        from insitu.audit import AuditLog
        from insitu.datasets.ingest import ingest

        with self._lock:
            if not self._dirty:
                return None
            received, self._new = self._new, 0
            refused = self._refused
            self._dirty = False
        files = self.area.files()
        try:
            report = ingest([str(f) for f in files], self.dataset, home=self.home,
                            show_progress=False)  # fmt: skip
        except InsituError:
            with self._lock:
                self._dirty, self._new = True, self._new + received
                self._last = time.monotonic()  # try again after another quiet period
            raise
        self.batches += 1
        summary = {
            "status": report.status,
            "version": report.version,
            "received": received,
            "refused": refused,
            "files": len(files),
            "counts": report.counts(),
        }
        AuditLog(self.home).append(
            "pacs.receive", user=os.environ.get("USER"), dataset=self.dataset, **summary
        )
        counts = ", ".join(f"{n} {fate}" for fate, n in sorted(report.counts().items()))
        self.echo(
            f"batch {self.batches}: {received} instance(s) received, {len(files)} file(s) "
            f"ingested: {self.dataset} {report.version or ''} {report.status} ({counts})"
        )
        return summary

    def serve(self, stop: threading.Event) -> int:
        """Ingest after each quiet period until ``stop`` is set; then drain and ingest."""
        if self._server is None:
            self.start()
        failed = False
        while not stop.wait(_POLL):
            if self._due():
                try:
                    self.ingest_batch()
                except InsituError as exc:
                    self.echo(f"insitu receive: the batch was not ingested, kept for later: {exc}")
        self.close()
        try:
            self.ingest_batch()
        except InsituError as exc:
            self.echo(f"insitu receive: the last batch was not ingested (kept in staging): {exc}")
            failed = True
        return 1 if failed else 0

    def close(self) -> None:
        """Stop accepting; let associations in progress finish (up to 30 s)."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._ae is not None:
            deadline = time.monotonic() + _DRAIN
            while self._ae.active_associations and time.monotonic() < deadline:
                time.sleep(_POLL)
            self._ae.shutdown()
            self._ae = None
