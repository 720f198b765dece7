"""The rules every numeric grid, image and vector goes through, wherever it was found.

Image-resolution: a grid whose size is that of a slice of one of the site's
series, give or take ``disclosure.plane_tolerance`` rows or columns, in any
orientation, or upscaled by a whole factor up to ``disclosure.max_upscale``;
an array of any shape with exactly a plane's or a volume's number of values
(flattened, reshaped, or a plane's values per channel). Pixel provenance: the
site's fingerprint index, when there is one, is asked about every 2-D grid
(each channel of a colour image) and every vector.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from insitu.disclosure._types import Finding, Verdict
from insitu.disclosure.context import DisclosureContext
from insitu.disclosure.rules import finding

__all__ = ["check_grid"]

_MIN_PLANE_SIDE = 16  # thinner planes (across a few slices) are the volume's business
_MAX_PROVENANCE_PLANES = 64  # planes of a stack asked about (evenly spread)
_MIN_PROVENANCE_SIDE = 8


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def _near_slice(rows: int, cols: int, ctx: DisclosureContext) -> str | None:
    tol = ctx.limits.plane_tolerance
    for h, w in _planes_of(ctx):
        if abs(rows - h) <= tol and abs(cols - w) <= tol:
            return f"a {h}x{w} slice" + ("" if (rows, cols) == (h, w) else " give or take a row")
        for k in range(2, ctx.limits.max_upscale + 1):
            if abs(rows - k * h) <= tol * k and abs(cols - k * w) <= tol * k:
                return f"a {h}x{w} slice upscaled {k} times"
    return None


def _planes_of(ctx: DisclosureContext) -> list[tuple[int, int]]:
    return [(h, w) for h, w in ctx.identifiers.slice_shapes if min(h, w) >= _MIN_PLANE_SIDE]


def _sizes(ctx: DisclosureContext) -> dict[int, str]:
    sizes: dict[int, str] = {}
    for h, w in _planes_of(ctx):
        sizes.setdefault(h * w, f"a {h}x{w} slice")
        for channels in (3, 4):
            sizes.setdefault(h * w * channels, f"a {h}x{w} slice in {channels} channels")
    for shape in ctx.identifiers.volume_shapes:
        sizes.setdefault(math.prod(shape), f"a {_shape_text(shape)} volume")
    return {n: text for n, text in sizes.items() if n >= 16}


def _resolution(
    shape: tuple[int, ...], ctx: DisclosureContext, *, image: bool
) -> tuple[Verdict, str] | None:
    size = math.prod(shape)
    dims = [d for d in shape if d > 1]
    # Any two axes the size of a slice (a plane, a stack of planes, channels last or first).
    for a, b in itertools.permutations(range(len(dims)), 2):
        if a < b and (near := _near_slice(dims[a], dims[b], ctx)):
            return Verdict.FAIL, f"shaped like {near}"
    sizes = _sizes(ctx)
    if size in sizes:
        return Verdict.FAIL, f"holds exactly the number of values of {sizes[size]} (reshaped)"
    for dim in dims:
        if dim in sizes and len(dims) > 1 and not image:
            return (
                Verdict.FAIL,
                f"an axis of {dim} values, the size of {sizes[dim]}: flattened planes, or a "
                "layer on flattened images (whose weights can memorise them; a steward may "
                "override)",
            )
    return None


def _planes(array: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The 2-D grids of an array to ask the fingerprint index about."""
    if array.ndim == 2:
        return [("", array)]
    if array.ndim == 3 and array.shape[-1] in (1, 2, 3, 4):
        return [(f"channel {c}", array[..., c]) for c in range(array.shape[-1])]
    if array.ndim == 3 and array.shape[0] in (1, 2, 3, 4):
        return [(f"channel {c}", array[c]) for c in range(array.shape[0])]
    if array.ndim >= 3:
        stack = array.reshape(-1, *array.shape[-2:])
        step = max(1, len(stack) // _MAX_PROVENANCE_PLANES)
        return [(f"plane {i}", stack[i]) for i in range(0, len(stack), step)]
    return []


def _provenance(array: np.ndarray, ctx: DisclosureContext, where: str) -> list[Finding]:
    index = ctx.fingerprints
    if index is None or array.size < _MIN_PROVENANCE_SIDE**2:
        return []
    try:
        if array.ndim == 1:
            matches = [("", index.match_vector(array))]
        else:
            matches = [
                (part, index.match_grid(plane))
                for part, plane in _planes(array)
                if min(plane.shape) >= _MIN_PROVENANCE_SIDE
            ]
    except Exception as exc:  # the index must never let an output through by crashing
        return [
            finding(
                "pixel-provenance",
                Verdict.REVIEW,
                f"the fingerprint comparison could not run ({type(exc).__name__})",
                where,
            )
        ]
    found: list[Finding] = []
    for part, match in matches:
        if match is None:
            continue
        found.append(finding("pixel-provenance", Verdict.FAIL, _match_text(match, part), where))
        if reason := str(getattr(match, "never_leave", "") or ""):
            found.append(
                finding(
                    "never-leave",
                    Verdict.FAIL,
                    f"{part + ': ' if part else ''}pixels of never-leave series "
                    f"{getattr(match, 'series_id', '?')} ({reason}): no override can "
                    "release them",
                    where,
                )
            )
    return found


def _match_text(match: Any, part: str) -> str:
    plane = getattr(match, "orientation", None) or getattr(match, "plane", "")
    score = getattr(match, "score", None)
    return (
        f"{part + ': ' if part else ''}matches series {getattr(match, 'series_id', '?')} of "
        f"{getattr(match, 'dataset', '?')} {getattr(match, 'version', '')}"
        + (f" ({plane})" if plane else "")
        + (f", score {score:.2f}" if isinstance(score, float) else "")
        + ": pixel data of the site's images"
    )


def check_grid(
    grid: np.ndarray, *, ctx: DisclosureContext, where: str, image: bool = False
) -> list[Finding]:
    """Image-resolution and pixel-provenance findings for one numeric array (none: fine).

    ``image=True`` for decoded image frames (rows x columns x channels), whose axes are
    not flattened data.
    """
    array = np.asarray(grid)
    if array.dtype.kind not in "biufc" or array.size == 0:
        return []
    if array.dtype.kind == "c":
        array = np.abs(array)
    found: list[Finding] = []
    shape = tuple(int(d) for d in array.shape)
    resolution = _resolution(shape, ctx, image=image)
    if resolution is not None:
        verdict, why = resolution
        found.append(
            finding(
                "image-resolution",
                verdict,
                f"a {_shape_text(shape)} array {why} of a series here: likely pixel data; "
                "release statistics or a figure instead",
                where,
            )
        )
    found.extend(_provenance(array, ctx, where))
    return found
