"""The numbers of a PDF content stream's path and colour operators: drawn data.

A researcher can draw pixels instead of embedding them: thousands of tiny
filled rectangles whose grey levels (or positions) carry the values. This
module reads the operands of the path (``m l c v y re``), colour (``g rg k
sc scn`` and their stroke forms) and transform (``cm``) operators of a decoded
content stream (bounded by ``disclosure.max_vector_values``), keeping the
current transformation and fill colour through ``q``/``Q``. Every filled cell
(a rectangle, an axis-aligned closed four-point path, or a form drawn with
``Do``) is recorded with its device position, size and fill colour; when the
cells of one size lie on a lattice, the lattice is rebuilt as a grid of fill
values and handed to the grid rules (image resolution, pixel provenance).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Cell", "VectorData", "lattice", "read_paths"]

_TOKEN = re.compile(
    rb"\((?:\\.|[^\\()])*\)"  # a literal string (text)
    rb"|<<|>>|<[0-9A-Fa-f\s]*>|\[|\]|\{|\}"
    rb"|/[^\s/<>\[\]()%{}]*"  # a name
    rb"|[+-]?(?:\d+\.?\d*|\.\d+)"  # a number
    rb"|[A-Za-z'\"*]+[0-9]?"  # an operator
    rb"|%[^\r\n]*",  # a comment
    re.DOTALL,
)
_NUMBER = re.compile(rb"[+-]?(?:\d+\.?\d*|\.\d+)")
_PATH = {b"m", b"l", b"c", b"v", b"y", b"re"}
_FILL_COLOUR = {b"g", b"rg", b"k", b"sc", b"scn"}
_STROKE_COLOUR = {b"G", b"RG", b"K", b"SC", b"SCN"}
_FILL = {b"f", b"F", b"f*", b"B", b"B*", b"b", b"b*"}
_END = {b"S", b"s", b"n"}
_MIN_LATTICE = 64  # cells of one size before a lattice is looked for
_MIN_SIDE = 4  # rows and columns of a lattice

Matrix = tuple[float, float, float, float, float, float]
_IDENTITY: Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


@dataclass(frozen=True)
class Cell:
    """One filled shape: device-space origin, a key for its size/form, its fill colour."""

    x: float
    y: float
    key: tuple[object, ...]
    colour: tuple[float, ...]


@dataclass
class VectorData:
    """What the operators of one content stream carry."""

    values: int = 0  # numeric operands of path, colour and transform operators
    cells: list[Cell] = field(default_factory=list)
    truncated: bool = False  # stopped at the bound; the rest was not read


def _times(m: Matrix, n: Matrix) -> Matrix:
    """m x n in PDF's row-vector convention (``cm`` makes CTM' = m x CTM)."""
    a, b, c, d, e, f = m
    a2, b2, c2, d2, e2, f2 = n
    return (
        a * a2 + b * c2,
        a * b2 + b * d2,
        c * a2 + d * c2,
        c * b2 + d * d2,
        e * a2 + f * c2 + e2,
        e * b2 + f * d2 + f2,
    )


def _apply(m: Matrix, x: float, y: float) -> tuple[float, float]:
    return m[0] * x + m[2] * y + m[4], m[1] * x + m[3] * y + m[5]


def _rect_of(points: list[tuple[float, float]]) -> tuple[float, float, float, float] | None:
    """An axis-aligned rectangle (x, y, w, h) from a closed path of four corners."""
    if len(points) == 5 and points[0] == points[-1]:
        points = points[:4]
    if len(points) != 4:
        return None
    xs = sorted({round(p[0], 4) for p in points})
    ys = sorted({round(p[1], 4) for p in points})
    if len(xs) != 2 or len(ys) != 2:
        return None
    corners = {(round(p[0], 4), round(p[1], 4)) for p in points}
    if corners != {(x, y) for x in xs for y in ys}:
        return None
    return xs[0], ys[0], xs[1] - xs[0], ys[1] - ys[0]


def read_paths(content: bytes, *, max_values: int) -> VectorData:
    """The path/colour/transform numbers and the filled cells of one content stream.

    Reads at most ``max_values`` numeric operands (``truncated`` when there are more).
    """
    out = VectorData()
    ctm: Matrix = _IDENTITY
    fill: tuple[float, ...] = (0.0,)
    stack: list[tuple[Matrix, tuple[float, ...]]] = []
    operands: list[float] = []
    subpaths: list[list[tuple[float, float]]] = []
    rects: list[tuple[float, float, float, float]] = []
    depth = 0  # inside an array (TJ kerning) or a dictionary: not path data
    pos = 0
    while pos < len(content):
        match = _TOKEN.search(content, pos)
        if match is None:
            break
        pos = match.end()
        token = match.group()
        first = token[:1]
        if first in (b"[", b"{") or token == b"<<":
            depth += 1
            continue
        if first in (b"]", b"}") or token == b">>":
            depth = max(0, depth - 1)
            continue
        if depth or first in (b"(", b"<", b"%", b"/"):
            continue
        if _NUMBER.fullmatch(token):
            operands.append(float(token))
            continue
        op, args = token, operands
        operands = []
        if op in _PATH or op in _FILL_COLOUR or op in _STROKE_COLOUR or op == b"cm":
            out.values += len(args)
            if out.values > max_values:
                out.values, out.truncated = max_values, True
                return out
        if op == b"ID":  # inline image data: binary, up to EI (the engine flags it)
            end = content.find(b"EI", pos)
            pos = len(content) if end < 0 else end + 2
        elif op == b"q":
            stack.append((ctm, fill))
        elif op == b"Q":
            if stack:
                ctm, fill = stack.pop()
        elif op == b"cm" and len(args) == 6:
            ctm = _times((args[0], args[1], args[2], args[3], args[4], args[5]), ctm)
        elif op in _FILL_COLOUR and args:
            fill = tuple(args[-4:])
        elif op == b"re" and len(args) == 4:
            x, y, w, h = args
            rects.append((x, y, w, h))
        elif op == b"m" and len(args) == 2:
            subpaths.append([(args[0], args[1])])
        elif op == b"l" and len(args) == 2 and subpaths:
            subpaths[-1].append((args[0], args[1]))
        elif op in (b"c", b"v", b"y") and subpaths:
            subpaths[-1].append((float("nan"), float("nan")))  # a curve: not a cell
        elif op in _FILL:
            for sub in subpaths:
                rect = _rect_of(sub)
                if rect is not None:
                    rects.append(rect)
            for x, y, w, h in rects:
                x0, y0 = _apply(ctm, x, y)
                x1, y1 = _apply(ctm, x + w, y + h)
                size = (round(abs(x1 - x0), 3), round(abs(y1 - y0), 3))
                out.cells.append(Cell(min(x0, x1), min(y0, y1), ("rect", *size), fill))
            subpaths, rects = [], []
        elif op in _END:
            subpaths, rects = [], []
        elif op == b"Do":
            out.cells.append(Cell(ctm[4], ctm[5], ("form", *(round(v, 3) for v in ctm[:4])), fill))
    return out


def lattice(cells: list[Cell]) -> np.ndarray | None:
    """The grid of fill values of the largest group of same-size cells on a lattice.

    Rows top to bottom (PDF's y axis points up); cells not drawn are left at the
    page's white (1.0); colours of 3 or 4 components give a channel axis.
    """
    if len(cells) < _MIN_LATTICE:
        return None
    key, count = Counter(cell.key for cell in cells).most_common(1)[0]
    if count < _MIN_LATTICE:
        return None
    group = [cell for cell in cells if cell.key == key]
    xs = sorted({round(cell.x, 2) for cell in group})
    ys = sorted({round(cell.y, 2) for cell in group})
    if min(len(xs), len(ys)) < _MIN_SIDE or len(xs) * len(ys) > 4 * len(group):
        return None  # scattered shapes, not a lattice
    channels = Counter(len(cell.colour) for cell in group).most_common(1)[0][0]
    column = {x: i for i, x in enumerate(xs)}
    row = {y: len(ys) - 1 - i for i, y in enumerate(ys)}
    grid = np.ones((len(ys), len(xs), channels), dtype=np.float32)
    for cell in group:
        colour = cell.colour if len(cell.colour) == channels else (float(np.mean(cell.colour)),)
        grid[row[round(cell.y, 2)], column[round(cell.x, 2)], : len(colour)] = colour
    return grid[..., 0] if channels == 1 else grid
