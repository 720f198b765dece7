"""From a series' DICOM objects to one volume: geometry checks, slice order, pixels.

A series becomes a (z, y, x) array in modality units (Rescale Slope/Intercept
or the Modality LUT applied) in the smallest dtype that holds every value
exactly, with its patient geometry (DICOM LPS, millimetres). Slices are
ordered by position along the slice normal, never by Instance Number. A
series whose slices do not form one regular grid is refused with the reason:
insitu never resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset as DicomDataset
from pydicom.pixels.processing import apply_modality_lut

from insitu.errors import InconsistentSeriesError

__all__ = [
    "Frame",
    "Geometry",
    "NativeLayout",
    "UndecodableObjectError",
    "decode_native_volume",
    "decode_volume",
    "frames_of",
    "native_layout",
    "plan_geometry",
]

ORIENTATION_TOL = 1e-4  # direction cosines
POSITION_TOL_MM = 0.01  # duplicate positions and in-plane drift
SPACING_REL_TOL = 0.01  # slice gaps may differ by 1 % (DS rounding), no more


@dataclass(frozen=True)
class Frame:
    """One 2-D frame: which object and frame it comes from, and its geometry."""

    obj: int  # index into the series' objects
    index: int  # frame number inside that object (0 for single-frame)
    rows: int
    columns: int
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None  # (row spacing, column spacing)
    slope: float | None
    intercept: float | None
    instance: int


@dataclass
class Geometry:
    """Where a volume lies in the patient (LPS, mm)."""

    shape: tuple[int, int, int]  # z, y, x
    spacing: tuple[float, float, float]  # z, y, x
    origin: tuple[float, float, float]  # LPS position of voxel (0, 0, 0)
    orientation: tuple[float, ...]  # row and column direction cosines
    patient_geometry: bool  # False: no position/orientation in the headers
    order: list[Frame] = field(repr=False)

    @property
    def normal(self) -> np.ndarray:
        row, col = np.array(self.orientation[:3]), np.array(self.orientation[3:])
        return np.cross(row, col)

    @property
    def affine(self) -> np.ndarray:
        """4x4: (x, y, z) voxel index (column, row, slice) -> LPS millimetres."""
        row, col = np.array(self.orientation[:3]), np.array(self.orientation[3:])
        dz, dy, dx = self.spacing
        out = np.eye(4)
        out[:3, 0] = row * dx
        out[:3, 1] = col * dy
        out[:3, 2] = self.normal * dz
        out[:3, 3] = self.origin
        return out

    @property
    def translation(self) -> tuple[float, float, float]:
        """(z, y, x) coordinate of voxel (0, 0, 0) along the volume's own axes."""
        origin = np.array(self.origin)
        row, col = np.array(self.orientation[:3]), np.array(self.orientation[3:])
        return (
            float(origin @ self.normal),
            float(origin @ col),
            float(origin @ row),
        )


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _xyz(value: Any) -> tuple[float, float, float] | None:
    out = _floats(value, 3)
    return None if out is None else (out[0], out[1], out[2])


def _pair(value: Any) -> tuple[float, float] | None:
    out = _floats(value, 2)
    return None if out is None else (out[0], out[1])


def _first(seq_owner: DicomDataset | None, seq: str, keyword: str) -> Any:
    if seq_owner is None or not seq_owner.get(seq):
        return None
    return seq_owner.get(seq)[0].get(keyword)


def frames_of(obj: int, ds: DicomDataset) -> list[Frame]:
    """The frames of one DICOM object with their geometry (headers only)."""
    n = int(ds.get("NumberOfFrames", 1) or 1)
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    instance = int(ds.get("InstanceNumber", 0) or 0)
    frames = []
    for i in range(n):
        fg = per_frame[i] if i < len(per_frame) else None

        def pick(seq: str, keyword: str, fg: DicomDataset | None = fg) -> Any:
            for owner in (fg, shared):
                value = _first(owner, seq, keyword)
                if value is not None:
                    return value
            return ds.get(keyword)

        slope = pick("PixelValueTransformationSequence", "RescaleSlope")
        intercept = pick("PixelValueTransformationSequence", "RescaleIntercept")
        spacing = pick("PixelMeasuresSequence", "PixelSpacing")
        if spacing is None:
            spacing = ds.get("ImagerPixelSpacing")
        frames.append(
            Frame(
                obj=obj,
                index=i,
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                position=_xyz(pick("PlanePositionSequence", "ImagePositionPatient")),
                orientation=_floats(pick("PlaneOrientationSequence", "ImageOrientationPatient"), 6),
                pixel_spacing=_pair(spacing),
                slope=None if slope is None else float(slope),
                intercept=None if intercept is None else float(intercept),
                instance=instance,
            )
        )
    return frames


