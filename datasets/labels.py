"""Label volumes (from DICOM SEG) on a series' grid: ``labels/<series_id>/<name>``.

Each is one Zarr array with the shape of the series' level 0, integer labels
(0 = background, n = segment number n) and attributes naming the segments.
:func:`read_labels` gives it as an ``xarray.DataArray`` with the very
coordinates of ``Dataset.image(series_id)``, so ``image.where(labels == 1)``
just works. Written by :mod:`insitu.datasets.derived`.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["label_names", "read_labels", "write_labels"]


def write_labels(
    root: Any, series_id: str, name: str, labels: np.ndarray, info: dict[str, Any]
) -> None:
    """Write a label volume into a store being built (never a published one)."""
    from insitu.datasets.store_write import compressor

    target = Path(root.store.root) / "labels" / series_id / name
    shutil.rmtree(target, ignore_errors=True)  # files may be hard links to an older version
    array = root.create_array(
        f"labels/{series_id}/{name}",
        shape=labels.shape,
        dtype=labels.dtype,
        chunks=(1, *labels.shape[1:]),
        compressors=compressor(int(np.prod(labels.shape[1:])) * labels.dtype.itemsize),
        dimension_names=["z", "y", "x"],
        fill_value=0,
        overwrite=True,
    )
    array[:] = labels
    array.attrs["insitu"] = info


def label_names(store: Any, series_id: str) -> list[str]:
    import zarr

    try:
        group = zarr.open_group(store, path=f"labels/{series_id}", mode="r")
    except FileNotFoundError:
        return []
    return sorted(name for name, _ in group.arrays())


def read_labels(dataset: Any, series_id: str, name: str | None = None) -> xr.DataArray:
    """The label volume of ``series_id`` aligned with ``dataset.image(series_id)``."""
    import dask.array as da
    import xarray as xr
    import zarr

    names = label_names(dataset.store, series_id)
    if not names:
        raise KeyError(f"series {series_id} has no label volumes in this version")
    if name is None:
        if len(names) > 1:
            raise KeyError(f"series {series_id} has several label volumes: choose one of {names}")
        name = names[0]
    if name not in names:
        raise KeyError(f"no label volume {name!r} for series {series_id}: choose one of {names}")
    image = dataset.image(series_id)
    array = zarr.open_array(dataset.store, path=f"labels/{series_id}/{name}", mode="r")
    info = dict(cast(Mapping[str, Any], array.attrs.get("insitu", {})))
    data = da.from_zarr(array, chunks=array.chunks)  # type: ignore[no-untyped-call]  # dask
    return xr.DataArray(
        data,
        dims=("z", "y", "x"),
        coords={d: image.coords[d] for d in ("z", "y", "x")},
        name=name,
        attrs={**info, "affine": image.attrs["affine"], "series_id": series_id},
    )
