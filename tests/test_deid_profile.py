"""The generated Table E.1-1: provenance, content, options, and the generator itself."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from pydicom.datadict import tag_for_keyword

from insitu.datasets import deid_profile, tools_generate_profile
from insitu.datasets.deid import PROFILE
from insitu.datasets.deid_profile import (
    OPT_DEVICE_IDENTITY,
    OPT_MODIFIED_DATES,
    OPT_PATIENT_CHARACTERISTICS,
    build_table,
    load_table,
)

JSON_PATH = Path(deid_profile.__file__).with_name("profile_e1_1.json")


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return tag


def test_table_cites_its_source_and_edition() -> None:
    doc = load_table()
    assert doc["edition"] == "2024c"
    assert doc["source"]["package"] == "idiscore"
    assert doc["source"]["version"] == "1.2.0"
    assert doc["source"]["scrape_date"] == "2024-09-19"
    assert "part15/chapter_E" in doc["source"]["scraped_from"]
    assert PROFILE["edition"] == "2024c"
    assert PROFILE["table"]["source"] == doc["source"]
    assert {"name", "edition", "options", "codes"} <= PROFILE.keys()
    json.dumps(PROFILE)  # goes into store attributes and the catalog as JSON


def test_table_content() -> None:
    sets = load_table()["rule_sets"]
    basic = {tag: action for tag, action, _kw in sets["basic_profile"]["rules"]}
    assert len(basic) > 600
    assert set(basic.values()) <= {"D", "Z", "X", "K", "C", "U", "X/Z", "X/D", "X/Z/D", "Z/D"} | {
        "X/Z/U*"
    }
    assert basic[f"{_tag('PatientName'):08x}"] == "Z"
    assert basic[f"{_tag('StudyInstanceUID'):08x}"] == "U"
    assert basic[f"{_tag('AccessionNumber'):08x}"] == "Z"
    assert basic["private"] == "X"
    assert basic["60xx3000"] == "X"  # Overlay Data
    assert basic["50xxxxxx"] == "X"  # curves
    assert sets["retain_modified_dates"]["code"] == "113107"
    # every keyword the generator wrote is the data dictionary's
    for tag, _action, keyword in sets["basic_profile"]["rules"]:
        if "x" not in tag and tag != "private" and keyword:
            assert tag_for_keyword(keyword) == int(tag, 16)


def test_options_change_the_effective_actions() -> None:
    basic = build_table(())
    full = build_table((OPT_MODIFIED_DATES, OPT_PATIENT_CHARACTERISTICS, OPT_DEVICE_IDENTITY))
    sex, study_date, serial = _tag("PatientSex"), _tag("StudyDate"), _tag("DeviceSerialNumber")
    allergies = _tag("Allergies")
    assert basic.rule_for(sex).action == "Z"
    assert full.rule_for(sex).action == "K"
    assert basic.rule_for(study_date).action == "Z"
    assert full.rule_for(study_date).action == "C"
    assert full.rule_for(study_date).fallback == "Z"
    assert basic.rule_for(serial).action == "D"  # X/Z/D resolved to the Type-1-safe D
    assert full.rule_for(serial).action == "K"
    assert full.rule_for(allergies).action == "C"  # free text: cleaned = basic action X
    assert full.rule_for(allergies).fallback == "X"
    assert basic.rule_for(0x60023000).action == "X"  # overlay data in group 6002
    assert basic.rule_for(_tag("Modality")) is None  # not listed: kept
    with pytest.raises(KeyError, match="no option rule set"):
        build_table(("retain_everything",))


FAKE_RULES = '''"""Public DICOM information

Scraped from the following page:
http://dicom.nema.org/medical/dicom/current/output/chtml/part15/chapter_E.html

