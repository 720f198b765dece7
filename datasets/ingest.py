"""``insitu ingest``: DICOM in, one de-identified, checksummed, immutable version out.

The steps, each safe to interrupt:

1. scan every input's header and fingerprint the image bytes; an input whose
   fingerprint a version already has is "unchanged" (no new version; also when
   that version was written in an earlier store format with the same values);
2. per series: check geometry, de-identify, decode, and write it into a
   staging store under ``private/staging`` (a marker per finished series lets
   the next run resume);
3. write the root attributes, checksum every file, record the version as
   ``pending`` in the catalog, ``os.rename`` the store into ``stores/`` and
   mark it ``published``. :func:`recover` finishes a version stopped between
   those last steps, so a killed ingest never leaves half a version.

Bad input never stops the rest: it is copied to ``private/quarantine/<ingest>``
with a reason file (sources are never modified), and the exit code says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from insitu import __version__
from insitu.config import NodeHome, load_config, resolve_home
from insitu.datasets.catalog import Catalog
from insitu.datasets.dicom_read import (
    InputFile,
    Scanned,
    check_inputs,
    group_series,
    native_pixel_length,
    quiet_pydicom,
    read_full,
    read_pixels_into,
    release_pixels,
    scan_all,
    walk_inputs,
)
from insitu.datasets.publish import crash_point, index_rows, publish, publish_lock, recover
from insitu.datasets.store_write import StoreRoot, open_root, write_root_attrs, write_series
from insitu.datasets.volume import (
    Geometry,
    UndecodableObjectError,
    decode_native_volume,
    decode_volume,
    plan_geometry,
)
from insitu.errors import EXIT_ERROR, EXIT_OK, EXIT_QUARANTINED, IngestError
from insitu.progress import progress

__all__ = ["FileFate", "IngestReport", "ingest"]

# Bump when the same input would produce a different store: 1 zstd 2 + bit shuffle,
# 2 zstd 1 + byte shuffle, 3 zstd 1 + bit shuffle and deeper chunks on the coarser levels,
# 4 coarser levels only for planes larger than 512 in y or x (store_write.PREVIEW_PLANE).
STORE_FORMAT = 4
# Earlier formats whose stores hold the same values for the same input (only codecs,
# chunks and which preview levels exist differ): an input already published in one of
# them is "unchanged".
SAME_VALUES_FORMATS = (3, 2)
_DATASET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass
class FileFate:
    """What happened to one input file."""

    file: str
    fate: str  # published | skipped | quarantined | held-back | refused | unchanged
    reason: str = ""
    series_id: str = ""


@dataclass
class IngestReport:
    ingest_id: str
    dataset: str
    status: str  # published | unchanged | nothing-published
    version: str = ""
    files: list[FileFate] = field(default_factory=list)
    series: list[dict[str, Any]] = field(default_factory=list)
    quarantine: str = ""
    series_refused: int = 0  # series not published (refused, held back, undecodable)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.files:
            out[item.fate] = out.get(item.fate, 0) + 1
        return out

    def series_counts(self) -> dict[str, int]:
        """Series (image volumes), not files: how many were published, how many not."""
        return {"published": len(self.series), "not_published": self.series_refused}

    def summary(self) -> str:
        """One line that keeps series and files apart."""
        files = ", ".join(f"{n} {fate}" for fate, n in sorted(self.counts().items()))
        files = f"files: {files or 'none'}"
        if self.status == "unchanged":
            return f"{self.dataset}: unchanged, the same input is already {self.version} ({files})"
        refused = f", {self.series_refused} not published" if self.series_refused else ""
        if self.status == "published":
            published = f"{len(self.series)} series published{refused}"
            return f"{self.dataset} {self.version}: {published}; {files}"
        return f"{self.dataset}: nothing published (series: 0 published{refused}; {files})"

    @property
    def quarantined(self) -> int:
        return sum(f.fate in ("quarantined", "held-back", "refused") for f in self.files)

    @property
    def exit_code(self) -> int:
        if self.quarantined:
            return EXIT_QUARANTINED
        return EXIT_ERROR if self.status == "nothing-published" else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "ingest_id": self.ingest_id,
            "dataset": self.dataset,
            "version": self.version,
            "status": self.status,
            "counts": self.counts(),  # files by fate
            "series_counts": self.series_counts(),
            "series": self.series,
            "files": [asdict(f) for f in self.files],
            "quarantine": self.quarantine,
            "exit_code": self.exit_code,
        }


class _Quarantine:
    """Copies of bad inputs with a reason file each, under private/quarantine."""

    def __init__(self, home: NodeHome, ingest_id: str) -> None:
        self.folder = home.quarantine / ingest_id
        self.count = 0

    def put(self, item: Scanned, reason: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.count += 1
        stem = f"{self.count:05d}"
        try:
            data = item.source.read()
        except Exception as exc:  # a corrupt archive member: still record the reason
            data = b""
            reason += f" (the file could not be copied: {exc})"
        (self.folder / f"{stem}.dcm").write_bytes(data)
        (self.folder / f"{stem}.reason.txt").write_text(
            f"source: {item.source.name}\nsha256: {item.digest}\nreason: {reason}\n"
        )


def _inside_home(home: NodeHome, source: InputFile) -> Scanned | None:
    """Never ingest the node home itself (stores, quarantine, staging) when a
    folder that contains it is given as input."""
    try:
        resolved = Path(source.path).resolve()
    except OSError:
        return None
    if not resolved.is_relative_to(home.root):
        return None
    # The PACS staging areas are sources by contract (insitu ingest dicomweb://, insitu
    # receive hand their staged originals to this ingest): never skip those.
    if any(resolved.is_relative_to(home.staging / area) for area in ("pacs", "received")):
        return None
    return Scanned(source, kind="skipped", reason="inside the insitu node home")


def _fingerprint(
    images: Sequence[Scanned],
    profile: dict[str, Any],
    options: dict[str, Any],
    store_format: int = STORE_FORMAT,
) -> str:
    body = {
        "format": store_format,
        "inputs": sorted(i.digest for i in images),
        "profile": profile,
        "options": options,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _published_before(
    catalog: Catalog,
    dataset: str,
    images: Sequence[Scanned],
    profile: dict[str, Any],
    options: dict[str, Any],
    fingerprint: str,
) -> dict[str, Any] | None:
    """The version that already holds this input, in this store format or in an earlier
    one with the same values (``SAME_VALUES_FORMATS``): a new codec alone is no new version."""
    if not images:
        return None
    found: dict[str, Any] | None = catalog.find_fingerprint(dataset, fingerprint)
    for earlier in SAME_VALUES_FORMATS:
        if found is not None:
            break
        found = catalog.find_fingerprint(
            dataset, _fingerprint(images, profile, options, store_format=earlier)
        )
    return found


def _new_ingest_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _iso_date(value: str) -> str:
    value = str(value or "")
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) == 8 and value.isdigit() else ""


def _units(ds: Any) -> str:
    from insitu.datasets.modality import units_of

    return units_of(ds)


def _header_json(ds: Any) -> dict[str, Any]:
    """The de-identified header in the DICOM JSON model, without pixel data."""
    from pydicom.dataset import Dataset as DicomDataset

    header = DicomDataset()
    for elem in ds:
        if elem.tag.group != 0x7FE0:
            header.add(elem)
    return header.to_json_dict(
        bulk_data_threshold=4096, bulk_data_element_handler=lambda _elem: "omitted:bulk-data"
    )


def _link(home: NodeHome, subject_id: str, original_id: str) -> None:
    """The pseudonym -> original link, only ever in private/."""
    db = sqlite3.connect(home.private / "links.sqlite")
    try:
        db.execute(
            "CREATE TABLE IF NOT EXISTS links (subject_id TEXT PRIMARY KEY, "
            "original_patient_id TEXT NOT NULL, first_seen TEXT NOT NULL)"
        )
        db.execute(
            "INSERT OR IGNORE INTO links VALUES (?, ?, ?)",
            (subject_id, original_id, datetime.now(UTC).isoformat(timespec="seconds")),
        )
        db.commit()
    finally:
        db.close()
    (home.private / "links.sqlite").chmod(0o600)


class _SeriesRefused(Exception):
    def __init__(self, fate: str, reason: str, culprit: Scanned | None = None) -> None:
        super().__init__(reason)
        self.fate, self.reason, self.culprit = fate, reason, culprit


def _uid(item: Scanned, keyword: str) -> str:
    return str(item.header.get(keyword, "") or "") if item.header is not None else ""


def _refuse_incomplete_series(scanned: list[Scanned]) -> int:
    """A series one of whose slices is broken (and has no good copy) is refused whole:
    published without that slice it would look complete. Returns how many series."""
    good = {_uid(i, "SOPInstanceUID") for i in scanned if i.kind == "image"}
    broken: dict[str, Scanned] = {}
    for item in scanned:
        series, sop = _uid(item, "SeriesInstanceUID"), _uid(item, "SOPInstanceUID")
        if item.kind == "bad" and series and sop not in good:
            broken.setdefault(series, item)
    refused = set()
    for item in scanned:
        bad = broken.get(_uid(item, "SeriesInstanceUID")) if item.kind == "image" else None
        if bad is not None:
            item.kind = "refused"
            item.reason = (
                f"refused with its series: its slice {bad.source.name} is unusable ({bad.reason})"
            )
            refused.add(item.series_uid)
    return len(refused)


def _stackable(items: list[Scanned]) -> bool:
    """Whether a series' objects form one volume.

    Objects with patient geometry always do (or are refused with the reason);
    without it (ultrasound, secondary capture) a series often mixes stills and
    cine loops of different sizes, and each object then becomes its own image.
    """
    headers = [i.header for i in items if i.header is not None]
    if any("ImagePositionPatient" in h or "PerFrameFunctionalGroupsSequence" in h for h in headers):
        return True
    if len(headers) == 1:
        return True
    sizes = {(h.get("Rows"), h.get("Columns")) for h in headers}
    return len(sizes) == 1 and all(int(h.get("NumberOfFrames", 1) or 1) == 1 for h in headers)


def _split_unstackable(groups: dict[str, list[Scanned]]) -> dict[str, tuple[list[Scanned], bool]]:
    """Series key -> (objects, split): unstackable series become one image per object."""
    out: dict[str, tuple[list[Scanned], bool]] = {}
    for uid, items in groups.items():
        if _stackable(items):
            out[uid] = (items, False)
        else:
            for k, item in enumerate(items):
                out[f"{uid}#{k}#{item.digest}"] = ([item], True)
    return out


def _corrupt(item: Scanned, exc: Exception) -> _SeriesRefused:
    return _SeriesRefused("quarantined", f"corrupt DICOM: {type(exc).__name__}: {exc}", item)


def _read_native(items: list[Scanned], geometry: Geometry) -> np.ndarray | None:
    """The volume of a series of uncompressed greyscale slices, read from the files into
    one array (:func:`decode_native_volume`), or None for any other series."""

    def read_into(index: int, buffer: memoryview) -> None:
        try:
            read_pixels_into(items[index], buffer)
        except Exception as exc:
            raise _corrupt(items[index], exc) from exc

    lengths = [native_pixel_length(i) for i in items]
    return decode_native_volume([i.dicom for i in items], geometry, lengths, read_into)


def _build_series(
    home: NodeHome, deid: Any, items: list[Scanned], root: StoreRoot, split: bool = False
) -> tuple[dict[str, Any], str, Callable[[], Written]]:
    """De-identify and decode one series; return its index row, original id and the
    function that writes it (pyramid, compression: mostly outside the GIL).

    ``split``: one object of an unstackable series; its id is then the object's
    de-identified SOP Instance UID (the series UID stays in ``series_uid``).
    """
    from insitu.datasets.deid import HeldBack

    geometry = plan_geometry([i.dicom for i in items])  # raises InconsistentSeriesError
    # Uncompressed greyscale slices are read from their files straight into the volume;
    # any other series gets its pixel elements attached and decoded below.
    volume = _read_native(items, geometry)
    originals = [i.dicom for i in items] if volume is not None else []
    for item in items if volume is None else ():
        try:
            originals.append(read_full(item))
        except Exception as exc:
            raise _corrupt(item, exc) from exc
    # Only the first object's de-identified header is kept (the series' header); the
    # others need only the checks that can refuse them: burned-in text and the subject.
    from insitu.datasets.deid import burned_in_reason

    first = None
    subjects = set()
    for item, ds in zip(items, originals, strict=True):
        try:
            if first is None:
                first = deid.apply(ds)
                subjects.add(first.subject_id)
                continue
            reason = burned_in_reason(ds)
            if reason and not deid.options.allow_burned_in:
                raise HeldBack(reason)
            subjects.add(deid.pseudonym(deid.subject_key(ds)))
        except HeldBack as exc:
            raise _SeriesRefused("held-back", str(exc)) from exc
        except IngestError as exc:
            raise _SeriesRefused("quarantined", f"de-identification: {exc}", item) from exc
        except Exception as exc:  # a malformed header the profile cannot process
            raise _SeriesRefused(
                "quarantined", f"de-identification failed: {type(exc).__name__}: {exc}", item
            ) from exc
    assert first is not None
    if len(subjects) > 1:
        raise _SeriesRefused("refused", "one series holds images of several patients")
    try:
        if volume is None:
            volume = decode_volume(originals, geometry)
    except UndecodableObjectError as exc:
        release_pixels(originals)
        raise _SeriesRefused(
            "quarantined", f"pixel data cannot be decoded: {exc}", items[exc.index]
        ) from exc
    except Exception as exc:
        release_pixels(originals)
        culprit = items[0] if len(items) == 1 else None
        raise _SeriesRefused(
            "quarantined", f"pixel data cannot be decoded: {type(exc).__name__}: {exc}", culprit
        ) from exc
    release_pixels(originals)  # decoded: the bytes of every slice can go
    header = first.dataset
    from insitu.datasets.deface_ingest import deface_series
    from insitu.errors import DefacingError

    try:  # head CT/MR: remove the face before anything is written (issue 6)
        volume, defacing = deface_series(volume, geometry, header, originals[0], deid.options)
    except DefacingError as exc:
        raise _SeriesRefused("refused", str(exc)) from exc
    series_uid = str(header.SeriesInstanceUID)
    series_id = str(header.SOPInstanceUID) if split else series_uid
    row = {
        "subject_id": first.subject_id,
        "study_id": str(header.get("StudyInstanceUID", "")),
        "series_id": series_id,
        "modality": str(header.get("Modality", "") or ""),
        "study_date": _iso_date(header.get("StudyDate", "")),
        "shape": list(volume.shape[:3]),
        "spacing": [round(float(s), 6) for s in geometry.spacing],
        "dtype": str(volume.dtype),
        "units": _units(originals[0]),
        "n_files": len(items),
        "patient_geometry": geometry.patient_geometry,
        "color": volume.ndim == 4,
        "series_uid": series_uid,
    }
    from insitu.never_leave import never_leave_reason

    if reason := never_leave_reason(row["modality"], str(header.get("SOPClassUID", ""))):
        row["never_leave"] = reason  # fundus, OCT: identifying pixels (the engine reads it)
    attrs = {
        **row,
        "affine": geometry.affine.tolist(),
        "origin": list(geometry.origin),
        "orientation": list(geometry.orientation),
        "header": _header_json(header),
        "deface": defacing,
    }

    def write() -> Written:
        series_path = root.path / "series" / series_id
        shutil.rmtree(series_path, ignore_errors=True)  # a half-written try of this series
        checksums: dict[str, tuple[str, int]] = {}
        write_series(root, series_id, volume, geometry, attrs, checksums)
        return Written(fingerprint=_volume_fingerprint(volume, geometry), checksums=checksums)

    return row, str(first.original_patient_id), write


@dataclass
class Written:
    """What the write of one series hands to publish besides its files."""

    # its pixel fingerprint, from the volume in memory (None: publish reads the store)
    fingerprint: Any = None
    # sha256 and size of its chunk files by store key, hashed from the bytes written
    checksums: dict[str, tuple[str, int]] = field(default_factory=dict)


def _volume_fingerprint(volume: np.ndarray, geometry: Geometry) -> Any:
    """The series' pixel fingerprint, computed beside its write (fingerprints.py). A failure
    here is publish's: it then reads the store and fails or succeeds there, as it always did."""
    from insitu.datasets.fingerprints import volume_fingerprint

    try:
        return volume_fingerprint(volume, geometry.spacing)
    except Exception:
        return None


