"""Every lossless transfer syntax round-trips bit for bit through a store.

For each real test file: scan -> geometry -> decode -> write the OME-Zarr
series -> read it back through :class:`Dataset` and compare with pydicom's
own decode plus modality LUT (frames in the order the geometry chose).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import deid_data
import numpy as np
import pytest
from fixtures_datasets import dicom_file, make_series, reference_pixels, tree_bytes
from zarr.storage import LocalStore

from insitu.datasets import store_write
from insitu.datasets.dicom_read import read_full, scan_one, walk_inputs
from insitu.datasets.reader import Dataset
from insitu.datasets.store_write import StoreRoot, write_root_attrs, write_series
from insitu.datasets.volume import decode_volume, plan_geometry

LOSSLESS = [
    "CT_small.dcm",  # explicit VR little endian, CT with rescale
    "MR_small.dcm",
    "MR_small_implicit.dcm",  # implicit VR
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "MR_small_RLE.dcm",  # RLE lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "image_dfl.dcm",  # deflated explicit VR little endian
    "JPEG-LL.dcm",  # JPEG lossless, process 14
    "JPGLosslessP14SV1_1s_1f_8b.dcm",  # JPEG lossless SV1, 8 bit ultrasound
    "693_J2KR.dcm",  # JPEG 2000 lossless, a real 512x512 CT slice
    "MR2_J2KR.dcm",  # JPEG 2000 lossless, 1024x1024 MR
    "US1_J2KR.dcm",  # JPEG 2000 lossless, RGB ultrasound
    "emri_small_jpeg_2k_lossless.dcm",  # enhanced MR multi-frame, JPEG 2000 lossless
    "emri_small_RLE.dcm",
    "emri_small_big_endian.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "eCT_Supplemental.dcm",  # enhanced CT, rescale in functional groups
    "OBXXXX1A_rle_2frame.dcm",  # ultrasound multi-frame, RLE
    "SC_rgb_rle.dcm",  # RGB secondary capture, RLE
    "SC_rgb_16bit_2frame.dcm",
    "gdcm-US-ALOKA-16_big.dcm",  # 16-bit ultrasound, big endian
    "MR-SIEMENS-DICOM-WithOverlays.dcm",  # overlays in the file
    "mlut_18.dcm",  # Modality LUT Sequence instead of rescale
    "OBXXXX1A_expb_2frame.dcm",  # ultrasound multi-frame, big endian
    "SC_rgb_32bit_2frame.dcm",  # 32-bit RGB
    "SC_ybr_full_uncompressed.dcm",  # YBR_FULL, as pydicom converts it
    "color-pl.dcm",  # planar configuration 1
]


def _deid_data(name: str) -> Path:
    return Path(deid_data.__file__).parent / "data" / name


def _write_and_reopen(paths: list[Path], store_path: Path) -> tuple[Dataset, dict[Path, list]]:
    root = StoreRoot(store_path)
    rows, orders = [], {}
    for k, path in enumerate(paths):
        item = scan_one(next(iter(walk_inputs([path]))))
        assert item.kind == "image", (path.name, item.reason)
        geometry = plan_geometry([item.header])
        volume = decode_volume([read_full(item)], geometry)
        sid = f"s{k}"
        row = {
            "subject_id": "sub-x",
            "study_id": "st",
            "series_id": sid,
            "modality": str(item.header.get("Modality", "")),
            "study_date": "",
            "shape": list(volume.shape[:3]),
            "spacing": list(geometry.spacing),
            "dtype": str(volume.dtype),
            "units": "",
        }
        attrs = {**row, "affine": geometry.affine.tolist(), "orientation": geometry.orientation}
        write_series(root, sid, volume, geometry, attrs)
        rows.append(row)
        orders[path] = [f.index for f in geometry.order]
    write_root_attrs(root, {"dataset": "rt", "version": "v1", "series": rows, "subjects": []})
    return Dataset(LocalStore(store_path, read_only=True)), orders


def test_every_lossless_input_round_trips_bit_for_bit(tmp_path: Path) -> None:
    paths = [dicom_file(name) for name in LOSSLESS]
    dataset, orders = _write_and_reopen(paths, tmp_path / "rt.zarr")
    for k, path in enumerate(paths):
        reference = reference_pixels(path)
        image = dataset.image(f"s{k}")
        stored = image.values
        frames = image.sizes["z"]
        if reference.ndim == stored.ndim - 1:  # single frame
            reference = reference[np.newaxis]
        reference = reference[orders[path]]
        assert stored.shape == reference.shape, path.name
        assert frames == len(orders[path])
        if stored.dtype.kind == "f":
            assert np.array_equal(stored.astype(np.float64), reference), path.name
        else:
            assert np.array_equal(stored, reference), path.name
            assert np.array_equal(stored.astype(reference.dtype), reference), path.name


def test_smallest_exact_dtypes(tmp_path: Path) -> None:
    names = ["CT_small.dcm", "MR_small.dcm", "OBXXXX1A_rle_2frame.dcm", "SC_rgb_rle.dcm"]
    dataset, _ = _write_and_reopen([dicom_file(n) for n in names], tmp_path / "d.zarr")
    dtypes = {n: dataset.image(f"s{k}").dtype for k, n in enumerate(names)}
    assert dtypes["CT_small.dcm"] == np.int16  # HU
    assert dtypes["MR_small.dcm"] in (np.uint16, np.int16)
    assert dtypes["OBXXXX1A_rle_2frame.dcm"] == np.uint8
    rgb = dataset.image("s3")
    assert rgb.dims == ("z", "y", "x", "c") and rgb.sizes["c"] == 3


def test_lossy_inputs_match_pydicom_decode(tmp_path: Path) -> None:
    """Lossy JPEG (baseline, extended 12-bit) and JPEG 2000 cannot be exact vs the
    original, but what is stored equals pydicom's own decode."""
    paths = [
        _deid_data("humans/ctbrain1.dcm"),  # JPEG baseline, YBR head CT (deid-data)
        dicom_file("JPGExtended.dcm"),  # JPEG extended, 12 bit
        dicom_file("JPEG2000.dcm"),  # JPEG 2000 (irreversible allowed)
        dicom_file("SC_rgb_jpeg_dcmtk.dcm"),  # JPEG baseline RGB
    ]
    dataset, _ = _write_and_reopen(paths, tmp_path / "j.zarr")
    for k, path in enumerate(paths):
        reference = reference_pixels(path)[np.newaxis]
        stored = dataset.image(f"s{k}").values
        assert np.array_equal(stored.astype(np.float64), reference.astype(np.float64)), path


