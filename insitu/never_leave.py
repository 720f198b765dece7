"""Images that are identifying by nature: their pixels never leave the site.

De-identification removes names, dates and UIDs from a header; it cannot
remove a person from their own retina. The pattern of retinal vessels in a
fundus photograph is as individual as a fingerprint (retinal biometrics
identify people from it), and OCT volumes carry the same vessel shadows and
the individual shape of the macula. So these modalities are *never-leave*:
the disclosure engine refuses any output that carries their pixels (a
fingerprint match, or an image of their size), however it was transformed,
and no steward override is meant to let one out. docs/deidentification.md
explains this for site staff.

Ground floor (imports nothing of insitu): ingest records the reason in each
series' attributes (``never_leave``), and the engine and the airlock ask
:func:`never_leave_reason` of a series' modality.
"""

from __future__ import annotations

__all__ = ["NEVER_LEAVE", "never_leave_reason"]

NEVER_LEAVE: dict[str, str] = {
    "OP": "ophthalmic photography (fundus): retinal vessel patterns identify a person",
    "OPT": "ophthalmic tomography (OCT): retinal structure and vessel shadows identify a person",
    "OPM": "ophthalmic mapping: retinal thickness maps derive from an identifying image",
    "OCT": "optical coherence tomography (non-standard modality code): identifying retina",
}
# SOP classes of the ophthalmic image storages (PS3.4 B.5), whatever Modality says.
_OPHTHALMIC_SOP_PREFIX = "1.2.840.10008.5.1.4.1.1.77.1.5."


def never_leave_reason(modality: str, sop_class: str = "") -> str:
    """Why an image of ``modality`` (or SOP class) may never leave; "" when it may."""
    reason = NEVER_LEAVE.get(str(modality or "").upper(), "")
    if not reason and str(sop_class).startswith(_OPHTHALMIC_SOP_PREFIX):
        reason = "an ophthalmic image (retina): identifying by nature"
    return reason