def ingest(
    paths: Sequence[str | os.PathLike[str]],
    dataset: str,
    *,
    home: NodeHome | None = None,
    title: str = "",
    citation: str = "",
    allow_burned_in: bool | None = None,
    show_progress: bool | None = None,
) -> IngestReport:
    """Ingest DICOM ``paths`` as a new version of ``dataset`` (see the module doc)."""
    home = (home or resolve_home()).require_initialized()
    if not _DATASET_NAME.match(dataset):
        raise IngestError(
            f"dataset name {dataset!r}: use 1-64 lower-case letters, digits, '.', '_' or '-' "
            "(it names folders and appears in the catalog, so never a patient identifier)"
        )
    if not paths:
        raise IngestError("nothing to ingest: give one or more files, folders or .zip archives")
    check_inputs(paths)  # a mistyped path is an error, not a quarantined "file"
    config = load_config(home)
    from insitu.datasets.deface_ingest import deface_policy
    from insitu.datasets.deid import Deidentifier, DeidOptions, make_profile

    deface_on, deface_reason = deface_policy(config, dataset)
    options = DeidOptions(
        retain_device_identity=config.deid.retain_device_identity,
        allow_burned_in=config.deid.allow_burned_in if allow_burned_in is None else allow_burned_in,
        deface_head_scans=deface_on,
        deface_opt_out_reason=deface_reason,
    )
    with publish_lock(home), Catalog(home) as catalog:
        recover(home, catalog)
        report = _ingest_locked(
            home, catalog, paths, dataset, title, citation, options, make_profile(options),
            show_progress,
            Deidentifier(home.site_key(), options),
        )  # fmt: skip
    from insitu.datasets.derived import attach_derived

    attached: IngestReport = attach_derived(home, report)  # SEG/SR files join their images
    return attached