def _refuse(reason: str) -> InconsistentSeriesError:
    return InconsistentSeriesError(f"series refused: {reason}; insitu never resamples")


def plan_geometry(headers: Sequence[DicomDataset]) -> Geometry:
    """Order the series' frames along the normal and check they form one grid."""
    frames = [f for obj, ds in enumerate(headers) for f in frames_of(obj, ds)]
    sizes = {(f.rows, f.columns) for f in frames}
    if len(sizes) > 1:
        raise _refuse(f"mixed image sizes {sorted(sizes)} (rows, columns)")
    for keyword in ("SamplesPerPixel", "BitsAllocated", "PhotometricInterpretation"):
        values = {str(ds.get(keyword)) for ds in headers}
        if len(values) > 1:
            raise _refuse(f"mixed {keyword} {sorted(values)}")
    rows, columns = sizes.pop()
    with_geometry = [f.position is not None and f.orientation is not None for f in frames]
    if any(with_geometry) and not all(with_geometry):
        raise _refuse("some slices have a position and orientation, others do not")
    spacings = {f.pixel_spacing for f in frames}
    if len(spacings) > 1 and not _close_all(spacings, 1e-4):
        raise _refuse(f"mixed pixel spacings {sorted(spacings, key=str)}")
    pixel_spacing = frames[0].pixel_spacing or (1.0, 1.0)
    if not all(with_geometry):
        # Ultrasound, secondary capture, radiographs: frames in acquisition order.
        order = sorted(frames, key=lambda f: (f.instance, f.obj, f.index))
        return Geometry(
            shape=(len(order), rows, columns),
            spacing=(_frame_step(headers), pixel_spacing[0], pixel_spacing[1]),
            origin=(0.0, 0.0, 0.0),
            orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
            patient_geometry=False,
            order=order,
        )
    orientations = [np.array(f.orientation) for f in frames]
    if any(np.abs(o - orientations[0]).max() > ORIENTATION_TOL for o in orientations):
        raise _refuse("mixed image orientations (several planes or a localizer in one series)")
    row, col = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, col)
    positions = np.array([f.position for f in frames])
    depth = positions @ normal
    order_idx = np.argsort(depth, kind="stable")
    depth = depth[order_idx]
    order = [frames[i] for i in order_idx]
    in_plane = positions[order_idx] @ np.stack([row, col], axis=1)
    drift = np.abs(in_plane - in_plane[0]).max() if len(order) > 1 else 0.0
    if drift > max(POSITION_TOL_MM, 0.01 * min(pixel_spacing)):
        raise _refuse(
            f"slices shift by {drift:.3f} mm within their plane (gantry tilt or a "
            "mixed series): they do not stack along the slice normal"
        )
    gaps = np.diff(depth)
    if len(gaps) and gaps.min() < POSITION_TOL_MM:
        at = float(depth[int(np.argmin(gaps))])
        raise _refuse(f"duplicate slice position at {at:.3f} mm along the normal")
    if len(gaps):
        step = float(np.median(gaps))
        worst = int(np.argmax(np.abs(gaps - step)))
        if abs(gaps[worst] - step) > max(SPACING_REL_TOL * step, 1e-3):
            a, b = float(depth[worst]), float(depth[worst + 1])
            missing = round(gaps[worst] / step) - 1
            what = (
                f"non-uniform slice spacing: gap of {gaps[worst]:.3f} mm between {a:.3f} "
                f"and {b:.3f} mm where the series' step is {step:.3f} mm"
            )
            if missing >= 1 and abs(gaps[worst] - (missing + 1) * step) < 0.1 * step:
                what += f" ({missing} missing slice(s))"
            raise _refuse(what)
    else:
        ds0 = headers[order[0].obj]
        step = float(ds0.get("SpacingBetweenSlices") or ds0.get("SliceThickness") or 1.0)
    return Geometry(
        shape=(len(order), rows, columns),
        spacing=(step, pixel_spacing[0], pixel_spacing[1]),
        origin=_xyz(positions[order_idx[0]]) or (0.0, 0.0, 0.0),  # every frame has a position
        orientation=tuple(float(v) for v in orientations[0]),
        patient_geometry=True,
        order=order,
    )


def _frame_step(headers: Sequence[DicomDataset]) -> float:
    """Frame spacing (mm) without patient geometry: what one multi-frame object states
    (ophthalmic tomography: Spacing Between Slices in its Pixel Measures), else 1.0
    (ultrasound cine, secondary capture: frames in acquisition order)."""
    if len(headers) != 1 or int(headers[0].get("NumberOfFrames", 1) or 1) < 2:
        return 1.0
    ds = headers[0]
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = _first(shared, "PixelMeasuresSequence", keyword)
        if value is None and keyword == "SpacingBetweenSlices":
            value = ds.get(keyword)
        try:
            step = float(value) if value is not None else 0.0
        except (TypeError, ValueError):
            continue
        if step > 0:
            return step
    return 1.0


