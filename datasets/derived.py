"""Derived objects: DICOM SR measurements (TID 1500) and DICOM SEG label volumes.

``insitu ingest-derived DATASET PATH...`` reads SR and SEG objects made from
a dataset's images and publishes them as a new version of that dataset:

- every numeric measurement of a TID 1500 Measurement Report becomes a row
  of the table ``sr_measurements`` (subject, study, series, tracking UID,
  finding, finding site, measurement, value, unit, the SR's id). The series
  is found through the images the measurement group references, mapped to
  series by the SR's evidence sequences. The tracking identifier (free text)
  is kept only when it passes the table text checks;
- a SEG becomes a label volume on the grid of its source series
  (``labels/<series_id>/<name>``; 0 background, n = segment n). Every frame
  must lie on a slice of the source series (position and size), else the SEG
  is refused: labels are never resampled.

A plain ``insitu ingest`` given SR/SEG files with their images writes them into
the images' own version (:func:`stage_derived`): one command, one version.

UIDs are the images' keyed UIDs (``Deidentifier.uid``), subjects their
pseudonyms, so SR rows and labels join the images by ``series_id``. An
object whose subject or series is not in the dataset is refused with its
file name and the reason; nothing identifying is printed or stored.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from insitu.config import NodeHome, load_config, resolve_home
from insitu.datasets.dicom_read import LABEL_MAP_SEG_SOP_CLASS, SEG_SOP_CLASS
from insitu.errors import SourceError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DerivedReport",
    "attach_derived",
    "ingest_derived",
    "seg_labels",
    "sr_measurements",
    "stage_derived",
]

SR_TABLE = "sr_measurements"
# TID 1500 concept codes (DCM / SCT), by CodeValue
MEASUREMENT_GROUP = "125007"
TRACKING_IDENTIFIER = "112039"
TRACKING_UID = "112040"
FINDING = "121071"
FINDING_SITE = ("363698007", "G-C0E3")


@dataclass
class DerivedReport:
    """What happened; names files, never identifiers."""

    measurements: int = 0
    labels: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    version: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "measurements": self.measurements,
            "labels": self.labels,
            "refused": [{"file": f, "reason": r} for f, r in self.refused],
            "version": self.version,
        }


def _code_value(item: Any) -> str:
    seq = item.get("ConceptNameCodeSequence")
    return str(seq[0].CodeValue) if seq else ""


def _meaning(seq: Any) -> str:
    return str(seq[0].CodeMeaning) if seq else ""


def _walk(items: Any) -> Iterator[Any]:
    for item in items or []:
        yield item
        yield from _walk(item.get("ContentSequence"))


def _evidence_series(sr: Any) -> dict[str, tuple[str, str]]:
    """Referenced SOP Instance UID -> (study UID, series UID) from the evidence sequences."""
    out: dict[str, tuple[str, str]] = {}
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in sr.get(keyword, []) or []:
            for series in study.get("ReferencedSeriesSequence", []) or []:
                for sop in series.get("ReferencedSOPSequence", []) or []:
                    out[str(sop.ReferencedSOPInstanceUID)] = (
                        str(study.StudyInstanceUID),
                        str(series.SeriesInstanceUID),
                    )
    return out


def sr_measurements(sr: Any, deid: Any) -> list[dict[str, Any]]:
    """Rows of the numeric measurements in a TID 1500 report (keyed, no free text)."""
    from insitu.datasets.tables_ingest import text_problem

    evidence = _evidence_series(sr)
    subject = deid.pseudonym(deid.subject_key(sr))
    rows = []
    for group in _walk(sr.get("ContentSequence")):
        if group.get("ValueType") != "CONTAINER" or _code_value(group) != MEASUREMENT_GROUP:
            continue
        context: dict[str, Any] = {"tracking_id": "", "tracking_uid": "", "finding": ""}
        context["finding_site"] = ""
        referenced: list[str] = []
        numbers = []
        for item in group.get("ContentSequence", []) or []:
            code, kind = _code_value(item), item.get("ValueType")
            if code == TRACKING_IDENTIFIER and kind == "TEXT":
                text = str(item.TextValue)
                context["tracking_id"] = "" if text_problem("tracking_id", [text], set()) else text
            elif code == TRACKING_UID and kind == "UIDREF":
                context["tracking_uid"] = deid.uid(str(item.UID))
            elif code == FINDING and kind == "CODE":
                context["finding"] = _meaning(item.ConceptCodeSequence)
            elif code in FINDING_SITE and kind == "CODE":
                context["finding_site"] = _meaning(item.ConceptCodeSequence)
            elif kind == "NUM":
                numbers.append(item)
        for item in _walk(group.get("ContentSequence")):
            for ref in item.get("ReferencedSOPSequence", []) or []:
                referenced.append(str(ref.ReferencedSOPInstanceUID))
        series = {evidence[u] for u in referenced if u in evidence}
        if not series and len(set(evidence.values())) == 1:
            series = set(evidence.values())
        study_uid, series_uid = sorted(series)[0] if len(series) == 1 else ("", "")
        for item in numbers:
            measured = item.MeasuredValueSequence[0] if item.get("MeasuredValueSequence") else None
            rows.append(
                {
                    "subject_id": subject,
                    "study_id": deid.uid(study_uid) if study_uid else "",
                    "series_id": deid.uid(series_uid) if series_uid else "",
                    **context,
                    "measurement": _meaning(item.ConceptNameCodeSequence),
                    "value": float(measured.NumericValue) if measured is not None else np.nan,
                    "unit": str(measured.MeasurementUnitsCodeSequence[0].CodeValue)
                    if measured is not None
                    else "",
                    "sr_id": deid.uid(str(sr.SOPInstanceUID)),
                }
            )
    return rows


def seg_labels(
    seg: Any, affine_xyz: np.ndarray, shape: Sequence[int]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The SEG's label volume on a series grid (``affine_xyz``: column, row, slice -> LPS).

    Raises ``SourceError`` when a frame is off the grid or sized differently.
    """
    n_z, n_y, n_x = (int(s) for s in shape)
    if (int(seg.Rows), int(seg.Columns)) != (n_y, n_x):
        raise SourceError(
            f"the SEG's frames are {seg.Rows}x{seg.Columns}, the series' slices {n_y}x{n_x}: "
            "labels are never resampled"
        )
    frames = seg.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    fractional = str(seg.get("SegmentationType", "BINARY")) == "FRACTIONAL"
    limit = float(seg.get("MaximumFractionalValue", 1) or 1)
    segments: list[dict[str, Any]] = [
        {
            "number": int(s.SegmentNumber),
            "label": str(s.get("SegmentLabel", "")),
            "category": _meaning(s.get("SegmentedPropertyCategoryCodeSequence")),
            "type": _meaning(s.get("SegmentedPropertyTypeCodeSequence")),
        }
        for s in seg.SegmentSequence
    ]
    top = max((s["number"] for s in segments), default=1)
    labels = np.zeros((n_z, n_y, n_x), dtype=np.uint8 if top < 256 else np.uint16)
    inverse = np.linalg.inv(np.asarray(affine_xyz, dtype=float))
    shared = seg.get("SharedFunctionalGroupsSequence", [None])[0]
    per_frame = seg.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != len(frames):
        raise SourceError(
            f"the SEG describes {len(per_frame)} of its {len(frames)} frames (Per-frame "
            "Functional Groups): cannot place its frames on the series"
        )
    for i, group in enumerate(per_frame):
        position = _frame_attr(group, shared, "PlanePositionSequence")
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        if position is None:
            raise SourceError("a SEG frame has no Plane Position: cannot place it on the series")
        x, y, z, _ = inverse @ np.array([*map(float, position.ImagePositionPatient), 1.0])
        k = round(float(z))
        if abs(x) > 0.05 or abs(y) > 0.05 or abs(z - k) > 0.05 or not 0 <= k < n_z:
            raise SourceError(
                f"SEG frame {i + 1} does not lie on a slice of its source series "
                "(labels are never resampled)"
            )
        frame = frames[i] > (0.5 * limit if fractional else 0)
        labels[k][frame] = number
    return labels, segments