Outcome = tuple[Any, ...]  # ("ok", row, original_id, Written) | ("refused", fate, reason, index)
WORKERS_ENV = "INSITU_INGEST_WORKERS"  # series built in N processes (default 1)
_WORKER: dict[str, Any] = {}


def _outcome(
    home: NodeHome,
    deid: Any,
    root: StoreRoot,
    items: list[Scanned],
    split: bool,
    writer: ThreadPoolExecutor | None = None,
) -> Outcome:
    """Build one series; its result as plain data (it may cross a process boundary).

    With ``writer`` the series is written in that thread and the outcome is
    ``("pending", row, original_id, future)`` until :func:`_settle` waits for it.
    """
    try:
        with quiet_pydicom():
            row, original_id, write = _build_series(home, deid, items, root, split)
            if writer is None:
                written = write()
    except _SeriesRefused as exc:
        culprit = next((k for k, item in enumerate(items) if item is exc.culprit), None)
        return ("refused", exc.fate, exc.reason, culprit)
    except IngestError as exc:
        return ("error", str(exc))
    except Exception as exc:  # a malformed input no check foresaw: quarantine, never a traceback
        return _unforeseen(exc, items)
    if writer is not None:
        return ("pending", row, original_id, writer.submit(write))
    return ("ok", row, original_id, written)


