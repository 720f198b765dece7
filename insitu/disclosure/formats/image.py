"""Pixels of every frame/page of an image, decoded (Pillow) within the pixel limit.

Every frame goes through the grid rules as a whole and channel by channel.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np

from insitu.disclosure._types import Verdict
from insitu.disclosure.arrays import scan_array
from insitu.disclosure.scan import Scan, join

__all__ = ["exif_text", "scan_frames"]

_SINGLE_CHANNEL = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P")
_PRINTABLE = re.compile(rb"[\x20-\x7e]{4,}")
_MAX_FRAMES = 10_000


def exif_text(body: bytes) -> str:
    """The printable runs of an Exif block (descriptions, dates, software names)."""
    return "\n".join(m.decode("ascii") for m in _PRINTABLE.findall(body))


def _array(frame: object) -> np.ndarray:
    from PIL import Image

    assert isinstance(frame, Image.Image)
    if frame.mode == "P":
        frame = frame.convert("RGBA" if "transparency" in frame.info else "RGB")
    elif frame.mode == "1":
        frame = frame.convert("L")
    elif frame.mode not in ("L", "LA", "RGB", "RGBA", "I", "I;16", "F", "CMYK", "YCbCr"):
        frame = frame.convert("RGBA")
    return np.asarray(frame)


def scan_frames(scan: Scan, data: bytes, place: str) -> None:
    """Decode every frame and run the grid rules on it."""
    from PIL import Image, UnidentifiedImageError

    limit = scan.ctx.limits.max_image_pixels
    pixels = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                frames = int(getattr(img, "n_frames", 1))
                if frames > _MAX_FRAMES:
                    raise scan.stop("unpack-limits", f"{frames} frames", place)
                for number in range(frames):
                    img.seek(number)
                    width, height = img.size
                    pixels += width * height
                    if pixels > limit:
                        raise scan.stop(
                            "unpack-limits",
                            f"more than {limit} pixels in all frames (disclosure.max_image_pixels)",
                            place,
                        )
                    where = join(place, f"frame {number + 1}") if frames > 1 else place
                    scan.unpacked(width * height * 4, where)
                    mode = img.mode
                    array = _array(img)
                    scan_array(scan, array, where, count=False, image=True)
                    if mode in _SINGLE_CHANNEL and min(width, height) >= 64:
                        scan.add(
                            "image-resolution",
                            Verdict.REVIEW,
                            f"a {width}x{height} single-channel ({mode}) image looks like a "
                            "pixel dump rather than a figure: the steward should confirm it is "
                            "not from a series",
                            where,
                        )
    except (UnidentifiedImageError, OSError, ValueError, EOFError, SyntaxError) as exc:
        raise scan.stop("malformed", f"the image cannot be decoded: {exc}", place) from None
    except Image.DecompressionBombWarning as exc:
        raise scan.stop("unpack-limits", f"a decompression bomb: {exc}", place) from None