def _close_all(values: set[tuple[float, float] | None], tol: float) -> bool:
    known = [v for v in values if v is not None]
    if len(known) < len(values):
        return False
    arr = np.array(sorted(known))
    return bool(np.abs(arr - arr[0]).max() <= tol * max(1.0, float(np.abs(arr).max())))


_INT_TYPES: list[type[np.integer[Any]]] = [
    np.uint8,
    np.int8,
    np.uint16,
    np.int16,
    np.uint32,
    np.int32,
    np.int64,
]


def _smallest_int(lo: float, hi: float) -> np.dtype:
    for candidate in _INT_TYPES:
        info = np.iinfo(candidate)
        if info.min <= lo and hi <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.float64)


def _frame_pixels(arr: np.ndarray, ds: DicomDataset, index: int) -> np.ndarray:
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    single = arr.ndim == (2 if samples == 1 else 3)
    return arr if single else arr[index]


def _integral_linear(raw: np.ndarray, frame: Frame, ds: DicomDataset) -> tuple[int, int] | None:
    """(slope, intercept) when the rescale maps integers to integers, else None."""
    if raw.dtype.kind not in "uib" or ds.get("ModalityLUTSequence"):
        return None
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        return (1, 0)
    slope = 1.0 if frame.slope is None else frame.slope
    intercept = 0.0 if frame.intercept is None else frame.intercept
    if slope.is_integer() and intercept.is_integer():
        return int(slope), int(intercept)
    return None


def _modality(raw: np.ndarray, frame: Frame, ds: DicomDataset) -> np.ndarray:
    """One frame in modality units, with the values pydicom's apply_modality_lut gives."""
    linear = _integral_linear(raw, frame, ds)
    if linear is not None:
        slope, intercept = linear
        if (slope, intercept) == (1, 0):
            return raw
        # exact integer arithmetic; int32 when no value can leave its range
        bound = max(abs(int(np.iinfo(raw.dtype).min)), int(np.iinfo(raw.dtype).max))
        wide = np.int32 if bound * abs(slope) + abs(intercept) < 2**31 else np.int64
        values = raw.astype(wide)
        if slope != 1:
            np.multiply(values, slope, out=values)
        np.add(values, intercept, out=values)
        return values
    if ds.get("ModalityLUTSequence"):
        return apply_modality_lut(raw, ds)
    if frame.slope is None and frame.intercept is None:
        return raw
    factor = 1.0 if frame.slope is None else frame.slope
    offset = 0.0 if frame.intercept is None else frame.intercept
    return raw.astype(np.float64) * factor + offset


class UndecodableObjectError(Exception):
    """pydicom could not decode one object of a series (``index`` says which)."""

    def __init__(self, index: int, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.index = index


_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}  # implicit / explicit VR little


@dataclass(frozen=True)
class NativeLayout:
    """How a single-frame, uncompressed, little-endian greyscale image lies in its bytes."""

    rows: int
    columns: int
    dtype: np.dtype  # little-endian, as stored
    unused_bits: int  # high bits beyond Bits Stored: cleared or sign-extended on decode

    @property
    def nbytes(self) -> int:
        return self.rows * self.columns * self.dtype.itemsize


