"""Slice viewer: scrub through a series in three planes with CT window presets.

Colour series (``c`` axis: fundus photographs, RGB ultrasound) show in colour,
8-bit ones unwindowed; OCT volumes scrub like any 3-D series.

The viewer holds a lazy ``xarray.DataArray`` (dims ``z, y, x`` in mm, as
``Dataset.image()`` returns it, locally or through the gate) and computes only
the plane it shows: moving the slider reads the chunks of one slice, never
the volume. A few recent planes are kept so scrubbing back is free.

    from insitu.widgets import SliceViewer
    SliceViewer(ds.image(series_id))
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from insitu.datasets.modality import modality
from insitu.widgets._render import apply_window, gray_png

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["PLANES", "PRESETS", "SliceViewer", "Window"]


@dataclass(frozen=True)
class Window:
    """A display window: ``center`` (level) and ``width`` in the image's units."""

    center: float
    width: float


# Common CT windows (HU), as radiology workstations ship them.
PRESETS: dict[str, Window] = {
    "soft tissue": Window(40, 400),
    "brain": Window(40, 80),
    "lung": Window(-600, 1500),
    "bone": Window(400, 1800),
}
FREE = "free"

# plane -> (dimension the slider moves along, (vertical dim, horizontal dim))
PLANES: dict[str, tuple[str, tuple[str, str]]] = {
    "axial": ("z", ("y", "x")),
    "coronal": ("y", ("z", "x")),
    "sagittal": ("x", ("z", "y")),
}
# What a reader expects at the image's edges (DICOM LPS, radiological view).
_EDGES = {
    "axial": ("A", "P", "R", "L"),
    "coronal": ("S", "I", "R", "L"),
    "sagittal": ("S", "I", "A", "P"),
}
_CACHE_PLANES = 8