def _unforeseen(exc: Exception, items: list[Scanned]) -> Outcome:
    reason = f"cannot be ingested: {type(exc).__name__}: {exc}"
    return ("refused", "quarantined", reason, 0 if len(items) == 1 else None)


def _settle(outcome: Outcome, items: list[Scanned]) -> Outcome:
    """The final outcome of a series whose write ran in the writer thread."""
    if outcome[0] != "pending":
        return outcome
    _, row, original_id, future = outcome
    try:
        written = future.result()
    except IngestError as exc:
        return ("error", str(exc))
    except Exception as exc:
        return _unforeseen(exc, items)
    return ("ok", row, original_id, written)


def _worker_init(home_root: str, options: dict[str, Any], store_path: str) -> None:
    from insitu.datasets.deid import Deidentifier, DeidOptions

    home = NodeHome(Path(home_root))
    _WORKER.update(
        home=home,
        deid=Deidentifier(home.site_key(), DeidOptions(**options)),
        root=StoreRoot(Path(store_path)),
    )


def _worker_outcome(items: list[Scanned], split: bool) -> Outcome:
    return _outcome(_WORKER["home"], _WORKER["deid"], _WORKER["root"], items, split)


def _worker_count(todo: Sequence[tuple[list[Scanned], bool, Path]]) -> int:
    """Processes for building series: 1 unless INSITU_INGEST_WORKERS asks for more.

    Measured on the 2-core benchmark machine (bench/BENCHMARKS.md), two spawned
    workers cost 60 % more CPU than one process (imports, pickled headers) and
    finished later; a site with many idle cores may still gain.
    """
    wanted = os.environ.get(WORKERS_ENV, "")
    if not wanted:
        return 1
    try:
        count = int(wanted)
    except ValueError:
        raise IngestError(f"{WORKERS_ENV}={wanted!r}: give a whole number of processes") from None
    return max(1, min(count, len(todo)))


