"""De-identification: the DICOM PS3.15 Annex E Basic Application Level Confidentiality
Profile with the options Retain Longitudinal Temporal Information with Modified
Dates and Retain Patient Characteristics (Retain Device Identity on request).

The action for each attribute comes from Table E.1-1 as generated into
``profile_e1_1.json`` (see ``tools_generate_profile.py``), never from a list
typed here. On top of the table, attributes it does not list are judged by
their kind (see :meth:`Deidentifier._unlisted_action`), so an attribute newer
than the table's edition cannot carry identifiers through.

    deid = Deidentifier(site_key, DeidOptions())
    result = deid.apply(ds)          # a new dataset; ds is never changed
    result.dataset, result.subject_id, result.original_patient_id

``original_patient_id`` is the only identifying output: it belongs in the
node's ``private/`` pseudonym link table and nowhere else.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydicom import config as pydicom_config
from pydicom._uid_dict import UID_dictionary
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    MultiFrameSingleBitSecondaryCaptureImageStorage,
    MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage,
)
from pydicom.valuerep import PersonName

from insitu.datasets.deid_keys import KeyedHasher
from insitu.datasets.deid_profile import (
    OPT_DEVICE_IDENTITY,
    OPT_MODIFIED_DATES,
    OPT_PATIENT_CHARACTERISTICS,
    ActionTable,
    build_table,
    load_table,
    provenance,
)
from insitu.datasets.deid_values import dummy_for, shift_da, shift_temporal
from insitu.datasets.modality import MODALITIES, modality
from insitu.errors import HeldBack, IngestError

__all__ = [
    "BURNED_IN_MODALITIES",
    "PROFILE",
    "SAFE_PRIVATE_TAGS",
    "DeidOptions",
    "DeidResult",
    "Deidentifier",
    "HeldBack",
    "SafePrivateTag",
    "burned_in_reason",
    "make_profile",
]

PROFILE_VERSION = "1"

# Modalities whose images usually carry burned-in text (PS3.15 E.3.1 names
# ultrasound and secondary capture): held back unless Burned In Annotation = NO.
# Declared in the modality registry (insitu.datasets.modality).
BURNED_IN_MODALITIES = frozenset(code for code, m in MODALITIES.items() if m.burned_in)
# A secondary capture is a picture of a screen, whatever its Modality says.
SECONDARY_CAPTURE_CLASSES = frozenset(
    {
        SecondaryCaptureImageStorage,
        MultiFrameSingleBitSecondaryCaptureImageStorage,
        MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
        MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
        MultiFrameTrueColorSecondaryCaptureImageStorage,
    }
)

TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})
# Free text and names: removed when Table E.1-1 does not list the attribute.
FREE_TEXT_VRS = frozenset({"PN", "LT", "ST", "UT", "UC", "UR"})
NUMERIC_VRS = frozenset({"FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "DS", "IS"})
# UI attributes that name a standard thing, not an instance: kept when the table
# does not list them (a vendor's private SOP Class is no patient identifier).
STANDARD_UID_SUFFIXES = ("ClassUID", "TransferSyntaxUID", "ClassUIDInFile", "UIDInFile")
STANDARD_UID_KEYWORDS = frozenset({"CodingSchemeUID", "ContextUID", "MappingResourceUID"})


@dataclass(frozen=True)
class SafePrivateTag:
    """One private attribute kept (Retain Safe Private, PS3.15 E.3.10): numbers only."""

    creator: str
    group: int
    offset: int  # the low byte of the element number inside the creator's block
    vrs: frozenset[str]
    vm: int  # exactly this many numbers: text read as numbers rarely fits
    why: str


# The whole safe-list. Each entry is a number that analysis needs and that
# cannot identify anyone; a value that is not a number of the listed VR is
# dropped, so text cannot hide in it.
SAFE_PRIVATE_TAGS: tuple[SafePrivateTag, ...] = (
    SafePrivateTag(
        "Philips MR Imaging DD 001", 0x2005, 0x0D, frozenset({"FL"}), 1, "MR scale intercept"
    ),
    SafePrivateTag(
        "Philips MR Imaging DD 001", 0x2005, 0x0E, frozenset({"FL"}), 1, "MR scale slope"
    ),
    SafePrivateTag("SIEMENS MR HEADER", 0x0019, 0x0C, frozenset({"IS"}), 1, "diffusion b-value"),
    SafePrivateTag(
        "SIEMENS MR HEADER", 0x0019, 0x0E, frozenset({"FD"}), 3, "diffusion gradient direction"
    ),
)
_SAFE = {(s.creator, s.group, s.offset): s for s in SAFE_PRIVATE_TAGS}


@dataclass(frozen=True)
class DeidOptions:
    """Profile options. The defaults are the issue's: dates shifted, patient
    characteristics kept, device identity removed, burned-in images held back."""

    retain_device_identity: bool = False
    allow_burned_in: bool = False
    retain_longitudinal_modified_dates: bool = True
    retain_patient_characteristics: bool = True
    # Clean Recognizable Visual Features (issue 6): head CT/MR defaced at ingest
    # (insitu.datasets.deface_ingest); when off, the recorded reason why.
    deface_head_scans: bool = True
    deface_opt_out_reason: str = ""

    @classmethod
    def from_config(cls, section: Any) -> DeidOptions:
        """From ``SiteConfig.deid`` (insitu.toml ``[deid]``)."""
        return cls(
            retain_device_identity=bool(section.retain_device_identity),
            allow_burned_in=bool(section.allow_burned_in),
            deface_head_scans=bool(getattr(section, "deface_head_scans", True)),
        )


@dataclass(frozen=True)
class DeidResult:
    """A de-identified dataset and what links it to its subject.

    ``original_patient_id`` is identifying: store it only under ``private/``.
    ``burned_in`` is the hold-back reason when the admin allowed the image anyway.
    ``actions`` counts what was done (no values), for the ingest report.
    """

    dataset: Dataset
    subject_id: str
    original_patient_id: str
    date_shift_days: int | None
    burned_in: str | None = None
    actions: dict[str, int] = field(default_factory=dict)


def burned_in_reason(ds: Dataset) -> str | None:
    """Why ``ds`` may show identifiers in its pixels, or None. Never quotes a header value."""
    flag = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
    if flag == "YES":
        why = "Burned In Annotation is YES: its pixels show text that may identify the patient"
    elif flag == "NO":
        return None
    elif modality(str(ds.get("Modality", "") or "")).burned_in:
        code = str(ds.Modality).strip().upper()
        why = f"modality {code} often has burned-in text and Burned In Annotation is not NO"
    elif str(ds.get("SOPClassUID", "") or "") in SECONDARY_CAPTURE_CLASSES:
        why = (
            "a secondary capture (a picture of a screen) often has burned-in text "
            "and Burned In Annotation is not NO"
        )
    else:
        return None
    return (
        f"{why}; held back for review (after checking such images a site admin can "
        "allow them with [deid] allow_burned_in = true)"
    )


def _option_sets(options: DeidOptions) -> tuple[str, ...]:
    sets = []
    if options.retain_longitudinal_modified_dates:
        sets.append(OPT_MODIFIED_DATES)
    if options.retain_patient_characteristics:
        sets.append(OPT_PATIENT_CHARACTERISTICS)
    if options.retain_device_identity:
        sets.append(OPT_DEVICE_IDENTITY)
    return tuple(sets)


# CID 7050 concepts (DCM scheme): code value and meaning. Written out rather than
# taken from pydicom.sr.codedict, whose import costs ~0.2 s of every ingest;
# tests/test_deid_profile.py checks them against pydicom's, and the code values
# are checked against the rule set codes of the generated table below.
CODE_SCHEME = "DCM"
_CODE_KEYWORDS = {  # pydicom's keywords for them (the test compares)
    "basic_profile": "BasicApplicationConfidentialityProfile",
    OPT_MODIFIED_DATES: "RetainLongitudinalTemporalInformationModifiedDatesOption",
    OPT_PATIENT_CHARACTERISTICS: "RetainPatientCharacteristicsOption",
    OPT_DEVICE_IDENTITY: "RetainDeviceIdentityOption",
    "retain_safe_private": "RetainSafePrivateOption",
}
CID_7050 = {
    "basic_profile": ("113100", "Basic Application Confidentiality Profile"),
    OPT_MODIFIED_DATES: (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    OPT_PATIENT_CHARACTERISTICS: ("113108", "Retain Patient Characteristics Option"),
    OPT_DEVICE_IDENTITY: ("113109", "Retain Device Identity Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
}


@cache
def _codes(rule_sets: tuple[str, ...]) -> list[dict[str, str]]:
    """CID 7050 code dicts for rule sets (cached: callers must not change them)."""
    table = load_table()["rule_sets"]
    out = []
    for name in rule_sets:
        value, meaning = CID_7050[name]
        if value != table[name]["code"]:
            raise IngestError(
                f"CID 7050 code {value} for {name} differs from the table's "
                f"{table[name]['code']}: regenerate profile_e1_1.json"
            )
        out.append({"value": value, "scheme": CODE_SCHEME, "meaning": meaning})
    return out


def make_profile(options: DeidOptions) -> dict[str, Any]:
    """The profile as recorded in provenance: name, edition, options, codes."""
    table = load_table()
    sets = ("basic_profile", *_option_sets(options))
    return {
        "name": table["rule_sets"]["basic_profile"]["name"],
        "standard": "DICOM PS3.15 Annex E",
        "edition": table["edition"],
        "version": PROFILE_VERSION,
        "options": [table["rule_sets"][s]["name"] for s in sets[1:]],
        "codes": [dict(c) for c in _codes(sets)],
        "table": provenance(),
        "safe_private_tags": [
            {
                "creator": s.creator,
                "tag": f"({s.group:04X},xx{s.offset:02X})",
                "vr": sorted(s.vrs),
                "vm": s.vm,
                "what": s.why,
            }
            for s in SAFE_PRIVATE_TAGS
        ],
        "burned_in": "allowed by the admin" if options.allow_burned_in else "held back",
        "defacing": "head CT/MR defaced (quickshear); CID 7050 113101 in defaced series"
        if options.deface_head_scans
        else f"off: {options.deface_opt_out_reason or 'not requested'}",
        "date_shift": "per subject, whole days, 1 to 10 years back, HMAC-SHA256 of the site key"
        if options.retain_longitudinal_modified_dates
        else "dates removed",
    }


PROFILE: dict[str, Any] = make_profile(DeidOptions())


def _values(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _one_or_many(values: list[Any]) -> Any:
    return values[0] if len(values) == 1 else values


@dataclass
class _Run:
    """State of one apply(): the subject's shift and what was done."""

    days: int | None
    counts: Counter[str] = field(default_factory=Counter)
    kept_private: bool = False


