"""Property: no value planted in an identifying attribute survives de-identification.

Markers go into every attribute Table E.1-1 (with the options) changes, at the
top level and nested, into private tags, overlays, curves and unlisted free
text; the whole written output and its text rendering are then searched.
"""

from __future__ import annotations

import io
from functools import cache

import pydicom
from fixtures_deid import SITE_KEY, find_markers, plant_markers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from insitu.datasets.deid import Deidentifier, DeidOptions


@cache
def _source_bytes(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None
    with open(path, "rb") as fh:
        return fh.read()


def _written(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(min_value=0, max_value=2**63),
    source=st.sampled_from(["CT_small.dcm", "MR_small.dcm"]),
    device=st.booleans(),
    characteristics=st.booleans(),
    depth=st.integers(min_value=0, max_value=3),
)
def test_no_planted_marker_survives(
    seed: int, source: str, device: bool, characteristics: bool, depth: int
) -> None:
    options = DeidOptions(
        retain_device_identity=device, retain_patient_characteristics=characteristics
    )
    ds = pydicom.dcmread(io.BytesIO(_source_bytes(source)))
    markers = plant_markers(ds, seed, options, depth)

    # The planting worked: every marker is in the input as written.
    assert len(markers) > 400
    assert find_markers(_written(ds), markers) == markers

    result = Deidentifier(SITE_KEY, options).apply(ds)
    out = result.dataset
    assert find_markers(_written(out), markers) == set()
    assert find_markers(str(out), markers) == set()
    assert find_markers(repr(result.actions) + result.subject_id, markers) == set()
    # and the image survives it
    assert out.PixelData == ds.PixelData
    assert out.ImagePositionPatient == ds.ImagePositionPatient


@settings(max_examples=30, deadline=None)
@given(
    text=st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\"),
        min_size=6,
        max_size=40,
    )
)
def test_arbitrary_text_in_names_ids_and_private_tags_goes(text: str) -> None:
    """Whatever the text, it leaves no trace (names, IDs, nested, private, comments)."""
    ds = pydicom.dcmread(io.BytesIO(_source_bytes("CT_small.dcm")))
    marker = "Q" + text + "Q"
    ds.PatientName = marker
    ds.PatientID = marker[:64]
    ds.InstitutionName = marker
    ds.ImageComments = marker
    item = Dataset()
    item.PatientName = marker
    item.add_new(0x00091010, "LO", "ACME")
    item.add_new(0x00091001, "LO", marker[:64])
    ds.DerivationCodeSequence = [item]
    ds.add_new(0x00291010, "LO", "ACME")
    ds.add_new(0x00291001, "LT", marker)
    result = Deidentifier(SITE_KEY).apply(ds)
    assert marker[:64].encode() not in _written(result.dataset)
    assert marker[:64] not in str(result.dataset)
    assert result.original_patient_id == marker[:64].strip()
