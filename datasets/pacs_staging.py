"""Staging folders under ``private/staging`` for instances fetched or received.

A file appears under its final name only once complete: it is written to a
hidden temporary name, flushed to disk and renamed (one atomic step), so a
file that exists is a whole instance and an interrupted transfer leaves at
most a temporary file, which the next run removes. Names are hashes: keyed
with the site key for pulled instances (the name must be known before the
fetch, so it comes from the UIDs) and of the content for received ones. No
name shows a UID or anything else from the header.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from insitu.config import NodeHome
from insitu.datasets.deid_keys import KeyedHasher
from insitu.errors import SourceError

__all__ = ["StagingArea", "pacs_area", "received_area"]

SUFFIX = ".dcm"
_PART = ".part"


class StagingArea:
    """One folder of complete DICOM files, written atomically."""

    def __init__(self, folder: Path, hasher: KeyedHasher | None = None) -> None:
        self.folder = folder
        self._hasher = hasher

    def _ensure(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path_for(self, key: str) -> Path:
        """The file a keyed name gives ``key`` (e.g. the instance's UIDs)."""
        assert self._hasher is not None, "a keyed staging area needs the site key"
        return self.folder / (self._hasher.digest("pacs-staging", key).hex()[:40] + SUFFIX)

    def has(self, key: str) -> bool:
        path = self.path_for(key)
        return path.is_file() and path.stat().st_size > 0

    def files(self) -> list[Path]:
        """Every complete file, in name order."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.suffix == SUFFIX and p.is_file())

    def write(self, target: Path, data: bytes) -> Path:
        """Write ``data`` to ``target`` via a temporary file and a rename."""
        self._ensure()
        tmp = self.folder / f".{target.name}.{os.getpid()}{_PART}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(target)
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SourceError(
                f"cannot write to the staging folder {self.folder}: {exc.strerror or exc} "
                "(disk full or permissions?); what was staged before is kept"
            ) from None
        return target

    def write_keyed(self, key: str, data: bytes) -> Path:
        return self.write(self.path_for(key), data)

    def write_content(self, data: bytes) -> Path:
        """Stage received bytes under the hash of their content (a resend is a no-op)."""
        target = self.folder / (hashlib.sha256(data).hexdigest()[:40] + SUFFIX)
        if target.is_file() and target.stat().st_size == len(data):
            return target
        return self.write(target, data)

    def remove_partials(self) -> int:
        """Delete temporary files an interrupted run left behind."""
        if not self.folder.is_dir():
            return 0
        stale = [p for p in self.folder.iterdir() if p.name.startswith(".") and p.suffix == _PART]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def discard(self, paths: list[Path]) -> None:
        """Delete staged originals once they are in a published (or unchanged) version."""
        for path in paths:
            path.unlink(missing_ok=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One writer per staging folder; a second one gets a clear error, not a race."""
        self._ensure()
        with open(self.folder / ".lock", "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SourceError(
                    f"another insitu process is using the staging folder {self.folder}: "
                    "wait for it to finish (or stop it) and run this again"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def pacs_area(home: NodeHome, fingerprint: str) -> StagingArea:
    """``private/staging/pacs/<source fingerprint>/``, names keyed with the site key."""
    return StagingArea(home.staging / "pacs" / fingerprint, KeyedHasher(home.site_key()))


def received_area(home: NodeHome, dataset: str) -> StagingArea:
    """``private/staging/received/<dataset>/``: what ``insitu receive`` accepted."""
    return StagingArea(home.staging / "received" / dataset)
