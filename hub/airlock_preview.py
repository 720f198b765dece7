"""What a steward sees of a release request before deciding: what the researcher sends.

The preview is built from the stored bytes, never from what the researcher
declared: the sniffed type (magic bytes), every rule's finding, and the
content itself: every frame or page of an image (and every image output of a
notebook) downscaled into one PNG contact sheet of at most ``PREVIEW_SIDE``
pixels a side (the steward works inside the site; the sheet is for deciding,
not for taking away), the head of a table, the text, and a notebook's outputs
(streams, results, errors). Served only to stewards and admins
(``GET api/releases/<id>/preview``).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PREVIEW_SIDE", "Preview", "build_preview"]

PREVIEW_SIDE = 512  # longest side of the contact sheet, in pixels
MAX_FRAMES = 16  # frames, pages and notebook images shown
TABLE_ROWS = 10
TEXT_CHARS = 4000
MAX_OUTPUTS = 40


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

    def summary(self) -> str:
        """The preview as plain text (CLI, the widget's text pane): the content first."""
        lines: list[str] = []
        if self.frames:
            lines.append(
                f"{self.sniffed.upper()} image {self.size}, {self.frames} frame(s) or "
                "embedded image(s), shown downscaled"
            )
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
    if frames:
        preview.frames = len(frames)
        preview.image = contact_sheet(frames)
    return preview
