"""Read a published store as pandas tables and lazy xarray images.

:class:`Dataset` needs only a Zarr v3 store object (``LocalStore`` on the node,
the gate's HTTP store in a researcher's server), never a path or the catalog.
Opening reads the root metadata only: the subject and series index rows live
in the root attributes, and pixel chunks are read when a computation asks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from insitu.config import NodeHome, resolve_home

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr

__all__ = ["Dataset", "open_dataset", "read_table", "write_table"]

SERIES_COLUMNS = [
    "subject_id",
    "study_id",
    "series_id",
    "modality",
    "study_date",
    "shape",
    "spacing",
    "dtype",
    "units",
]


class Dataset:
    """One published dataset version: ``.subjects``, ``.series``, ``.tables``, ``.image()``."""

    def __init__(self, store: Any) -> None:
        import zarr

        self.store = store
        self._root = zarr.open_group(store, mode="r", zarr_format=3)
        root_attrs: dict[str, Any] = self._root.attrs.asdict()
        self.attrs: dict[str, Any] = dict(root_attrs.get("insitu", {}))
        if "dataset" not in self.attrs:
            from insitu.errors import DatasetNotFoundError

            raise DatasetNotFoundError(
                "this Zarr store is not an insitu dataset (no attrs['insitu'] at its root)"
            )
        self.name: str = self.attrs["dataset"]
        self.version: str = self.attrs["version"]

    def __repr__(self) -> str:
        return (
            f"<insitu.Dataset {self.name} {self.version}: {len(self.attrs.get('subjects', []))} "
            f"subjects, {len(self.attrs.get('series', []))} series>"
        )

    @property
    def subjects(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(
            self.attrs.get("subjects", []), columns=["subject_id", "n_studies", "n_series"]
        )

    @property
    def series(self) -> pd.DataFrame:
        import pandas as pd

        rows = [
            {**row, "shape": tuple(row["shape"]), "spacing": tuple(row["spacing"])}
            for row in self.attrs.get("series", [])
        ]
        extra = sorted({k for row in rows for k in row} - set(SERIES_COLUMNS))
        return pd.DataFrame(rows, columns=SERIES_COLUMNS + extra)

    @property
    def tables(self) -> Mapping[str, pd.DataFrame]:
        """Tables beside the images (measurements, clinical variables), read on access."""
        return _Tables(self._root, list(self.attrs.get("tables", [])))

    def _series_row(self, series_id: str) -> dict[str, Any]:
        for row in self.attrs.get("series", []):
            if row["series_id"] == series_id:
                return dict(row)
        from insitu.errors import DatasetNotFoundError

        known = [row["series_id"] for row in self.attrs.get("series", [])]
        raise DatasetNotFoundError(
            f"{self.name} {self.version} has no series {series_id!r}; it has {len(known)} "
            f"series (see .series), e.g. {', '.join(known[:3])}"
        )

    def image(self, series_id: str, level: int = 0) -> xr.DataArray:
        """A lazy (z, y, x) image in modality units, coordinates in LPS millimetres."""
        import dask.array as da
        import xarray as xr
        import zarr

        self._series_row(series_id)
        group = zarr.open_group(self.store, path=f"series/{series_id}", mode="r")
        group_attrs: dict[str, Any] = group.attrs.asdict()
        ome = group_attrs["ome"]["multiscales"][0]
        info = dict(group_attrs["insitu"])
        levels = [d["path"] for d in ome["datasets"]]
        if not 0 <= level < len(levels):
            from insitu.errors import LevelNotFoundError

            raise LevelNotFoundError(
                f"series {series_id!r} has no level {level}: it has "
                + ("only level 0" if len(levels) == 1 else f"levels 0..{len(levels) - 1}")
                + " (coarser preview levels are written only for planes larger than 512 "
                "pixels; level 0 is the full image)"
            )
        meta = ome["datasets"][level]["coordinateTransformations"]
        scale = next(t["scale"] for t in meta if t["type"] == "scale")
        translation = next(t["translation"] for t in meta if t["type"] == "translation")
        array = zarr.open_array(self.store, path=f"series/{series_id}/{levels[level]}", mode="r")
        direct = _DirectChunks.for_array(self.store, array)
        if direct is not None:  # a local store in the format ingest writes: decode chunks directly
            data = _direct_image(direct, _dask_chunks(array))
        else:
            data = da.from_zarr(array, chunks=_dask_chunks(array))  # type: ignore[no-untyped-call]
        names = [a["name"] for a in ome["axes"]]
        coords = {
            name: translation[i] + np.arange(array.shape[i]) * scale[i]
            for i, name in enumerate(names)
            if name in ("z", "y", "x")
        }
        affine = np.array(info["affine"], dtype=float)
        fz, fy, fx = (scale[names.index(n)] / info["spacing"][i] for i, n in enumerate("zyx"))
        to_level0 = np.diag([fx, fy, fz, 1.0])
        to_level0[:3, 3] = [(fx - 1) / 2, (fy - 1) / 2, (fz - 1) / 2]
        attrs = {
            "modality": info.get("modality", ""),
            "units": info.get("units", ""),
            "affine": affine @ to_level0,
            "orientation": list(info.get("orientation", [])),
            "spacing": [scale[names.index(n)] for n in ("z", "y", "x")],
            "patient_geometry": info.get("patient_geometry", True),
            "series_id": series_id,
            "subject_id": info.get("subject_id", ""),
            "study_id": info.get("study_id", ""),
            "dataset": self.name,
            "version": self.version,
            "level": level,
        }
        result = xr.DataArray(data, dims=names, coords=coords, name=series_id, attrs=attrs)
        for name in ("z", "y", "x"):
            result[name].attrs["units"] = "mm"
        return result.transpose("z", "y", "x", "c") if "c" in names else result

    def labels(self, series_id: str, name: str | None = None) -> xr.DataArray:
        """A SEG label volume of ``series_id``, aligned with ``.image(series_id)``."""
        from insitu.datasets.labels import read_labels

        return read_labels(self, series_id, name)

    def header(self, series_id: str) -> dict[str, Any]:
        """The de-identified DICOM header of a series (DICOM JSON model)."""
        import zarr

        self._series_row(series_id)
        group = zarr.open_group(self.store, path=f"series/{series_id}", mode="r")
        info: dict[str, Any] = dict(group.attrs.asdict())
        return dict(info["insitu"].get("header", {}))


DASK_CHUNK_BYTES = 32 * 1024 * 1024
DECODE_THREADS = 2


class _DirectChunks:
    """Blocks of a local Zarr v3 array read by decoding its chunk files directly.

    For arrays in the layout ingest writes (bytes codec, little-endian, then Blosc;
    default chunk keys) on a ``LocalStore``: Zarr's generic read path costs several
    times the Blosc decode itself (bench/BENCHMARKS.md). Anything else, or any
    selection that is not a box of plain slices, is read by Zarr.
    """

    def __init__(self, array: Any, path: Any, fill: Any) -> None:
        self._array = array
        self._path = path
        self._fill = fill
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.ndim = len(self.shape)
        self._chunks: tuple[int, ...] = tuple(array.chunks)

    @classmethod
    def for_array(cls, store: Any, array: Any) -> _DirectChunks | None:
        from pathlib import Path

        from zarr.storage import LocalStore

        if not isinstance(store, LocalStore):
            return None
        meta = array.metadata.to_dict()
        codecs = meta.get("codecs", [])
        key_encoding = meta.get("chunk_key_encoding", {})
        plain = (
            [c.get("name") for c in codecs] == ["bytes", "blosc"]
            and codecs[0].get("configuration", {}).get("endian", "little") == "little"
            and key_encoding.get("name") == "default"
            and key_encoding.get("configuration", {}).get("separator", "/") == "/"
            and meta.get("chunk_grid", {}).get("name") == "regular"
            and np.dtype(array.dtype).kind in "biuf"
        )
        if not plain:
            return None
        return cls(array, Path(store.root) / array.path, meta.get("fill_value", 0))

    def __getitem__(self, key: Any) -> np.ndarray:
        box = key if isinstance(key, tuple) else (key,)
        if len(box) != self.ndim or not all(
            isinstance(k, slice) and k.step in (None, 1) for k in box
        ):
            return np.asarray(self._array[key])
        region = [k.indices(n)[:2] for k, n in zip(box, self.shape, strict=True)]
        # Not pre-filled: every chunk writes its part, a missing one its fill value,
        # so the result is written once (a pre-fill was a whole extra pass).
        out = np.empty([max(0, b - a) for a, b in region], dtype=self.dtype)
        if not out.size:
            return out
        from itertools import product

        spans = [
            range(a // c, (b - 1) // c + 1) for (a, b), c in zip(region, self._chunks, strict=True)
        ]
        list(_decoder_pool().map(lambda idx: self._copy(idx, region, out), product(*spans)))
        return out

    def _copy(self, idx: tuple[int, ...], region: list[tuple[int, int]], out: np.ndarray) -> None:
        from numcodecs import Blosc

        src, dst = [], []
        for i, c, (a, b) in zip(idx, self._chunks, region, strict=True):
            lo, hi = max(a, i * c), min(b, (i + 1) * c)
            src.append(slice(lo - i * c, hi - i * c))
            dst.append(slice(lo - a, hi - a))
        file = self._path / "c" / "/".join(map(str, idx))
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            out[tuple(dst)] = self._fill  # a chunk never written holds the fill value
            return
        chunk = np.frombuffer(Blosc().decode(raw), dtype=self.dtype).reshape(self._chunks)
        out[tuple(dst)] = chunk[tuple(src)]


def _direct_image(direct: _DirectChunks, blocks: tuple[int, ...]) -> Any:
    """The dask array of a level read by ``direct``, converted to numpy without dask."""
    import dask.array as da

    plain = da.from_array(direct, chunks=blocks, asarray=False)  # type: ignore[no-untyped-call]
    image = _direct_image_type()(plain.dask, plain.name, plain.chunks, meta=plain._meta)
    image.__dict__["_direct"] = direct
    return image


@functools.cache
def _direct_image_type() -> type:
    """A dask array class whose own conversion to numpy reads the chunks directly.

    dask copies every computed result once more (``dask.array.core.finalize``: one
    block is copied, several are concatenated): a whole extra pass over memory when a
    series is read whole, ~15 % of the read. ``image.values`` and ``np.asarray(image)``
    of the array :meth:`Dataset.image` returns decode into the result once, in the
    caller's thread (chunks in the decoding pool). Anything derived from it (a slice,
    arithmetic, ``.compute()``, a pickled copy) is a plain dask array and runs in dask.
    Defined on first use: dask is imported where images are read, not with insitu.
    """
    import dask.array as da

    class DirectImage(da.Array):
        def __array__(self, dtype: Any = None, copy: bool | None = None, **kwargs: Any) -> Any:
            direct = self.__dict__.get("_direct")
            if direct is None or kwargs or copy is False:
                return super().__array__(dtype=dtype, copy=copy, **kwargs)  # type: ignore[no-untyped-call]
            return np.asarray(direct[(slice(None),) * self.ndim], dtype=dtype)

    return DirectImage


@functools.cache
def _decoder_pool() -> ThreadPoolExecutor:
    """Two threads for chunk decoding, shared by every read of the process.

    Blosc releases the GIL, so two chunks decode at once; one pool for the process
    (not one per dask block) keeps the decoding threads at the machine's two cores
    when dask runs several blocks at once.
    """
    return ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="insitu-decode")


# A forked child has the pool object but not its threads: it builds its own.
os.register_at_fork(after_in_child=_decoder_pool.cache_clear)


def _dask_chunks(array: Any) -> tuple[int, ...]:
    """Dask blocks of whole planes, ~32 MB, made of whole Zarr chunks.

    Zarr reads the chunks of one block concurrently, so few large blocks read a
    series much faster than one dask task per chunk; slicing still fetches only
    the chunks a selection touches.
    """
    shape, chunks = array.shape, array.chunks
    plane = int(np.prod(shape[-2:])) * array.dtype.itemsize * (shape[0] if len(shape) == 4 else 1)
    depth = chunks[-3]
    depth = max(depth, (DASK_CHUNK_BYTES // max(plane, 1)) // depth * depth)
    out = (min(depth, shape[-3]), shape[-2], shape[-1])
    return (shape[0], *out) if len(shape) == 4 else out


class _Tables(Mapping[str, "pd.DataFrame"]):
    def __init__(self, root: Any, names: list[str]) -> None:
        self._root, self._names = root, names

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._names:
            raise KeyError(f"no table {name!r}; tables: {', '.join(self._names) or 'none'}")
        return read_table(self._root, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"<tables: {', '.join(self._names) or 'none'}>"


def write_table(root: Any, name: str, frame: pd.DataFrame) -> None:
    """Write ``frame`` as ``tables/<name>/``: one 1-D array per column.

    ``root`` is a writable root group of a store being built (before publish:
    published stores are read-only). Strings become Zarr string arrays,
    datetimes int64 nanoseconds; names and dtypes go to the group's attributes.
    """
    import pandas as pd

    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"table name {name!r}: use letters, digits, '-' or '_'")
    group = root.require_group(f"tables/{name}")
    columns, dtypes = [], {}
    for i, column in enumerate(frame.columns):
        values = frame[column]
        kind = str(values.dtype)
        if pd.api.types.is_datetime64_any_dtype(values):
            data = values.to_numpy(dtype="datetime64[ns]").astype(np.int64)
            kind = "datetime64[ns]"
        elif values.dtype.kind in "biuf":
            data = values.to_numpy()
        else:
            data = np.array(["" if v is None else str(v) for v in values], dtype=object)
            kind = "str"
        array = group.create_array(
            f"c{i}",
            shape=data.shape,
            dtype=str if kind == "str" else data.dtype,
            chunks=(max(1, len(data)),),
            fill_value="" if kind == "str" else 0,
            overwrite=True,
        )
        if len(data):
            array[:] = data
        columns.append(str(column))
        dtypes[str(column)] = kind
    group.attrs["insitu"] = {"columns": columns, "dtypes": dtypes, "n_rows": len(frame)}
    info = dict(root.attrs.get("insitu", {}))
    info["tables"] = sorted({*info.get("tables", []), name})
    root.attrs["insitu"] = info


def read_table(root: Any, name: str) -> pd.DataFrame:
    """The DataFrame :func:`write_table` wrote (columns in their order and dtypes)."""
    import pandas as pd

    group = root[f"tables/{name}"]
    info = group.attrs["insitu"]
    data = {}
    for i, column in enumerate(info["columns"]):
        values = group[f"c{i}"][:] if info["n_rows"] else np.array([])
        kind = info["dtypes"][column]
        if kind == "datetime64[ns]":
            data[column] = pd.to_datetime(values.astype(np.int64))
        elif kind == "str":
            data[column] = pd.Series(values.astype(object) if len(values) else [], dtype=object)
        else:
            data[column] = pd.Series(values, dtype=kind)
    return pd.DataFrame(data, columns=info["columns"])


def open_dataset(name: str, version: str | None = None, *, home: NodeHome | None = None) -> Dataset:
    """Open a published dataset of this node (newest version unless one is named).

    A retired version is refused (VersionRetiredError); unnamed means the newest one
    not retired.
    """
    from zarr.storage import LocalStore

    from insitu.datasets.catalog import Catalog

    node = home or resolve_home()
    with Catalog(node) as catalog:
        path = catalog.store_path(name, catalog.readable(name, version)["version"])
    return Dataset(LocalStore(path, read_only=True))