@pytest.mark.parametrize("level", [1, 2])
def test_pyramid_levels_cover_the_same_extent(tmp_path: Path, level: int) -> None:
    # a 1760 x 1760 radiograph: previews at 880 and 440 (a 512 x 512 CT has none)
    dataset, _ = _write_and_reopen([dicom_file("RG3_UNCR.dcm")], tmp_path / "p.zarr")
    full, coarse = dataset.image("s0"), dataset.image("s0", level=level)
    factor = 2**level
    assert coarse.sizes["x"] == full.sizes["x"] // factor
    # the mean of the first block's centres is the coarse voxel's centre
    assert float(coarse.x[0]) == pytest.approx(float(full.x[:factor].mean()))
    affine = coarse.attrs["affine"]
    np.testing.assert_allclose(
        affine @ [0, 0, 0, 1],
        [*(full.attrs["affine"] @ [0.5 * (factor - 1), 0.5 * (factor - 1), 0, 1])[:3], 1],
    )


def test_pyramid_halves_z_for_long_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_write, "PREVIEW_PLANE", 64)  # previews of 128 x 128 planes
    folder = make_series(tmp_path / "long", n=40, step=1.5)
    items = [scan_one(i) for i in walk_inputs([folder])]
    geometry = plan_geometry([i.header for i in items])
    volume = decode_volume([read_full(i) for i in items], geometry)
    root = StoreRoot(tmp_path / "z.zarr")
    row = {"series_id": "s", "subject_id": "x", "study_id": "y", "shape": [40, 128, 128]}
    attrs = {**row, "affine": geometry.affine.tolist(), "spacing": list(geometry.spacing)}
    write_series(root, "s", volume, geometry, attrs)
    write_root_attrs(root, {"dataset": "z", "version": "v1", "series": [row], "subjects": []})
    dataset = Dataset(LocalStore(tmp_path / "z.zarr", read_only=True))
    full, coarse = dataset.image("s"), dataset.image("s", level=1)
    assert coarse.shape == (20, 64, 64)
    assert float(coarse.z[0]) == pytest.approx(float(full.z[:2].mean()))
    block = full.values[:2, :2, :2].astype(np.int64)
    assert int(coarse.values[0, 0, 0]) == (int(block.sum()) + 4) // 8
    corner = full.attrs["affine"] @ [0.5, 0.5, 0.5, 1]
    np.testing.assert_allclose(coarse.attrs["affine"] @ [0, 0, 0, 1], corner)


