"""What a steward sees of a release request before deciding: what the researcher sends.

The preview is built from the stored bytes, never from what the researcher
declared: the sniffed type (magic bytes), every rule's finding, and the
content itself: every frame or page of an image (and every image output of a
notebook) downscaled into one PNG contact sheet of at most ``PREVIEW_SIDE``
pixels a side (the steward works inside the site; the sheet is for deciding,
not for taking away), the head of a table, the text, and a notebook's outputs
(streams, results, errors). What the disclosure engine extracts from a PDF
(its embedded images) or a weights file (the 2-D tensors of npz/npy/pt/
safetensors, at most ``MAX_TENSORS``, the largest first, as greyscale after
min-max normalisation) is drawn the same way, one labelled PNG each
(``Preview.pictures``): the engine's own parse within its limits, never a
second parser. Served only to stewards and admins
(``GET api/releases/<id>/preview``).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PREVIEW_SIDE", "Picture", "Preview", "build_preview"]

PREVIEW_SIDE = 512  # longest side of the contact sheet, in pixels
MAX_FRAMES = 16  # frames, pages and notebook images shown
TABLE_ROWS = 10
TEXT_CHARS = 4000
MAX_OUTPUTS = 40
MAX_TENSORS = 8  # 2-D tensors of a weights file drawn, the largest first


@dataclass
class Picture:
    """One image or tensor the engine found, drawn as a PNG of at most PREVIEW_SIDE a side."""

    label: str  # where it was found; a tensor's shape and dtype
    png: bytes


@dataclass
class Preview:
    """The steward's view of one output."""

    sniffed: str  # the content's type by magic bytes
    declared: str  # the kind its suffix claims
    findings: list[dict[str, str]]  # every rule's outcome, as stored at submission
    text: str = ""  # the start of a text, JSON or table output
    table: list[list[str]] = field(default_factory=list)  # header and first rows
    outputs: list[str] = field(default_factory=list)  # a notebook's outputs, as text
    frames: int = 0  # images in the contact sheet
    size: str = ""  # the first image's width x height (mode)
    image: bytes | None = None  # PNG contact sheet, downscaled
    pictures: list[Picture] = field(default_factory=list)  # PDF images, weights tensors

    def summary(self) -> str:
        """The preview as plain text (CLI, the widget's text pane): the content first."""
        lines: list[str] = []
        if self.frames and not self.pictures:
            lines.append(
                f"{self.sniffed.upper()} image {self.size}, {self.frames} frame(s) or "
                "embedded image(s), shown downscaled"
            )
        if self.pictures:
            lines.append(f"{len(self.pictures)} picture(s), shown downscaled:")
            lines.extend(f"  {picture.label}" for picture in self.pictures)
        if self.text and not self.outputs:
            lines.append(self.text)
        if self.outputs:
            lines.append(f"notebook outputs ({len(self.outputs)}):")
            lines.extend("  " + out.replace("\n", "\n  ") for out in self.outputs)
        lines.append(f"--\ncontent: {self.sniffed} (declared {self.declared}); findings:")
        for check in self.findings:
            lines.append(
                f"  {check.get('status', '?'):6} {check.get('rule')}: {check.get('summary')}"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["image"] = base64.b64encode(self.image).decode() if self.image else None
        data["pictures"] = [
            {"label": p.label, "image": base64.b64encode(p.png).decode()} for p in self.pictures
        ]
        data["summary"] = self.summary()
        return data


def _frames_of(data: bytes) -> list[Any]:
    """Every frame of a raster image (PIL), as RGB or L images."""
    from PIL import Image, ImageSequence

    frames = []
    with Image.open(io.BytesIO(data)) as image:
        for frame in ImageSequence.Iterator(image):
            frames.append(_displayable(frame.copy()))
            if len(frames) >= MAX_FRAMES:
                break
    return frames


def _displayable(image: Any) -> Any:
    """8-bit L or RGB, whatever the mode (16-bit and float scaled to their range)."""
    import numpy as np
    from PIL import Image

    if image.mode in ("RGB", "L"):
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        lo, hi = float(pixels.min()), float(pixels.max())
        scaled = (pixels - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(pixels)
        return Image.fromarray(scaled.astype(np.uint8), mode="L")
    return image.convert("RGB")


def contact_sheet(frames: list[Any], side: int = PREVIEW_SIDE) -> bytes:
    """One PNG tiling every frame, each downscaled to fit its cell (never upscaled)."""
    from PIL import Image

    if len(frames) == 1:  # one image: itself, downscaled to fit
        thumb = frames[0].copy()
        thumb.thumbnail((side, side))
        buf = io.BytesIO()
        thumb.save(buf, format="PNG")
        return buf.getvalue()
    columns = max(1, int(len(frames) ** 0.5 + 0.999))
    rows = (len(frames) + columns - 1) // columns
    cell = side // columns
    sheet = Image.new("RGB", (cell * columns, cell * rows), (255, 255, 255))
    for i, frame in enumerate(frames):
        thumb = frame.convert("RGB")
        thumb.thumbnail((cell - 2, cell - 2))
        sheet.paste(thumb, ((i % columns) * cell + 1, (i // columns) * cell + 1))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def _png(image: Any, side: int = PREVIEW_SIDE) -> bytes:
    thumb = image.copy()
    thumb.thumbnail((side, side))
    buf = io.BytesIO()
    thumb.save(buf, format="PNG")
    return buf.getvalue()


def _greyscale(array: Any) -> Any:
    """A 2-D array as an 8-bit grey image after min-max normalisation (NaN/inf as 0),
    subsampled first to a few times the preview's side (never a huge float copy)."""
    import numpy as np
    from PIL import Image

    step = max(1, -(-max(array.shape) // (4 * PREVIEW_SIDE)))  # one step: same aspect
    values = np.asarray(array[::step, ::step])
    values = np.abs(values) if values.dtype.kind == "c" else values
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    values = np.where(finite, values, 0.0)
    lo, hi = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0, 0)
    scaled = (values - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(values)
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def _frame_image(array: Any) -> Any:
    """A decoded image frame (rows x columns [x channels]) as an L or RGB image."""
    import numpy as np
    from PIL import Image

    if array.ndim == 3 and array.shape[-1] in (3, 4) and array.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(array[..., :3]), mode="RGB")
    if array.ndim == 3:
        array = array[..., 0]
    if array.ndim == 2 and array.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(array), mode="L")
    return _greyscale(array)


def _extracted(data: bytes, sniffed: str, declared: str, preview: Preview) -> list[Any]:
    """Pictures of what the engine extracts: a PDF's images, a weights file's largest
    2-D tensors (each also a frame of the contact sheet)."""
    from insitu.disclosure import DisclosureContext
    from insitu.disclosure.engine import extract_arrays

    kind = sniffed
    if sniffed == "zip" and declared == "weights":  # a torch.save archive has its pickle
        kind = "torch" if b"/data.pkl" in data else "npz"
    found = extract_arrays(data, kind=kind, ctx=DisclosureContext())
    frames: list[Any] = []
    if sniffed == "pdf":
        for item in found:
            if item.image and item.array.ndim in (2, 3) and len(frames) < MAX_FRAMES:
                frame = _frame_image(item.array)
                frames.append(frame)
                shape = "x".join(map(str, item.array.shape))
                what = "drawn cells" if item.where.endswith("vector cells") else "embedded image"
                label = f"{item.where}: {what} {shape}"
                preview.pictures.append(Picture(label, _png(frame)))
        return frames
    tensors = [
        item
        for item in found
        if item.array.ndim == 2 and min(item.array.shape) >= 2 and item.array.dtype.kind in "biufc"
    ]
    tensors.sort(key=lambda item: -item.array.size)
    for item in tensors[:MAX_TENSORS]:
        shape = "x".join(map(str, item.array.shape))
        label = f"{item.where}: {shape} {item.array.dtype}"
        frame = _greyscale(item.array)
        frames.append(frame)
        preview.pictures.append(Picture(label, _png(frame)))
    return frames


def _notebook(data: bytes, preview: Preview) -> list[Any]:
    """Text of every output of every cell; the images among them as frames."""
    from PIL import Image

    frames: list[Any] = []
    try:
        cells = json.loads(data).get("cells", [])
    except (ValueError, AttributeError):
        preview.text = "not a readable notebook"
        return frames
    for cell in cells if isinstance(cells, list) else []:
        for output in cell.get("outputs", []) if isinstance(cell, dict) else []:
            if not isinstance(output, dict) or len(preview.outputs) >= MAX_OUTPUTS:
                continue
            kind = output.get("output_type", "")
            if kind == "stream":
                preview.outputs.append(_join(output.get("text", ""))[:TEXT_CHARS])
            elif kind == "error":
                trace = "\n".join(_join(t) for t in output.get("traceback", []))
                preview.outputs.append(
                    f"{output.get('ename')}: {output.get('evalue')}\n{trace}"[:TEXT_CHARS]
                )
            elif kind in ("execute_result", "display_data"):
                bundle = output.get("data", {}) if isinstance(output.get("data"), dict) else {}
                if "text/plain" in bundle:
                    preview.outputs.append(_join(bundle["text/plain"])[:TEXT_CHARS])
                for mime in ("image/png", "image/jpeg", "image/gif"):
                    if mime in bundle and len(frames) < MAX_FRAMES:
                        try:
                            raw = base64.b64decode(_join(bundle[mime]))
                            with Image.open(io.BytesIO(raw)) as image:
                                frames.append(_displayable(image.copy()))
                        except (ValueError, OSError):
                            preview.outputs.append(f"[{mime} output that does not decode]")
    return frames


def _join(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def build_preview(data: bytes, *, declared: str, findings: list[dict[str, str]]) -> Preview:
    """The steward's preview of an output's bytes."""
    from insitu.disclosure.sniff import sniff

    sniffed = sniff(data)
    preview = Preview(sniffed=sniffed, declared=declared, findings=list(findings))
    frames: list[Any] = []
    if sniffed in ("png", "jpeg", "gif", "tiff", "bmp", "webp"):
        try:
            frames = _frames_of(data)
            from PIL import Image

            with Image.open(io.BytesIO(data)) as first:
                preview.size = f"{first.size[0]}x{first.size[1]} ({first.mode})"
        except (OSError, ValueError) as exc:
            preview.text = f"the image does not decode ({type(exc).__name__})"
    elif sniffed == "text":
        text = data.decode("utf-8", errors="replace")
        if declared == "notebook" or (text.lstrip().startswith("{") and '"cells"' in text[:4096]):
            frames = _notebook(data, preview)
        else:
            preview.text = text[:TEXT_CHARS] + (
                "\n... (truncated)" if len(text) > TEXT_CHARS else ""
            )
            if declared == "table":
                rows = csv.reader(io.StringIO(text[: 64 * 1024]))
                preview.table = [
                    row[:20] for _, row in zip(range(TABLE_ROWS + 1), rows, strict=False)
                ]
    else:
        preview.text = f"{sniffed} content of {len(data)} bytes (its findings are listed above)"
        if sniffed in ("pdf", "zip", "npy", "safetensors"):
            frames = _extracted(data, sniffed, declared, preview)
    if frames:
        preview.frames = len(frames)
        preview.image = contact_sheet(frames)
    return preview
