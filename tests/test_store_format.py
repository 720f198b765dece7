"""Store format 4 (coarser levels only for planes larger than 512 pixels), format 3
(zstd 1 + bit shuffle, deeper chunks on the coarser levels) and the stores of format 2
written before them: all read, and an input already published in format 2 or 3 is not
published again only because the codec or the preview levels changed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fixtures_datasets import make_series, run_cli, run_json

from insitu.config import NodeHome
from insitu.datasets import ingest as ingest_module
from insitu.datasets import store_write
from insitu.datasets.catalog import Catalog
from insitu.datasets.reader import open_dataset
from insitu.errors import LevelNotFoundError


def _blosc(array: Path) -> tuple[dict, list[int]]:
    meta = json.loads((array / "zarr.json").read_text())
    blosc = next(c for c in meta["codecs"] if c["name"] == "blosc")["configuration"]
    return blosc, meta["chunk_grid"]["configuration"]["chunk_shape"]


def _series_dir(store: Path) -> Path:
    (series,) = [p for p in (store / "series").iterdir() if p.is_dir()]
    return series


def test_format_4_codec_and_chunks_in_the_metadata(
    home: NodeHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = run_json(
        ["ingest", str(make_series(tmp_path / "a", n=6)), "--dataset", "d"], capsys
    )
    assert code == 0 and report["version"] == "v1"
    store = home.stores / "d" / "v1.zarr"
    series = _series_dir(store)
    blosc, chunks = _blosc(series / "0")
    assert (blosc["cname"], blosc["clevel"], blosc["shuffle"]) == ("zstd", 1, "bitshuffle")
    assert blosc["typesize"] == 2 and blosc["blocksize"] == 4 * 128 * 128 * 2  # one block
    assert chunks == [4, 128, 128]
    # a 128 x 128 plane has no preview level: level 0 alone, and the multiscales say so
    assert sorted(p.name for p in series.iterdir() if p.is_dir()) == ["0"]
    ome = json.loads((series / "zarr.json").read_text())["attributes"]["ome"]
    assert [d["path"] for d in ome["multiscales"][0]["datasets"]] == ["0"]
    root = json.loads((store / "zarr.json").read_text())["attributes"]["insitu"]
    assert root["provenance"]["store_format"] == ingest_module.STORE_FORMAT == 4
    dataset = open_dataset("d", "v1")
    (series_id,) = list(dataset.series.series_id)
    assert dataset.image(series_id).shape == (6, 128, 128)
    with pytest.raises(LevelNotFoundError, match="has no level 1: it has only level 0"):
        dataset.image(series_id, level=1)


def test_preview_levels_only_for_planes_larger_than_512() -> None:
    def shapes(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [lv.shape for lv in store_write.pyramid(np.zeros(shape, dtype=np.int16))]

    assert shapes((20, 512, 512)) == [(20, 512, 512)]  # CT: level 0 alone
    assert shapes((1, 512, 640)) == [(1, 512, 640), (1, 256, 320)]  # larger in x
    assert shapes((1, 1760, 1760)) == [(1, 1760, 1760), (1, 880, 880), (1, 440, 440)]
    assert shapes((2, 600, 800, 3)) == [(2, 600, 800, 3), (2, 300, 400, 3)]  # colour
    # format 3's levels, which the pixel fingerprint is still computed from
    old = store_write.pyramid(np.zeros((40, 512, 512), dtype=np.int16), preview_plane=0)
    assert [lv.shape for lv in old] == [(40, 512, 512), (20, 256, 256), (20, 128, 128)]


def test_pyramid_chunks_fill_their_bytes_and_level_0_keeps_its_shape() -> None:
    assert store_write.chunk_shape((150, 512, 512)) == (4, 256, 256)
    assert store_write.chunk_shape((75, 256, 256), level=1) == (16, 256, 256)
    assert store_write.chunk_shape((37, 128, 128), level=2) == (37, 128, 128)
    assert store_write.chunk_shape((3, 75, 256, 256), level=1, itemsize=1) == (3, 10, 256, 256)
    assert store_write.chunk_shape((2, 640, 640), level=1) == (2, 256, 256)


def _ingest_as_format_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> dict:
    """An ingest by the code of store format 3 (coarser levels for every plane down to
    64 pixels), as a node upgraded from it has on disk."""
    with monkeypatch.context() as old:
        old.setattr(store_write, "PREVIEW_PLANE", 0)
        old.setattr(ingest_module, "STORE_FORMAT", 3)
        code, report = run_json(args, capsys)
    assert code == 0
    return report


def _ingest_as_format_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> dict:
    """An ingest by the code of store format 2 (zstd 1 + byte shuffle, 1 MiB blocks,
    4-slice chunks on every level), as a node upgraded from it has on disk."""
    with monkeypatch.context() as old:
        old.setattr(store_write, "SHUFFLE", "shuffle")
        old.setattr(store_write, "PYRAMID_CHUNK_BYTES", 0)
        old.setattr(store_write, "MAX_BLOCK_BYTES", 1 << 20)
        old.setattr(store_write, "PREVIEW_PLANE", 0)
        old.setattr(ingest_module, "STORE_FORMAT", 2)
        code, report = run_json(args, capsys)
    assert code == 0
    return report


def _first_version_by(
    ingest_as: Callable[..., dict],
    home: NodeHome,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[Path, Path]:
    """A 6-slice series published as dataset "d" v1 by an older format's code: the input
    folder and the store."""
    series = make_series(tmp_path / "a", n=6)
    old = ingest_as(monkeypatch, capsys, ["ingest", str(series), "--dataset", "d"])
    assert old["version"] == "v1"
    return series, home.stores / "d" / "v1.zarr"


def _reingest_is_unchanged(series: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    """The same input after the upgrade: the values would be the same, so no new version."""
    code, again = run_json(["ingest", str(series), "--dataset", "d"], capsys)
    assert code == 0 and again["status"] == "unchanged" and again["version"] == "v1"
    return again


def test_a_format_2_store_reads_the_same_values_and_its_input_is_unchanged(
    home: NodeHome,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    series, old_store = _first_version_by(_ingest_as_format_2, home, tmp_path, monkeypatch, capsys)
    blosc, chunks = _blosc(_series_dir(old_store) / "1")
    assert blosc["shuffle"] == "shuffle" and chunks == [4, 64, 64]  # what format 2 wrote
    root = json.loads((old_store / "zarr.json").read_text())["attributes"]["insitu"]
    assert root["provenance"]["store_format"] == 2

    again = _reingest_is_unchanged(series, capsys)
    assert {f["fate"] for f in again["files"]} == {"unchanged"}
    with Catalog(home) as catalog:
        assert [v["version"] for v in catalog.versions("d")] == ["v1"]

    # The format 4 store of the same input holds the same values on level 0, its only
    # level for this plane size; the format 2 store keeps its level 1.
    code, report = run_json(["ingest", str(series), "--dataset", "e"], capsys)
    assert code == 0 and report["status"] == "published"
    assert _blosc(_series_dir(home.stores / "e" / "v1.zarr") / "0")[0]["shuffle"] == "bitshuffle"
    old_ds, new_ds = open_dataset("d", "v1"), open_dataset("e", "v1")
    (old_id,), (new_id,) = list(old_ds.series.series_id), list(new_ds.series.series_id)
    before, after = old_ds.image(old_id), new_ds.image(new_id)
    np.testing.assert_array_equal(before.values, after.values)
    np.testing.assert_array_equal(before[2:5, 10:70, 3:90].values, after[2:5, 10:70, 3:90].values)
    assert old_ds.image(old_id, 1).shape == (6, 64, 64)
    code, out, _ = run_cli(["verify", "d"], capsys)
    assert code == 0 and "d v1: ok" in out

    # New input on a format 2 dataset: a new version, written in format 4.
    more = make_series(tmp_path / "b", n=4, patient_id="P2", seed=3)
    code, report = run_json(["ingest", str(series), str(more), "--dataset", "d"], capsys)
    assert code == 0 and report["version"] == "v2"
    root = json.loads((home.stores / "d" / "v2.zarr" / "zarr.json").read_text())
    assert root["attributes"]["insitu"]["provenance"]["store_format"] == 4


def test_an_input_published_in_format_3_is_unchanged(
    home: NodeHome,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    series, store = _first_version_by(_ingest_as_format_3, home, tmp_path, monkeypatch, capsys)
    assert (_series_dir(store) / "1" / "zarr.json").is_file()  # format 3 wrote level 1
    _reingest_is_unchanged(series, capsys)
    code, out, _ = run_cli(["verify", "d"], capsys)
    assert code == 0 and "d v1: ok" in out


def test_checksums_hashed_while_writing_are_those_of_the_files(
    home: NodeHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The writer threads hash the chunk files they write; the catalog's checksums are
    those of the files on disk, metadata included."""
    series = make_series(tmp_path / "a", n=6)
    more = make_series(tmp_path / "b", n=9, patient_id="P2", seed=3)
    code, report = run_json(["ingest", str(series), str(more), "--dataset", "d"], capsys)
    assert code == 0 and report["version"] == "v1"
    store = home.stores / "d" / "v1.zarr"
    with Catalog(home) as catalog:
        recorded = catalog.checksums("d", "v1")
    assert recorded == store_write.checksum_tree(store)
    assert sum("/0/c/" in key for key in recorded) == 2 + 3  # 6 and 9 slices, 4 a chunk
    assert any(key.endswith("zarr.json") for key in recorded)


def test_checksum_tree_takes_known_sums_only_for_files_of_their_size(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "0").write_bytes(b"abc")
    (tmp_path / "zarr.json").write_bytes(b"{}")
    fresh = store_write.checksum_tree(tmp_path)
    assert set(fresh) == {"c/0", "zarr.json"}
    known = {"c/0": ("0" * 64, 3), "zarr.json": ("1" * 64, 5), "gone": ("2" * 64, 1)}
    mixed = store_write.checksum_tree(tmp_path, known=known)
    # the writer's sum is taken for a file of its size; a size that differs is hashed
    assert mixed == {"c/0": ("0" * 64, 3), "zarr.json": fresh["zarr.json"]}