scrape date: 2024-09-19
"""

basic_profile = RawNemaRuleSet(
    name="Basic Application Level Confidentiality Profile",
    code="113100",
    rules=[
        (SingleTag("00100010"), ActionCodes.EMPTY),  # PatientName
        (SingleTag("0020000d"), ActionCodes.UID),
        (RepeatingGroup("60xx3000"), ActionCodes.REMOVE),
        (PrivateTags(), ActionCodes.REMOVE),
        (SingleTag("00080080"), ActionCodes.REMOVE_OR_EMPTY_OR_DUMMY),
    ],
)

retain_patient_characteristics = RawNemaRuleSet(
    name="Retain Patient Characteristics Option",
    code="113108",
    rules=[(SingleTag("00100040"), ActionCodes.KEEP)],
)
'''
FAKE_CODES = """
class ActionCodes:
    DUMMY = ActionCode("D", "DUMMY")
    EMPTY = ActionCode("Z", "EMPTY")
    REMOVE = ActionCode("X", "REMOVE")
    KEEP = ActionCode("K", "KEEP")
    UID = ActionCode("U", "UID")
    REMOVE_OR_EMPTY_OR_DUMMY = ActionCode("X/Z/D", "REMOVE_OR_EMPTY_OR_DUMMY")
"""


def _wheel(tmp_path: Path, rules: str = FAKE_RULES) -> Path:
    wheel = tmp_path / "idiscore-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("idiscore/_public_dicom.py", rules)
        zf.writestr("idiscore/dicom.py", FAKE_CODES)
    return wheel


def test_generator_parses_the_idiscore_format(tmp_path: Path) -> None:
    out = tmp_path / "table.json"
    assert tools_generate_profile.main([str(_wheel(tmp_path)), "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["edition"] == "2024c"
    assert doc["source"]["version"] == "9.9.9"
    rules = doc["rule_sets"]["basic_profile"]["rules"]
    assert ["00100010", "Z", "PatientName"] in rules
    assert ["60xx3000", "X", "(repeating group 60xx3000)"] in rules
    assert ["private", "X", "(private attributes)"] in rules
    assert ["00080080", "X/Z/D", "InstitutionName"] in rules
    assert doc["rule_sets"]["retain_patient_characteristics"]["rules"] == [
        ["00100040", "K", "PatientSex"]
    ]


def test_generator_refuses_what_it_does_not_understand(tmp_path: Path) -> None:
    bad = FAKE_RULES.replace('SingleTag("00100010")', "SingleTag(PATIENT_NAME)")
    with pytest.raises(tools_generate_profile.ProfileSourceError, match="string literal"):
        tools_generate_profile.build(_wheel(tmp_path, bad))
    clash = FAKE_RULES.replace(
        "(PrivateTags(), ActionCodes.REMOVE),",
        '(PrivateTags(), ActionCodes.REMOVE),\n        (SingleTag("00100010"), ActionCodes.KEEP),',
    )
    with pytest.raises(tools_generate_profile.ProfileSourceError, match="has actions Z and K"):
        tools_generate_profile.build(_wheel(tmp_path, clash))
    late = FAKE_RULES.replace("2024-09-19", "2031-01-01")
    with pytest.raises(tools_generate_profile.ProfileSourceError, match="no known DICOM edition"):
        tools_generate_profile.build(_wheel(tmp_path, late))


def test_committed_json_is_in_the_generators_format() -> None:
    """The committed file is exactly what dumps() writes: nobody edited it by hand."""
    text = JSON_PATH.read_text(encoding="utf-8")
    assert tools_generate_profile.dumps(json.loads(text)) == text


def test_cid_7050_codes_are_pydicoms() -> None:
    """deid writes the CID 7050 codes out (pydicom.sr costs ~0.2 s to import per
    ingest); they must stay what pydicom's code dictionary says."""
    from pydicom.sr.codedict import codes

    from insitu.datasets.deid import _CODE_KEYWORDS, CID_7050, CODE_SCHEME

    assert set(CID_7050) == set(_CODE_KEYWORDS)
    for name, (value, meaning) in CID_7050.items():
        code = getattr(codes.DCM, _CODE_KEYWORDS[name])
        assert (value, CODE_SCHEME, meaning) == (code.value, code.scheme_designator, code.meaning)
