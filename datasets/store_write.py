"""Write one dataset version as a Zarr v3 store (layout: docs/architecture.md).

Each series is an OME-Zarr 0.5 multiscale image under ``series/<series_id>``:
level "0" holds the volume exactly as decoded; coarser levels halve y and x
for previews, written only while a plane is larger than ``PREVIEW_PLANE`` in y
or x (store format 4: a 512 x 512 CT is level 0 alone, a 2k-4k radiograph or
fundus photo gets its previews). Chunks are compressed losslessly with Blosc (zstd 1 + bit
shuffle, store format 3), a codec every Zarr v3 reader has; the coarser levels
have deeper chunks of their own (they are small, and a longer Blosc block
compresses them better). docs/datasets.md records why this codec and these
chunk shapes.

The chunks of a series are encoded here, in two threads, and written as the
files Zarr would write (``<array>/c/<z>/<y>/<x>``, the array's own codec
configuration): Zarr's generic write path cost three times the encoding
itself (bench/BENCHMARKS.md). The ``zarr.json`` files are written here too
(:class:`StoreRoot`), without importing Zarr. tests/test_datasets_roundtrip.py
proves chunks and metadata byte-identical to Zarr's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from insitu.datasets.volume import Geometry

__all__ = [
    "CHUNK_DEPTH",
    "CHUNK_PLANE",
    "StoreRoot",
    "checksum_tree",
    "child_groups",
    "freeze_tree",
    "group_attrs",
    "open_root",
    "pyramid",
    "write_root_attrs",
    "write_series",
]

NGFF_VERSION = "0.5"
CHUNK_DEPTH = 4  # slices per chunk: one slice reads one chunk row, 3-D patches stay cheap
CHUNK_PLANE = 256
# Coarser pyramid levels: whole planes up to CHUNK_PLANE, as many as fit in this many bytes
# (level 1 of a 512x512 int16 series: 16 planes; level 2: the whole level). Previews read
# a few of them, and a 2 MiB Blosc block is 6-15 % smaller than a 512 kB one (BENCHMARKS).
PYRAMID_CHUNK_BYTES = 2 << 20
BLOSC_LEVEL = 1  # store format 3: zstd 1 + bit shuffle (format 2: byte shuffle, 7 % larger)
SHUFFLE = "bitshuffle"  # Blosc's name (zarr.codecs.BloscShuffle); "shuffle" is byte shuffle
MAX_BLOCK_BYTES = 2 << 20
WRITE_THREADS = 2  # Blosc releases the GIL; one block per chunk, so parallel across chunks
DOWNSAMPLE_SLICES = 2  # output slices per block of the pyramid's averaging
MIN_LEVEL_SIZE = 64  # stop the pyramid when y or x would fall below this
MAX_LEVELS = 3
# Store format 4: a coarser level is written only from a plane larger than this in y or x.
# Readers and the viewer read level 0 of a 512 x 512 plane anyway; its levels 1-2 were
# 11 % of the store (bench/BENCHMARKS.md, run H) and their encoding and files ingest CPU.
PREVIEW_PLANE = 512


def compressor(chunk_bytes: int = 0) -> Any:
    """Blosc zstd level 1 + bit shuffle, one Blosc block per chunk (up to 2 MiB).

    Measured on CT (bench/BENCHMARKS.md, codec study): bit shuffle + zstd 1 is
    ~7 % smaller than store format 2's byte shuffle and decodes as fast, for
    ~30 % more encoding CPU; higher zstd levels cost 3-6x the CPU for 1-2 %. A
    whole-chunk block compresses better than Blosc's default blocks; chunks are
    still decoded in parallel.
    """
    from zarr.codecs import BloscCodec, BloscShuffle

    return BloscCodec(
        cname="zstd",
        clevel=BLOSC_LEVEL,
        shuffle=BloscShuffle(SHUFFLE),
        blocksize=min(chunk_bytes, MAX_BLOCK_BYTES),
    )


def open_root(path: Path) -> Any:
    """The store's root group as a Zarr group (created when missing), for code that needs
    Zarr's API (tables, derived objects, reads); the ingest writes with :class:`StoreRoot`."""
    import zarr
    from zarr.storage import LocalStore

    return zarr.open_group(LocalStore(path), mode="a", zarr_format=3)


