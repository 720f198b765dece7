"""Pixel provenance: fingerprints at publish, the matcher's detection and false-alarm
rates, 1-D vectors, the index on disk, and ``insitu fingerprints rebuild``.

Rates are asserted, never times (bench/run.py provenance measures those).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest
from provenance_corpus import (
    SPACING,
    _window,
    attacks,
    fundus,
    legitimate,
    random_crops,
    site_volumes,
)

from insitu.config import init_home, resolve_home
from insitu.disclosure.provenance import (
    FingerprintIndex,
    fingerprint_series,
    fingerprints_dir,
)

# What the detector must reach on the test's corpora (bench/BENCHMARKS.md has the
# full corpora's figures).
MIN_TRUE_POSITIVE_RATE = 0.85
MIN_CROP_RATE = 0.7  # random crops of 50-90 %, raw, windowed, resized+flipped, transposed
MAX_FALSE_POSITIVE_RATE = 0.10


@pytest.fixture(scope="module")
def site() -> tuple[FingerprintIndex, list[np.ndarray], np.ndarray]:
    volumes = site_volumes(4, size=96, slices=24)
    colour = fundus(size=256)
    index = FingerprintIndex()
    for j, v in enumerate(volumes):
        index.add("trial", "v1", f"ct-{j}", fingerprint_series(v, spacing=SPACING))
    index.add("eyes", "v1", "photo", fingerprint_series(colour))
    return index, volumes, colour


def _check(index: FingerprintIndex, grid: np.ndarray) -> object:
    g = np.asarray(grid)
    return index.match_vector(g) if g.ndim == 1 else index.match_grid(g)


def test_transformed_slices_are_traced_to_their_series(site) -> None:
    index, volumes, colour = site
    corpus = attacks(volumes, colour, n_series=1)
    found = {name: _check(index, grid) for name, grid in corpus.items()}
    missed = sorted(name for name, match in found.items() if match is None)
    rate = 1 - len(missed) / len(found)
    assert rate >= MIN_TRUE_POSITIVE_RATE, f"detected {rate:.0%}; missed {missed}"
    # the untouched plane, its value maps and flips name the right series
    for name in ("s0 axial plane", "s0 soft-tissue window (clipped)", "s0 transposed"):
        assert getattr(found[name], "series_id", None) == "ct-0", name
    assert getattr(found["fundus green channel"], "series_id", None) == "photo"


def test_a_display_window_that_flattens_most_of_a_slice_is_undone(site) -> None:
    """A narrow window clips air and bone to two flat values (most of the slice): the plain
    correlation drops near 0.85; a window fitted to the best planes restores it."""
    index, volumes, _ = site
    traced = []
    for j, volume in enumerate(volumes):
        plane = volume[len(volume) // 2 + 2]
        narrow = _window(plane, -100.0, 200.0)
        assert (narrow == 0).mean() + (narrow == 255).mean() > 0.65  # mostly flat
        found = [index.match_grid(grid) for grid in (narrow, narrow.T[::-1])]
        assert all(m is None or m.series_id == f"ct-{j}" for m in found), found
        traced.append(all(m is not None for m in found))
    # The least noisy phantom's windowed slice looks like every other phantom's (its
    # plane is not among the best plain candidates): MISSED, bench/BENCHMARKS.md.
    assert sum(traced) >= 3, traced


def test_random_crops_are_traced_to_their_series(site) -> None:
    """The issue's "any sizeable crop": 50-90 % of a side at random places, raw, windowed,
    resized and flipped, transposed with an affine value map (noise: bench/BENCHMARKS.md)."""
    index, volumes, _ = site
    corpus = {n: g for n, g in random_crops(volumes, n_series=1).items() if "noise" not in n}
    named = {n: getattr(index.match_grid(g), "series_id", None) for n, g in corpus.items()}
    right = [n for n, s in named.items() if s == f"ct-{n[1]}"]
    wrong = {n: s for n, s in named.items() if s is not None and s != f"ct-{n[1]}"}
    assert len(right) / len(corpus) >= MIN_CROP_RATE, sorted(set(corpus) - set(right))
    assert len(wrong) <= 1, wrong  # a crop that matches names its own series


@pytest.fixture(scope="module")
def bench_site() -> tuple[FingerprintIndex, list[np.ndarray]]:
    """Series at the bench's size (128x128x40): a crop keeps more pixels than the
    thumbnails, so noise averages out (bench/BENCHMARKS.md)."""
    volumes = site_volumes(4, size=128, slices=40)
    index = FingerprintIndex()
    for j, v in enumerate(volumes):
        index.add("trial", "v1", f"ct-{j}", fingerprint_series(v, spacing=SPACING))
    return index, volumes


def test_noisy_and_raw_crops_are_traced_to_their_series(bench_site) -> None:
    """Crops of a windowed slice with 5 % Gaussian noise (the noise hides the window's
    clipping: it is found on a blurred copy) and raw crops (a sub-pixel box refinement
    lines them up with the thumbnails): all but one at most are traced, none to another series."""
    index, volumes = bench_site
    corpus = {
        n: g
        for n, g in random_crops(volumes, n_series=3).items()
        if n.endswith(("noise 5 %", "raw"))
    }
    named = {n: getattr(index.match_grid(g), "series_id", None) for n, g in corpus.items()}
    wrong = {n: s for n, s in named.items() if s is not None and s != f"ct-{n[1]}"}
    assert not wrong, wrong
    for kind, least in (("noise 5 %", 14), ("raw", 14)):  # of 15 each (measured: 15, 15)
        right = [n for n, s in named.items() if n.endswith(kind) and s == f"ct-{n[1]}"]
        assert len(right) >= least, (kind, sorted(n for n in corpus if n.endswith(kind)))


def test_mostly_air_raw_crops_are_searched_and_traced(bench_site) -> None:
    """Series 2's raw crops are mostly air with bone stretching the range: 32 grey levels
    see only air and bone, so they were taken for charts (90 %), and air, looking clipped,
    was left out of the coarse search (70 %). A measured grid (most pixels a value of its
    own) is searched anyway, and unmasked coarse templates find the right plane."""
    index, volumes = bench_site
    crops = random_crops(volumes, n_series=3)
    for name in (
        "s2 crop 70% raw",
        "s2 crop 70% transposed affine",
        "s2 crop 90% raw",
        "s2 crop 90% transposed affine",
    ):
        assert getattr(index.match_grid(crops[name]), "series_id", None) == "ct-2", name


def test_noisy_windowed_crops_are_traced_by_a_fitted_window(bench_site) -> None:
    """Noise added after a display window blurs the clipped areas' edges, so the mask
    that leaves them out is a little wrong (the right plane verified at 0.88-0.917). A
    window fitted to the best verified planes uses every pixel instead."""
    index, volumes = bench_site
    crops = random_crops(volumes, n_series=3)
    for name in ("s0 crop 60% window + noise 5 %", "s0 crop 70% window + noise 5 %",
                 "s1 crop 70% window + noise 5 %", "s1 crop 80% window + noise 5 %",
                 "s2 crop 70% window + noise 5 %"):  # fmt: skip
        assert getattr(index.match_grid(crops[name]), "series_id", None) == f"ct-{name[1]}", name


def test_legitimate_figures_raise_no_alarm_against_bench_sized_series(bench_site) -> None:
    index, _ = bench_site
    alarms = {name: _check(index, grid) for name, grid in legitimate().items()}
    assert not {n: m for n, m in alarms.items() if m is not None}


def test_legitimate_figures_and_other_peoples_images_pass(site) -> None:
    index, _, _ = site
    corpus = legitimate()
    alarms = sorted(name for name, grid in corpus.items() if _check(index, grid) is not None)
    assert len(alarms) / len(corpus) <= MAX_FALSE_POSITIVE_RATE, alarms


def test_vectors_of_a_plane_or_volume_length(site) -> None:
    index, volumes, _ = site
    plane = volumes[1][10]
    match = index.match_vector(plane.reshape(-1))
    assert match is not None and match.series_id == "ct-1"
    assert index.match_vector(plane.T.reshape(-1)) is not None  # column-major order
    assert index.match_vector(volumes[2].reshape(-1)) is not None  # a whole volume
    weights = np.random.default_rng(0).normal(size=plane.size)  # same length, no image
    assert index.match_vector(weights) is None
    assert index.match_vector(np.arange(10.0)) is None


def test_degenerate_grids_match_nothing(site) -> None:
    index, _, _ = site
    for grid in (np.zeros((64, 64)), np.ones((5, 5)), np.full((40, 40), np.nan)):
        assert index.match_grid(grid) is None
    assert index.match_grid(np.array([["a", "b"]])) is None


def test_empty_home_has_an_empty_index(tmp_path: Path) -> None:
    home = resolve_home(tmp_path / "node")
    init_home(home)
    index = FingerprintIndex.for_home(home)
    assert len(index) == 0 and index.match_grid(np.eye(32)) is None


def test_index_is_node_private_and_reloads(tmp_path: Path, site) -> None:
    _, volumes, _ = site
    home = resolve_home(tmp_path / "node")
    init_home(home)
    index = FingerprintIndex.for_home(home)
    index.add("trial", "v1", "ct-9", fingerprint_series(volumes[0], spacing=SPACING))
    index.reference("trial", "v2", "ct-9")
    folder = fingerprints_dir(home)
    assert folder.parent == home.private
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    manifest = json.loads((folder / "index.json").read_text())
    assert manifest["series"]["ct-9"] == [["trial", "v1"], ["trial", "v2"]]
    again = FingerprintIndex.for_home(home)
    match = again.match_grid(volumes[0][12])
    assert match is not None and (match.series_id, match.version) == ("ct-9", "v2")


def test_a_slice_drawn_as_pdf_vector_cells_is_traced_to_its_series(site) -> None:
    """Pixels as a lattice of filled rectangles in a PDF content stream (a crop of a
    windowed synthetic-trial slice, a size no series has): provenance sees the picture."""
    from dataclasses import replace

    from disclosure_corpus import vector_lattice

    from insitu.disclosure import DisclosureContext, check_file

    index, volumes, _colour = site
    crop = _window(volumes[0][12])[8:88, 12:84]
    ctx = replace(DisclosureContext(), fingerprints=index)
    report = check_file(vector_lattice(crop), name="fig.pdf", ctx=ctx)
    failed = [f for f in report.findings if f.rule_id == "pixel-provenance"]
    assert failed and "ct-0" in failed[0].message and report.verdict.value == "fail"


def test_publish_fingerprints_every_series_and_rebuild_restores_it(
    tmp_path: Path, series_factory, capsys, monkeypatch
) -> None:
    """Ingest (the real publish path) records every series; `insitu fingerprints rebuild
    --fresh` rebuilds a lost index from the stores."""
    from fixtures_datasets import run_json

    from insitu.datasets.catalog import Catalog
    from insitu.datasets.ingest import ingest
    from insitu.datasets.reader import open_dataset

    home = resolve_home(tmp_path / "node")
    init_home(home)
    source = series_factory()
    report = ingest([source], "demo", home=home)
    assert report.status == "published"
    index = FingerprintIndex.for_home(home)
    with Catalog(home) as catalog:
        published = {row["series_id"] for row in catalog.series("demo", report.version)}
    assert set(index.series_ids()) == published
    image = np.asarray(open_dataset("demo", home=home).image(sorted(published)[0]))
    assert index.match_grid(image[image.shape[0] // 2]) is not None

    # Ingest fingerprints from the volume in memory; rebuild reads the stores: the same.
    def saved() -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for sid in published:
            with np.load(fingerprints_dir(home) / f"{sid}.npz") as data:
                out[sid] = {k: data[k] for k in ("thumbs", "shapes", "spacing", "colour")}
        return out

    from_ingest = saved()
    monkeypatch.setenv("INSITU_HOME", str(home.root))
    code, summary = run_json(["fingerprints", "rebuild", "--fresh", "--json"], capsys)
    assert code == 0 and summary["series"] == len(published)
    assert set(FingerprintIndex.for_home(home).series_ids()) == published
    for sid, arrays in saved().items():
        for key, value in arrays.items():
            np.testing.assert_array_equal(value, from_ingest[sid][key], err_msg=key)


@pytest.mark.parametrize(
    ("source", "slices"),
    [("RG3_UNCR.dcm", 1), ("693_UNCR.dcm", 20), ("CT_small.dcm", 40), ("US1_UNCR.dcm", 2)],
)
@pytest.mark.parametrize("preview_plane", [0, 512])  # store formats 3 and 4
def test_fingerprint_from_memory_equals_the_one_read_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, slices: int, preview_plane: int
) -> None:
    """A radiograph (previews in both formats), a 512 x 512 CT (previews only in format
    3), a small CT and a colour ultrasound: ingest's in-memory fingerprint is the one
    `fingerprints rebuild` reads back, whichever levels the store has."""
    import pydicom
    from fixtures_datasets import dicom_file

    from insitu.datasets import store_write
    from insitu.datasets.fingerprints import _series_fingerprint, volume_fingerprint
    from insitu.datasets.volume import Geometry

    monkeypatch.setattr(store_write, "PREVIEW_PLANE", preview_plane)
    plane = pydicom.dcmread(dicom_file(source)).pixel_array
    rng = np.random.default_rng(0)
    volume = np.stack([np.roll(plane, 3 * k, axis=0) for k in range(slices)])
    volume = volume + rng.integers(0, 3, volume.shape).astype(volume.dtype)
    geometry = Geometry(
        shape=volume.shape[:3],
        spacing=(2.5, 0.7, 0.7),
        origin=(0.0, 0.0, 0.0),
        orientation=(1, 0, 0, 0, 1, 0),
        patient_geometry=True,
        order=[],
    )
    root = store_write.StoreRoot(tmp_path / "s.zarr")
    store_write.write_series(root, "s", volume, geometry, {"series_id": "s"})
    group = store_write.open_root(tmp_path / "s.zarr")["series/s"]
    levels = len(store_write.pyramid(volume))
    assert len(list(group.array_keys())) == levels
    from_store, in_memory = _series_fingerprint(group), volume_fingerprint(volume, (2.5, 0.7, 0.7))
    np.testing.assert_array_equal(from_store.thumbs, in_memory.thumbs)
    assert from_store.shapes == in_memory.shapes
    assert from_store.spacing == in_memory.spacing and from_store.colour == in_memory.colour
