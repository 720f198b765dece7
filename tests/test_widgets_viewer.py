"""Slice viewer: real widget state; moving the slider reads one slice, lazily."""

from __future__ import annotations

import io

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from PIL import Image
from zarr.storage import LocalStore, WrapperStore

from insitu.widgets.viewer import PRESETS, SliceViewer


class CountingArray:
    """A numpy volume that records which z indices were read (one chunk = one slice)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.z_reads: list[int] = []

    def __getitem__(self, key: tuple[slice | int, ...]) -> np.ndarray:
        z = key[0]
        if isinstance(z, slice):
            self.z_reads.extend(range(*z.indices(self.shape[0])))
        else:
            self.z_reads.append(int(z))
        return self.data[key]


def _volume(nz: int = 10, ny: int = 24, nx: int = 32) -> np.ndarray:
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    return (z * 100 + y * 2 + x - 500).astype(np.int16)


@pytest.fixture
def counted() -> tuple[xr.DataArray, CountingArray]:
    source = CountingArray(_volume())
    lazy = da.from_array(source, chunks=(1, 24, 32), asarray=False)
    image = xr.DataArray(
        lazy,
        dims=("z", "y", "x"),
        coords={
            "z": -20.0 + 5.0 * np.arange(10),
            "y": 1.5 * np.arange(24),
            "x": 1.5 * np.arange(32),
        },
        attrs={"modality": "CT", "units": "HU", "series_id": "s1", "dataset": "demo"},
    )
    return image, source


def _png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(bytes(data))).size


def test_opens_in_the_middle_reading_only_that_slice(counted) -> None:
    image, source = counted
    viewer = SliceViewer(image)
    assert viewer.slider.max == 10 and viewer.slider.value == 6  # 1-based, like its label
    assert sorted(set(source.z_reads)) == [5]
    assert bytes(viewer.view.value[:4]) == b"\x89PNG"
    assert "z = <b>5.0 mm</b>" in viewer.position.value
    assert viewer.preset.value == "soft tissue"


def test_slider_change_updates_the_image_and_reads_one_slice(counted) -> None:
    image, source = counted
    viewer = SliceViewer(image)
    before = viewer.view.value
    source.z_reads.clear()
    viewer.slider.value = 3
    assert set(source.z_reads) == {2}
    assert viewer.view.value != before
    assert "z = <b>-10.0 mm</b> · slice 3 of 10" in viewer.position.value
    np.testing.assert_array_equal(viewer.plane_values(), _volume()[2])
    # Going back is served from the few planes kept: no read at all.
    source.z_reads.clear()
    viewer.slider.value = 6
    assert source.z_reads == []
    assert viewer.reads == 2


def test_window_presets_and_free_window(counted) -> None:
    image, _ = counted
    viewer = SliceViewer(image)
    shown = viewer.view.value
    viewer.preset.value = "bone"
    assert (viewer.center.value, viewer.width.value) == (400, 1800)
    assert viewer.view.value != shown
    viewer.preset.value = "lung"
    assert viewer.window == PRESETS["lung"]
    # Typing a level switches the preset to "free" and re-renders.
    viewer.center.value = 0
    assert viewer.preset.value == "free"
    assert viewer.window.center == 0 and viewer.window.width == 1500
    viewer.width.value = 200
    assert "window 0/200 HU" in viewer.position.value
    # A narrow window around a known value makes that value mid-grey.
    viewer.slider.value = 1
    viewer.center.value, viewer.width.value = -500.0, 2.0
    pixels = np.asarray(Image.open(io.BytesIO(bytes(viewer.view.value))))
    assert pixels.min() <= 128 and pixels.max() == 255


def test_plane_switch_keeps_the_physical_aspect(counted) -> None:
    image, source = counted
    viewer = SliceViewer(image, display_size=200)
    assert _png_size(viewer.view.value) == (200, 150)  # 32x1.5 mm wide, 24x1.5 mm tall
    source.z_reads.clear()
    viewer.plane.value = "coronal"
    assert viewer.slider.max == 24 and viewer.slider.description == "y slice"
    values = viewer.plane_values()
    assert values.shape == (10, 32)
    np.testing.assert_array_equal(values, _volume()[::-1, 12, :])  # superior up
    assert _png_size(viewer.view.value) == (192, 200)  # 48 mm wide, 50 mm tall
    assert "y = <b>18.0 mm</b>" in viewer.position.value
    assert "top S" in viewer.edges.value
    viewer.plane.value = "sagittal"
    np.testing.assert_array_equal(viewer.plane_values(), _volume()[::-1, :, 16])
    assert "left A" in viewer.edges.value


def test_refuses_what_it_cannot_show() -> None:
    flat = xr.DataArray(np.zeros((4, 4)), dims=("y", "x"))
    with pytest.raises(ValueError, match="dims z, y, x"):
        SliceViewer(flat)
    vol = xr.DataArray(np.zeros((2, 4, 4)), dims=("z", "y", "x"))
    with pytest.raises(ValueError, match="choose one of axial"):
        SliceViewer(vol, plane="oblique")
    with pytest.raises(ValueError, match="preset 'liver'"):
        SliceViewer(vol, preset="liver")


def test_non_ct_images_start_with_an_automatic_free_window() -> None:
    vol = xr.DataArray(np.arange(2 * 8 * 8, dtype=float).reshape(2, 8, 8), dims=("z", "y", "x"))
    viewer = SliceViewer(vol)
    assert viewer.preset.value == "free"
    assert 64 < viewer.center.value < 128


class CountingStore(WrapperStore):
    """A real store that remembers which keys were read (zarr's own wrapper seam)."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.keys: list[str] = []

    async def get(self, key, prototype, byte_range=None):
        self.keys.append(key)
        return await super().get(key, prototype, byte_range)


def test_on_a_real_store_a_slice_move_reads_one_row_of_chunks(site_node) -> None:
    from insitu.datasets.catalog import Catalog
    from insitu.datasets.reader import Dataset

    with Catalog(site_node) as catalog:
        path = catalog.store_path("locat-site-a")
    store = CountingStore(LocalStore(path, read_only=True))
    ds = Dataset(store)
    series_id = ds.series.series_id.iloc[0]
    image = ds.image(series_id)
    store.keys.clear()
    viewer = SliceViewer(image)
    assert image.sizes["z"] == 10 and viewer.slider.value == 6
    store.keys.clear()
    viewer.slider.value = 10  # the last chunk row (the store keeps 4 slices per chunk)
    prefix = f"series/{series_id}/0/c/"
    chunks = {k for k in store.keys if k.startswith(prefix)}
    assert chunks, store.keys
    assert {k.removeprefix(prefix).split("/")[0] for k in chunks} == {"2"}, chunks
    assert not any(k.startswith(f"series/{series_id}/1/") for k in store.keys), "level 0 only"


def test_a_coronal_sweep_reads_the_series_once(counted) -> None:
    image, source = counted
    viewer = SliceViewer(image)
    source.z_reads.clear()
    viewer.plane.value = "coronal"
    assert sorted(set(source.z_reads)) == list(range(10)), "a coronal plane needs every slice"
    source.z_reads.clear()
    for j in (0, 7, 23):
        viewer.slider.value = j + 1
        np.testing.assert_array_equal(viewer.plane_values(), _volume()[::-1, j, :])
    viewer.plane.value = "sagittal"
    np.testing.assert_array_equal(viewer.plane_values(), _volume()[::-1, :, 16])
    assert source.z_reads == [], "the rest of the sweep comes from memory"
    # A series too large to hold reads plane by plane instead.
    small = SliceViewer(image, plane="coronal", max_volume_bytes=0)
    source.z_reads.clear()
    small.slider.value = 4
    assert sorted(set(source.z_reads)) == list(range(10))
    np.testing.assert_array_equal(small.plane_values(), _volume()[::-1, 3, :])
