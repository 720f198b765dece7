"""ipywidgets for researchers and stewards (load on first use: ipywidgets is heavy).

Example: ``SliceViewer(insitu.open_dataset("locat-site-a").image(series_id))``
or ``DatasetBrowser()`` in a hosted notebook.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "SliceViewer": "insitu.widgets.viewer",
    "PRESETS": "insitu.widgets.viewer",
    "DatasetBrowser": "insitu.widgets.browser",
    "StewardPanel": "insitu.widgets.steward",
    "AirlockPanel": "insitu.widgets.airlock",
    "JobMonitor": "insitu.widgets.monitor",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'insitu.widgets' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
