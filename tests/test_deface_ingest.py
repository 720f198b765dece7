"""Defacing inside `insitu ingest`: on by default, opt-out with a reason, recorded."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures_deface import write_dicom_series

from insitu.datasets.deface import deface
from insitu.datasets.ingest import ingest
from insitu.datasets.reader import open_dataset

CODE_SEQUENCE = "00120064"
METHOD = "00120063"


@pytest.fixture(scope="module")
def colin_series(colin27, tmp_path_factory):
    """Colin27 at 2 mm as an axial MR DICOM series with Body Part HEAD."""
    volume, affine = colin27
    small = np.ascontiguousarray(volume[::2, ::2, ::2]).astype(np.uint16)
    aff = affine.copy()
    aff[:3, :3] *= 2
    folder = write_dicom_series(tmp_path_factory.mktemp("colin") / "dicom", small, aff)
    return folder, small, aff


def stored(home, dataset):
    ds = open_dataset(dataset, home=home)
    series_id = ds.series["series_id"][0]
    return ds, series_id, ds.image(series_id).values


def same_volume(a, b):
    return np.array_equal(a, b) or np.array_equal(a, b[::-1])


def test_head_series_defaced_and_recorded(home, colin_series):
    folder, volume, affine = colin_series
    report = ingest([folder], "heads", home=home)
    assert report.exit_code == 0
    ds, series_id, image = stored(home, "heads")
    expected = deface(volume, affine, "MR")
    assert same_volume(image, expected.volume)
    assert not same_volume(image, volume)
    header = ds.header(series_id)
    codes = [item["00080100"]["Value"][0] for item in header[CODE_SEQUENCE]["Value"]]
    assert "113101" in codes
    assert any("Clean Recognizable Visual Features" in v for v in header[METHOD]["Value"])
    import zarr

    group = zarr.open_group(ds.store, path=f"series/{series_id}", mode="r")
    record = group.attrs["insitu"]["deface"]
    assert record["defaced"] is True and record["brain_kept_fraction"] == 1.0
    assert "Body Part Examined is HEAD" in record["reason"]


def test_opt_out_needs_a_reason_and_is_recorded(home, colin_series):
    folder, volume, _affine = colin_series
    config = home.config_path.read_text()
    home.config_path.write_text(config + '\n[deface.opt_out]\nheads = ""\n')
    from insitu.errors import ConfigError

    with pytest.raises(ConfigError, match="needs a reason"):
        ingest([folder], "heads", home=home)
    home.config_path.write_text(
        config + '\n[deface.opt_out]\nheads = "phantom study, consented to share faces"\n'
    )
    assert ingest([folder], "heads", home=home).exit_code == 0
    ds, series_id, image = stored(home, "heads")
    assert same_volume(image, volume)
    header = ds.header(series_id)
    codes = [item["00080100"]["Value"][0] for item in header[CODE_SEQUENCE]["Value"]]
    assert "113101" not in codes
    import zarr

    root = zarr.open_group(ds.store, mode="r")
    options = root.attrs["insitu"]["deid"]["options"]
    assert options["deface_head_scans"] is False
    assert "phantom study" in options["deface_opt_out_reason"]
    group = zarr.open_group(ds.store, path=f"series/{series_id}", mode="r")
    assert "phantom study" in group.attrs["insitu"]["deface"]["reason"]


def test_non_head_series_untouched(home, tmp_path, colin_series):
    _folder, volume, affine = colin_series
    folder = write_dicom_series(tmp_path / "abd", volume, affine, body_part="ABDOMEN")
    assert ingest([folder], "body", home=home).exit_code == 0
    _ds, _sid, image = stored(home, "body")
    assert same_volume(image, volume)


def test_mean_head_face_gone_from_the_published_store(home, mean_head, tmp_path):
    """End to end: DICOM series in, no face detectable in what researchers read."""
    from insitu.datasets.deface import affine_from_dicom_order
    from insitu.datasets.face_check import detect_faces, render_face

    volume, affine = mean_head
    folder = write_dicom_series(tmp_path / "mean", volume.astype(np.uint16), affine)
    assert detect_faces(render_face(volume, affine, "MR")).found
    assert ingest([folder], "mean", home=home).exit_code == 0
    ds = open_dataset("mean", home=home)
    image = ds.image(ds.series["series_id"][0])
    published = affine_from_dicom_order(np.asarray(image.attrs["affine"]))
    after = detect_faces(render_face(image.values, published, "MR"))
    assert not after.found, after.faces