def test_chunks_written_by_ingest_are_the_bytes_zarr_writes(tmp_path: Path) -> None:
    """store_write encodes chunks itself (faster than Zarr's generic path): the files
    must be exactly what Zarr writes for the same array, edge and empty chunks included."""
    import zarr
    from zarr.storage import LocalStore

    from insitu.datasets.store_write import chunk_shape, compressor, write_chunks

    rng = np.random.default_rng(0)
    for dtype, shape in [
        (np.int16, (9, 300, 260)),
        (np.uint8, (3, 5, 64, 70)),
        (np.float32, (5, 40, 40)),
    ]:
        data = (rng.normal(0, 300, shape)).astype(dtype)
        data[:4] = 0  # an all-fill chunk row: not written
        chunks = chunk_shape(shape)
        paths = {}
        for how in ("zarr", "insitu"):
            path = tmp_path / f"{how}-{np.dtype(dtype).name}.zarr"
            array = zarr.create_array(
                LocalStore(path), shape=shape, dtype=dtype, chunks=chunks, fill_value=0,
                compressors=compressor(int(np.prod(chunks)) * np.dtype(dtype).itemsize),
            )  # fmt: skip
            if how == "zarr":
                array[...] = data
            else:
                write_chunks(path, data, chunks)
            paths[how] = path
            np.testing.assert_array_equal(zarr.open_array(LocalStore(path))[...], data)
        assert tree_bytes(paths["zarr"]) == tree_bytes(paths["insitu"])


def test_direct_chunk_reads_equal_zarr(tmp_path: Path) -> None:
    """The reader decodes a local store's chunks itself (faster than Zarr's path):
    every box, edge and unwritten chunks included, equals what Zarr reads."""
    import zarr

    from insitu.datasets.reader import _DirectChunks
    from insitu.datasets.store_write import chunk_shape, compressor, write_chunks

    rng = np.random.default_rng(1)
    shape = (11, 300, 270)
    data = rng.integers(-1000, 3000, shape).astype(np.int16)
    data[:4] = 0  # unwritten (fill) chunks
    chunks = chunk_shape(shape)
    store = LocalStore(tmp_path / "a.zarr")
    array = zarr.create_array(
        store, shape=shape, dtype=np.int16, chunks=chunks, fill_value=0,
        compressors=compressor(int(np.prod(chunks)) * 2),
    )  # fmt: skip
    write_chunks(tmp_path / "a.zarr", data, chunks)
    direct = _DirectChunks.for_array(store, zarr.open_array(store, mode="r"))
    assert direct is not None
    for _ in range(20):
        lo = [int(rng.integers(0, n)) for n in shape]
        box = tuple(
            slice(a, int(rng.integers(a + 1, n + 1))) for a, n in zip(lo, shape, strict=True)
        )
        np.testing.assert_array_equal(direct[box], array[box])
    np.testing.assert_array_equal(direct[(slice(None),) * 3], data)
    np.testing.assert_array_equal(direct[2, 5], data[2, 5])  # not a box: Zarr reads it


def _int16_array(path: Path, shape: tuple[int, ...], fill: int) -> tuple[Any, Any]:
    """An int16 store array in the store's codec, chunks (4, 32, 32), ``fill`` as fill value."""
    import zarr

    from insitu.datasets.store_write import compressor

    chunks = (4, 32, 32)
    store = LocalStore(path)
    array = zarr.create_array(
        store, shape=shape, dtype=np.int16, chunks=chunks, fill_value=fill,
        compressors=compressor(int(np.prod(chunks)) * 2),
    )  # fmt: skip
    return store, array


