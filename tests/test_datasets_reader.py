"""The reader needs only a Zarr store and reads no pixel data until asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fixtures_datasets import make_series, run_json
from zarr.storage import LocalStore, WrapperStore

from insitu.config import NodeHome
from insitu.datasets.catalog import Catalog
from insitu.datasets.reader import Dataset, read_table, write_table
from insitu.datasets.store_write import open_root


class CountingStore(WrapperStore[LocalStore]):
    """Records every key read, like a gate would see the requests."""

    def __init__(self, store: LocalStore) -> None:
        super().__init__(store)
        self.keys: list[str] = []

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        self.keys.append(key)
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> Any:
        key_ranges = list(key_ranges)
        self.keys.extend(k for k, _ in key_ranges)
        return await self._store.get_partial_values(prototype, key_ranges)

    async def exists(self, key: str) -> bool:
        self.keys.append(key)
        return await self._store.exists(key)


def _chunk_keys(keys: list[str]) -> list[str]:
    return [k for k in keys if "/c/" in k or k.endswith("/c")]


@pytest.fixture
def published(home: NodeHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    series = make_series(tmp_path / "ct", n=9, step=1.25)
    code, _ = run_json(["ingest", str(series), "--dataset", "r"], capsys)
    assert code == 0
    with Catalog(home) as catalog:
        return catalog.store_path("r")


def test_opening_and_image_read_no_pixel_data(published: Path) -> None:
    store = CountingStore(LocalStore(published, read_only=True))
    dataset = Dataset(store)
    assert dataset.name == "r" and dataset.version == "v1"
    series = dataset.series
    assert list(series.columns[:7]) == [
        "subject_id",
        "study_id",
        "series_id",
        "modality",
        "study_date",
        "shape",
        "spacing",
    ]
    assert len(dataset.subjects) == 1
    assert dict(dataset.tables) == {}
    image = dataset.image(series.series_id[0])
    assert image.shape == (9, 128, 128)
    assert _chunk_keys(store.keys) == []  # metadata only, so far
    plane = image.isel(z=4).values  # now one slice: chunk reads, of level 0 only
    assert plane.shape == (128, 128)
    read = _chunk_keys(store.keys)
    assert read and all("/0/c/" in k for k in read)
    assert {k.split("/c/")[1].split("/")[0] for k in read} == {"1"}  # chunk row of z=4


def test_dataset_from_any_store_matches_catalog(published: Path, home: NodeHome) -> None:
    dataset = Dataset(LocalStore(published, read_only=True))
    with Catalog(home) as catalog:
        rows = catalog.series("r", "v1")
    assert [r["series_id"] for r in rows] == list(dataset.series.series_id)
    image = dataset.image(rows[0]["series_id"])
    assert image.attrs["modality"] == "CT" and image.attrs["units"] == "HU"
    assert image.attrs["affine"].shape == (4, 4)
    np.testing.assert_allclose(np.diff(image.z), 1.25, rtol=1e-6)
    assert image.z.attrs["units"] == "mm"
    with pytest.raises(LookupError, match="no series"):
        dataset.image("2.25.1")


def test_tables_round_trip(tmp_path: Path) -> None:
    root = open_root(tmp_path / "t.zarr")
    root.attrs["insitu"] = {"dataset": "t", "version": "v1", "series": [], "subjects": []}
    frame = pd.DataFrame(
        {
            "subject_id": ["sub-a", "sub-b", "sub-c"],
            "diameter_mm": [12.5, np.nan, 30.25],
            "lesions": np.array([1, 0, 3], dtype=np.int32),
            "responder": [True, False, True],
            "visit": pd.to_datetime(["2020-01-02", "2020-03-04", "2021-05-06"]),
        }
    )
    write_table(root, "measurements", frame)
    write_table(root, "empty", frame.iloc[:0])
    back = read_table(root, "measurements")
    pd.testing.assert_frame_equal(back, frame)
    dataset = Dataset(LocalStore(tmp_path / "t.zarr", read_only=True))
    assert sorted(dataset.tables) == ["empty", "measurements"]
    pd.testing.assert_frame_equal(dataset.tables["measurements"], frame)
    assert len(dataset.tables["empty"]) == 0
    with pytest.raises(KeyError, match="measurements"):
        dataset.tables["nope"]
    with pytest.raises(ValueError, match="table name"):
        write_table(root, "a/b", frame)


def test_not_an_insitu_store(tmp_path: Path) -> None:
    open_root(tmp_path / "x.zarr")
    with pytest.raises(LookupError, match="not an insitu dataset"):
        Dataset(LocalStore(tmp_path / "x.zarr", read_only=True))


def test_series_geometry_from_oblique_headers(
    home: NodeHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = np.array([0.0, 1.0, 0.0])
    col = np.array([0.0, 0.0, -1.0])  # sagittal
    folder = make_series(tmp_path / "sag", n=5, step=2.0, orientation=(*row, *col))
    code, report = run_json(["ingest", str(folder), "--dataset", "sag"], capsys)
    assert code == 0
    from insitu.datasets.reader import open_dataset

    image = open_dataset("sag").image(report["series"][0]["series_id"])
    normal = np.cross(row, col)
    affine = image.attrs["affine"]
    np.testing.assert_allclose(affine[:3, 2] / 2.0, normal, atol=1e-6)
    # z coordinates are positions along the normal, as in Image Position (Patient)
    origin = affine[:3, 3]
    np.testing.assert_allclose(float(image.z[0]), origin @ normal, atol=1e-3)
    np.testing.assert_allclose(float(image.y[0]), origin @ col, atol=1e-3)
    np.testing.assert_allclose(float(image.x[0]), origin @ row, atol=1e-3)


def test_add_tables_makes_a_new_version_sharing_the_images(published: Path, home: NodeHome) -> None:
    from insitu.datasets.reader import open_dataset
    from insitu.datasets.tables import add_tables
    from insitu.datasets.verify import verify

    before = {p: p.read_bytes() for p in published.rglob("*") if p.is_file()}
    series = open_dataset("r").series
    frame = pd.DataFrame({"series_id": list(series.series_id), "volume_ml": [12.5] * len(series)})
    assert add_tables("r", {"measurements": frame}) == "v2"
    assert add_tables("r", {"measurements": frame}) == "v2"  # same tables: no new version
    v2 = open_dataset("r")
    assert v2.version == "v2" and list(v2.tables) == ["measurements"]
    pd.testing.assert_frame_equal(v2.tables["measurements"], frame)
    assert list(v2.series.series_id) == list(series.series_id)
    np.testing.assert_array_equal(
        v2.image(series.series_id[0]).values,
        open_dataset("r", "v1").image(series.series_id[0]).values,
    )
    assert dict(open_dataset("r", "v1").tables) == {}
    # v1 untouched, chunks shared (same inode), both verify
    assert {p: p.read_bytes() for p in published.rglob("*") if p.is_file()} == before
    chunk = next(p for p in published.rglob("*") if p.is_file() and "/c/" in p.as_posix())
    twin = home.stores / "r" / "v2.zarr" / chunk.relative_to(published)
    assert twin.stat().st_ino == chunk.stat().st_ino
    assert [r.ok for r in verify("r")] == [True, True]
    with Catalog(home) as catalog:
        assert catalog.tables("r", "v2")[0]["columns"] == ["series_id", "volume_ml"]
        assert catalog.provenance("r", "v2")["derived_from"] == "v1"
    frame2 = frame.assign(volume_ml=[13.0] * len(series))
    assert add_tables("r", {"measurements": frame2}, base_version="v2") == "v3"
    pd.testing.assert_frame_equal(open_dataset("r").tables["measurements"], frame2)
