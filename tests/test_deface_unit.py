"""Defacing rules without real heads: head detection, CT, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from insitu.datasets.deface import (
    CLEAN_RECOGNIZABLE_VISUAL_FEATURES,
    brain_mask,
    deface,
    is_head_series,
)
from insitu.errors import DefacingError, IngestError


def ct_phantom(spacing: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A CT head in HU: brain sphere in a skull, scalp, and a 'face' in front of it.

    Returns (volume[z, y, x], affine, brain truth, face truth). LPS: +y is
    posterior, +z superior, so the face sits at low y (anterior) and low z.
    """
    n = int(200 / spacing)
    z, y, x = np.indices((n, n, n)) * spacing - 100.0
    r = np.sqrt(x**2 + y**2 + (z - 10) ** 2)
    volume = np.full((n, n, n), -1000, dtype=np.int16)
    brain = r < 60
    volume[r < 72] = 40  # scalp
    volume[r < 67] = 1200  # skull
    volume[brain] = 30
    face = ((x / 35) ** 2 + ((y + 75) / 22) ** 2 + ((z + 45) / 40) ** 2) < 1
    face &= r >= 72
    volume[face] = 40
    affine = np.eye(4)
    affine[:3, :3] = np.diag([spacing] * 3)[:, [2, 1, 0]] @ np.eye(3)[[2, 1, 0]]
    affine[:3, :3] = 0
    affine[0, 2] = affine[1, 1] = affine[2, 0] = spacing  # (z, y, x) -> (x, y, z) mm
    affine[:3, 3] = -100.0
    return volume, affine, brain, face


def test_ct_phantom_face_removed_brain_kept():
    volume, affine, brain, face = ct_phantom()
    mask = brain_mask(volume, affine, "CT")
    assert (mask & brain).sum() / brain.sum() > 0.8  # conservative: bone margin, low cap
    result = deface(volume, affine, "CT")
    assert np.array_equal(result.volume[brain], volume[brain])
    assert (result.volume[face] == -1000).mean() > 0.8
    assert result.volume.dtype == np.int16
    assert (result.volume[result.removed] == -1000).all()


def test_no_brain_is_a_clear_error():
    volume = np.full((20, 32, 32), -1000, dtype=np.int16)
    affine = np.eye(4)
    with pytest.raises(DefacingError, match="no brain found") as info:
        deface(volume, affine, "CT")
    assert isinstance(info.value, IngestError)
    with pytest.raises(DefacingError, match="3-D"):
        deface(np.zeros((4, 4)), affine, "MR")


@pytest.mark.parametrize(
    ("body_part", "modality", "shape", "spacing", "description", "expected"),
    [
        ("HEAD", "CT", (40, 512, 512), (5, 0.45, 0.45), None, True),
        ("BRAIN", "MR", (176, 256, 256), (1, 1, 1), None, True),
        ("Kopf", "MR", (30, 256, 256), (4, 0.9, 0.9), None, True),
        ("CHEST", "CT", (80, 512, 512), (5, 0.7, 0.7), "head and chest", False),
        ("HEAD", "US", (40, 512, 512), (1, 1, 1), None, False),
        ("HEAD", "CT", (2, 512, 512), (5, 0.45, 0.45), None, False),
        (None, "MR", (176, 256, 256), (1, 0.9, 0.9), "T1 MPRAGE brain", True),
        (None, "CT", (300, 512, 512), (1, 0.9, 0.9), "CT brain", False),  # 460 mm: a body
        (None, "CT", (80, 512, 512), (5, 0.7, 0.7), "abdomen", False),
    ],
)
def test_head_detection(body_part, modality, shape, spacing, description, expected):
    decision = is_head_series(body_part, modality, shape, spacing, description=description)
    assert decision.is_head is expected, decision.reason
    assert decision.reason


def test_cid_7050_code():
    assert CLEAN_RECOGNIZABLE_VISUAL_FEATURES["CodeValue"] == "113101"
    assert CLEAN_RECOGNIZABLE_VISUAL_FEATURES["CodingSchemeDesignator"] == "DCM"


def test_small_head_field_of_view_is_not_defaced():
    # pydicom's emri_small.dcm: Body Part HEAD, 10 frames of 64 x 64 at 1 mm
    decision = is_head_series("HEAD", "MR", (10, 64, 64), (1.2, 1.0, 1.0))
    assert not decision.is_head and "too small to show a face" in decision.reason
