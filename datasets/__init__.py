"""insitu.datasets: DICOM ingest, de-identification, Zarr stores and the catalog.

``from insitu.datasets import open_dataset`` opens a published dataset of this
node; names load on first use so that the CLI starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "open_dataset": "insitu.datasets.reader",
    "Dataset": "insitu.datasets.reader",
    "Catalog": "insitu.datasets.catalog",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'insitu.datasets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
