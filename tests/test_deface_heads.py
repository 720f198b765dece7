"""Defacing on real heads with faces, measured with a face detector."""

from __future__ import annotations

import numpy as np
import pytest

from insitu.datasets.deface import affine_from_dicom_order, brain_mask, deface
from insitu.datasets.face_check import detect_faces, render_face


@pytest.fixture(scope="module")
def mean_defaced(mean_head):
    volume, affine = mean_head
    return volume, affine, deface(volume, affine, "MR")


@pytest.fixture(scope="module")
def colin_defaced(colin27):
    volume, affine = colin27
    return volume, affine, deface(volume, affine, "MR")


def test_mean_head_face_found_before_and_gone_after(mean_defaced):
    volume, affine, result = mean_defaced
    assert detect_faces(render_face(volume, affine, "MR")).found
    after = detect_faces(render_face(result.volume, affine, "MR"))
    assert not after.found, after.faces


@pytest.mark.parametrize("head", ["mean_defaced", "colin_defaced"])
def test_brain_voxels_unchanged_and_face_region_cleared(head, request):
    volume, affine, result = request.getfixturevalue(head)
    assert result.volume.dtype == volume.dtype and result.volume.shape == volume.shape
    # every brain-mask voxel keeps its exact value
    assert result.brain_kept_fraction == 1.0
    assert np.array_equal(result.volume[result.brain], volume[result.brain])
    # voxels outside the removed region are untouched; removed ones are air (0 for MR)
    assert np.array_equal(result.volume[~result.removed], volume[~result.removed])
    assert not result.volume[result.removed].any()
    # the cut is anterior-inferior: the removed voxels' centre lies in front of and
    # below the brain's centre (LPS: anterior is -y, inferior is -z)
    idx_removed = np.argwhere(result.removed).mean(axis=0)
    idx_brain = np.argwhere(result.brain).mean(axis=0)
    lps = affine[:3, :3] @ (idx_removed - idx_brain)
    assert lps[1] < 0 and lps[2] < 0
    assert 0.03 < result.removed_fraction < 0.4


def test_brain_mask_matches_colin27_reference(colin27):
    """Our mask against the BET mask Debian ships with Colin27 (ch2bet)."""
    from pathlib import Path

    from fixtures_deface import load_nifti

    volume, affine = colin27
    ours = brain_mask(volume, affine, "MR")
    reference = load_nifti(Path("/usr/share/mricron/templates/ch2bet.nii.gz"))[0] > 0
    # ours stops at the cerebellum (no brainstem below it) on purpose
    inside = (ours & reference).sum() / ours.sum()
    assert inside > 0.9


def test_orientation_does_not_change_the_cut(colin27):
    """The same head stored flipped and transposed is defaced identically."""
    volume, affine = colin27
    small = volume[::2, ::2, ::2]
    aff = affine.copy()
    aff[:3, :3] *= 2
    first = deface(small, aff, "MR")
    # flip z (slices stored top-down) and swap y/x; fix the affine to match
    flipped = np.ascontiguousarray(np.transpose(small[::-1], (0, 2, 1)))
    aff2 = aff.copy()
    aff2[:3, 3] = aff[:3] @ np.array([small.shape[0] - 1, 0, 0, 1.0])
    aff2[:3, 0] = -aff[:3, 0]
    aff2[:3, [1, 2]] = aff[:3, [2, 1]]
    second = deface(flipped, aff2, "MR")
    back = np.transpose(second.removed, (0, 2, 1))[::-1]
    assert np.array_equal(back, first.removed)


def test_affine_from_dicom_order_swaps_columns():
    a = np.arange(16, dtype=float).reshape(4, 4)
    b = affine_from_dicom_order(a)
    assert np.array_equal(b[:, 0], a[:, 2]) and np.array_equal(b[:, 2], a[:, 0])
    assert np.array_equal(b[:, 3], a[:, 3])