ZARR_JSON = "zarr.json"
JSON_INDENT = 2  # Zarr's default ("json_indent"): the files are byte for byte Zarr's own


def _write_json(path: Path, body: Mapping[str, Any]) -> None:
    """A metadata file written as Zarr's LocalStore writes it: through ``<name>.<hex>.partial``
    and a rename, so a killed run leaves no half file (ingest drops stray ``*.partial``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{secrets.token_hex(16)}.partial")
    partial.write_bytes(json.dumps(body, indent=JSON_INDENT, allow_nan=True).encode())
    partial.replace(path)


def group_attrs(group: Path) -> dict[str, Any]:
    """The attributes of the group in folder ``group`` ({} when it has no metadata yet)."""
    try:
        body = json.loads((group / ZARR_JSON).read_bytes())
    except FileNotFoundError:
        return {}
    return dict(body.get("attributes") or {})


def child_groups(group: Path) -> list[str]:
    """The child groups of the group in folder ``group``, sorted (Zarr's ``group_keys``;
    none when it is not a group)."""
    if not (group / ZARR_JSON).exists():
        return []
    names = []
    for child in sorted(group.iterdir()):
        try:
            body = json.loads((child / ZARR_JSON).read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            continue
        if body.get("node_type") == "group":
            names.append(child.name)
    return names


def _write_group(group: Path, attrs: Mapping[str, Any]) -> None:
    _write_json(
        group / ZARR_JSON, {"attributes": dict(attrs), "zarr_format": 3, "node_type": "group"}
    )


class StoreRoot:
    """The root group of a store the ingest writes, as a folder: groups, arrays and their
    ``zarr.json`` files written here as Zarr 3 writes them (tests/test_datasets_roundtrip.py
    compares them byte for byte), without importing Zarr.

    Importing zarr (its async store machinery) cost ~0.15 s of CPU, and its metadata calls
    ~0.04 s, on the ingest's one busy thread between the scan and the first series
    (docs/dev-notes/issue-15-ingest.md, eighth session). Code that needs Zarr's API on the
    same store (derived objects, tables) opens it with :func:`open_root`; the attributes are
    read from the file each time, so both views agree.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not (self.path / ZARR_JSON).exists():  # Zarr's open_group(mode="a") of a new store
            _write_group(self.path, {})

    @property
    def attrs(self) -> dict[str, Any]:
        """The root group's attributes as stored now."""
        return group_attrs(self.path)

    def update_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Zarr's ``group.attrs.update``: these keys replaced, the others kept."""
        _write_group(self.path, {**self.attrs, **attrs})


