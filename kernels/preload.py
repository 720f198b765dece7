"""Load the image-reading stack while the site kernel starts, not at the first read.

A first ``ds.image(s).values`` in a fresh Python imports zarr, numcodecs, xarray
(with pandas), dask.array (with scipy.sparse) and, at the first compute,
``distributed`` (dask looks for a client), and starts zarr's event-loop thread:
about two seconds on a quiet 2-core node, against ~0.15 s for the read itself
(bench/BENCHMARKS.md, issue 15). The "insitu" kernel runs :func:`preload` in its
start-up lines, so that cost is paid while the notebook opens (the kernel shows
"starting", cells wait in order) instead of inside the researcher's first cell.
It runs in the kernel's main thread, before the kernel takes requests: importing
in a background thread while a cell imports the same packages risks
half-initialised modules.
"""

from __future__ import annotations

import importlib

__all__ = ["MODULES", "preload"]

# What a first read and a first compute import, in dependency order.
MODULES = (
    "numpy",
    "pandas",
    "numcodecs.blosc",
    "zarr",
    "zarr.storage",
    "xarray",
    "dask.array",
    "distributed",
    "insitu.datasets.reader",
    "insitu.kernels.client",
    "insitu.kernels.gate_store",
)


def preload() -> list[str]:
    """Import :data:`MODULES` and run one tiny read through zarr, dask and xarray.

    Returns the modules that could not be imported: a broken optional package must
    not stop the kernel from starting; the researcher's first use of it then shows
    its own error.
    """
    missing = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # reported to the caller; raised again at first use
            missing.append(name)
    if not missing:
        _first_read()
    return missing


def _first_read() -> None:
    """Start what a first read starts once per process (zarr's loop thread, dask's
    scheduler lookup, Blosc) on a tiny in-memory array."""
    import dask.array as da
    import numpy as np
    import xarray as xr
    import zarr
    from zarr.storage import MemoryStore

    array = zarr.create_array(MemoryStore(), shape=(2, 4, 4), chunks=(1, 4, 4), dtype="int16")
    array[:] = np.arange(32, dtype="int16").reshape(2, 4, 4)
    image = xr.DataArray(da.from_zarr(array), dims=("z", "y", "x"))  # type: ignore[no-untyped-call]
    image.values  # noqa: B018 - the compute is the point
