"""Pixel provenance: does an output carry pixels of one of the site's series?

At ingest every published series gets a compact fingerprint
(:func:`fingerprint_series`): its volume reduced to a thumbnail volume of at
most ``GRID`` voxels per axis (per channel, plus luminance for colour
images), from which every plane in all three orientations is cut at check
time, and the shapes of its pyramid levels. A :class:`FingerprintIndex` holds
the fingerprints of a node home (``$INSITU_HOME/private/fingerprints/``: node
only, never served) and answers two questions:

- :meth:`FingerprintIndex.match_grid`: is this 2-D grid (any channel of an
  image, a table of numbers, an array in a weights file) a plane of a series,
  after cropping, resizing (also anisotropic), flipping, transposing, or an
  affine or monotone rescaling of its values (HU to 0..255, windowing with
  clipping), JPEG compression or noise?
- :meth:`FingerprintIndex.match_vector`: is this 1-D array, whose length is a
  plane's or a volume's, such a plane once reshaped?

How (coarse to fine, numpy only):

1. whole planes: the grid is area-resized to ``THUMB`` x ``THUMB`` and
   compared, in its 8 flips/transposes and both signs, with every plane's
   thumbnail by normalised cross-correlation (Pearson on values, and on ranks
   for monotone value maps); one matrix product over all planes.
2. crops: a multi-scale template search by FFT over coarse (``COARSE`` x
   ``COARSE``) plane thumbnails, for a bounded set of crop fractions
   (``CROP_FRACTIONS`` of each side) whose aspect agrees with the grid's
   (square pixels, or the series' physical spacing); the best few candidates
   are verified on the full thumbnails of the plane and its neighbours, with
   small scale jitter, then a sub-pixel box refinement (templates cut from the
   grid at a few phases so their edges fall on thumbnail pixel boundaries).
   Where noise hides a display window's clipping, the clipped areas are found
   on a blurred copy of the grid.

A match is a :class:`ProvenanceMatch` naming the series. The thresholds are
module constants measured by ``bench/run.py provenance`` (bench/BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from insitu.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from insitu.config import NodeHome

    # (series id, orientation, plane, score, how) -> a match naming the series' versions
    _Maker = Callable[[str, int, int, float, str], "ProvenanceMatch"]

__all__ = [
    "FingerprintIndex",
    "ProvenanceMatch",
    "SeriesFingerprint",
    "fingerprint_series",
    "fingerprints_dir",
]

FORMAT = 1
GRID = 64  # the thumbnail volume keeps at most this many voxels per axis
THUMB = 32  # whole-plane descriptors are THUMB x THUMB
COARSE = 20  # coarse grid of the crop search
MIN_SIDE = 12  # grids smaller than this in either axis carry too little to compare
MIN_PLANE = 8  # a plane thinner than this (in the thumbnail volume) is not indexed
CROP_FRACTIONS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FINE_BLUR = 1  # blur passes of the fine thumbnails and templates (sub-pixel crops, noise)
FINE_STEP = 0.1  # verification tries each crop size +-10 %, then +-5 % around the best
PER_GROUP = 6  # crop sizes verified per plane group
CANDIDATES = 64  # coarse crop candidates looked at quickly on the fine thumbnails
VERIFIED = 6  # of which the best are verified with scale jitter
_QUICK_MIN = 0.6  # quick scores below this are not verified
ALIGN_PHASES = (0.0, 0.25, 0.5, 0.75)  # sub-pixel phases of the box refinement
_ALIGN_FROM = 0.8  # verified scores from which the box is refined to sub-pixel phases
COARSE_STEP = 3  # the coarse search looks at every 3rd plane; verification at its neighbours
# Decision thresholds (normalised cross-correlation), set from bench/run.py provenance.
THRESHOLD_PLANE = 0.90
THRESHOLD_CROP = 0.92
THRESHOLD_WINDOW = 0.94  # whole planes after fitting a display window (more freedom)
WINDOW_FROM = 0.6  # plain scores from which a window is fitted (windowed planes: 0.84+)
WINDOW_CANDIDATES = 24  # best planes of the plain comparison a window is fitted to
WINDOW_QUANTILES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0)
WINDOW_FITS = 3  # verified crop candidates a display window is fitted to (below threshold)
_FIT_FROM = 0.8  # ... when they verified at least this well
_COARSE_MIN = 0.55  # coarse crop candidates below this are not verified
CONTINUOUS_SHARE = 0.5  # distinct values per pixel from which a grid is measured, not drawn
CONTINUOUS_PIXELS = 1024  # ... on at least this many pixels (8-bit charts have <= 256 values)
MIN_LEVELS = 6  # a crop needs this many grey levels (of 32) to be searched for
FEATURELESS = 0.01  # planes whose thumbnail varies less (of the series' range) are skipped
CLIP_BAND_RESIZED = 0.08  # the same, after resizing (averaging leaves noise around)
CLIP_BAND = 0.03  # values this close to the extremes may be clipped by a window
NOISY = 0.01  # noise (sigma, of the value range) from which clipping is found after a blur
DENOISE_PASSES = 3  # blur passes of that blur
_BLUR_NOISE = 0.226  # what 3 passes of the [1, 2, 1] / 4 blur leave of white noise (sigma)
MAX_QUERIES = 2  # channels and panels of one grid searched for crops
MAX_PANELS = 6  # panels of one rendered figure compared
ORIENTATIONS = ("axial", "coronal", "sagittal")
INDEX_NAME = "index.json"


def fingerprints_dir(home: NodeHome) -> Path:
    """``private/fingerprints`` of a node home (node only: never served or mounted)."""
    return home.private / "fingerprints"


# --- resizing and normalising -------------------------------------------------


@functools.lru_cache(maxsize=512)
def _area_matrix(n: int, m: int) -> np.ndarray:
    """(m, n) weights that resize an axis of length n to m by area averaging."""
    edges = np.linspace(0.0, n, m + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    weights = overlap / overlap.sum(axis=1, keepdims=True)
    weights.setflags(write=False)
    out: np.ndarray = weights.astype(np.float32)
    return out


def _resize2(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Area-resize the last two axes of ``image`` to ``shape``."""
    a = _area_matrix(image.shape[-2], shape[0])
    b = _area_matrix(image.shape[-1], shape[1])
    rows = _mm(a, np.asarray(image, dtype=np.float32))
    return _mm(rows, np.ascontiguousarray(b.T))


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Matrix product without BLAS threads.

    The products here are small; on a busy machine OpenBLAS's threads spin against
    each other (a thousandfold slower, measured), so numpy's own loops serve them.
    """
    if a.ndim == 2 and b.ndim == 2:
        spec = "ij,jk->ik"
    elif a.ndim == 2:
        spec = "ij,...jk->...ik"
    else:
        spec = "...ij,jk->...ik"
    out: np.ndarray = np.einsum(spec, a, b)
    return out


def _resize_axis(volume: np.ndarray, axis: int, m: int) -> np.ndarray:
    n = volume.shape[axis]
    if n <= m:
        return volume
    moved = np.moveaxis(volume, axis, -1)
    # _mm, not `@`: at publish on a busy machine BLAS threads spun ~0.3 s CPU per series
    return np.moveaxis(_mm(moved, np.ascontiguousarray(_area_matrix(n, m).T)), -1, axis)


def _finite(grid: np.ndarray) -> np.ndarray:
    out = np.asarray(grid, dtype=np.float32)
    if not np.isfinite(out).all():
        good = np.isfinite(out)
        fill = float(out[good].mean()) if good.any() else 0.0
        out = np.where(good, out, np.float32(fill)).astype(np.float32)
    return out


def _unit(rows: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm rows (constant rows stay zero)."""
    rows = rows - rows.mean(axis=-1, keepdims=True)
    norm = np.sqrt((rows * rows).sum(axis=-1, keepdims=True))
    out: np.ndarray = np.divide(rows, norm, out=np.zeros_like(rows), where=norm > 1e-9)
    return out