def _outcomes(
    home: NodeHome,
    deid: Any,
    root: StoreRoot,
    options: Any,
    store_path: Path,
    todo: Sequence[tuple[list[Scanned], bool, Path]],
) -> Iterator[Outcome]:
    """Outcomes in ``todo`` order; series are built in spawned processes if asked.

    Each process writes its own series' folders of the one staging store, so no
    two processes write the same file; the catalog, links and markers stay here.
    """
    workers = min(_worker_count(todo), len(todo))
    if workers <= 1:
        # One series is written (pyramid, compression, files) while the next is read,
        # de-identified and decoded: the two cores overlap, each series is complete before
        # its outcome (and its resume marker) is given.
        with ThreadPoolExecutor(1) as writer:
            previous: tuple[Outcome, list[Scanned]] | None = None
            for items, split, _ in todo:
                outcome = _outcome(home, deid, root, items, split, writer)
                if previous is not None:
                    yield _settle(*previous)
                previous = (outcome, items)
            if previous is not None:
                yield _settle(*previous)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),  # no fork after zarr's threads
        initializer=_worker_init,
        initargs=(str(home.root), asdict(options), str(store_path)),
    ) as pool:
        yield from pool.map(_worker_outcome, [t[0] for t in todo], [t[1] for t in todo])