class Deidentifier:
    """Applies the profile with one site key; safe to reuse for many datasets."""

    def __init__(self, site_key: bytes, options: DeidOptions | None = None) -> None:
        self.options = options or DeidOptions()
        self._hash = KeyedHasher(site_key)
        self._table: ActionTable = build_table(_option_sets(self.options))
        self._actions: dict[tuple[int, str], tuple[str, bool]] = {}
        self.profile = make_profile(self.options)

    # -- keyed values -------------------------------------------------------
    def uid(self, original_uid: str) -> str:
        """The replacement for a UID: the same for the same key, everywhere."""
        return self._hash.uid(original_uid)

    def pseudonym(self, patient_id: str) -> str:
        """The subject pseudonym, e.g. ``sub-3f9a0c1d2e4b``."""
        return self._hash.pseudonym(patient_id)

    def date_shift_days(self, patient_id: str) -> int:
        """The subject's date shift in days (negative, never 0)."""
        return self._hash.shift_days(patient_id)

    def shift_date(self, patient_id: str, da: str) -> str:
        """Shift one ``YYYYMMDD`` date the way :meth:`apply` shifts this subject's dates."""
        new = shift_da(da, self.date_shift_days(patient_id))
        if new is None:
            raise IngestError(f"not a DICOM date (YYYYMMDD): {len(da)} characters given")
        return new

    @staticmethod
    def subject_key(ds: Dataset) -> str:
        """What identifies the subject: Patient ID, else Patient's Name, else the study."""
        for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
            value = str(ds.get(keyword, "") or "").strip()
            if value:
                return value
        return ""

    # -- the profile -----------------------------------------------------------
    def apply(self, ds: Dataset) -> DeidResult:
        """De-identify ``ds`` into a new dataset; raise HeldBack for burned-in images."""
        reason = burned_in_reason(ds)
        if reason and not self.options.allow_burned_in:
            raise HeldBack(reason)
        key = self.subject_key(ds)
        days = (
            self.date_shift_days(key) if self.options.retain_longitudinal_modified_dates else None
        )
        run = _Run(days=days)
        out = self._walk(ds, run)
        subject = self.pseudonym(key)
        out.PatientID = subject
        out.PatientName = subject
        self._record(out, run)
        out.file_meta = self._file_meta(ds, out)
        return DeidResult(
            dataset=out,
            subject_id=subject,
            original_patient_id=key,
            date_shift_days=days,
            burned_in=reason,
            actions=dict(run.counts),
        )

    def _record(self, out: Dataset, run: _Run) -> None:
        """Patient Identity Removed, the method and its CID 7050 codes (PS3.15 E.1.1)."""
        sets = ["basic_profile", *_option_sets(self.options)]
        if run.kept_private:
            sets.append("retain_safe_private")
        method_codes = _codes(tuple(sets))
        out.PatientIdentityRemoved = "YES"
        # LO is at most 64 characters a value: one value per part of the method.
        header = (
            f"insitu deid {PROFILE_VERSION}: PS3.15 Table E.1-1, DICOM {self.profile['edition']}"
        )
        out.DeidentificationMethod = [header] + [c["meaning"][:64] for c in method_codes]
        items = []
        for c in method_codes:
            item = Dataset()
            item.CodeValue = c["value"]
            item.CodingSchemeDesignator = c["scheme"]
            item.CodeMeaning = c["meaning"]
            items.append(item)
        out.DeidentificationMethodCodeSequence = Sequence(items)
        out.LongitudinalTemporalInformationModified = "MODIFIED" if run.days else "REMOVED"

    @staticmethod
    def _file_meta(ds: Dataset, out: Dataset) -> FileMetaDataset:
        """A fresh file meta: the source's transfer syntax, no source application names."""
        src = getattr(ds, "file_meta", None) or FileMetaDataset()
        tsuid = src.get("TransferSyntaxUID")
        if not tsuid:
            encodings: dict[tuple[bool | None, bool | None], UID] = {
                (True, True): ImplicitVRLittleEndian,
                (False, False): ExplicitVRBigEndian,
            }
            tsuid = encodings.get(ds.original_encoding, ExplicitVRLittleEndian)
        meta = FileMetaDataset()
        sop_class = out.get("SOPClassUID") or src.get("MediaStorageSOPClassUID")
        if sop_class:
            meta.MediaStorageSOPClassUID = sop_class
        if "SOPInstanceUID" in out:
            meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
        meta.TransferSyntaxUID = UID(str(tsuid))
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        return meta

    # -- walking the dataset ------------------------------------------------------
    def _walk(self, ds: Dataset, run: _Run) -> Dataset:
        out = Dataset()
        kept_blocks: set[tuple[int, int]] = set()
        for elem in ds:
            tag: BaseTag = elem.tag
            if tag.group == 0x0002 or tag.element == 0x0000:
                continue  # file meta is rebuilt; group lengths are retired
            if tag.is_private:
                if not tag.is_private_creator and self._safe_private(ds, elem):
                    out.add(_copy(elem))
                    kept_blocks.add((tag.group, tag.element >> 8))
                    run.counts["private kept"] += 1
                    run.kept_private = True
                elif not tag.is_private_creator:
                    run.counts["private removed"] += 1
                continue
            new = self._element(elem, run)
            if new is not None:
                out.add(new)
        for group, block in kept_blocks:
            out.add(_copy(ds[group, block]))
        return out

    def _safe_private(self, ds: Dataset, elem: DataElement) -> bool:
        tag = elem.tag
        creator_elem = ds.get((tag.group, tag.element >> 8))
        if creator_elem is None or (tag.element >> 8) < 0x10:
            return False
        creator = str(creator_elem.value or "").strip()
        safe = _SAFE.get((creator, tag.group, tag.element & 0xFF))
        if safe is None or elem.VR not in safe.vrs or elem.VR not in NUMERIC_VRS:
            return False
        try:
            values = [float(v) for v in _values(elem.value)]
        except (TypeError, ValueError):
            return False
        return len(values) == safe.vm and all(math.isfinite(v) for v in values)

    def _unlisted_action(self, elem: DataElement) -> str:
        """The action for an attribute Table E.1-1 does not list.

        Overlays (60xx) and curves (50xx) go whole; so do attributes unknown to
        the data dictionary (nothing says what they hold), free text and names,
        and comments. UIDs are replaced, dates shifted, times checked.
        """
        group = elem.tag.group
        if group & 0xFF00 in (0x5000, 0x6000) or not elem.keyword:
            return "X"
        if elem.VR == "UI":
            return "U"
        if elem.VR in TEMPORAL_VRS:
            return (
                "T" if (elem.VR == "TM" or self.options.retain_longitudinal_modified_dates) else "X"
            )
        if elem.VR in FREE_TEXT_VRS or elem.keyword.endswith(("Comments", "Comment")):
            return "X"
        return "K"

    def _action(self, elem: DataElement) -> tuple[str, bool]:
        """(action, listed) for an element; depends only on tag, VR and options: cached."""
        key = (int(elem.tag), elem.VR)
        cached = self._actions.get(key)
        if cached is not None:
            return cached
        rule = self._table.rule_for(elem.tag)
        action = rule.action if rule is not None else self._unlisted_action(elem)
        if action == "C" and rule is not None:
            dates = self.options.retain_longitudinal_modified_dates
            cleanable = elem.VR in TEMPORAL_VRS and (elem.VR == "TM" or dates)
            action = "T" if cleanable else rule.fallback
        self._actions[key] = (action, rule is not None)
        return action, rule is not None

    def _element(self, elem: DataElement, run: _Run) -> DataElement | None:
        vr = elem.VR
        action, listed = self._action(elem)
        run.counts[_ACTION_NAMES.get(action, action)] += 1
        if action == "X":
            return None
        if vr == "SQ":
            if action in ("Z", "D"):
                return DataElement(elem.tag, "SQ", Sequence())
            items = [self._walk(item, run) for item in elem.value or []]
            return DataElement(elem.tag, "SQ", Sequence(items))
        if action == "Z":
            return _new(elem, empty_value_for_VR(vr))
        if action in ("D", "U") and vr == "UI":
            return _new(elem, self._replace_uids(elem, exempt_by_keyword=not listed))
        if action in ("D", "U"):
            return _new(elem, dummy_for(vr))
        if action == "T":
            values = [str(v) for v in _values(elem.value)]
            if not values:
                return _new(elem, empty_value_for_VR(vr))
            shifted = shift_temporal(vr, values, run.days or 0)
            if shifted is None or (vr != "TM" and run.days is None):
                run.counts["invalid date or time removed"] += 1
                return None
            return _new(elem, _one_or_many(shifted))
        return _copy(elem)

    def _replace_uids(self, elem: DataElement, exempt_by_keyword: bool) -> Any:
        values = [str(v).strip(" \0") for v in _values(elem.value)]
        if not values:
            return empty_value_for_VR("UI")
        standard = exempt_by_keyword and (
            elem.keyword.endswith(STANDARD_UID_SUFFIXES) or elem.keyword in STANDARD_UID_KEYWORDS
        )
        new = [v if (v in UID_dictionary or standard) else self._hash.uid(v) for v in values]
        return _one_or_many(new)


# Names for the counts in DeidResult.actions (T: shift a date, check a time).
_ACTION_NAMES = {
    "X": "removed",
    "Z": "emptied",
    "D": "dummy",
    "U": "uid replaced",
    "K": "kept",
    "T": "date shifted or time checked",
}


def _new(elem: DataElement, value: Any) -> DataElement:
    return DataElement(elem.tag, elem.VR, value, validation_mode=pydicom_config.IGNORE)


def _copy(elem: DataElement) -> DataElement:
    """A copy that shares only immutable values (bytes, str, numbers), so changing
    the result never reaches back into the source."""
    new = copy.copy(elem)
    value = elem.value
    if isinstance(value, MultiValue):
        new.value = list(value)  # a new MultiValue of the same (immutable) items
    elif value is not None and not isinstance(value, bytes | str | int | float | PersonName):
        new.value = copy.deepcopy(value)
    return new
