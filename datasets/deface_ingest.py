"""The defacing step of ingest: which series are heads, and what is recorded.

Called by :func:`insitu.datasets.ingest._build_series` between decoding and
writing a series (the only hook it needs). Policy:

- on by default (``[deid] deface_head_scans = true``);
- a dataset is opted out only with a reason, in insitu.toml::

      [deface.opt_out]
      phantom-study = "phantom scans, no faces"

  The reason travels in the de-identification options, so it is recorded in
  the store (``attrs["insitu"]["deid"]["options"]``) and the provenance;
- a head series (see :func:`insitu.datasets.deface.is_head_series`) is
  defaced; its header gets the Clean Recognizable Visual Features Option
  (CID 7050, 113101) in De-identification Method Code Sequence and a note in
  De-identification Method; the series attributes get a ``deface`` record;
- a head series whose brain cannot be found is refused (a face is never
  published because defacing failed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from insitu.errors import ConfigError

__all__ = ["deface_policy", "deface_series"]


def deface_policy(config: Any, dataset: str) -> tuple[bool, str]:
    """(deface head series?, the recorded reason when not) for ``dataset``."""
    if not config.deid.deface_head_scans:
        return False, "deid.deface_head_scans = false in insitu.toml"
    section = config.extra.get("deface", {})
    unknown = sorted(set(section) - {"opt_out"})
    if unknown:
        raise ConfigError(f"insitu.toml: unknown key(s) in [deface]: {unknown}; valid: opt_out")
    opt_out = section.get("opt_out", {})
    if not isinstance(opt_out, dict):
        raise ConfigError(
            "insitu.toml: [deface.opt_out] must map dataset names to reasons, e.g. "
            'phantom-study = "phantom scans, no faces"'
        )
    if dataset in opt_out:
        reason = opt_out[dataset]
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(
                f"insitu.toml: deface.opt_out.{dataset} needs a reason (a non-empty string)"
            )
        return False, f"opted out: {reason.strip()}"
    return True, ""


def deface_series(
    volume: np.ndarray,
    geometry: Any,
    header: Any,
    original: Any,
    options: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Deface ``volume`` when it is a head and defacing is on; annotate ``header``.

    ``header`` is the de-identified pydicom dataset stored with the series (it
    is changed in place); ``original`` the original first object, read for
    Body Part Examined and Series Description only (never stored).
    Returns the volume to write and the ``deface`` record for the series attributes.
    """
    from insitu.datasets.deface import (
        CLEAN_RECOGNIZABLE_VISUAL_FEATURES,
        affine_from_dicom_order,
        deface,
        is_head_series,
    )

    modality = str(original.get("Modality", "") or "")
    if volume.ndim != 3:
        return volume, {"defaced": False, "reason": "not a grey-scale volume"}
    decision = is_head_series(
        str(original.get("BodyPartExamined", "") or "") or None,
        modality,
        tuple(volume.shape),
        tuple(geometry.spacing),
        description=str(original.get("SeriesDescription", "") or "")
        or str(original.get("StudyDescription", "") or ""),
    )
    if not decision.is_head:
        return volume, {"defaced": False, "reason": f"not a head: {decision.reason}"}
    if not getattr(options, "deface_head_scans", True):
        reason = getattr(options, "deface_opt_out_reason", "") or "defacing is off"
        return volume, {"defaced": False, "reason": f"head ({decision.reason}); {reason}"}
    affine = affine_from_dicom_order(geometry.affine)
    result = deface(volume, affine, modality)  # DefacingError: the caller refuses the series
    _record(header, CLEAN_RECOGNIZABLE_VISUAL_FEATURES)
    return result.volume, {
        "defaced": True,
        "reason": decision.reason,
        "method": result.method,
        "removed_fraction": round(result.removed_fraction, 4),
        "brain_kept_fraction": round(result.brain_kept_fraction, 6),
        "plane": list(result.plane),
    }


def _record(header: Any, code: dict[str, str]) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.CodeValue = code["CodeValue"]
    item.CodingSchemeDesignator = code["CodingSchemeDesignator"]
    item.CodeMeaning = code["CodeMeaning"]
    codes = list(header.get("DeidentificationMethodCodeSequence", []) or [])
    if not any(getattr(c, "CodeValue", "") == code["CodeValue"] for c in codes):
        codes.append(item)
    header.DeidentificationMethodCodeSequence = Sequence(codes)
    # LO, VM 1-n: one more value, at most 64 characters
    value = header.get("DeidentificationMethod", None)
    if value is None or value == "":
        values = []
    elif isinstance(value, str):
        values = [value]
    else:
        values = [str(v) for v in value]
    note = "Clean Recognizable Visual Features: quickshear"
    if note not in values:
        header.DeidentificationMethod = [*values, note] if values else note