def native_layout(ds: DicomDataset) -> NativeLayout | None:
    """The layout of an image that needs no decoder (see :class:`NativeLayout`), else None.

    The header alone decides: pixel data attached or not.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None or str(meta.get("TransferSyntaxUID", "")) not in _NATIVE_LE:
        return None
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        bits, stored = int(ds.BitsAllocated), int(ds.get("BitsStored") or ds.BitsAllocated)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        return None
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if frames != 1 or samples != 1 or bits not in (8, 16, 32) or not 0 < stored <= bits:
        return None
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or rows <= 0 or columns <= 0:
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    return NativeLayout(rows, columns, dtype, bits - stored)


def _clear_unused_bits(arr: np.ndarray, unused: int) -> None:
    """Unused high bits cleared (unsigned) or sign-extended (signed), as pydicom does."""
    if unused:
        np.left_shift(arr, unused, out=arr)
        np.right_shift(arr, unused, out=arr)


def _native_frame(ds: DicomDataset) -> np.ndarray | None:
    """A single-frame, uncompressed, little-endian greyscale image straight from its bytes
    (what pydicom's decoder returns for it, without its per-object set-up), else None."""
    layout = native_layout(ds)
    if layout is None or "PixelData" not in ds:
        return None
    data = ds.PixelData
    if len(data) < layout.nbytes:
        return None  # let pydicom say what is wrong
    count = layout.rows * layout.columns
    arr = np.frombuffer(data, layout.dtype, count=count).reshape(layout.rows, layout.columns)
    if layout.unused_bits:
        arr = arr.copy()
        _clear_unused_bits(arr, layout.unused_bits)
    return arr.astype(layout.dtype.newbyteorder("="), copy=False)


ReadInto = Callable[[int, memoryview], None]  # (object index, buffer): fill with its pixels


def decode_native_volume(
    objects: Sequence[DicomDataset],
    geometry: Geometry,
    lengths: Sequence[int],
    read_into: ReadInto,
) -> np.ndarray | None:
    """:func:`decode_volume` of a series whose every object needs no decoder, with each
    object's pixel bytes read by ``read_into`` straight into one array (no per-slice
    copies; the rescale is applied in place when the result keeps the stored dtype).

    ``lengths``: the byte length of each object's native pixel value (-1: none, or
    not native). None when an object is not such an image, its value is shorter than
    its image, or the objects' layouts differ: then :func:`decode_volume` decodes the
    series (and pydicom says what is wrong). Exceptions of ``read_into`` propagate.
    """
    layouts = {native_layout(ds) for ds in objects}
    if len(layouts) != 1 or None in layouts or not np.little_endian:
        return None
    (layout,) = layouts
    assert layout is not None
    if min(lengths) < layout.nbytes:
        return None
    frames = geometry.order
    if any(frame.index != 0 for frame in frames):
        return None
    raw = np.empty((len(frames), layout.rows, layout.columns), layout.dtype)
    for k, frame in enumerate(frames):
        read_into(frame.obj, memoryview(raw[k]).cast("B"))
        _clear_unused_bits(raw[k], layout.unused_bits)
    return _assemble(list(raw), frames, objects, raw)


def decode_volume(objects: Sequence[DicomDataset], geometry: Geometry) -> np.ndarray:
    """The (z, y, x[, sample]) array of a series in modality units, exactly.

    pydicom's handlers decode every object; values are then stored in the
    smallest dtype that holds them all without loss (int16 for CT in HU).
    Integer rescales are computed one slice at a time so that a 500-slice CT
    never needs a float64 copy of itself.
    """
    decoded: dict[int, np.ndarray] = {}
    raws = []
    for frame in geometry.order:
        if frame.obj not in decoded:
            try:
                fast = _native_frame(objects[frame.obj])
                decoded[frame.obj] = fast if fast is not None else objects[frame.obj].pixel_array
            except Exception as exc:  # any decoder failure: say which object
                raise UndecodableObjectError(frame.obj, exc) from exc
        raws.append(_frame_pixels(decoded[frame.obj], objects[frame.obj], frame.index))
    decoded.clear()
    return _assemble(raws, geometry.order, objects)


def _assemble(
    raws: list[np.ndarray],
    frames: Sequence[Frame],
    objects: Sequence[DicomDataset],
    reuse: np.ndarray | None = None,
) -> np.ndarray:
    """The frames in modality units, stacked in the smallest exact dtype. ``reuse``: the
    array ``raws`` are views of (frame k = ``reuse[k]``), written in place when it already
    has that dtype."""
    dtype = _result_dtype(raws, frames, objects)
    if reuse is not None and reuse.dtype == dtype:
        out = reuse
    else:
        out = np.empty((len(raws), *raws[0].shape), dtype=dtype)
    for k, (raw, frame) in enumerate(zip(raws, frames, strict=True)):
        linear = _integral_linear(raw, frame, objects[frame.obj])
        if linear is not None and linear[0] == 1 and out.dtype.kind in "iu":
            # raw + intercept straight into the result: every value fits its dtype
            np.add(raw, linear[1], out=out[k], dtype=out.dtype, casting="unsafe")
        else:
            out[k] = _modality(raw, frame, objects[frame.obj])
        raws[k] = out[k]  # let the decoded frame go
    return out


def _result_dtype(
    raws: Sequence[np.ndarray], frames: Sequence[Frame], objects: Sequence[DicomDataset]
) -> np.dtype:
    lo, hi = np.inf, -np.inf
    floats: list[np.ndarray] = []
    exact_int = True
    for raw, frame in zip(raws, frames, strict=True):
        ds = objects[frame.obj]
        linear = _integral_linear(raw, frame, ds)
        if linear is not None:
            slope, intercept = linear
            ends = (int(raw.min()) * slope + intercept, int(raw.max()) * slope + intercept)
            lo, hi = min(lo, *ends), max(hi, *ends)
            continue
        values = _modality(raw, frame, ds)
        if values.dtype.kind in "uib" or bool(np.all(np.mod(values, 1) == 0)):
            lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
        else:
            exact_int = False
        floats.append(values)
    if exact_int:
        candidate = _smallest_int(lo, hi)
        if candidate.kind != "f":
            return candidate
    if all(v.dtype == np.float32 or np.array_equal(v.astype(np.float32), v) for v in floats):
        return np.dtype(np.float32)
    return np.dtype(np.float64)
