"""Pixel-provenance fingerprints of published series (``private/fingerprints``).

:func:`record_store` runs in the publish path for every version (ingest, new
tables, derived objects) before the version becomes visible, so every
published series is in the index the airlock and the federation's checker
compare outputs with. :func:`rebuild` (``insitu fingerprints rebuild``) does
it for stores published before this existed, or after the index was lost.

The fingerprint itself is :mod:`insitu.disclosure.provenance`; this module
only knows the store layout (docs/architecture.md, "Store layout").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from insitu.config import NodeHome
from insitu.datasets import store_write
from insitu.disclosure.provenance import (
    GRID,
    FingerprintIndex,
    SeriesFingerprint,
    fingerprint_series,
)

__all__ = ["RebuildReport", "rebuild", "record_store", "volume_fingerprint"]


def volume_fingerprint(volume: np.ndarray, spacing: Sequence[float]) -> SeriesFingerprint:
    """The fingerprint of a series from its level-0 volume in memory ((z, y, x) or
    (z, y, x, c)), equal to the one :func:`record_store` reads back from its store.

    Ingest computes it in its writer thread, beside the store's own levels: a store of
    format 4 has no coarser level for a 512 x 512 plane, and reading level 0 back at
    publish would decode the whole series again.
    """
    return _fingerprint_from(volume, 0, spacing, [volume.shape[:3]])


def _fingerprint_from(
    level: np.ndarray, k: int, spacing: Sequence[float], shapes: list[tuple[int, ...]]
) -> SeriesFingerprint:
    """Fingerprint from pyramid level ``k`` (``shapes``: the store's level shapes, (z, y, x)).

    The thumbnails come from format 3's coarsest level (at most three levels, down to
    ``GRID``; store_write.pyramid with ``preview_plane=0``), whatever levels a store
    has: the same thumbnails for every store format, and a cheap input (2x2 block means
    in integers, then fingerprint_series' float resize of a small volume).
    """
    reduced = store_write.pyramid(level, preview_plane=0, max_levels=store_write.MAX_LEVELS - k)
    reduced_shapes = [tuple(r.shape[:3]) for r in reduced]
    all_shapes = [*shapes, *(s for s in reduced_shapes if s not in shapes)]
    return fingerprint_series(
        reduced[-1], spacing=list(spacing), level_shapes=all_shapes, native_shape=all_shapes[0]
    )


def _series_fingerprint(group: Any) -> SeriesFingerprint:
    """The fingerprint of one OME-Zarr series group, read from its coarsest useful level."""
    levels = sorted((k for k in group.array_keys() if k.isdigit()), key=int)
    arrays = [group[k] for k in levels]
    colour = arrays[0].ndim == 4  # stored (c, z, y, x)
    shapes = [tuple(a.shape[1:] if colour else a.shape) for a in arrays]
    # The coarsest level still at least GRID in y and x gives the same thumbnails, cheaply.
    pick = 0
    for k, shape in enumerate(shapes):
        if min(shape[1], shape[2]) >= GRID:
            pick = k
    volume = np.asarray(arrays[pick][...])
    if colour:
        volume = np.moveaxis(volume, 0, -1)
    spacing: list[float] = [1.0, 1.0, 1.0]
    try:
        transforms = group.attrs["ome"]["multiscales"][0]["datasets"][0]
        scale = next(t["scale"] for t in transforms["coordinateTransformations"])
        spacing = [float(v) for v in scale[-3:]]
    except (KeyError, IndexError, StopIteration, TypeError, ValueError):
        pass
    return _fingerprint_from(volume, pick, spacing, shapes)


def _never_leave(group_attrs: Mapping[str, Any]) -> str:
    """Why a series' pixels may never leave (its ingest attrs, else its modality), or ""."""
    from insitu.never_leave import never_leave_reason

    try:
        attrs = dict(group_attrs.get("insitu") or {})
    except (AttributeError, TypeError, ValueError):
        return ""
    reason = str(attrs.get("never_leave") or "")
    if not reason:
        header = attrs.get("header") or {}
        sop = header.get("00080016", {}).get("Value", [""]) if isinstance(header, dict) else [""]
        reason = never_leave_reason(str(attrs.get("modality") or ""), str((sop or [""])[0]))
    return reason


def record_store(
    home: NodeHome,
    store_path: Path,
    *,
    dataset: str,
    version: str,
    known: Mapping[str, SeriesFingerprint] | None = None,
) -> int:
    """Fingerprint every series of a (staged or published) store; returns how many are new.

    ``known``: fingerprints already computed from the volumes written
    (:func:`volume_fingerprint`, by ingest); any other series is read from the store.

    A series already in the index (a new version that shares it) only gains a reference.
    Never-leave series (fundus, OCT) are recorded as such, so that a match names the rule
    the airlock never overrides (also for an index written before it kept the flag).
    """
    index = FingerprintIndex.for_home(home)
    series = Path(store_path) / "series"
    new = 0
    zarr_root = None  # Zarr is imported only to read a series' pixels (none in an ingest)
    for series_id in store_write.child_groups(series):
        never_leave = _never_leave(store_write.group_attrs(series / series_id))
        if index.has(series_id):
            index.reference(dataset, version, series_id, never_leave=never_leave)
            continue
        fingerprint = (known or {}).get(series_id)
        if fingerprint is None:
            zarr_root = zarr_root or store_write.open_root(Path(store_path))
            fingerprint = _series_fingerprint(zarr_root[f"series/{series_id}"])
        index.add(dataset, version, series_id, fingerprint, never_leave=never_leave)
        new += 1
    return new


@dataclass
class RebuildReport:
    versions: list[str] = field(default_factory=list)
    series: int = 0
    planes: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"versions": self.versions, "series": self.series, "planes": self.planes}


def rebuild(home: NodeHome, *, fresh: bool = False) -> RebuildReport:
    """Fingerprint every published version's series (``fresh``: start from an empty index)."""
    import shutil

    from insitu.datasets.catalog import Catalog
    from insitu.disclosure.provenance import fingerprints_dir

    if fresh:
        shutil.rmtree(fingerprints_dir(home), ignore_errors=True)
    report = RebuildReport()
    with Catalog(home) as catalog:
        for row in catalog.datasets():
            for version in catalog.versions(row["name"]):
                path = catalog.store_path(row["name"], version["version"])
                if not path.is_dir() and catalog.retirement(row["name"], version["version"]):
                    continue  # retired, store deleted: its fingerprints stay in the index
                report.series += record_store(
                    home, path, dataset=row["name"], version=version["version"]
                )
                report.versions.append(f"{row['name']} {version['version']}")
    index = FingerprintIndex.for_home(home)
    report.planes = index.planes
    return report
