"""What insitu knows about each imaging modality, in one registry.

Ingest (the units a series' values are in), de-identification (whether images
of the modality usually carry burned-in text), defacing (whether a head scan of
the modality can show a face) and the viewer (its first window preset) ask
:func:`modality` instead of testing modality codes themselves. A new modality
is a new :class:`Modality` in :data:`MODALITIES`; an unknown code gets
:data:`DEFAULT`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT", "MODALITIES", "Modality", "modality", "units_of"]


@dataclass(frozen=True)
class Modality:
    """One DICOM modality (its code, PS3.3 C.7.3.1.1.1) and how insitu treats it."""

    code: str
    name: str
    # Units: the rescale type the modality's values are in when none or this one is
    # stated ("HU" for CT), a header keyword naming them (PET's Units), and the units
    # when nothing says (MR signal is arbitrary).
    rescale_units: str = ""
    units_keyword: str = ""
    fallback_units: str = "pixel value"
    # Images of the modality usually carry burned-in text (PS3.15 E.3.1): held back
    # unless Burned In Annotation says NO.
    burned_in: bool = False
    # A head scan of the modality can show a face (defaced at ingest).
    defaced: bool = False
    # The viewer's first window preset (insitu.widgets.viewer.PRESETS), "" = automatic.
    viewer_preset: str = ""


MODALITIES: Mapping[str, Modality] = {
    m.code: m
    for m in (
        Modality("CT", "computed tomography", rescale_units="HU", defaced=True,
                 viewer_preset="soft tissue"),
        Modality("MR", "magnetic resonance", fallback_units="arbitrary", defaced=True),
        Modality("PT", "positron emission tomography", units_keyword="Units"),
        Modality("CR", "computed radiography"),
        Modality("DX", "digital radiography"),
        Modality("US", "ultrasound", burned_in=True),
        Modality("SC", "secondary capture", burned_in=True),
        Modality("XC", "external-camera photography", burned_in=True),
        Modality("OP", "ophthalmic photography"),
        Modality("OPT", "ophthalmic tomography"),
        Modality("SEG", "segmentation"),
        Modality("SR", "structured report"),
    )
}  # fmt: skip
DEFAULT = Modality("", "unknown modality")


def modality(code: str | None) -> Modality:
    """The registry's entry for ``code`` (case and spaces ignored), else :data:`DEFAULT`."""
    return MODALITIES.get(str(code or "").strip().upper(), DEFAULT)


def units_of(ds: Any) -> str:
    """The units of a series' values, from its (first) DICOM header."""
    kind = modality(str(ds.get("Modality", "")))
    rescale_type = str(ds.get("RescaleType", "") or "")
    if kind.rescale_units and rescale_type in ("", kind.rescale_units):
        return kind.rescale_units
    if kind.units_keyword and ds.get(kind.units_keyword):
        return str(ds.get(kind.units_keyword))
    if rescale_type:
        return rescale_type
    return kind.fallback_units