def _frame_attr(group: Any, shared: Any, keyword: str) -> Any:
    for source in (group, shared):
        if source is not None and source.get(keyword):
            return source.get(keyword)[0]
    return None


def _label_name(seg: Any, deid: Any) -> str:
    text = str(seg.get("SeriesDescription", "") or seg.get("ContentLabel", "") or "")
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]
    suffix = deid.uid(str(seg.SOPInstanceUID)).rsplit(".", 1)[-1][-8:]
    return f"{slug or 'seg'}-{suffix}"


def ingest_derived(
    dataset: str, paths: Sequence[str | Path], *, home: NodeHome | None = None
) -> DerivedReport:
    """Publish the SR measurements and SEG labels in ``paths`` as a new version."""
    files = [p for path in paths for p in _files(Path(path))]
    return _ingest_objects(dataset, [(p.name, p.read_bytes) for p in files], home=home)


def attach_derived(home: NodeHome, report: Any) -> Any:
    """The ingest hook when it staged no new images (already published, or none given):
    the SEG/SR files it skipped are added to the newest version by ingest-derived.

    So derived objects pulled from a PACS or pushed to ``insitu receive`` join
    their images without a second command. Each such file's fate becomes
    ``published`` (with the version) or ``refused`` (with the reason).
    """
    from insitu.datasets.dicom_read import DERIVED_REASON
    from insitu.errors import DatasetNotFoundError

    derived = [f for f in report.files if f.fate == "skipped" and f.reason == DERIVED_REASON]
    if not derived:
        return report
    objects = [(f.file, _reader(f.file)) for f in derived]
    try:
        result = _ingest_objects(report.dataset, objects, home=home)
    except DatasetNotFoundError:
        for f in derived:
            f.reason = "a derived object, and the dataset has no images yet: ingest them first"
        return report
    except SourceError as exc:
        for f in derived:
            f.fate, f.reason = "refused", str(exc)
        return report
    refused = dict(result.refused)
    for f in derived:
        if f.file in refused:
            f.fate, f.reason = "refused", refused[f.file]
        else:
            f.fate, f.reason = "published", f"SR/SEG added in {result.version}"
    if result.version:
        report.version = result.version
        if report.status == "nothing-published":
            report.status = "published"
    return report