def test_direct_chunk_reads_fill_chunks_never_written(tmp_path: Path) -> None:
    """The result is not pre-filled: a chunk Zarr never wrote (all fill value)
    must still come back as the array's fill value, here one that is not zero."""
    import zarr

    from insitu.datasets.reader import _DirectChunks

    shape = (12, 64, 64)
    store, array = _int16_array(tmp_path / "f.zarr", shape, fill=-5)
    data = np.full(shape, -5, dtype=np.int16)
    data[4:, 10:40] = np.arange(8 * 30 * 64, dtype=np.int16).reshape(8, 30, 64)
    array[:] = data
    assert len(list((tmp_path / "f.zarr" / "c").rglob("*"))) < 3 * 2 * 2 + 3 * 2  # some unwritten
    direct = _DirectChunks.for_array(store, zarr.open_array(store, mode="r"))
    assert direct is not None
    np.testing.assert_array_equal(direct[(slice(None),) * 3], data)
    np.testing.assert_array_equal(direct[1:7, 5:50, 3:61], data[1:7, 5:50, 3:61])


def test_values_of_an_image_read_directly_equal_dask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``np.asarray`` of the image's own dask array decodes straight into the result
    (dask's compute would copy it once more); everything derived from it stays dask.
    A non-zero fill value and chunks never written must come back as Zarr reads them."""
    import pickle

    import dask.array as da
    import dask.array.core
    import zarr

    from insitu.datasets.reader import _dask_chunks, _direct_image, _DirectChunks

    shape = (13, 70, 90)
    store, array = _int16_array(tmp_path / "v.zarr", shape, fill=-7)
    data = np.full(shape, -7, dtype=np.int16)
    data[5:, 40:] = np.arange(8 * 30 * 90, dtype=np.int16).reshape(8, 30, 90)
    array[:] = data
    direct = _DirectChunks.for_array(store, zarr.open_array(store, mode="r"))
    assert direct is not None
    image = _direct_image(direct, _dask_chunks(array))
    assert isinstance(image, da.Array)
    with monkeypatch.context() as no_dask:  # converted without dask's compute
        no_dask.setattr(dask.array.core, "finalize", lambda results: pytest.fail("dask ran"))
        np.testing.assert_array_equal(np.asarray(image), data)
        np.testing.assert_array_equal(np.asarray(image, dtype=np.float32), data.astype(np.float32))
    np.testing.assert_array_equal(image.compute(), data)
    np.testing.assert_array_equal(np.asarray(image[3:9, 10:50, 20:]), data[3:9, 10:50, 20:])
    np.testing.assert_array_equal(np.asarray(image + 1), data + 1)
    copy = pickle.loads(pickle.dumps(image))  # noqa: S301 (bytes this test made)
    assert type(copy) is da.Array
    np.testing.assert_array_equal(np.asarray(copy), data)


def _zarr_write_series(
    path: Path, series_id: str, volume: np.ndarray, attrs: dict[str, Any]
) -> None:
    """What write_series did through Zarr's API before it wrote the metadata itself."""
    import zarr

    from insitu.datasets.store_write import chunk_shape, compressor, ome_attrs, pyramid

    geometry = _geometry(volume)
    root = zarr.open_group(LocalStore(path), mode="a", zarr_format=3)
    levels = pyramid(volume)
    group = root.require_group(f"series/{series_id}")
    for k, level in enumerate(levels):
        data = np.moveaxis(level, -1, 0) if level.ndim == 4 else level
        chunks = chunk_shape(data.shape, k, data.dtype.itemsize)
        group.create_array(
            str(k), shape=data.shape, dtype=data.dtype, chunks=chunks,
            compressors=compressor(int(np.prod(chunks)) * data.dtype.itemsize),
            dimension_names=["c", "z", "y", "x"] if data.ndim == 4 else ["z", "y", "x"],
            fill_value=0, overwrite=True,
        )  # fmt: skip
        store_write.write_chunks(path / f"series/{series_id}/{k}", data, chunks)
    group.attrs.update({"ome": ome_attrs(series_id, geometry, levels), "insitu": attrs})


def _geometry(volume: np.ndarray) -> Any:
    from insitu.datasets.volume import Geometry

    shape = (volume.shape[0], volume.shape[1], volume.shape[2])
    return Geometry(shape, (2.5, 0.7, 0.7), (-1.0, 2.0, 3.5), (1, 0, 0, 0, 1, 0), True, [])


def test_store_metadata_written_by_ingest_is_the_bytes_zarr_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest writes the zarr.json files itself (StoreRoot, no Zarr import): every file
    of the store, metadata and chunks, equals what Zarr's API writes for the same series
    and root attributes; Zarr reads it back."""
    import zarr

    monkeypatch.setattr(store_write, "PREVIEW_PLANE", 64)  # coarser levels of a 160 plane
    rng = np.random.default_rng(2)
    volumes = {
        "ct": rng.integers(-1024, 3000, (18, 160, 150)).astype(np.int16),
        "mr": rng.integers(0, 4000, (3, 40, 50)).astype(np.uint16),
        "us": rng.integers(0, 255, (2, 100, 120, 3)).astype(np.uint8),  # colour
        "mask": rng.integers(-3, 3, (4, 16, 16)).astype(np.int8),
        "pet": rng.normal(0, 10, (5, 70, 70)).astype(np.float32),
        "wide": rng.integers(-(2**20), 2**20, (4, 20, 20)).astype(np.int32),
        "fine": rng.normal(0, 1, (2, 30, 30)),  # float64
    }
    nan = float("nan")
    attrs = {"affine": [[1.0, 0.0], [0.0, 1.0]], "note": "é", "odd": [nan, 1e300, True, None]}
    root_attrs = {"dataset": "m", "version": "v1", "series": [{"series_id": "ct"}]}
    ours, theirs = tmp_path / "ours.zarr", tmp_path / "zarr.zarr"
    root = store_write.StoreRoot(ours)
    reference = zarr.open_group(LocalStore(theirs), mode="a", zarr_format=3)
    assert tree_bytes(ours) == tree_bytes(theirs)  # the empty root group
    for series_id, volume in volumes.items():
        write_series(root, series_id, volume, _geometry(volume), {**attrs, "id": series_id})
        _zarr_write_series(theirs, series_id, volume, {**attrs, "id": series_id})
    write_root_attrs(root, root_attrs)
    reference.attrs.update({"insitu": root_attrs})
    assert tree_bytes(ours) == tree_bytes(theirs)
    # a later update replaces the key as Zarr's attrs do; both views agree
    root.update_attrs({"insitu": {**root.attrs["insitu"], "provenance": {"n": 1}}})
    reference.attrs["insitu"] = {**reference.attrs["insitu"], "provenance": {"n": 1}}
    assert tree_bytes(ours) == tree_bytes(theirs)
    assert len([k for k in tree_bytes(ours) if k.endswith("zarr.json")]) > 10
    reread = zarr.open_group(LocalStore(ours), mode="r")
    assert sorted(reread["series"].group_keys()) == store_write.child_groups(ours / "series")
    np.testing.assert_array_equal(reread["series/us/0"][...], np.moveaxis(volumes["us"], -1, 0))
    assert store_write.group_attrs(ours / "series" / "pet")["insitu"]["id"] == "pet"


def test_ingest_of_images_does_not_import_zarr(tmp_path: Path) -> None:
    """The ingest's write path is Zarr-free (StoreRoot): importing zarr cost ~0.15 s on its
    busiest thread. A store it wrote is still read through Zarr (verified, opened)."""
    import subprocess
    import sys

    folder = make_series(tmp_path / "dicom", n=4)
    env = {**os.environ, "INSITU_HOME": str(tmp_path / "home")}
    code = (
        "import sys; from insitu.cli import main; "
        "assert main(['init', '--site', 's']) == 0; "
        f"assert main(['ingest', {str(folder)!r}, '--dataset', 'd']) == 0; "
        "print('zarr' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout
    from insitu.config import NodeHome

    dataset = Dataset(LocalStore(NodeHome(tmp_path / "home").stores / "d" / "v1.zarr"))
    assert dataset.image(dataset.series.iloc[0]["series_id"]).shape[0] == 4
