"""Find DICOM inputs and read their headers: files, folders and .zip archives.

The walk never modifies or extracts a source: archive members are read into
memory. Every input gets one :class:`Scanned` record with its fate so far
(an image, skipped, or bad), so the ingest summary can list every file.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset as DicomDataset
from pydicom.errors import InvalidDicomError

__all__ = [
    "InputFile",
    "Scanned",
    "group_series",
    "quiet_pydicom",
    "read_full",
    "scan",
    "walk_inputs",
]

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# Derived objects go through `insitu ingest-derived` (insitu.datasets.derived).
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
DERIVED_REASON = (
    "a derived object (DICOM SEG or SR): add it with `insitu ingest-derived DATASET FILES`"
)
DEFLATED = "1.2.840.10008.1.2.1.99"


@dataclass(frozen=True)
class InputFile:
    """One input: a file on disk or a member of a zip archive (picklable)."""

    name: str  # what the admin recognises: a path, or "archive.zip!member"
    path: str
    member: str | None = None
    error: str = ""  # why it cannot be read at all (e.g. a broken archive)

    def read(self) -> bytes:
        if self.error:
            raise OSError(self.error)
        if self.member is None:
            return Path(self.path).read_bytes()
        with zipfile.ZipFile(self.path) as archive:
            return archive.read(self.member)


@dataclass
class Scanned:
    """What the header pass learnt about one input."""

    source: InputFile
    digest: str = ""  # sha256 of the file's bytes (input fingerprint, quarantine)
    size: int = 0
    kind: str = "image"  # image | skipped | bad
    reason: str = ""
    header: DicomDataset | None = field(default=None, repr=False)

    @property
    def series_uid(self) -> str:
        assert self.header is not None
        return str(self.header.get("SeriesInstanceUID", "") or "")


def _zip_inputs(path: Path) -> Iterator[InputFile]:
    with zipfile.ZipFile(path) as archive:
        members = sorted(i.filename for i in archive.infolist() if not i.is_dir())
    for member in members:
        yield InputFile(f"{path}!{member}", str(path), member)


def walk_inputs(paths: Iterable[str | os.PathLike[str]]) -> Iterator[InputFile]:
    """Every input file under ``paths`` (folders recursively, zips member by member)."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield from _one_path(Path(root) / name)
        elif path.exists():
            yield from _one_path(path)
        else:
            yield InputFile(str(path), str(path), error=f"{path}: no such file or folder")


def _one_path(path: Path) -> Iterator[InputFile]:
    if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
        try:
            yield from _zip_inputs(path)
        except (zipfile.BadZipFile, OSError) as exc:
            yield InputFile(str(path), str(path), error=f"unreadable zip archive: {exc}")
        return
    yield InputFile(str(path), str(path))


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings about odd but readable inputs (the report has the fate)."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.setLevel(level)


def _looks_like_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


def scan_one(source: InputFile) -> Scanned:
    """Read one input's header (no pixel data) and classify it."""
    item = Scanned(source)
    try:
        data = source.read()
    except (OSError, zipfile.BadZipFile, RuntimeError) as exc:
        item.kind, item.reason = "bad", f"unreadable: {exc}"
        return item
    item.size = len(data)
    item.digest = hashlib.sha256(data).hexdigest()
    if Path(source.name.split("!")[-1]).name.upper() == "DICOMDIR":
        item.kind, item.reason = "skipped", "DICOMDIR (a media index, not an image)"
        return item
    force = not _looks_like_dicom(data)
    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=force)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        if force:
            item.kind, item.reason = "skipped", "not a DICOM file"
        else:
            item.kind, item.reason = "bad", f"corrupt DICOM header: {type(exc).__name__}: {exc}"
        return item
    sop_class = str(
        header.get("SOPClassUID", "")
        or getattr(header, "file_meta", {}).get("MediaStorageSOPClassUID", "")
    )
    if force and not sop_class:
        item.kind, item.reason = "skipped", "not a DICOM file"
        return item
    if sop_class == DICOMDIR_SOP_CLASS:
        item.kind, item.reason = "skipped", "DICOMDIR (a media index, not an image)"
        return item
    if sop_class == SEG_SOP_CLASS or sop_class.startswith(SR_SOP_PREFIX):
        item.kind, item.reason = "skipped", DERIVED_REASON  # issue 6: insitu ingest-derived
        return item
    if "Rows" not in header or "Columns" not in header or not _has_pixel_data(data, header):
        item.kind = "bad"
        item.reason = f"not an image (SOP class {_sop_name(sop_class)}): insitu stores images"
        return item
    if not header.get("SeriesInstanceUID"):
        item.kind, item.reason = "bad", "no Series Instance UID: cannot group the image"
        return item
    item.header = header
    return item


def _sop_name(uid: str) -> str:
    try:
        return pydicom.uid.UID(uid).name or uid
    except (ValueError, TypeError):
        return uid or "unknown"


def _has_pixel_data(data: bytes, header: DicomDataset) -> bool:
    # stop_before_pixels drops (7FE0,0010); look for its tag bytes instead of parsing twice,
    # except in deflated files, whose bytes say nothing until inflated.
    meta = getattr(header, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") == DEFLATED:
        full = pydicom.dcmread(io.BytesIO(data))
        return "PixelData" in full or "FloatPixelData" in full
    little = b"\xe0\x7f\x10\x00"
    big = b"\x7f\xe0\x00\x10"
    return little in data or big in data or "FloatPixelData" in header


def scan(sources: Iterable[InputFile]) -> Iterator[Scanned]:
    for source in sources:
        with quiet_pydicom():
            yield scan_one(source)


def group_series(items: Iterable[Scanned]) -> dict[str, list[Scanned]]:
    """Images grouped by Series Instance UID, in input order."""
    groups: dict[str, list[Scanned]] = {}
    for item in items:
        if item.kind == "image":
            groups.setdefault(item.series_uid, []).append(item)
    return groups


def read_full(item: Scanned) -> DicomDataset:
    """The whole dataset of a scanned image, pixel data included."""
    data = item.source.read()
    return pydicom.dcmread(io.BytesIO(data), force=not _looks_like_dicom(data))
