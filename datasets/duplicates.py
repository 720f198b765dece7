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

A lossy-compressed derivative of a slice is a different instance at the same
position (pydicom-data's 693_J2KI beside 693_UNCR): it declares Lossy Image
Compression "01" and names its original in its Source Image Sequence. When
that original is in the same series at the same position with the same size,
the derivative is skipped (the original is kept); two images at one position
without that link still refuse their series ("duplicate slice position").
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from insitu.datasets.dicom_pixels import PIXEL_TAGS
from insitu.datasets.dicom_read import Scanned, read_full

__all__ = ["resolve_duplicates", "resolve_lossy_copies"]

POSITION_TOL_MM = 1e-3


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


def _position(item: Scanned) -> tuple[float, ...] | None:
    header = item.header
    if header is None or int(header.get("NumberOfFrames", 1) or 1) != 1:
        return None
    try:
        values = tuple(float(v) for v in header.get("ImagePositionPatient") or ())
        values += tuple(float(v) for v in header.get("ImageOrientationPatient") or ())
    except (TypeError, ValueError):
        return None
    return values if len(values) == 9 else None


def _uid(item: Scanned) -> str:
    assert item.header is not None
    return str(item.header.get("SOPInstanceUID", "") or "")


def _sources(item: Scanned) -> list[str]:
    """SOP Instance UIDs this image says it was derived from."""
    assert item.header is not None
    out = []
    for ref in item.header.get("SourceImageSequence") or []:
        uid = str(ref.get("ReferencedSOPInstanceUID", "") or "")
        if uid:
            out.append(uid)
    return out


def resolve_lossy_copies(items: Iterable[Scanned]) -> int:
    """Skip lossy-compressed derivatives whose original slice is in the same series at the
    same position (see the module doc); returns how many were skipped."""
    images = [i for i in items if i.kind == "image" and i.header is not None]
    by_uid = {(i.series_uid, _uid(i)): i for i in images}
    skipped = 0
    for item in images:
        header = item.header
        assert header is not None
        if str(header.get("LossyImageCompression", "") or "") != "01":
            continue
        here = _position(item)
        if here is None:
            continue
        for uid in _sources(item):
            original = by_uid.get((item.series_uid, uid))
            if original is None or original is item or original.kind != "image":
                continue
            assert original.header is not None
            there = _position(original)
            if there is None or str(original.header.get("LossyImageCompression", "") or "") == "01":
                continue
            same_size = (header.get("Rows"), header.get("Columns")) == (
                original.header.get("Rows"),
                original.header.get("Columns"),
            )
            if same_size and max(abs(a - b) for a, b in zip(here, there, strict=True)) <= (
                POSITION_TOL_MM
            ):
                item.kind = "skipped"
                item.reason = (
                    f"a lossy-compressed copy of {original.source.name}, which was kept (Lossy "
                    "Image Compression 01, its Source Image Sequence names that instance, "
                    "same position and size)"
                )
                skipped += 1
                break
    return skipped
