"""The modality registry (insitu.datasets.modality): one place for what insitu knows
about each modality, asked by ingest, de-identification, defacing and the viewer."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from insitu.datasets.deface import is_head_series
from insitu.datasets.deid import BURNED_IN_MODALITIES
from insitu.datasets.modality import DEFAULT, MODALITIES, modality, units_of


def _header(**fields):
    ds = Dataset()
    for key, value in fields.items():
        setattr(ds, key, value)
    return ds


@pytest.mark.parametrize(
    ("fields", "units"),
    [
        ({"Modality": "CT"}, "HU"),
        ({"Modality": "CT", "RescaleType": "HU"}, "HU"),
        ({"Modality": "CT", "RescaleType": "US"}, "US"),
        ({"Modality": "PT", "Units": "BQML"}, "BQML"),
        ({"Modality": "PT"}, "pixel value"),
        ({"Modality": "MR"}, "arbitrary"),
        ({"Modality": "MR", "RescaleType": "T1"}, "T1"),
        ({"Modality": "OP"}, "pixel value"),
        ({}, "pixel value"),
    ],
)
def test_units(fields, units):
    assert units_of(_header(**fields)) == units


def test_codes_are_normalised_and_unknown_ones_get_the_default():
    assert modality(" ct ") is MODALITIES["CT"]
    assert modality("XA") is DEFAULT and modality(None) is DEFAULT
    assert not DEFAULT.burned_in and not DEFAULT.defaced and not DEFAULT.viewer_preset


def test_the_consumers_read_the_registry():
    assert {"US", "SC", "XC"} == BURNED_IN_MODALITIES
    assert {c for c, m in MODALITIES.items() if m.defaced} == {"CT", "MR"}
    refused = is_head_series("HEAD", "PT", (64, 256, 256), (3.0, 1.0, 1.0))
    assert not refused.is_head and refused.reason == "modality PT is not CT or MR"
    assert is_head_series("HEAD", "mr", (64, 256, 256), (3.0, 1.0, 1.0)).is_head
    assert MODALITIES["CT"].viewer_preset == "soft tissue"
