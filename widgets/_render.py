"""Pixels to PNG bytes for ipywidgets.Image: windowing, resizing, plots.

Plain numpy and Pillow (a matplotlib dependency): no browser-side
extension is needed, so the widgets render in any Jupyter front end.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = ["apply_window", "figure_png", "gray_png"]


def apply_window(plane: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map values in [center - width/2, center + width/2] to 0..255 (DICOM linear VOI)."""
    width = max(float(width), 1e-6)
    low = float(center) - width / 2.0
    scaled = (np.asarray(plane, dtype=np.float32) - low) * (255.0 / width)
    windowed: np.ndarray = np.clip(scaled, 0.0, 255.0).astype(np.uint8)
    return windowed


def gray_png(pixels: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    """An 8-bit grey (2-D) or RGB (rows, columns, 3) image as PNG, resized to ``size``."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))  # "L" or "RGB"
    if size is not None and size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)  # speed over size: we scrub
    return out.getvalue()


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure (Agg, never shown) as PNG bytes."""
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=fig.dpi)
    return out.getvalue()
