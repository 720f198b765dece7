"""Several copies of one DICOM instance in one ingest: keep one, say why for the others.

Copies with the same bytes are dropped earlier (same digest). Here the copies
share a SOP Instance UID but not their bytes: a re-export, a copy cut short
by a failed transfer, a corrected header. A valid series must never be lost
to a bad copy, so every copy is decoded and

- a copy whose pixels cannot be decoded is quarantined with that reason;
- the first decodable copy (in input order) is kept;
- a later copy with the same pixel values is skipped (an identical duplicate);
- a later copy with different pixel values is quarantined as conflicting,
  naming the copy that was kept, so that an admin can compare the two.

Truncated copies never get here: the scan already quarantined them with
their reason (``insitu.datasets.dicom_pixels``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from insitu.datasets.dicom_pixels import PIXEL_TAGS
from insitu.datasets.dicom_read import Scanned, read_full

__all__ = ["resolve_duplicates"]


def _decode(item: Scanned) -> np.ndarray:
    ds = read_full(item)
    try:
        return np.asarray(ds.pixel_array)
    finally:
        if ds is item.header:  # keep the scanned header light until its series is built
            for tag in PIXEL_TAGS:
                if tag in ds:
                    del ds[tag]


def resolve_duplicates(items: Iterable[Scanned]) -> int:
    """Settle copies of one instance among scanned images; returns how many were set aside."""
    by_uid: dict[str, list[Scanned]] = {}
    for item in items:
        if item.kind == "image" and item.header is not None:
            uid = str(item.header.get("SOPInstanceUID", "") or "")
            if uid:
                by_uid.setdefault(uid, []).append(item)
    set_aside = 0
    for copies in by_uid.values():
        if len(copies) < 2:
            continue
        kept: Scanned | None = None
        kept_pixels: np.ndarray | None = None
        for item in copies:
            try:
                pixels = _decode(item)
            except Exception as exc:  # any decoder failure is this copy's reason
                item.kind = "bad"
                item.reason = (
                    f"pixel data cannot be decoded: {type(exc).__name__}: {exc} "
                    "(another copy of this instance, same SOP Instance UID, was also given)"
                )
                set_aside += 1
                continue
            if kept is None or kept_pixels is None:
                kept, kept_pixels = item, pixels
                continue
            set_aside += 1
            same = pixels.shape == kept_pixels.shape and np.array_equal(pixels, kept_pixels)
            if same:
                item.kind = "skipped"
                item.reason = (
                    f"a copy of the same instance (SOP Instance UID) with the same pixel "
                    f"values as {kept.source.name}, which was kept"
                )
            else:
                item.kind = "bad"
                item.reason = (
                    f"conflicting copy: the same SOP Instance UID as {kept.source.name} but "
                    f"different pixel values; {kept.source.name} was kept, compare the two"
                )
    return set_aside