def _reader(name: str) -> Any:
    """Bytes of an ingest input by its name: a path, or 'archive.zip!member'."""
    import zipfile

    if "!" in name and not Path(name).exists():
        archive, member = name.split("!", 1)

        def read_member() -> bytes:
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)

        return read_member
    return Path(name).read_bytes


def _resolve(
    objects: Sequence[tuple[str, Any]],
    deid: Any,
    subjects: set[str],
    series_ids: set[str],
    grid: Callable[[str], tuple[np.ndarray, list[int]]],
    report: DerivedReport,
) -> tuple[list[dict[str, Any]], list[tuple[str, str, np.ndarray, dict[str, Any]]]]:
    """SR rows and SEG label volumes of ``objects`` that join the given subjects and
    series (``grid``: a series' affine and shape); the others go to ``report.refused``."""
    import pydicom

    rows: list[dict[str, Any]] = []
    labels: list[tuple[str, str, np.ndarray, dict[str, Any]]] = []
    for name, read in objects:
        try:
            ds = pydicom.dcmread(io.BytesIO(read()))
        except Exception as exc:  # not DICOM / truncated: reported, never fatal
            report.refused.append((name, f"not readable DICOM ({type(exc).__name__})"))
            continue
        if deid.pseudonym(deid.subject_key(ds)) not in subjects:
            report.refused.append((name, "its subject has no images in this dataset"))
            continue
        modality = str(ds.get("Modality", ""))
        try:
            if modality == "SR":
                found = sr_measurements(ds, deid)
                unknown = [r for r in found if r["series_id"] and r["series_id"] not in series_ids]
                if unknown:
                    raise SourceError("it measures a series that is not in this dataset")
                rows.extend(found)
            elif modality == "SEG" or str(ds.SOPClassUID) in (
                SEG_SOP_CLASS,
                LABEL_MAP_SEG_SOP_CLASS,
            ):
                refs = ds.get("ReferencedSeriesSequence") or []
                if len(refs) != 1:
                    raise SourceError("it must reference exactly one source series")
                series_id = deid.uid(str(refs[0].SeriesInstanceUID))
                if series_id not in series_ids:
                    raise SourceError("its source series is not in this dataset")
                affine, shape = grid(series_id)
                volume, segments = seg_labels(ds, affine, shape)
                label = _label_name(ds, deid)
                info = {"segments": segments, "seg_id": deid.uid(str(ds.SOPInstanceUID))}
                labels.append((series_id, label, volume, info))
            else:
                report.refused.append((name, f"modality {modality or '?'} is not SR or SEG"))
        except SourceError as exc:
            report.refused.append((name, str(exc)))
        except Exception as exc:  # a malformed SR/SEG no check foresaw: refused, never a traceback
            report.refused.append(
                (name, f"cannot be read as an SR or SEG: {type(exc).__name__}: {exc}")
            )
    return rows, labels


def _label_digest(volume: np.ndarray) -> str:
    return hashlib.sha256(volume.tobytes() + str(volume.dtype).encode()).hexdigest()


def _deid(node: NodeHome) -> Any:
    from insitu.datasets.deid import Deidentifier, DeidOptions

    return Deidentifier(node.site_key(), DeidOptions.from_config(load_config(node).deid))