def _audit(home: NodeHome, dataset: str, *, report: IngestReport, **details: Any) -> None:
    """Counts and pseudonymous ids only: file names may be identifying, so none go here."""
    from insitu.audit import AuditLog

    AuditLog(home).append(
        "ingest",
        user=os.environ.get("USER"),
        dataset=dataset,
        ingest_id=report.ingest_id,
        counts=report.counts(),
        **details,
    )


def _inputs(report: IngestReport, files: int, images: int, series: int) -> dict[str, int]:
    return {
        "files": files,
        "images": images,
        "published_files": sum(f.fate == "published" for f in report.files),
        "series": series,
        **{f"fate_{k}": v for k, v in report.counts().items()},
    }


def _drop_unfinished_writes(work: Path) -> None:
    """Remove what a killed run left half-written in its work folder: zarr's local
    store writes each object to ``<name>.<uuid>.partial`` and renames it when complete,
    and resume markers go through ``.part``; a file still so named was never finished
    and must not reach the published store."""
    for stray in [*work.rglob("*.partial"), *work.rglob("*.part")]:
        stray.unlink(missing_ok=True)


def _stage_derived(
    home: NodeHome,
    root: StoreRoot,
    rows: list[dict[str, Any]],
    files: list[FileFate],
    version: str,
) -> list[tuple[str, int, list[str]]]:
    """SEG/SR files given with the images go into the same store (one ingest, one
    version); their fates say so. The catalog's rows of the tables written."""
    from insitu.datasets.derived import stage_derived
    from insitu.datasets.dicom_read import DERIVED_REASON

    derived = [f for f in files if f.fate == "skipped" and f.reason == DERIVED_REASON]
    if not derived:
        return []
    zroot = open_root(root.path)  # tables and labels are written through Zarr's API
    staged = stage_derived(home, zroot, rows, derived)
    refused = dict(staged.refused)
    for f in derived:
        if f.file in refused:
            f.fate, f.reason = "refused", refused[f.file]
        else:
            f.fate, f.reason = "published", f"SR/SEG added in {version}"
    table_rows = []
    for name in zroot.attrs["insitu"].get("tables", []):
        info: dict[str, Any] = zroot[f"tables/{name}"].attrs["insitu"]
        table_rows.append((name, int(info["n_rows"]), list(info["columns"])))
    return table_rows


