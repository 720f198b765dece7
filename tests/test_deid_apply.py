"""De-identification behaviour: UIDs, dates, pseudonyms, the record of what was
done, burned-in hold-back, the untouched input, and real files."""

from __future__ import annotations

import copy
import io
import re
from datetime import date
from pathlib import Path

import pydicom
import pytest
from fixtures_deid import DEID_DATA, SITE_KEY, plant_markers
from pydicom.config import IGNORE
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from insitu.datasets.deid import PROFILE, Deidentifier, DeidOptions, HeldBack
from insitu.errors import ConfigError, IngestError

UID_RE = re.compile(r"2\.25\.(0|[1-9][0-9]*)")


def _ct() -> Dataset:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    return pydicom.dcmread(path)


def _written(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def _days(a: str, b: str) -> int:
    da = date(int(a[:4]), int(a[4:6]), int(a[6:8]))
    db = date(int(b[:4]), int(b[4:6]), int(b[6:8]))
    return (db - da).days


# -- (b) UIDs --------------------------------------------------------------------


def test_uids_are_consistent_across_objects_and_references(deid: Deidentifier) -> None:
    a, b = _ct(), _ct()
    b.SOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = a.SOPInstanceUID
    b.ReferencedImageSequence = [ref]
    ra, rb = deid.apply(a).dataset, deid.apply(b).dataset

    assert ra.StudyInstanceUID == rb.StudyInstanceUID == deid.uid(a.StudyInstanceUID)
    assert ra.SeriesInstanceUID == rb.SeriesInstanceUID != ra.StudyInstanceUID
    assert ra.FrameOfReferenceUID == rb.FrameOfReferenceUID == deid.uid(a.FrameOfReferenceUID)
    assert ra.SOPInstanceUID != rb.SOPInstanceUID
    assert rb.ReferencedImageSequence[0].ReferencedSOPInstanceUID == ra.SOPInstanceUID
    # standard UIDs name things, not people: kept
    assert rb.ReferencedImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    assert ra.SOPClassUID == a.SOPClassUID
    assert ra.file_meta.MediaStorageSOPInstanceUID == ra.SOPInstanceUID
    assert ra.file_meta.TransferSyntaxUID == a.file_meta.TransferSyntaxUID
    for uid in (ra.StudyInstanceUID, ra.SeriesInstanceUID, ra.SOPInstanceUID):
        assert UID_RE.fullmatch(uid) and len(uid) <= 64
        assert pydicom.uid.UID(uid).is_valid


def test_uids_and_pseudonyms_depend_on_the_key() -> None:
    ds = _ct()
    one = Deidentifier(SITE_KEY).apply(ds)
    again = Deidentifier(bytes(SITE_KEY)).apply(ds)  # a re-ingest: a new instance, same key
    other = Deidentifier(b"another site key of 32 bytes!!!").apply(ds)
    assert one.dataset.SOPInstanceUID == again.dataset.SOPInstanceUID
    assert one.subject_id == again.subject_id
    assert one.dataset.SOPInstanceUID != other.dataset.SOPInstanceUID
    assert one.dataset.StudyInstanceUID != other.dataset.StudyInstanceUID
    assert one.subject_id != other.subject_id


def test_unlisted_uid_attributes_are_replaced_too(deid: Deidentifier) -> None:
    """UIDs newer than the table (not listed) are hashed; UIDs naming standards stay."""
    ds = _ct()
    ds.SOPInstanceUIDOfConcatenationSource = ds.SOPInstanceUID  # not in Table E.1-1
    ds.VolumeFrameOfReferenceUID = "1.2.3.98"  # not in Table E.1-1
    ds.CodingSchemeUID = "2.16.840.1.113883.6.96"  # SNOMED CT: names a standard
    out = deid.apply(ds).dataset
    assert out.SOPInstanceUIDOfConcatenationSource == out.SOPInstanceUID
    assert out.VolumeFrameOfReferenceUID == deid.uid("1.2.3.98")
    assert out.CodingSchemeUID == "2.16.840.1.113883.6.96"


def test_short_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 16"):
        Deidentifier(b"short")


# -- subjects ----------------------------------------------------------------------


def test_patient_name_and_id_become_the_pseudonym(deid: Deidentifier) -> None:
    ds = _ct()
    result = deid.apply(ds)
    assert result.original_patient_id == str(ds.PatientID)
    assert result.subject_id == deid.pseudonym(str(ds.PatientID))
    assert re.fullmatch(r"sub-[0-9a-f]{12}", result.subject_id)
    assert result.dataset.PatientID == result.subject_id
    assert str(result.dataset.PatientName) == result.subject_id


def test_subject_without_patient_id_falls_back_to_name_then_study(deid: Deidentifier) -> None:
    ds = _ct()
    ds.PatientID = ""
    assert deid.apply(ds).original_patient_id == str(ds.PatientName)
    ds.PatientName = ""
    result = deid.apply(ds)
    assert result.original_patient_id == ds.StudyInstanceUID
    assert result.subject_id == deid.pseudonym(ds.StudyInstanceUID)


# -- (c) dates ----------------------------------------------------------------------


def _study(patient: str, study_date: str, acq_dt: str = "") -> Dataset:
    ds = _ct()
    ds.PatientID = patient
    ds.StudyDate = study_date
    ds.ContentDate = study_date
    ds.StudyTime = "101500.25"
    if acq_dt:
        ds.AcquisitionDateTime = acq_dt
    return ds


def test_dates_shift_per_subject_and_keep_intervals(deid: Deidentifier) -> None:
    first = deid.apply(_study("P1", "20200101", "20200101123000.5+0100")).dataset
    second = deid.apply(_study("P1", "20200315")).dataset
    assert first.StudyDate != "20200101"
    assert _days(first.StudyDate, second.StudyDate) == _days("20200101", "20200315")
    shift = _days("20200101", first.StudyDate)
    assert -3650 <= shift <= -365
    assert first.StudyDate == deid.shift_date("P1", "20200101")
    assert first.ContentDate == first.StudyDate
    # DT: the date part moves, time of day and zone stay; TM stays
    assert first.AcquisitionDateTime == first.StudyDate + "123000.5+0100"
    assert first.StudyTime == "101500.25"
    assert first.LongitudinalTemporalInformationModified == "MODIFIED"
    # re-ingest with a fresh instance: the same dates
    assert Deidentifier(SITE_KEY).apply(_study("P1", "20200315")).dataset.StudyDate == (
        second.StudyDate
    )


def test_partial_and_legacy_dates(deid: Deidentifier) -> None:
    days = deid.date_shift_days("P1")
    ds = _study("P1", "20200101")
    ds[0x00080020] = DataElement(0x00080020, "DA", "2020.01.01", validation_mode=IGNORE)
    ds.add_new(0x00181202, "DT", "2020")  # Date Time of Last Calibration: year only
    ds.PatientBirthDate = "19500101"
    out = deid.apply(ds).dataset
    assert out.StudyDate == deid.shift_date("P1", "20200101")
    assert len(out[0x00181202].value) == 4 or 0x00181202 not in out
    assert out.PatientBirthDate == ""  # Z in Table E.1-1: the age is kept instead
    assert days == deid.date_shift_days("P1")


def test_invalid_dates_are_removed_not_kept(deid: Deidentifier) -> None:
    ds = _study("P1", "20200101")
    # Acquisition Date and Time holding text (written unchecked, as a broken modality might)
    ds[0x00080022] = DataElement(0x00080022, "DA", "JOHN SMITH", validation_mode=IGNORE)
    ds[0x00080032] = DataElement(0x00080032, "TM", "SMITHJ", validation_mode=IGNORE)
    out = deid.apply(ds).dataset
    assert "AcquisitionDate" not in out
    assert "AcquisitionTime" not in out
    with pytest.raises(IngestError, match="not a DICOM date"):
        deid.shift_date("P1", "yesterday")


def test_different_subjects_get_different_shifts(deid: Deidentifier) -> None:
    shifts = [deid.date_shift_days(f"PATIENT-{i}") for i in range(300)]
    assert all(-3650 <= s <= -365 for s in shifts)
    assert len(set(shifts)) > 250  # 3286 possible shifts: collisions are rare
    assert sum(shifts) / len(shifts) == pytest.approx(-(365 + 3650) / 2, rel=0.1)


def test_dates_removed_without_the_option() -> None:
    deid = Deidentifier(SITE_KEY, DeidOptions(retain_longitudinal_modified_dates=False))
    out = deid.apply(_study("P1", "20200101")).dataset
    assert out.StudyDate == ""  # Z in the basic profile
    assert out.get("AcquisitionDate", "") == ""  # X/Z -> Z: empty
    assert out.LongitudinalTemporalInformationModified == "REMOVED"
    assert deid.apply(_study("P1", "20200101")).date_shift_days is None


# -- (d) the record ------------------------------------------------------------------


def test_records_method_and_codes(deid: Deidentifier) -> None:
    out = deid.apply(_ct()).dataset
    assert out.PatientIdentityRemoved == "YES"
    assert all(len(v) <= 64 for v in out.DeidentificationMethod)
    assert "2024c" in out.DeidentificationMethod[0]
    items = out.DeidentificationMethodCodeSequence
    assert [i.CodeValue for i in items] == ["113100", "113107", "113108"]
    assert {i.CodingSchemeDesignator for i in items} == {"DCM"}
    assert items[0].CodeMeaning == "Basic Application Confidentiality Profile"
    assert [c["value"] for c in PROFILE["codes"]] == ["113100", "113107", "113108"]
    assert PROFILE["edition"] == "2024c"

    device = Deidentifier(SITE_KEY, DeidOptions(retain_device_identity=True))
    codes = [i.CodeValue for i in device.apply(_ct()).dataset.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107", "113108", "113109"]
    assert device.profile["options"][-1] == "Retain Device Identity Option"


def test_device_identity_only_with_the_option(deid: Deidentifier) -> None:
    ds = _ct()
    ds.DeviceSerialNumber = "SN-4711"
    ds.StationName = "CT-ROOM-3"
    assert deid.apply(ds).dataset.DeviceSerialNumber == "ANONYMIZED"
    kept = Deidentifier(SITE_KEY, DeidOptions(retain_device_identity=True)).apply(ds).dataset
    assert kept.DeviceSerialNumber == "SN-4711"
    assert kept.StationName == "CT-ROOM-3"


def test_analysis_attributes_are_kept(deid: Deidentifier) -> None:
    ds = _ct()
    ds.PatientSex = "F"
    ds.PatientAge = "063Y"
    ds.BodyPartExamined = "CHEST"
    out = deid.apply(ds).dataset
    for keyword in (
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "SliceThickness",
        "SpacingBetweenSlices",
        "RescaleSlope",
        "RescaleIntercept",
        "Modality",
        "BodyPartExamined",
        "Rows",
        "Columns",
        "BitsAllocated",
        "BitsStored",
        "PixelRepresentation",
        "PhotometricInterpretation",
        "KVP",
        "Exposure",
        "PatientSex",
        "PatientAge",
        "PatientWeight",
        "Manufacturer",
    ):
        assert out[keyword].value == ds[keyword].value, keyword
    assert out.PixelData == ds.PixelData


def test_private_tags_removed_except_the_safe_list(deid: Deidentifier) -> None:
    ds = _ct()
    philips = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
    philips.add_new(0x0E, "FL", 1.5)
    philips.add_new(0x20, "LO", "OPERATOR NAME")
    siemens = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    siemens.add_new(0x0C, "IS", "1000")
    siemens.add_new(0x0E, "FD", [0.0, 0.6, 0.8])
    philips.add_new(0x0D, "FL", [1.0, 2.0])  # safe slot, but not one number: goes
    result = deid.apply(ds)
    out = result.dataset
    private = {(e.tag.group, e.tag.element & 0xFF): e.value for e in out if e.tag.is_private}
    assert private[(0x2005, 0x0E)] == 1.5
    assert (0x2005, 0x0D) not in private
    assert private[(0x0019, 0x0E)] == [0.0, 0.6, 0.8]
    assert private[(0x0019, 0x0C)] == "1000"
    assert (0x2005, 0x20) not in private
    siemens.add_new(0x0E, "LO", "not a vector")  # safe slot, wrong VR
    assert (0x0019, 0x0E) not in {
        (e.tag.group, e.tag.element & 0xFF) for e in deid.apply(ds).dataset if e.tag.is_private
    }
    creators = {str(e.value) for e in out if e.tag.is_private_creator}
    assert creators == {"Philips MR Imaging DD 001", "SIEMENS MR HEADER"}
    assert not any(e.tag.group == 0x0009 for e in out)  # CT_small's GE private tags
    codes = [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert codes[-1] == "113111"  # Retain Safe Private Option, since something was kept


def test_overlays_curves_comments_and_unknown_tags_go(deid: Deidentifier) -> None:
    path = get_testdata_file("examples_overlay.dcm")
    assert path is not None
    ds = pydicom.dcmread(path)
    assert any(e.tag.group == 0x6000 for e in ds)
    ds.add_new(0x50000022, "LO", "curve")
    ds.add_new(0x00204000, "LT", "scanned after the accident on the A1")
    ds.add_new(0x00211234, "LO", "private")
    ds.add_new(0x00231000, "LO", "unknown public attribute")  # not in the dictionary
    out = deid.apply(ds).dataset
    assert not any(0x5000 <= e.tag.group <= 0x60FF for e in out)
    assert "ImageComments" not in out
    assert 0x00231000 not in out


def test_nested_identifiers_are_handled(deid: Deidentifier) -> None:
    ds = _ct()
    item = Dataset()
    item.PatientName = "DOE^JANE"
    item.PatientID = "12345"
    item.InstitutionName = "St Elsewhere"
    item.CodeValue = "T-D3000"
    ds.DerivationCodeSequence = [item]
    nested = deid.apply(ds).dataset.DerivationCodeSequence[0]
    assert "DOE" not in str(nested.PatientName)
    assert nested.PatientID == "ANONYMIZED"
    assert nested.InstitutionName == "ANONYMIZED"
    assert nested.CodeValue == "T-D3000"


# -- (e) burned-in annotation ------------------------------------------------------------

BURNED_IN = [
    ("ultrasounds/GREYSCALE_IMAGE.dcm", "Burned In Annotation is YES"),
    ("ultrasounds/RGB_IMAGE.dcm", "modality US"),
    ("dicom-cookies/image1.dcm", "secondary capture"),
    ("humans/ctbrain1.dcm", "secondary capture"),  # Modality CT, SOP Class SC
]


@pytest.mark.usefixtures("lenient_reading")
@pytest.mark.parametrize(("name", "why"), BURNED_IN)
def test_burned_in_images_are_held_back(deid: Deidentifier, name: str, why: str) -> None:
    ds = pydicom.dcmread(DEID_DATA / name, stop_before_pixels=True)
    with pytest.raises(HeldBack, match=why) as info:
        deid.apply(ds)
    assert isinstance(info.value, IngestError)
    assert "held back for review" in info.value.reason
    for keyword in ("PatientID", "PatientName", "InstitutionName"):
        value = str(ds.get(keyword, "") or "")
        assert not value or value not in info.value.reason
    allowed = Deidentifier(SITE_KEY, DeidOptions(allow_burned_in=True)).apply(ds)
    assert allowed.burned_in is not None and why in allowed.burned_in
    assert allowed.dataset.PatientIdentityRemoved == "YES"


def test_burned_in_flag_decides() -> None:
    deid = Deidentifier(SITE_KEY)
    ds = _ct()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(HeldBack):
        deid.apply(ds)
    ds.Modality = "US"
    ds.BurnedInAnnotation = "NO"
    assert deid.apply(ds).burned_in is None
    del ds.BurnedInAnnotation
    with pytest.raises(HeldBack, match="modality US"):
        deid.apply(ds)
    assert deid.apply(_ct()).burned_in is None  # CT without a flag: fine


# -- (f) the input is never changed --------------------------------------------------------


def test_input_is_never_mutated(deid: Deidentifier) -> None:
    ds = _ct()
    plant_markers(ds, seed="mutation", depth=2)
    before = _written(ds)
    snapshot = copy.deepcopy(ds)
    result = deid.apply(ds)
    assert _written(ds) == before
    assert ds == snapshot
    # and changing the result does not reach back into the input
    result.dataset.ImagePositionPatient[0] = 999
    result.dataset.DerivationCodeSequence[0].CodeValue = "changed"
    assert _written(ds) == before


# -- (g) real files --------------------------------------------------------------------------


def _real_files() -> list[Path]:
    names = ["CT_small.dcm", "MR_small.dcm", "examples_overlay.dcm", "MR_small_bigendian.dcm"]
    files = [Path(p) for n in names if (p := get_testdata_file(n))]
    files += [
        DEID_DATA / n
        for n in (
            "animals/cat.dcm",
            "dicom-cookies/image1.dcm",
            "humans/ctbrain1.dcm",
            "ultrasounds/GREYSCALE_IMAGE.dcm",
            "ultrasounds/RGB_IMAGE.dcm",
            "ultrasounds/ultrasound-multiframe.dcm",
        )
    ]
    return files


@pytest.mark.usefixtures("lenient_reading")
@pytest.mark.parametrize("path", _real_files(), ids=lambda p: p.name)
def test_real_files_deidentify_and_stay_decodable(path: Path) -> None:
    deid = Deidentifier(SITE_KEY, DeidOptions(allow_burned_in=True))
    ds = pydicom.dcmread(path)
    result = deid.apply(ds)
    blob = _written(result.dataset)
    back = pydicom.dcmread(io.BytesIO(blob))
    assert (back.pixel_array == ds.pixel_array).all()
    assert back.PatientIdentityRemoved == "YES"
    header = copy.copy(back)
    del header.PixelData  # pixel bytes may contain any short string by chance
    header_blob = _written(header)
    for keyword in ("PatientID", "PatientName", "InstitutionName", "ReferringPhysicianName"):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            assert str(back.get(keyword, "")) != value, keyword
        if len(value) >= 4 and keyword.startswith("Patient"):
            assert value.encode() not in header_blob, keyword
    assert not any(e.tag.is_private and not _safe(e) for e in back)
    assert ds.StudyInstanceUID.encode() not in blob


def _safe(elem: pydicom.DataElement) -> bool:
    return elem.tag.is_private_creator or elem.VR in ("FL", "FD", "IS")