def _factors(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Downsampling factors (z, y, x) to the next level: halve z only while it stays >= 16."""
    return (2 if shape[0] // 2 >= 16 else 1, 2, 2)


def _downsample(level: np.ndarray, fz: int) -> np.ndarray:
    """Average blocks of fz x 2 x 2 voxels; integers round half up, in integer arithmetic.

    Computed a few output slices at a time in ``WRITE_THREADS`` threads: the blocks
    stay in cache and numpy releases the GIL (the whole-volume version cost 3x more).
    """
    nz, ny, nx = level.shape[0] // fz, level.shape[1] // 2, level.shape[2] // 2
    out = np.empty((nz, ny, nx, *level.shape[3:]), dtype=level.dtype)
    if not out.size:
        return out

    def block(z0: int) -> None:
        z1 = min(z0 + DOWNSAMPLE_SLICES, nz)
        part = level[z0 * fz : z1 * fz]
        out[z0:z1] = _downsample_block(part, fz, ny, nx)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        list(pool.map(block, range(0, nz, DOWNSAMPLE_SLICES)))
    return out


def _downsample_block(level: np.ndarray, fz: int, ny: int, nx: int) -> np.ndarray:
    nz = level.shape[0] // fz
    views = [
        level[dz : nz * fz : fz, dy : ny * 2 : 2, dx : nx * 2 : 2]
        for dz in range(fz)
        for dy in (0, 1)
        for dx in (0, 1)
    ]
    if level.dtype.kind in "iub":
        # int32 holds a sum of 8 values of up to 16 bits: half the memory traffic of int64
        wide = np.int32 if level.dtype.itemsize <= 2 else np.int64
        total = np.zeros(views[0].shape, dtype=wide)
        for view in views:
            total += view
        n = len(views)
        return ((total + n // 2) // n).astype(level.dtype)
    total = np.zeros(views[0].shape, dtype=np.float64)
    for view in views:
        total += view
    return (total / len(views)).astype(level.dtype)


def pyramid(
    volume: np.ndarray, preview_plane: int | None = None, max_levels: int = MAX_LEVELS
) -> list[np.ndarray]:
    """Level 0 is the volume itself ((z, y, x) or (z, y, x, c)); each next level averages
    2x2 in y and x (and 2 in z while at least 16 slices remain), for previews and coarse
    analysis, while the plane is larger than ``preview_plane`` in y or x.

    ``preview_plane=0`` gives store format 3's levels (every plane down to 64 or three
    levels), which the pixel fingerprint is still computed from (fingerprints.py).
    """
    if preview_plane is None:
        preview_plane = PREVIEW_PLANE
    levels = [volume]
    while len(levels) < max_levels:
        prev = levels[-1]
        if min(prev.shape[1], prev.shape[2]) // 2 < MIN_LEVEL_SIZE:
            break
        if max(prev.shape[1], prev.shape[2]) <= preview_plane:
            break
        levels.append(_downsample(prev, _factors(prev.shape)[0]))
    return levels


def _axes(color: bool) -> list[dict[str, str]]:
    axes = [{"name": n, "type": "space", "unit": "millimeter"} for n in ("z", "y", "x")]
    return ([{"name": "c", "type": "channel"}] if color else []) + axes


def ome_attrs(name: str, geometry: Geometry, levels: list[np.ndarray]) -> dict[str, Any]:
    """NGFF 0.5 ``multiscales``: scale and translation per level, in millimetres."""
    color = levels[0].ndim == 4
    dz, dy, dx = geometry.spacing
    z0, y0, x0 = geometry.translation
    datasets = []
    fz = fy = fx = 1
    for k in range(len(levels)):
        if k:
            step = _factors(levels[k - 1].shape)
            fz, fy, fx = fz * step[0], fy * step[1], fx * step[2]
        scale = [dz * fz, dy * fy, dx * fx]
        # a coarser voxel's centre sits half its extra width further along
        translation = [z0 + (fz - 1) * dz / 2, y0 + (fy - 1) * dy / 2, x0 + (fx - 1) * dx / 2]
        if color:
            scale, translation = [1.0, *scale], [0.0, *translation]
        datasets.append(
            {
                "path": str(k),
                "coordinateTransformations": [
                    {"type": "scale", "scale": scale},
                    {"type": "translation", "translation": translation},
                ],
            }
        )
    return {
        "version": NGFF_VERSION,
        "multiscales": [{"name": name, "axes": _axes(color), "datasets": datasets}],
    }


def chunk_shape(shape: tuple[int, ...], level: int = 0, itemsize: int = 2) -> tuple[int, ...]:
    """Chunks of a pyramid level of ``shape`` ((z, y, x) or (c, z, y, x)).

    Level 0: ``CHUNK_DEPTH`` planes of up to ``CHUNK_PLANE`` squared (a slice reads
    one chunk row, a 64^3 patch a few chunks). Coarser levels: as many planes as
    fit in ``PYRAMID_CHUNK_BYTES`` (at least ``CHUNK_DEPTH``).
    """
    z, y, x = shape[-3:]
    plane = (min(CHUNK_PLANE, y), min(CHUNK_PLANE, x))
    depth = CHUNK_DEPTH
    if level:
        plane_bytes = plane[0] * plane[1] * itemsize * (shape[0] if len(shape) == 4 else 1)
        depth = max(CHUNK_DEPTH, PYRAMID_CHUNK_BYTES // max(plane_bytes, 1))
    spatial = (min(depth, z), *plane)
    return (shape[0], *spatial) if len(shape) == 4 else spatial


def write_series(
    root: StoreRoot,
    series_id: str,
    volume: np.ndarray,
    geometry: Geometry,
    attrs: dict[str, Any],
    checksums: dict[str, tuple[str, int]] | None = None,
) -> dict[str, Any]:
    """Write one series (all levels) and return its OME attributes.

    ``checksums``: gains the sha256 and size of every chunk file written, by store key
    (hashed from the bytes just written, in the writer threads), for :func:`checksum_tree`.
    """
    levels = pyramid(volume)
    series = root.path / "series"
    if not (series / ZARR_JSON).exists():  # Zarr's require_group makes the parent group too
        _write_group(series, {})
    group = series / series_id  # its zarr.json last, with the attributes (below)
    ome = ome_attrs(series_id, geometry, levels)
    for k, level in enumerate(levels):
        data = np.moveaxis(level, -1, 0) if level.ndim == 4 else level
        chunks = chunk_shape(data.shape, k, data.dtype.itemsize)
        array_path = group / str(k)
        shutil.rmtree(array_path, ignore_errors=True)  # Zarr's create_array(overwrite=True)
        _write_json(array_path / ZARR_JSON, _array_metadata(data, chunks))
        sums: dict[str, tuple[str, int]] = {}
        write_chunks(array_path, data, chunks, sums)
        if checksums is not None:  # "c/0/1/0" -> "series/<id>/<k>/c/0/1/0"
            array_key = f"series/{series_id}/{k}"
            checksums.update({f"{array_key}/{key}": found for key, found in sums.items()})
    _write_group(group, {**group_attrs(group), "ome": ome, "insitu": attrs})
    return ome


def _array_metadata(data: np.ndarray, chunks: tuple[int, ...]) -> dict[str, Any]:
    """The ``zarr.json`` of an array that Zarr's ``create_array`` writes for ``data`` with
    :func:`compressor`, ``fill_value=0`` and the store's dimension names (key order too)."""
    order: dict[str, Any] = {"name": "bytes"}  # one-byte values have no byte order
    if data.dtype.itemsize > 1:
        order["configuration"] = {"endian": "little"}
    return {
        "shape": list(data.shape),
        "data_type": data.dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunks)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": np.zeros((), data.dtype).item(),  # 0, 0.0 or false, as Zarr writes it
        "codecs": [
            order,
            {"name": "blosc", "configuration": _blosc_config(chunks, data.dtype)},
        ],
        "attributes": {},
        "dimension_names": ["c", "z", "y", "x"] if data.ndim == 4 else ["z", "y", "x"],
        "zarr_format": 3,
        "node_type": "array",
        "storage_transformers": [],
    }