def _ingest_locked(
    home: NodeHome,
    catalog: Catalog,
    paths: Sequence[str | os.PathLike[str]],
    dataset: str,
    title: str,
    citation: str,
    options: Any,
    profile: dict[str, Any],
    show_progress: bool | None,
    deid: Any,
) -> IngestReport:
    ingest_id = _new_ingest_id()
    report = IngestReport(ingest_id=ingest_id, dataset=dataset, status="nothing-published")
    sources = list(walk_inputs(paths))
    inside = {k: r for k, s in enumerate(sources) if (r := _inside_home(home, s)) is not None}
    readable = [s for k, s in enumerate(sources) if k not in inside]
    with quiet_pydicom():
        parsed = progress(
            scan_all(readable), total=len(readable), desc="scan", enabled=show_progress
        )
        scanned = [inside[k] if k in inside else next(parsed) for k in range(len(sources))]
    crash_point("scanned")
    first_seen: dict[str, str] = {}
    for item in scanned:  # the same file given twice (a folder and a file in it, a re-export)
        if item.kind == "image" and item.digest in first_seen:
            item.kind, item.reason = "skipped", f"the same bytes as {first_seen[item.digest]}"
        elif item.kind == "image":
            first_seen[item.digest] = item.source.name
    from insitu.datasets.duplicates import resolve_duplicates, resolve_lossy_copies

    with quiet_pydicom():
        resolve_duplicates(scanned)  # copies of one instance: keep the decodable one
    resolve_lossy_copies(scanned)  # a lossy derivative beside its original: keep the original
    incomplete = _refuse_incomplete_series(scanned)
    images = [s for s in scanned if s.kind == "image"]
    option_dict = asdict(options)
    fingerprint = _fingerprint(images, profile, option_dict)
    quarantine = _Quarantine(home, ingest_id)
    fates: dict[int, FileFate] = {}
    for index, item in enumerate(scanned):
        if item.kind == "skipped":
            fates[index] = FileFate(item.source.name, "skipped", item.reason)
        elif item.kind == "bad":
            quarantine.put(item, item.reason)
            fates[index] = FileFate(item.source.name, "quarantined", item.reason)
        elif item.kind == "refused":
            quarantine.put(item, item.reason)
            fates[index] = FileFate(item.source.name, "refused", item.reason)
    report.series_refused += incomplete

    existing = _published_before(catalog, dataset, images, profile, option_dict, fingerprint)
    if existing is not None and existing["status"] == "published":
        report.status, report.version = "unchanged", existing["version"]
        for index, item in enumerate(scanned):
            fates.setdefault(
                index,
                FileFate(item.source.name, "unchanged", f"already in {existing['version']}"),
            )
        report.files = [fates[i] for i in range(len(scanned))]
        report.quarantine = str(quarantine.folder) if quarantine.count else ""
        _audit(home, dataset, version=existing["version"], status="unchanged", report=report)
        return report

    work = home.staging / f"{dataset}-{fingerprint[:16]}"
    store_path = work / "store.zarr"
    markers = work / "done"
    markers.mkdir(parents=True, exist_ok=True)
    _drop_unfinished_writes(work)
    root = StoreRoot(store_path)
    position = {id(item): index for index, item in enumerate(scanned)}
    groups = _split_unstackable(group_series(scanned))
    rows: list[dict[str, Any]] = []
    todo: list[tuple[list[Scanned], bool, Path]] = []
    for uid, (items, split) in groups.items():
        marker = markers / (hashlib.sha256(uid.encode()).hexdigest()[:24] + ".json")
        if marker.exists():  # finished by an interrupted run of the same input
            row = json.loads(marker.read_text())
            rows.append(row)
            for item in items:
                fates[position[id(item)]] = FileFate(
                    item.source.name, "published", series_id=row["series_id"]
                )
        else:
            todo.append((items, split, marker))
    outcomes = _outcomes(home, deid, root, options, store_path, todo)
    fingerprints: dict[str, Any] = {}  # series id -> pixel fingerprint, for publish
    checksums: dict[str, tuple[str, int]] = {}  # chunk files this run wrote, for publish
    written = 0
    for (items, _split, marker), outcome in zip(
        todo, progress(outcomes, total=len(todo), desc="series", enabled=show_progress),
        strict=True,
    ):  # fmt: skip
        if outcome[0] in ("refused", "error"):
            report.series_refused += 1
        if outcome[0] == "refused":
            _, fate0, reason0, culprit = outcome
            for k, item in enumerate(items):
                if culprit is None or k == culprit:
                    fate, reason = fate0, reason0
                else:
                    fate, reason = "refused", f"refused with its series: {reason0}"
                quarantine.put(item, reason)
                fates[position[id(item)]] = FileFate(item.source.name, fate, reason)
            continue
        if outcome[0] == "error":  # InconsistentSeriesError, HeldBack, ...
            for item in items:
                quarantine.put(item, outcome[1])
                fates[position[id(item)]] = FileFate(item.source.name, "refused", outcome[1])
            continue
        _, row, original_id, done = outcome
        if done.fingerprint is not None:
            fingerprints[row["series_id"]] = done.fingerprint
        checksums.update(done.checksums)
        _link(home, row["subject_id"], original_id)
        partial = marker.with_suffix(".part")  # a kill mid-write never leaves half a marker
        partial.write_text(json.dumps(row))
        partial.replace(marker)
        written += 1
        if written == 1:
            crash_point("series-written")
        rows.append(row)
        for item in items:
            fates[position[id(item)]] = FileFate(
                item.source.name, "published", series_id=row["series_id"]
            )
    report.files = [fates[i] for i in range(len(scanned))]
    report.quarantine = str(quarantine.folder) if quarantine.count else ""
    if not rows:
        shutil.rmtree(work, ignore_errors=True)
        _audit(home, dataset, status="nothing-published", report=report)
        return report

    crash_point("staged")
    rows.sort(key=lambda r: (r["subject_id"], r["study_id"], r["series_id"]))
    subjects, studies = index_rows(rows)
    version = catalog.next_version(dataset)
    provenance = {
        "ingest_id": ingest_id,
        "fingerprint": fingerprint,
        "software": f"insitu {__version__}",
        "store_format": STORE_FORMAT,
        "deid_profile": {k: profile.get(k) for k in ("name", "edition", "version", "options")},
        "inputs": _inputs(report, len(scanned), len(images), len(rows)),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_root_attrs(
        root,
        {
            "dataset": dataset,
            "version": version,
            "title": title,
            "citation": citation,
            "deid": {"profile": profile, "options": option_dict},
            "provenance": provenance,
            "subjects": subjects,
            "series": rows,
            "tables": [],
        },
    )
    table_rows = _stage_derived(home, root, rows, report.files, version)
    if table_rows or provenance["inputs"] != _inputs(report, len(scanned), len(images), len(rows)):
        provenance["inputs"] = _inputs(report, len(scanned), len(images), len(rows))
        root.update_attrs({"insitu": {**root.attrs["insitu"], "provenance": provenance}})
    publish(
        home, catalog, store_path, dataset=dataset, version=version, title=title,
        citation=citation, fingerprint=fingerprint, subjects=subjects, studies=studies,
        series=rows, provenance=provenance, tables=table_rows, fingerprints=fingerprints,
        checksums=checksums,
    )  # fmt: skip
    report.status, report.version, report.series = "published", version, rows
    _audit(home, dataset, version=version, status="published", report=report,
           subjects=len(subjects), series=len(rows))  # fmt: skip
    return report
