"""insitu: analyse clinical-trial images where they live.

The researcher's API (the same inside a hosted notebook and on the node)::

    import insitu
    insitu.catalog()                          # datasets, and my access to each
    ds = insitu.open_dataset("locat")         # series, subjects, tables; lazy images
    insitu.request_access("locat", purpose=..., project=..., days=90)
    client = insitu.compute(workers=2)        # a dask-gateway cluster at the site
    insitu.release(table, purpose="...")      # through the airlock

Names load on first use so that ``import insitu`` (and the CLI) start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_PUBLIC = {
    "open_dataset": "insitu.kernels.client",
    "catalog": "insitu.kernels.client",
    "request_access": "insitu.api",
    "compute": "insitu.kernels.compute",
    "release": "insitu.kernels.release",
    "Dataset": "insitu.datasets.reader",
    "InsituError": "insitu.errors",
    "AccessDeniedError": "insitu.errors",
    "DatasetNotFoundError": "insitu.errors",
}

__all__ = [*sorted(_PUBLIC), "__version__"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'insitu' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