def _blosc_config(chunks: tuple[int, ...], dtype: np.dtype) -> dict[str, Any]:
    """The Blosc settings of :func:`compressor` for this array, as Zarr records them."""
    chunk_bytes = int(np.prod(chunks)) * dtype.itemsize
    return {
        "typesize": dtype.itemsize,
        "cname": "zstd",
        "clevel": BLOSC_LEVEL,
        "shuffle": SHUFFLE,
        "blocksize": min(chunk_bytes, MAX_BLOCK_BYTES),
    }


def _blosc(chunks: tuple[int, ...], dtype: np.dtype) -> Any:
    """The numcodecs Blosc that Zarr builds from :func:`compressor` for this array."""
    from numcodecs import Blosc

    config = _blosc_config(chunks, dtype)
    shuffle = {"shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}[config.pop("shuffle")]
    return Blosc(shuffle=shuffle, **config)


def write_chunks(
    array_path: Path,
    data: np.ndarray,
    chunks: tuple[int, ...],
    checksums: dict[str, tuple[str, int]] | None = None,
) -> None:
    """Encode and write every chunk of ``data`` as Zarr v3 would (little-endian bytes codec,
    default chunk key encoding, edge chunks padded with the fill value 0, chunks that are
    all fill value not written). ``checksums`` gains each file's sha256 and size by its
    key in the array (``c/<z>/<y>/<x>``)."""
    from concurrent.futures import ThreadPoolExecutor

    codec = _blosc(chunks, data.dtype)
    grid = [range(0, n, c) for n, c in zip(data.shape, chunks, strict=True)]
    starts = list(itertools.product(*grid))
    base = str(array_path / "c")
    # Each chunk folder once, here: per chunk, pathlib and mkdir cost the writer threads
    # as much GIL time as the rest of the chunk's Python.
    for start in {s[:-1] for s in starts}:
        Path(_chunk_key(base, start, chunks)).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        written = list(pool.map(lambda s: _write_chunk(base, data, chunks, codec, s), starts))
    if checksums is not None:
        for start, found in zip(starts, written, strict=True):
            if found is not None:
                checksums[_chunk_key("c", start, chunks)] = found


def _chunk_key(base: str, start: tuple[int, ...], chunks: tuple[int, ...]) -> str:
    """Zarr v3's default chunk key (``c/<i>/<j>/...``) of the chunk at ``start``."""
    return "/".join([base, *(str(a // c) for a, c in zip(start, chunks, strict=False))])


def _write_chunk(
    base: str, data: np.ndarray, chunks: tuple[int, ...], codec: Any, start: tuple[int, ...]
) -> tuple[str, int] | None:
    """One chunk: cut out (padded at the edges), skipped when all fill value (None), encoded,
    written; its file's sha256 and size (hashlib releases the GIL: the writer threads hash
    what they wrote instead of publish reading every file back)."""
    little = data.dtype.newbyteorder("<")
    part = data[tuple(slice(a, a + c) for a, c in zip(start, chunks, strict=True))]
    if part.shape != tuple(chunks):
        full = np.zeros(chunks, dtype=little)
        full[tuple(slice(0, n) for n in part.shape)] = part
        part = full
    if not part.any():
        return None  # Zarr leaves chunks equal to the fill value unwritten
    encoded = _encode(codec, np.ascontiguousarray(part, dtype=little))
    with open(_chunk_key(base, start, chunks), "wb") as fh:
        fh.write(encoded)
    return hashlib.sha256(encoded).hexdigest(), len(encoded)


def _encode(codec: Any, chunk: np.ndarray) -> bytes:
    """One chunk through the store's codec (a function of its own: bench/profile_ingest.py
    times it apart from the rest of the write)."""
    return bytes(codec.encode(chunk))


def write_root_attrs(root: StoreRoot, attrs: dict[str, Any]) -> None:
    root.update_attrs({"insitu": attrs})


def _files(path: Path) -> Iterator[Path]:
    for dirpath, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            yield Path(dirpath) / name


def checksum_tree(
    path: Path, known: Mapping[str, tuple[str, int]] | None = None
) -> dict[str, tuple[str, int]]:
    """sha256 and size of every file in a store, keyed by its store key.

    ``known``: sums of files this process wrote (:func:`write_series`), taken for a file
    of that key and size; every other file (metadata, a series an interrupted run wrote)
    is read and hashed, in ``WRITE_THREADS`` threads (hashlib releases the GIL on
    chunk-sized data): this runs at the end of every ingest, with the other core idle.
    """
    from concurrent.futures import ThreadPoolExecutor

    known = known or {}
    keys = {file: file.relative_to(path).as_posix() for file in _files(path)}
    out: dict[str, tuple[str, int]] = {}
    todo = []
    for file, key in keys.items():
        found = known.get(key)
        if found is not None and found[1] == file.stat().st_size:
            out[key] = found
        else:
            todo.append(file)
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        for file, found in zip(todo, pool.map(_file_sha256, todo), strict=True):
            out[keys[file]] = found
    return {key: out[key] for key in keys.values()}


def _file_sha256(file: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(file, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def freeze_tree(path: Path) -> None:
    """Make a published store read-only: files 0444, folders 0555."""
    for dirpath, _dirs, files in os.walk(path, topdown=False):
        for name in files:
            (Path(dirpath) / name).chmod(0o444)
        # read and list for the node's services (researchers reach it only via the gate)
        Path(dirpath).chmod(0o555)