def stage_derived(
    home: NodeHome, root: Any, series_rows: Sequence[dict[str, Any]], files: Sequence[Any]
) -> DerivedReport:
    """Write the SEG/SR ``files`` (an ingest's file fates) into the store being built.

    The ingest hook: derived objects given with their images join the very
    version that publishes the images (one command, one version). SR rows become
    the table ``sr_measurements``, SEG labels ``labels/<series_id>/<name>``; the
    digests later runs compare are recorded as ``add_tables`` records them. Call
    it after the root attributes are written, before publishing.
    """
    import pandas as pd
    import zarr

    from insitu.datasets.labels import write_labels
    from insitu.datasets.reader import write_table
    from insitu.datasets.tables import table_digest

    def grid(series_id: str) -> tuple[np.ndarray, list[int]]:
        group = zarr.open_group(root.store, path=f"series/{series_id}", mode="r")
        info = cast("dict[str, Any]", group.attrs["insitu"])
        return np.array(info["affine"], dtype=float), list(info["shape"])

    report = DerivedReport()
    objects = [(f.file, _reader(f.file)) for f in files]
    subjects = {str(r["subject_id"]) for r in series_rows}
    series_ids = {str(r["series_id"]) for r in series_rows}
    rows, labels = _resolve(objects, _deid(home), subjects, series_ids, grid, report)
    digests: dict[str, str] = {}
    stored: dict[str, str] = {}
    if rows:
        frame = pd.DataFrame(rows)
        write_table(root, SR_TABLE, frame)
        digests[SR_TABLE] = table_digest(SR_TABLE, frame)
    for series_id, name, volume, info in labels:
        write_labels(root, series_id, name, volume, info)
        stored[f"{series_id}/{name}"] = _label_digest(volume)
    attrs = dict(root.attrs["insitu"])
    if digests:
        attrs["table_digests"] = {**attrs.get("table_digests", {}), **digests}
    if stored:
        attrs["label_digests"] = stored
    root.attrs["insitu"] = attrs
    report.measurements = len(rows)
    report.labels = [f"{s}/{n}" for s, n, _v, _i in labels]
    return report


def _ingest_objects(
    dataset: str, objects: Sequence[tuple[str, Any]], *, home: NodeHome | None = None
) -> DerivedReport:
    import pandas as pd

    from insitu.datasets.labels import write_labels
    from insitu.datasets.reader import open_dataset
    from insitu.datasets.tables import add_tables

    node = (home or resolve_home()).require_initialized()
    deid = _deid(node)
    base = open_dataset(dataset, home=node)
    series = base.series.set_index("series_id")
    subjects = set(base.subjects["subject_id"].astype(str))
    report = DerivedReport()
    rows, labels = _resolve(
        objects, deid, subjects, set(series.index), lambda sid: _series_grid(base, sid), report
    )
    if not rows and not labels:
        reasons = "; ".join(f"{f}: {r}" for f, r in report.refused) or "no files"
        raise SourceError(f"nothing to publish for {dataset}: {reasons}")
    tables: dict[str, pd.DataFrame] = {}
    if rows:
        frame = pd.DataFrame(rows)
        if SR_TABLE in base.tables:
            frame = pd.concat([base.tables[SR_TABLE], frame], ignore_index=True)
            frame = frame.drop_duplicates(ignore_index=True)
        tables[SR_TABLE] = frame
    # Labels already in the newest version with the same voxels are not written again, so
    # running the same command twice publishes nothing new.
    stored = dict(base.attrs.get("label_digests", {}))
    fresh = []
    for series_id, name, volume, info in labels:
        key = f"{series_id}/{name}"
        value = _label_digest(volume)
        if stored.get(key) != value:
            fresh.append((series_id, name, volume, info))
            stored[key] = value

    def write_extra(root: Any) -> None:
        for series_id, name, volume, info in fresh:
            write_labels(root, series_id, name, volume, info)
        attrs = dict(root.attrs["insitu"])
        attrs["label_digests"] = stored
        root.attrs["insitu"] = attrs

    extra_digest = hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest()
    report.version = (
        add_tables(
            dataset,
            tables,
            home=node,
            note=f"ingest-derived: {len(rows)} SR measurements, {len(fresh)} SEG label volumes",
            write_extra=write_extra if fresh else None,
            extra_digest=extra_digest if fresh else "",
        )
        if tables or fresh
        else base.version
    )
    report.measurements = len(rows)
    report.labels = [f"{s}/{n}" for s, n, _v, _i in labels]
    return report


def _series_grid(base: Any, series_id: str) -> tuple[np.ndarray, list[int]]:
    import zarr

    group = zarr.open_group(base.store, path=f"series/{series_id}", mode="r")
    info = cast("dict[str, Any]", group.attrs["insitu"])  # written by ingest (a JSON object)
    return np.array(info["affine"], dtype=float), list(info["shape"])


def _files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield from sorted(p for p in path.rglob("*") if p.is_file())
    elif path.is_file():
        yield path
    else:
        raise SourceError(f"no such file or folder: {path}")