def _dihedral(image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The 8 flips/transposes of the last two axes, named."""
    out = []
    for name, img in (("", image), ("transposed", np.swapaxes(image, -1, -2))):
        out.append((name or "as is", img))
        out.append(((name + " flipped up-down").strip(), img[..., ::-1, :]))
        out.append(((name + " flipped left-right").strip(), img[..., :, ::-1]))
        out.append(((name + " rotated 180").strip(), img[..., ::-1, ::-1]))
    return out


# --- fingerprints ---------------------------------------------------------------


@dataclass(frozen=True)
class SeriesFingerprint:
    """What the index keeps of one series (a few hundred KB at most).

    ``thumbs`` is (channels, z, y, x) float16 in 0..1 (the series' own value
    range), at most ``GRID`` per axis; for colour images channel 0 is the
    luminance, then each colour channel. ``shapes`` are the (z, y, x) shapes of
    the volume and of its pyramid levels (for 1-D arrays of a plane's or a
    volume's length); ``spacing`` is (z, y, x) in any unit, for the aspect of
    reformatted planes.
    """

    thumbs: np.ndarray
    shapes: tuple[tuple[int, int, int], ...]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    colour: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.shapes[0]


def _pyramid_shapes(shape: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """The level shapes insitu's store writer makes (halve y, x; z while >= 16 remain)."""
    shapes = [shape]
    while len(shapes) < 3:
        z, y, x = shapes[-1]
        if min(y, x) // 2 < 64:
            break
        shapes.append((z // 2 if z // 2 >= 16 else z, y // 2, x // 2))
    return shapes


def fingerprint_series(
    volume: np.ndarray,
    *,
    spacing: Sequence[float] | None = None,
    level_shapes: Iterable[Sequence[int]] = (),
    native_shape: Sequence[int] | None = None,
) -> SeriesFingerprint:
    """The fingerprint of one series: ``volume`` is (z, y, x) grey or (z, y, x, c) colour.

    ``volume`` may be a coarser pyramid level of the series (at least ``GRID``
    in y and x suffices): pass the level-0 shape as ``native_shape`` then.
    ``level_shapes`` adds the shapes of pyramid levels (by default the store
    writer's rule is applied to the native shape).
    """
    vol = np.asarray(volume)
    if vol.ndim == 2:
        vol = vol[None]
    colour = vol.ndim == 4
    if vol.ndim not in (3, 4) or min(vol.shape[:3]) < 1:
        raise ConfigError(
            f"a series to fingerprint is (z, y, x) or (z, y, x, c), not shape {vol.shape}"
        )
    channels = np.moveaxis(vol, -1, 0) if colour else vol[None]
    work = channels.astype(np.float32)
    for axis in (3, 2, 1):  # the longest reductions first
        work = _resize_axis(work, axis, GRID)
    if colour:
        luma = work[:3].mean(axis=0, keepdims=True) if work.shape[0] >= 3 else work[:1]
        work = np.concatenate([luma, work], axis=0)
    lo, hi = float(np.nanmin(work)), float(np.nanmax(work))
    scaled = (work - lo) / (hi - lo) if hi > lo else np.zeros_like(work)
    shape = tuple(int(n) for n in (native_shape or vol.shape[:3]))
    if len(shape) != 3:
        raise ConfigError(f"native_shape must be (z, y, x), not {native_shape!r}")
    native = (shape[0], shape[1], shape[2])
    shapes = [native, *_pyramid_shapes(native)[1:]]
    for extra in level_shapes:
        s = tuple(int(n) for n in extra)[:3]
        if len(s) == 3 and s not in shapes:
            shapes.append((s[0], s[1], s[2]))
    sp = tuple(float(v) for v in (spacing or (1.0, 1.0, 1.0)))
    return SeriesFingerprint(
        thumbs=np.nan_to_num(scaled).astype(np.float16),
        shapes=tuple(shapes),
        spacing=(sp[0], sp[1], sp[2]),
        colour=colour,
    )


def _save(path: Path, fp: SeriesFingerprint) -> None:
    tmp = path.with_suffix(".tmp.npz")
    with open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            format=np.int64(FORMAT),
            thumbs=fp.thumbs,
            shapes=np.asarray(fp.shapes, dtype=np.int64),
            spacing=np.asarray(fp.spacing, dtype=np.float64),
            colour=np.bool_(fp.colour),
        )
    tmp.chmod(0o600)
    tmp.replace(path)


def _load(path: Path) -> SeriesFingerprint:
    with np.load(path, allow_pickle=False) as data:
        return SeriesFingerprint(
            thumbs=data["thumbs"],
            shapes=tuple((int(a), int(b), int(c)) for a, b, c in data["shapes"]),
            spacing=(
                float(data["spacing"][0]),
                float(data["spacing"][1]),
                float(data["spacing"][2]),
            ),
            colour=bool(data["colour"]),
        )


# --- matches -----------------------------------------------------------------------


@dataclass(frozen=True)
class ProvenanceMatch:
    """Where a grid's pixels came from."""

    dataset: str
    version: str
    series_id: str
    orientation: str  # axial | coronal | sagittal (planes along z, y, x)
    plane: int  # plane index in the native volume (approximate for reformats)
    score: float  # normalised cross-correlation, 0..1
    how: str = ""  # e.g. "crop 0.45 x 0.55, flipped left-right"
    never_leave: str = ""  # why the series' pixels may never leave (fundus, OCT), or ""

    def describe(self) -> str:
        return (
            f"pixels of series {self.series_id} ({self.dataset} {self.version}, "
            f"{self.orientation} plane {self.plane}"
            + (f", {self.how}" if self.how else "")
            + f"; correlation {self.score:.2f})"
        )


class FingerprintIndex:
    """The fingerprints of a node's series, and the matchers.

    An index is loaded whole (it is small); :meth:`for_home` caches it per
    process until ``index.json`` changes, so a check costs only the matching.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._series: dict[str, SeriesFingerprint] = {}
        self._refs: dict[str, list[tuple[str, str]]] = {}
        self._never: dict[str, str] = {}  # series id -> why its pixels never leave
        self._built: _Built | None = None
        self._lock = threading.Lock()

    # --- loading and adding --------------------------------------------------

    @classmethod
    def for_home(cls, home: NodeHome) -> FingerprintIndex:
        """The home's index (empty if nothing was fingerprinted yet)."""
        folder = fingerprints_dir(home)
        manifest = folder / INDEX_NAME
        try:
            stat = manifest.stat()
            key = (str(folder), stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            return cls(folder)
        with _CACHE_LOCK:
            cached = _CACHE.get(str(folder))
            if cached is not None and cached[0] == key:
                return cached[1]
        index = cls(folder)
        refs = json.loads(manifest.read_text())
        for series_id, entries in refs.get("series", {}).items():
            path = folder / f"{series_id}.npz"
            if path.is_file():
                index._series[series_id] = _load(path)
                index._refs[series_id] = [(str(d), str(v)) for d, v in entries]
        for series_id, reason in refs.get("never_leave", {}).items():
            if series_id in index._series and reason:
                index._never[series_id] = str(reason)
        with _CACHE_LOCK:
            _CACHE[str(folder)] = (key, index)
        return index

    def __len__(self) -> int:
        return len(self._series)

    @property
    def planes(self) -> int:
        """How many planes (all orientations and channels) the index compares against."""
        return sum(len(g.planes) for g in self._groups().groups)

    def series_ids(self) -> list[str]:
        return sorted(self._series)

    def add(
        self,
        dataset: str,
        version: str,
        series_id: str,
        fp: SeriesFingerprint,
        *,
        never_leave: str = "",
    ) -> None:
        """Add (or re-reference) a series; written through when the index has a folder.

        ``never_leave``: why the series' pixels may never leave the site (fundus,
        OCT: :func:`insitu.never_leave.never_leave_reason`); a match then carries it.
        """
        if not series_id or "/" in series_id or series_id.startswith("."):
            raise ConfigError(f"{series_id!r} is not a series id to fingerprint")
        with self._lock:
            self._series[series_id] = fp
            refs = self._refs.setdefault(series_id, [])
            if (dataset, version) not in refs:
                refs.append((dataset, version))
            if never_leave:
                self._never[series_id] = never_leave
            self._built = None
            if self.folder is not None:
                self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                _save(self.folder / f"{series_id}.npz", fp)
                self._write_manifest()

    def has(self, series_id: str) -> bool:
        return series_id in self._series

    def never_leave(self, series_id: str) -> str:
        """Why the series' pixels may never leave the site, or "" (may leave as aggregates)."""
        return self._never.get(series_id, "")

    def reference(
        self, dataset: str, version: str, series_id: str, *, never_leave: str = ""
    ) -> None:
        """Record that another version holds an already fingerprinted series (and, for an
        index written before it kept them, the series' never-leave reason)."""
        if series_id not in self._series:
            raise ConfigError(f"series {series_id} has no fingerprint yet: add it first")
        with self._lock:
            refs = self._refs.setdefault(series_id, [])
            changed = False
            if (dataset, version) not in refs:
                refs.append((dataset, version))
                changed = True
            if never_leave and self._never.get(series_id) != never_leave:
                self._never[series_id] = never_leave
                changed = True
            if changed and self.folder is not None:
                self._write_manifest()

    def _write_manifest(self) -> None:
        assert self.folder is not None
        data = {
            "format": FORMAT,
            "series": {s: [list(r) for r in refs] for s, refs in sorted(self._refs.items())},
            "never_leave": dict(sorted(self._never.items())),
        }
        tmp = self.folder / (INDEX_NAME + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        tmp.chmod(0o600)
        tmp.replace(self.folder / INDEX_NAME)

    # --- matching --------------------------------------------------------------

    def _groups(self) -> _Built:
        with self._lock:
            if self._built is None:
                self._built = _Built.build(self._series)
            return self._built

    def _match(
        self, series_id: str, orientation: int, plane: int, score: float, how: str
    ) -> ProvenanceMatch:
        dataset, version = self._refs.get(series_id, [("", "")])[-1]
        return ProvenanceMatch(
            dataset=dataset,
            version=version,
            series_id=series_id,
            orientation=ORIENTATIONS[orientation],
            plane=plane,
            score=round(float(min(score, 1.0)), 4),
            how=how,
            never_leave=self._never.get(series_id, ""),
        )

    def match_grid(self, grid: np.ndarray) -> ProvenanceMatch | None:
        """The series ``grid``'s pixels came from, or None.

        ``grid``: (h, w); (h, w, c) or (c, h, w) with up to 4 channels (each
        channel and the luminance are compared); a 3-D stack is compared by
        its first, middle and last planes along its first axis.
        """
        if not self._series:
            return None
        built = self._groups()
        queries: list[tuple[str, _Query]] = []
        thumbs: list[np.ndarray] = []
        for label, plane in _query_planes(np.asarray(grid)):
            for part, piece in _pieces(_finite(plane)):
                if min(piece.shape) < MIN_SIDE or float(piece.max() - piece.min()) <= 0:
                    continue
                # channels of a grey image shown in colour say the same: compare one
                thumb = _unit(_resize2(piece, (THUMB, THUMB)).reshape(1, -1))[0]
                if any(t.shape == thumb.shape and float(t @ thumb) > 0.995 for t in thumbs):
                    continue
                thumbs.append(thumb)
                queries.append((", ".join(t for t in (label, part) if t), _Query.of(piece)))
        # whole planes first (cheap), then crops of the most image-like candidates
        for stage in (built.match_whole, built.match_crops):
            for extra, query in queries[: MAX_QUERIES if stage == built.match_crops else None]:
                found = stage(query, self._match)
                if found is not None:
                    return _with_how(found, extra) if extra else found
        return None

    def match_vector(self, v: np.ndarray) -> ProvenanceMatch | None:
        """A 1-D array of a plane's or a volume's length, reshaped and matched."""
        if not self._series:
            return None
        flat = np.asarray(v).reshape(-1)
        n = flat.size
        shapes: set[tuple[int, ...]] = set()
        for fp in self._series.values():
            channels = fp.thumbs.shape[0] - 1 if fp.colour else 1
            for z, y, x in fp.shapes:
                for plane in ((y, x), (z, x), (z, y)):
                    shapes.add(plane)
                    if channels > 1:
                        shapes.add((*plane, channels))
                shapes.add((z, y, x))
        best: ProvenanceMatch | None = None
        for shape in sorted(shapes):
            if int(np.prod(shape)) != n or min(shape[:2]) < MIN_SIDE:
                continue
            for order in ("C", "F"):
                grid = flat.reshape(shape, order=order)
                if len(shape) == 3 and shape[2] > 4:  # a whole volume: its middle planes
                    mid = grid[shape[0] // 2]
                    found = self.match_grid(mid)
                else:
                    found = self.match_grid(grid)
                if found is not None:
                    found = _with_how(found, f"1-D array reshaped to {shape} ({order} order)")
                    if best is None or found.score > best.score:
                        best = found
            if best is not None:
                return best
        return best


def _with_how(match: ProvenanceMatch, extra: str) -> ProvenanceMatch:
    how = f"{extra}, {match.how}" if match.how else extra
    return dataclasses.replace(match, how=how)


def _query_planes(grid: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The 2-D planes of a query: channels and luminance of colour images."""
    if grid.dtype.kind not in "biuf" or grid.size == 0:
        return []
    if grid.ndim == 2:
        return [("", grid)]
    if grid.ndim != 3:
        return []
    if grid.shape[-1] <= 4 < min(grid.shape[:2]):
        channels = np.moveaxis(grid, -1, 0)
    elif grid.shape[0] <= 4 < min(grid.shape[1:]):
        channels = grid
    else:  # a stack of planes
        k = grid.shape[0]
        picks = sorted({0, k // 2, k - 1})
        return [(f"plane {i} of a stack", grid[i]) for i in picks]
    candidates: list[tuple[str, np.ndarray]] = []
    names = ("red", "green", "blue", "alpha")
    for i, channel in enumerate(channels):
        candidates.append((f"{names[i]} channel" if len(channels) > 1 else "", channel))
    if len(channels) >= 3:
        candidates.append(("luminance", channels[:3].astype(np.float32).mean(axis=0)))
    out: list[tuple[str, np.ndarray]] = []
    for label, channel in candidates:  # grey images saved as RGB: compare one copy
        if not any(np.array_equal(channel, kept) for _, kept in out):
            out.append((label, channel))
    return out


def _background_lines(image: np.ndarray, background: float, tol: float, axis: int) -> np.ndarray:
    """Share of each row (axis=1) or column (axis=0) that is background."""
    return np.asarray((np.abs(image - background) <= tol).mean(axis=axis))


def _trim(image: np.ndarray, background: float, tol: float) -> tuple[slice, slice] | None:
    """The box left after removing border rows/columns that are mostly background
    (margins, tick labels, axis lines of a rendered figure)."""
    rows = _background_lines(image, background, tol, 1) < 0.5
    cols = _background_lines(image, background, tol, 0) < 0.5
    # thin full lines (axes' spines) are one value across: drop them with the margins
    if not rows.any() or not cols.any():
        return None
    r = np.flatnonzero(rows)
    c = np.flatnonzero(cols)
    return slice(int(r[0]), int(r[-1]) + 1), slice(int(c[0]), int(c[-1]) + 1)


def _runs(empty: np.ndarray, min_run: int) -> list[tuple[int, int]]:
    """The stretches between runs of at least ``min_run`` empty lines."""
    pieces, start, gap = [], None, 0
    for i, e in enumerate(empty):
        if e:
            gap += 1
            if start is not None and gap >= min_run:
                pieces.append((start, i - gap + 1))
                start = None
        else:
            if start is None:
                start = i
            gap = 0
    if start is not None:
        pieces.append((start, len(empty) - gap))
    return [(a, b) for a, b in pieces if b > a]


def _pieces(image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The grid itself, then the content of a rendered figure: trimmed of its margins and
    split into panels where whole rows or columns of background separate them."""
    out: list[tuple[str, np.ndarray]] = [("", image)]
    h, w = image.shape
    if min(h, w) < 2 * MIN_SIDE:
        return out
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    values, counts = np.unique(border, return_counts=True)
    if counts.max() < 0.5 * len(border):
        return out  # no uniform margin: not a rendered figure
    background = float(values[int(np.argmax(counts))])
    tol = 0.02 * float(image.max() - image.min())
    box = _trim(image, background, tol)
    if box is None:
        return out
    inner = image[box]
    seen = {image.shape}
    pieces: list[tuple[str, np.ndarray]] = []
    empty_cols = _background_lines(inner, background, tol, 0) >= 0.98
    for c0, c1 in _runs(empty_cols, 3):
        column = inner[:, c0:c1]
        empty_rows = _background_lines(column, background, tol, 1) >= 0.98
        for r0, r1 in _runs(empty_rows, 3):
            piece = column[r0:r1]
            sub = _trim(piece, background, tol)
            piece = piece[sub] if sub is not None else piece
            if min(piece.shape) >= MIN_SIDE and piece.shape not in seen:
                seen.add(piece.shape)
                pieces.append(("panel of a figure", piece))
    pieces.sort(key=lambda item: item[1].size, reverse=True)
    return out + pieces[:MAX_PANELS]


# --- the matcher's prepared arrays ----------------------------------------------------


@dataclass
class _Group:
    """The planes of one orientation of one channel of one series (all one shape)."""

    series: str
    orientation: int
    channel: int
    planes: np.ndarray  # (k, a, b) float32 thumbnails, values 0..1
    native: tuple[int, int, int]  # native (planes, rows, cols) along this orientation
    aspect_px: float  # native rows / cols
    aspect_mm: float  # physical height / width

    def native_plane(self, k: int) -> int:
        return int((k + 0.5) * self.native[0] / len(self.planes))


@dataclass
class _Stack:
    """Planes prepared for FFT template search: spectra and integral images."""

    planes: np.ndarray  # (n, a, b)
    spectrum: np.ndarray
    spectrum_sq: np.ndarray
    sums: np.ndarray
    squares: np.ndarray

    @classmethod
    def of(cls, planes: np.ndarray) -> _Stack:
        planes = planes.astype(np.float32)
        return cls(
            planes=planes,
            spectrum=_fft().rfft2(planes),
            spectrum_sq=_fft().rfft2(planes * planes),
            sums=_integral(planes),
            squares=_integral(planes * planes),
        )

    def ncc(self, templates: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        """NCC of each template at every valid position of every plane: (T, n, a', b').

        Without masks the templates must be zero-mean and unit-norm. With masks
        (1 where a template pixel counts, e.g. not clipped by a display window)
        templates must be zero-mean and unit-norm over their mask and 0 outside.
        """
        _, a, b = self.planes.shape
        _, ty, tx = templates.shape
        va, vb = a - ty + 1, b - tx + 1

        def correlate(spectrum: np.ndarray, kernels: np.ndarray) -> np.ndarray:
            padded = np.zeros((len(kernels), a, b), dtype=np.float32)
            padded[:, :ty, :tx] = kernels
            product = spectrum[None] * np.conj(_fft().rfft2(padded))[:, None]
            out: np.ndarray = _fft().irfft2(product, s=(a, b))[..., :va, :vb]
            return out

        corr = correlate(self.spectrum, templates)
        if masks is None:
            count = ty * tx
            s, ss = _window(self.sums, ty, tx, va, vb), _window(self.squares, ty, tx, va, vb)
            var = np.maximum(ss - s * s / count, 0.0)[None]
        else:
            count = masks.reshape(len(masks), -1).sum(axis=1)[:, None, None, None]
            s = correlate(self.spectrum, masks)
            ss = correlate(self.spectrum_sq, masks)
            var = np.maximum(ss - s * s / count, 0.0)
        floor = 1e-6 * ty * tx
        var_b = np.broadcast_to(var, corr.shape)
        out: np.ndarray = np.divide(
            corr, np.sqrt(var_b), out=np.zeros_like(corr), where=var_b > floor
        )
        return out

    def peaks(self, items: Sequence[tuple[np.ndarray, np.ndarray | None]]) -> np.ndarray:
        """For templates of different sizes: the best |NCC| of each on each plane, (T, n).

        One FFT batch for all templates (each zero-padded to the plane size).
        """
        n, a, b = self.planes.shape
        kernels = np.zeros((len(items), a, b), dtype=np.float32)
        masks = np.zeros((len(items), a, b), dtype=np.float32)
        for i, (template, mask) in enumerate(items):
            ty, tx = template.shape
            kernels[i, :ty, :tx] = template
            if mask is not None:
                masks[i, :ty, :tx] = mask
        fft = _fft()
        corr = fft.irfft2(self.spectrum[None] * np.conj(fft.rfft2(kernels))[:, None], s=(a, b))
        masked = [i for i, (_, mask) in enumerate(items) if mask is not None]
        if masked:
            mask_spectra = np.conj(fft.rfft2(masks[masked]))[:, None]
            s_all = fft.irfft2(self.spectrum[None] * mask_spectra, s=(a, b))
            ss_all = fft.irfft2(self.spectrum_sq[None] * mask_spectra, s=(a, b))
        out = np.zeros((len(items), n), dtype=np.float32)
        for i, (template, mask) in enumerate(items):
            ty, tx = template.shape
            va, vb = a - ty + 1, b - tx + 1
            c = corr[i, :, :va, :vb]
            if mask is None:
                s = _window(self.sums, ty, tx, va, vb)
                ss = _window(self.squares, ty, tx, va, vb)
                count = float(ty * tx)
            else:
                k = masked.index(i)
                s, ss = s_all[k, :, :va, :vb], ss_all[k, :, :va, :vb]
                count = float(mask.sum())
            var = np.maximum(ss - s * s / count, 0.0)
            ncc = np.divide(c, np.sqrt(var), out=np.zeros_like(c), where=var > 1e-6 * ty * tx)
            out[i] = np.abs(ncc).reshape(n, -1).max(axis=1)
        return out


@functools.cache
def _fft() -> Any:
    """scipy.fft when present (single precision stays single: twice as fast), else numpy's."""
    try:
        import scipy.fft

        return scipy.fft
    except ImportError:  # pragma: no cover - scipy comes with the airlock's checks
        return np.fft


def _blur(stack: np.ndarray, passes: int | None = None) -> np.ndarray:
    """``FINE_BLUR`` passes of a [1, 2, 1] / 4 blur of the last two axes (edges repeated):
    crops rarely fall on thumbnail pixel boundaries, and the blur makes half a pixel (and
    pixel noise) cost little."""
    out = stack
    for _ in range(FINE_BLUR if passes is None else passes):
        padded = np.pad(out, [(0, 0)] * (out.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
        rows = padded[..., :-2, :] * 0.25 + padded[..., 1:-1, :] * 0.5 + padded[..., 2:, :] * 0.25
        out = rows[..., :-2] * 0.25 + rows[..., 1:-1] * 0.5 + rows[..., 2:] * 0.25
    return np.asarray(out, dtype=np.float32)


def _integral(stack: np.ndarray) -> np.ndarray:
    out = np.zeros((stack.shape[0], stack.shape[1] + 1, stack.shape[2] + 1), dtype=np.float32)
    out[:, 1:, 1:] = stack.cumsum(axis=1).cumsum(axis=2)
    return out


def _window(table: np.ndarray, ty: int, tx: int, va: int, vb: int) -> np.ndarray:
    """Sums over every ty x tx window, from an integral image."""
    out: np.ndarray = (
        table[:, ty:, tx:] - table[:, :-ty, tx:] - table[:, ty:, :-tx] + table[:, :-ty, :-tx]
    )[:, :va, :vb]
    return out


@dataclass
class _Family:
    """Coarse planes of all groups sharing an aspect (one template size set serves all)."""

    aspect_px: float
    aspect_mm: float
    stack: _Stack
    owner: np.ndarray  # group number of each coarse plane
    slot: np.ndarray  # plane number within its group


@dataclass
class _Query:
    """One 2-D plane of an output, as floats, and which pixels look clipped."""

    values: np.ndarray
    unclipped: np.ndarray | None = None  # 1.0 where not at (or near) an extreme
    continuous: bool = False  # most pixels hold a value of their own (measured, not a chart)
    _templates: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray | None]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def of(cls, plane: np.ndarray) -> _Query:
        values = _finite(plane)
        lo, hi = float(values.min()), float(values.max())
        band = CLIP_BAND * (hi - lo)  # noise and JPEG blur the clipped values a little
        unclipped = ((values > lo + band) & (values < hi - band)).astype(np.float32)
        found = 0.05 < 1 - float(unclipped.mean()) < 0.8
        sigma = 0.0 if found else _noise_sigma(values)
        if sigma > NOISY * (hi - lo) and min(values.shape) > 4 * DENOISE_PASSES:
            # Noise added after a window scatters the clipped values far beyond the band
            # (nothing looks clipped): find the clipped areas on a blurred copy (noise / 4.4)
            # instead, and keep only pixels whose whole blur footprint is unclipped.
            smooth = _blur(values[None], DENOISE_PASSES)[0]
            lo, hi = float(smooth.min()), float(smooth.max())
            band = max(CLIP_BAND * (hi - lo), 5 * _BLUR_NOISE * sigma)
            flat = ((smooth > lo + band) & (smooth < hi - band)).astype(np.float32)
            unclipped = (_blur(flat[None], DENOISE_PASSES)[0] >= 0.999).astype(np.float32)
        return cls(
            values,
            unclipped if 0.05 < 1 - float(unclipped.mean()) < 0.8 else None,
            _continuous(values),
        )

    def reduced(self, side: int) -> _Query:
        """The same query at most ``side`` pixels along each axis (enough for templates)."""
        h, w = self.values.shape
        if h <= side and w <= side:
            return self
        shape = (min(h, side), min(w, side))
        unclipped = None
        if self.unclipped is not None:
            unclipped = (_resize2(self.unclipped, shape) >= 0.999).astype(np.float32)
        return _Query(_resize2(self.values, shape), unclipped, self.continuous)

    def oriented(self, name: str) -> _Query:
        unclipped = None if self.unclipped is None else dict(_dihedral(self.unclipped))[name]
        return _Query(dict(_dihedral(self.values))[name], unclipped)

    def template(self, name: str, ty: int, tx: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The query flipped/transposed by ``name``, resized to (ty, tx), blurred, as a
        zero-mean unit-norm template over its mask (memoised: candidates share sizes)."""
        key = (name, ty, tx)
        if key not in self._templates:
            image, mask = self.oriented(name).resized((ty, tx))
            templates, masks = _templates(_blur(image[None]), None if mask is None else mask[None])
            self._templates[key] = (templates[0], None if masks is None else masks[0])
        return self._templates[key]

    def aligned(
        self, name: str, box: tuple[int, int, int, int], shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Like :meth:`template`, of the rows/columns ``box`` (y0, y1, x0, x1) of the
        oriented query only: a box whose edges fall on thumbnail pixel boundaries."""
        y0, y1, x0, x1 = box
        oriented = self.oriented(name)
        part = _Query(
            oriented.values[y0:y1, x0:x1],
            None if oriented.unclipped is None else oriented.unclipped[y0:y1, x0:x1],
        )
        image, mask = part.resized(shape)
        templates, masks = _templates(_blur(image[None]), None if mask is None else mask[None])
        return templates[0], None if masks is None else masks[0]

    def resized(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
        """The query at ``shape``, and where it is not clipped (None: nothing looks clipped)."""
        small = _resize2(self.values, shape)
        return small, _mask(small, self.unclipped)


def _mask(small: np.ndarray, unclipped: np.ndarray | None) -> np.ndarray | None:
    """Blocks with no clipped pixel (at full resolution), and away from the extremes of
    the resized image (noise hides clipping at full resolution, not after averaging)."""
    near = _unclipped(small)
    if unclipped is not None:
        full = (_resize2(unclipped, small.shape) >= 0.999).astype(np.float32)
        near = full if near is None else near * full
    if near is None or near.mean() < 0.2:
        return None
    return near


def _unclipped(small: np.ndarray) -> np.ndarray | None:
    """1 where a (resized, so less noisy) image is not at its extremes, eroded by a pixel.

    A display window clips: air and bone become flat. Correlating only the rest
    (and not the pixels beside a clipped one, which mix both) undoes the window.
    """
    lo, hi = float(small.min()), float(small.max())
    band = CLIP_BAND_RESIZED * (hi - lo)
    valid = (small > lo + band) & (small < hi - band)
    share = float(valid.mean())
    if share > 0.95 or share < 0.2:
        return None
    padded = np.pad(valid, 1, mode="edge")
    eroded = valid.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            eroded &= padded[dy : dy + valid.shape[0], dx : dx + valid.shape[1]]
    return eroded.astype(np.float32) if eroded.mean() >= 0.2 else None


def _noise_sigma(image: np.ndarray) -> float:
    """Pixel noise of an image, from the median absolute deviation of neighbours'
    differences (0 for flat charts and smooth images; robust to edges)."""
    if image.shape[1] < 2:
        return 0.0
    d = np.diff(image, axis=1).ravel()
    mad = float(np.median(np.abs(d - np.median(d))))
    return mad / (0.6745 * 1.41421356)  # MAD to sigma, of a difference of two pixels


def _drop_featureless(planes: np.ndarray) -> np.ndarray:
    """Planes with (nearly) nothing but noise (air outside the body) set to zero: they show
    nobody, and noise correlates with anything simple."""
    flat = planes.reshape(len(planes), -1)
    empty = flat.std(axis=1) < FEATURELESS
    if not empty.any():
        return planes
    out = planes.copy()
    out[empty] = 0.0
    return out


def _structured(template: np.ndarray) -> bool:
    """Enough grey levels to be an image, not a chart: plots, bars and test patterns are
    a few flat colours, and some crop of some plane correlates with anything that simple."""
    lo, hi = float(template.min()), float(template.max())
    if hi <= lo:
        return False
    bins = np.bincount(
        ((template - lo) / (hi - lo) * 31.999).astype(np.int64).ravel(), minlength=32
    )
    if int((bins >= 0.01 * template.size).sum()) < MIN_LEVELS:
        return False
    if bins.max() < 0.6 * template.size:
        return True
    # One flat value over most of it: a chart's background, or air clipped by a display
    # window. A windowed slice still has many grey levels in the rest; a chart has few.
    rest = np.delete(bins, int(np.argmax(bins)))
    return (
        rest.sum() >= 0.15 * template.size
        and int((rest >= 0.02 * rest.sum()).sum()) >= 2 * MIN_LEVELS
    )


def _continuous(values: np.ndarray) -> bool:
    """Measured values, not a drawing: most pixels hold a value of their own.

    A chart is drawn in a few colours (at most 256 per channel) with flat fills; a CT crop
    in HU has noise in every pixel, however much of it is air and however far bone
    stretches its range (then ``_structured``'s grey levels see only air and bone).
    """
    if values.size < CONTINUOUS_PIXELS:
        return False
    return int(np.unique(values).size) >= CONTINUOUS_SHARE * values.size


def _templates(
    images: np.ndarray, masks: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Zero-mean, unit-norm templates (over their masks when given)."""
    flat = images.reshape(len(images), -1)
    if masks is None:
        return _unit(flat).reshape(images.shape), None
    m = masks.reshape(len(masks), -1)
    count = np.maximum(m.sum(axis=1, keepdims=True), 1.0)
    centred = (flat - (flat * m).sum(axis=1, keepdims=True) / count) * m
    return _unit_norm(centred).reshape(images.shape), masks


def _unit_norm(rows: np.ndarray) -> np.ndarray:
    norm = np.sqrt((rows * rows).sum(axis=-1, keepdims=True))
    out: np.ndarray = np.divide(rows, norm, out=np.zeros_like(rows), where=norm > 1e-9)
    return out


_FLIPS = ("as is", "flipped up-down", "flipped left-right", "rotated 180")
# A crop candidate: (score, plane slot in its group, flip name, crop fraction of rows, of cols)
_Hit = tuple[float, int, str, float, float]


def _flips(image: np.ndarray) -> np.ndarray:
    return np.stack([image, image[::-1], image[:, ::-1], image[::-1, ::-1]])


@dataclass
class _Built:
    groups: list[_Group]
    full: np.ndarray  # (N, THUMB*THUMB) plane thumbnails, values 0..1
    full_unit: np.ndarray  # the same, zero-mean unit-norm
    owner: np.ndarray  # (N,) group of each plane
    plane_no: np.ndarray  # (N,) plane number within its group
    families: list[_Family]
    fine: dict[int, _Stack] = field(default_factory=dict)  # per group, built when needed

    @classmethod
    def build(cls, series: dict[str, SeriesFingerprint]) -> _Built:
        groups: list[_Group] = []
        for series_id, fp in sorted(series.items()):
            nz, ny, nx = fp.shape
            dz, dy, dx = fp.spacing
            natives = {0: (nz, ny, nx), 1: (ny, nz, nx), 2: (nx, nz, ny)}
            mm = {0: (dy * ny) / (dx * nx), 1: (dz * nz) / (dx * nx), 2: (dz * nz) / (dy * ny)}
            for channel, thumbs in enumerate(fp.thumbs.astype(np.float32)):
                for orientation in range(3):
                    planes = np.ascontiguousarray(np.moveaxis(thumbs, orientation, 0))
                    if min(planes.shape[1:]) < MIN_PLANE:
                        continue
                    native = natives[orientation]
                    groups.append(
                        _Group(
                            series=series_id,
                            orientation=orientation,
                            channel=channel,
                            planes=planes,
                            native=native,
                            aspect_px=native[1] / native[2],
                            aspect_mm=mm[orientation],
                        )
                    )
        rows = [
            _drop_featureless(_resize2(g.planes, (THUMB, THUMB))).reshape(len(g.planes), -1)
            for g in groups
        ]
        full = np.concatenate(rows) if rows else np.zeros((0, THUMB * THUMB), np.float32)
        empty = np.zeros(0, dtype=np.int64)
        owner = np.concatenate([np.full(len(g.planes), i) for i, g in enumerate(groups)] or [empty])
        plane_no = np.concatenate([np.arange(len(g.planes)) for g in groups] or [empty])
        by_aspect: dict[tuple[float, float], list[int]] = {}
        for i, g in enumerate(groups):
            by_aspect.setdefault((round(g.aspect_px, 3), round(g.aspect_mm, 3)), []).append(i)
        families = []
        for (aspect_px, aspect_mm), members in by_aspect.items():
            coarse, owners, slots = [], [], []
            for i in members:
                planes = groups[i].planes
                take = np.arange(0, len(planes), COARSE_STEP if len(planes) > 8 else 1)
                coarse.append(_drop_featureless(_resize2(planes[take], (COARSE, COARSE))))
                owners.append(np.full(len(take), i))
                slots.append(take)
            families.append(
                _Family(
                    aspect_px=aspect_px,
                    aspect_mm=aspect_mm,
                    stack=_Stack.of(np.concatenate(coarse)),
                    owner=np.concatenate(owners),
                    slot=np.concatenate(slots),
                )
            )
        return cls(
            groups=groups,
            full=full,
            full_unit=_unit(full),
            owner=owner.astype(np.int64),
            plane_no=plane_no.astype(np.int64),
            families=families,
        )

    # --- whole planes: one matrix product -------------------------------------------

    def _whole(self, query: _Query) -> tuple[float, int, str]:
        small, mask = query.resized((THUMB, THUMB))
        names = [name for name, _ in _dihedral(small)]
        q = np.stack([v.reshape(-1) for _, v in _dihedral(small)])
        scores = np.abs(_mm(self.full_unit, _unit(q).T))
        if mask is not None and _structured(small):
            m = np.stack([v.reshape(-1) for _, v in _dihedral(mask)])
            t, _ = _templates(q, m)
            count = m.sum(axis=1)[None]
            s = _mm(self.full, m.T)
            ss = _mm(self.full * self.full, m.T)
            var = np.maximum(ss - s * s / count, 0.0)
            masked = np.divide(
                _mm(self.full, t.T), np.sqrt(var), out=np.zeros_like(var), where=var > 1e-6
            )
            scores = np.maximum(scores, np.abs(masked))
        flat = int(np.argmax(scores))
        row, col = divmod(flat, scores.shape[1])
        return float(scores[row, col]), row, names[col]

    def _windowed(self, query: _Query) -> tuple[float, int, str]:
        """Undo a display window: the best planes of the plain comparison, each clipped to
        a grid of windows (quantiles of its values) at thumbnail resolution, then compared.

        Clipping after the thumbnail's averaging is not clipping before it: a window that
        makes most of a slice flat (air, bone) leaves the plain correlation near 0.85.
        """
        small, _mask_unused = query.resized((THUMB, THUMB))
        if not _structured(small):
            return 0.0, 0, ""
        names = [name for name, _ in _dihedral(small)]
        q = _unit(np.stack([v.reshape(-1) for _, v in _dihedral(small)]))
        best_rows = np.abs(_mm(self.full_unit, q.T)).max(axis=1)
        best: tuple[float, int, str] = (0.0, 0, "")
        for row in np.argsort(best_rows)[::-1][:WINDOW_CANDIDATES]:
            group = self.groups[int(self.owner[row])]
            plane = group.planes[int(self.plane_no[row])]
            levels = np.quantile(plane, WINDOW_QUANTILES)
            lo, hi = np.meshgrid(levels, levels, indexing="ij")
            keep = hi > lo + 1e-3
            if not keep.any():
                continue
            clipped = np.clip(plane[None], lo[keep][:, None, None], hi[keep][:, None, None])
            rows = _unit(_resize2(clipped, (THUMB, THUMB)).reshape(int(keep.sum()), -1))
            scores = np.abs(_mm(rows, q.T))
            flat = int(np.argmax(scores))
            if scores.flat[flat] > best[0]:
                best = (float(scores.flat[flat]), int(row), names[flat % len(names)])
        return best

    def match_whole(self, query: _Query, make: _Maker) -> ProvenanceMatch | None:
        if not self.groups:
            return None
        score, row, how = self._whole(query)
        if score < THRESHOLD_PLANE:
            if score < WINDOW_FROM:
                return None
            score, row, how = self._windowed(query)
            if score < THRESHOLD_WINDOW:
                return None
            how = "display window" + ("" if how == "as is" else f", {how}")
        group = self.groups[int(self.owner[row])]
        k = group.native_plane(int(self.plane_no[row]))
        return make(group.series, group.orientation, k, score, "" if how == "as is" else how)

    def match_crops(self, query: _Query, make: _Maker) -> ProvenanceMatch | None:
        if not self.groups:
            return None
        return self._crops(query.reduced(2 * GRID), make)

    # --- crops: coarse template search, then verification -------------------------

    def _crops(self, query: _Query, make: _Maker) -> ProvenanceMatch | None:
        ranked = self._coarse(query)
        if ranked is None:
            return None  # a chart or a pattern: only whole planes are compared
        best_match = self._best_verified(query, self._looked(query, ranked))
        if best_match is None or best_match[0] < THRESHOLD_CROP:
            return None
        score, gi, k, name, fy, fx = best_match
        group = self.groups[gi]
        how = f"crop of {fy:.2f} x {fx:.2f} of the plane"
        if name != "as is":
            how += f", {name}"
        return make(group.series, group.orientation, group.native_plane(k), score, how)

    def _coarse(self, query: _Query) -> list[tuple[int, _Hit]] | None:
        """Coarse crop candidates (group, hit), best first, at most ``PER_GROUP`` crop sizes
        per plane group; None when the grid looks like a chart."""
        coarse_query = query.reduced(4 * COARSE)
        small, flags = coarse_query.values, coarse_query.unclipped
        if not (query.continuous or _structured(small)):
            return None
        found: dict[tuple[int, int, int], _Hit] = {}
        for family in self.families:
            for transposed in (False, True):
                self._coarse_family(family, small, flags, transposed, found)
        # Per plane group (series, orientation, channel) its best few crop sizes, most
        # promising first, verified on the full thumbnails.
        ranked: list[tuple[int, _Hit]] = []
        per_group: dict[int, int] = {}
        for (gi, _ty, _tx), hit in sorted(found.items(), key=lambda kv: kv[1][0], reverse=True):
            if per_group.get(gi, 0) < PER_GROUP:
                per_group[gi] = per_group.get(gi, 0) + 1
                ranked.append((gi, hit))
        return ranked[:CANDIDATES]

    def _coarse_family(
        self,
        family: _Family,
        small: np.ndarray,
        flags: np.ndarray | None,
        transposed: bool,
        found: dict[tuple[int, int, int], _Hit],
    ) -> None:
        """FFT template search of one family's coarse planes, at every crop size whose
        aspect agrees with the grid's; the best hit per (group, size) kept in ``found``."""
        base = small.T if transposed else small
        base_flags = None if flags is None else (flags.T if transposed else flags)
        vh, vw = base.shape
        sizes: set[tuple[int, int]] = set()
        for aspect in {family.aspect_px, family.aspect_mm}:
            for fy in CROP_FRACTIONS:
                fx = fy * aspect * vw / vh  # the crop's share of the plane's columns
                if 0.3 <= fx <= 1.0:
                    sizes.add((round(fy * COARSE), round(fx * COARSE)))
        for ty, tx in sorted(sizes):
            if min(ty, tx) < 8:
                continue
            image = _resize2(base, (ty, tx))
            mask = _mask(image, None if base_flags is None else base_flags)
            templates, masks = _templates(_flips(image), None if mask is None else _flips(mask))
            scores = np.abs(family.stack.ncc(templates, masks))
            best = scores.reshape(4, len(family.owner), -1).max(axis=2)
            if masks is not None:
                # Raw HU: air and bone at the extremes look clipped, but are not; left out,
                # at 20x20 the rest is too little to find the right plane (measured).
                plain, _ = _templates(_flips(image), None)
                unmasked = np.abs(family.stack.ncc(plain, None))
                best = np.maximum(best, unmasked.reshape(4, len(family.owner), -1).max(axis=2))
            variant = best.argmax(axis=0)
            per_plane = best.max(axis=0)
            for j in np.flatnonzero(per_plane >= _COARSE_MIN):
                key = (int(family.owner[j]), ty, tx)
                if key not in found or per_plane[j] > found[key][0]:
                    name = ("transposed " if transposed else "") + _FLIPS[variant[j]]
                    found[key] = (
                        float(per_plane[j]),
                        int(family.slot[j]),
                        name.replace("transposed as is", "transposed"),
                        ty / COARSE,
                        tx / COARSE,
                    )

    def _looked(self, query: _Query, ranked: list[tuple[int, _Hit]]) -> list[tuple[int, _Hit]]:
        """The ``VERIFIED`` best candidates after a quick look at each on the fine
        thumbnails (one template, the coarse plane and its neighbours): it ranks them far
        better than the coarse score among series whose anatomy looks alike."""
        looks = [self._quick(query, gi, hit[1], hit[2], hit[3], hit[4]) for gi, hit in ranked]
        quick = [score for score, _name in looks]
        order = np.argsort(quick)[::-1][:VERIFIED]
        return [
            (ranked[int(i)][0], (quick[int(i)], ranked[int(i)][1][1], looks[int(i)][1],
                                 *ranked[int(i)][1][3:]))
            for i in order
            if quick[int(i)] >= _QUICK_MIN
        ]  # fmt: skip

    def _best_verified(
        self, query: _Query, ranked: list[tuple[int, _Hit]]
    ) -> tuple[float, int, int, str, float, float] | None:
        """(score, group, plane, flip, fy, fx) of the best verified candidate; below the
        threshold, a display window fitted to the best few may still find it."""
        verified: list[tuple[float, int, int, str, float, float]] = []
        for gi, (_score, slot, name, fy, fx) in ranked:
            found = self._verify(query, gi, slot, name, fy, fx)
            if found is not None:
                verified.append((found[0], gi, found[1], name, found[2], found[3]))
                if found[0] >= 0.98:
                    break
        if not verified:
            return None
        verified.sort(reverse=True)
        best_match = verified[0]
        if best_match[0] < THRESHOLD_CROP and query.unclipped is not None:
            for score, gi, k, name, fy, fx in verified[:WINDOW_FITS]:
                if score < _FIT_FROM:
                    break
                fitted = self._window_fitted(query, gi, k, name, fy, fx)
                if fitted >= THRESHOLD_WINDOW:
                    return (fitted, gi, k, name, fy, fx)
        return best_match

    def _window_fitted(
        self, query: _Query, gi: int, k: int, name: str, fy: float, fx: float
    ) -> float:
        """The best NCC of the whole crop (clipped pixels too) on the plane ``k`` and its
        neighbours, each clipped to a grid of display windows (quantiles of its values).

        Noise added after a window blurs the edges of the clipped areas, so the mask that
        leaves them out is eroded and a little wrong; fitting the window to the thumbnail
        instead uses every pixel, and white noise costs little after averaging (measured).
        """
        group = self.groups[gi]
        a, b = group.planes.shape[1:]
        ty, tx = round(fy * a), round(fx * b)
        if not (6 <= ty <= a and 6 <= tx <= b):
            return 0.0
        template = _Query(query.values).template(name, ty, tx)
        planes = group.planes[max(k - 1, 0) : k + 2]
        windows = []
        for plane in planes:
            levels = np.quantile(plane, WINDOW_QUANTILES)
            lo, hi = np.meshgrid(levels, levels, indexing="ij")
            keep = hi > lo + 1e-3
            windows.append(np.clip(plane[None], lo[keep][:, None, None], hi[keep][:, None, None]))
        stack = _Stack.of(_blur(np.concatenate(windows)))
        return float(stack.peaks([template]).max())

    def _fine(self, gi: int, slot: int, reach: int) -> tuple[_Stack, int]:
        """The fine (blurred) thumbnails of a group's planes around ``slot``, and the first."""
        group = self.groups[gi]
        if gi not in self.fine:
            self.fine[gi] = _Stack.of(_blur(_drop_featureless(group.planes)))
        full = self.fine[gi]
        lo, hi = max(slot - reach, 0), min(slot + reach + 1, len(group.planes))
        sub = _Stack(
            full.planes[lo:hi], full.spectrum[lo:hi], full.spectrum_sq[lo:hi],
            full.sums[lo:hi], full.squares[lo:hi],
        )  # fmt: skip
        return sub, lo

    def _quick(
        self, query: _Query, gi: int, slot: int, name: str, fy: float, fx: float
    ) -> tuple[float, str]:
        """The best NCC of the crop at its coarse size on the plane and its neighbours, in
        the coarse search's flip and the other three (a body is nearly symmetric: at the
        coarse scale a mirror image can win), and the flip that scored it."""
        sub, _lo = self._fine(gi, slot, COARSE_STEP // 2 + 1)
        a, b = self.groups[gi].planes.shape[1:]
        ty, tx = round(fy * a), round(fx * b)
        if not (6 <= ty <= a and 6 <= tx <= b):
            return 0.0, name
        prefix = "transposed " if name.startswith("transposed") else ""
        names = [(prefix + flip).replace("transposed as is", "transposed") for flip in _FLIPS]
        per = sub.peaks([query.template(n, ty, tx) for n in names]).max(axis=1)
        best = int(np.argmax(per))
        return float(per[best]), names[best]

    def _verify(
        self, query: _Query, gi: int, slot: int, name: str, fy: float, fx: float
    ) -> tuple[float, int, float, float] | None:
        """The best NCC of the crop on the full thumbnails of a plane and its neighbours,
        the plane, and the crop's fractions of rows and columns after the scale jitter."""
        group = self.groups[gi]
        sub, lo = self._fine(gi, slot, COARSE_STEP)
        a, b = group.planes.shape[1:]
        best: tuple[float, int] | None = None
        centre, step = (fy, fx), FINE_STEP
        for _round in range(2):  # scale jitter, then a finer one around the best
            sizes: list[tuple[float, float]] = []
            items: list[tuple[np.ndarray, np.ndarray | None]] = []
            for jy in (1 - step, 1.0, 1 + step):
                for jx in (1 - step, 1.0, 1 + step):
                    ty, tx = round(centre[0] * jy * a), round(centre[1] * jx * b)
                    if not (6 <= ty <= a and 6 <= tx <= b):
                        continue
                    items.append(query.template(name, ty, tx))
                    sizes.append((centre[0] * jy, centre[1] * jx))
            if not items:
                break
            per = sub.peaks(items)
            i, j = np.unravel_index(int(np.argmax(per)), per.shape)
            if best is None or per[i, j] > best[0]:
                best = (float(per[i, j]), lo + int(j))
                centre = sizes[int(i)]
            if best[0] < 0.7:
                break  # not promising enough to refine
            step /= 2
        if best is not None and best[0] >= _ALIGN_FROM:
            aligned = self._aligned(query, sub, lo, name, centre[0] * a, centre[1] * b)
            if aligned is not None and aligned[0] > best[0]:
                best = aligned
        return None if best is None else (*best, *centre)

    def _aligned(
        self, query: _Query, sub: _Stack, lo: int, name: str, ty: float, tx: float
    ) -> tuple[float, int] | None:
        """Sub-pixel box refinement: a crop rarely starts or ends on a thumbnail pixel
        boundary, so its template mixes each thumbnail pixel's neighbours and the score
        stays near 0.9. Templates cut from the query at a few sub-pixel phases (rows and
        columns dropped at the start, and at the end to a whole number of thumbnail
        pixels) line up with the thumbnail grid at one of them."""
        oriented = query.oriented(name).values
        h, w = oriented.shape
        sy, sx = h / ty, w / tx  # query pixels per thumbnail pixel
        if sy < 1.5 or sx < 1.5:
            return None  # the query is no finer than the thumbnails: nothing to align
        spans_y = _phases(h, sy)
        spans_x = _phases(w, sx)
        items = []
        for y0, y1, ny in spans_y:
            for x0, x1, nx in spans_x:
                if 6 <= ny <= sub.planes.shape[1] and 6 <= nx <= sub.planes.shape[2]:
                    items.append(query.aligned(name, (y0, y1, x0, x1), (ny, nx)))
        if not items:
            return None
        per = sub.peaks(items)
        i, j = np.unravel_index(int(np.argmax(per)), per.shape)
        return float(per[i, j]), lo + int(j)


def _phases(n: int, s: float) -> list[tuple[int, int, int]]:
    """(start, stop, thumbnail pixels) of a query axis of ``n`` pixels, ``s`` per thumbnail
    pixel, cut at ``ALIGN_PHASES`` sub-pixel phases to whole thumbnail pixels."""
    out: set[tuple[int, int, int]] = set()
    for phase in ALIGN_PHASES:
        start = round(phase * s)
        cells = int((n - start) / s)
        stop = start + round(cells * s)
        if cells >= 1 and stop <= n:
            out.add((start, stop, cells))
    return sorted(out)


_CACHE: dict[str, tuple[tuple[str, int, int], FingerprintIndex]] = {}
_CACHE_LOCK = threading.Lock()