class SliceViewer:
    """An ipywidgets slice viewer; display it by leaving it last in a cell."""

    def __init__(
        self,
        image: xr.DataArray,
        *,
        plane: str = "axial",
        preset: str | None = None,
        display_size: int = 384,
        title: str | None = None,
        max_volume_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        import ipywidgets as w

        self.colour = "c" in image.dims  # fundus photographs, RGB ultrasound: (z, y, x, c)
        missing = {"z", "y", "x"} - set(image.dims)
        if (
            missing
            or image.ndim != (4 if self.colour else 3)
            or (self.colour and int(image.sizes["c"]) not in (3, 4))
        ):
            raise ValueError(
                f"the viewer shows 3-D images with dims z, y, x (and c for colour, 3 or 4 "
                f"channels); this one has {image.dims}. Pass ds.image(series_id) (a time "
                "series: select one time point first)"
            )
        if plane not in PLANES:
            raise ValueError(f"plane {plane!r}: choose one of {', '.join(PLANES)}")
        self.image = image.transpose("z", "y", "x", *(["c"] if self.colour else []))
        self.display_size = display_size
        self.reads = 0  # planes (or the volume) computed from the store (tests, bench)
        self.max_volume_bytes = max_volume_bytes
        self._volume: np.ndarray | None = None
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._syncing = False
        if preset is None:
            preset = modality(str(image.attrs.get("modality", ""))).viewer_preset or FREE
        if preset not in (*PRESETS, FREE):
            raise ValueError(f"preset {preset!r}: choose one of {', '.join([*PRESETS, FREE])}")
        start = PRESETS.get(preset) or self._auto_window()

        self.plane = w.ToggleButtons(options=list(PLANES), value=plane, description="Plane")
        # 1-based, like the "slice k of n" label beside it; index() is the 0-based position.
        self.slider = w.IntSlider(
            min=1,
            max=2,
            value=1,
            description="Slice",
            continuous_update=True,
            layout=w.Layout(width="auto"),
        )
        self.preset = w.Dropdown(options=[*PRESETS, FREE], value=preset, description="Window")
        self.center = w.FloatText(
            value=start.center, description="Level", layout={"width": "180px"}
        )
        self.width = w.BoundedFloatText(
            value=start.width, min=1, max=1e6, description="Width", layout={"width": "180px"}
        )
        self.position = w.HTML()
        self.view = w.Image(format="png")
        self.edges = w.HTML()
        series = str(image.attrs.get("series_id") or image.name or "")
        heading = title or " · ".join(
            v
            for v in (
                str(image.attrs.get("dataset") or ""),
                str(image.attrs.get("subject_id") or ""),
                f"series …{series[-12:]}" if len(series) > 16 else series,
            )
            if v
        )
        self.widget = w.VBox(
            [
                w.HTML(f"<b>{_escape(heading)}</b>") if heading else w.HTML(),
                self.plane,
                # Wraps instead of overflowing the viewer (a stray scrollbar under it).
                w.HBox(
                    [self.preset, self.center, self.width],
                    layout=w.Layout(flex_flow="row wrap"),
                ),
                self.slider,
                self.position,
                self.view,
                self.edges,
            ],
            layout=w.Layout(max_width=f"{display_size + 260}px"),
        )
        self.plane.observe(self._on_plane, names="value")
        self.slider.observe(lambda _change: self.render(), names="value")
        self.preset.observe(self._on_preset, names="value")
        self.center.observe(self._on_free_window, names="value")
        self.width.observe(self._on_free_window, names="value")
        self._reset_slider()
        self.render()

    # -- display ------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    # -- state changes ------------------------------------------------------

    def _on_plane(self, _change: dict[str, Any]) -> None:
        self._reset_slider()
        self.render()

    def _on_preset(self, change: dict[str, Any]) -> None:
        if change["new"] == FREE:
            return  # keep the current numbers as a starting point
        window = PRESETS[change["new"]]
        self._syncing = True
        try:
            self.center.value, self.width.value = window.center, window.width
        finally:
            self._syncing = False
        self.render()

    def _on_free_window(self, _change: dict[str, Any]) -> None:
        if self._syncing:
            return
        if self.preset.value != FREE:
            self._syncing = True  # the dropdown follows the numbers, not back
            try:
                self.preset.value = FREE
            finally:
                self._syncing = False
        self.render()

    def _reset_slider(self) -> None:
        dim = PLANES[self.plane.value][0]
        n = int(self.image.sizes[dim])
        # Hold the observer off while the range changes: one render, not three.
        with self.slider.hold_trait_notifications():
            self.slider.max = max(n, 1)
            self.slider.value = n // 2 + 1
        self.slider.description = f"{dim} slice"

    # -- reading and drawing ------------------------------------------------

    def index(self) -> int:
        """The 0-based position of the shown plane along the slider's dimension."""
        return int(self.slider.value) - 1

    @property
    def window(self) -> Window:
        return Window(float(self.center.value), float(self.width.value))

    def plane_values(self) -> np.ndarray:
        """The 2-D array shown now (rows top to bottom as drawn), read lazily."""
        plane = self.plane.value
        dim, (vertical, horizontal) = PLANES[plane]
        key = (plane, self.index())
        cached = self._cache.get(key)
        if cached is None:
            source = self._volume_for(plane)
            if source is not None:  # cut the plane from the volume already in memory
                # (z, x) for coronal, (z, y) for sagittal: already (vertical, horizontal)
                cached = np.take(source, key[1], axis="zyx".index(dim))
            else:
                extra = ["c"] if self.colour else []
                data = self.image.isel({dim: key[1]}).transpose(vertical, horizontal, *extra)
                cached = np.asarray(data.values)
                self.reads += 1
            if vertical == "z":
                cached = cached[::-1]  # superior up
            self._cache[key] = cached
            if len(self._cache) > _CACHE_PLANES:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return cached

    def _volume_for(self, plane: str) -> np.ndarray | None:
        """The whole series in memory for coronal and sagittal sweeps, if it is small enough.

        Such a plane cuts through every chunk row of the store, so each new one
        would read most of the series again; one read of the volume makes the
        sweep interactive. Axial planes always read just their own chunk row.
        """
        if plane == "axial" or self.image.nbytes > self.max_volume_bytes:
            return None
        if self._volume is None:
            self._volume = np.asarray(self.image.values)
            self.reads += 1
        return self._volume

    def position_mm(self) -> float:
        dim = PLANES[self.plane.value][0]
        return float(self.image[dim].values[self.index()])

    def _display_shape(self, rows: int, cols: int) -> tuple[int, int]:
        """(width, height) in screen pixels with the physical aspect ratio kept."""
        _dim, (vertical, horizontal) = PLANES[self.plane.value]
        sv = _spacing(self.image, vertical)
        sh = _spacing(self.image, horizontal)
        height_mm, width_mm = rows * sv, cols * sh
        scale = self.display_size / max(height_mm, width_mm)
        return max(1, round(width_mm * scale)), max(1, round(height_mm * scale))

    def render(self) -> None:
        values = self.plane_values()
        pixels = apply_window(values, self.center.value, self.width.value)
        if self.colour:
            pixels = pixels[..., :3]  # RGB as it is; an alpha channel is not shown
        width, height = self._display_shape(*values.shape[:2])
        self.view.value = gray_png(pixels, (width, height))
        # Show it at its own size: browsers would otherwise stretch it to the cell's width.
        self.view.width, self.view.height = str(width), str(height)
        dim = PLANES[self.plane.value][0]
        n = int(self.image.sizes[dim])
        units = self.image.attrs.get("units", "")
        self.position.value = (
            f"{dim} = <b>{self.position_mm():.1f} mm</b> · slice {self.index() + 1} of {n}"
            f" · window {self.center.value:g}/{self.width.value:g} {_escape(str(units))}"
        )
        top, bottom, left, right = _EDGES[self.plane.value]
        self.edges.value = (
            f"<small>top {top}, bottom {bottom}, left {left}, right {right} (patient)</small>"
        )

    def _auto_window(self) -> Window:
        """For non-CT images: the 1st to 99th percentile of the middle axial slice.

        8-bit colour shows as it is (window 0..255): a fundus photograph's colours
        are the data, not a display choice.
        """
        if self.colour and self.image.dtype == np.uint8:
            return Window(127.5, 255.0)
        middle = np.asarray(self.image.isel(z=self.image.sizes["z"] // 2).values, dtype=float)
        low, high = np.percentile(middle, [1, 99]) if middle.size else (0.0, 1.0)
        return Window(float(low + high) / 2, max(float(high - low), 1.0))


def _spacing(image: xr.DataArray, dim: str) -> float:
    coords = np.asarray(image[dim].values, dtype=float)
    if coords.size > 1:
        return abs(float(coords[1] - coords[0])) or 1.0
    spacing = image.attrs.get("spacing")
    if spacing is not None and len(spacing) == 3:
        return float(spacing["zyx".index(dim)]) or 1.0
    return 1.0


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)
