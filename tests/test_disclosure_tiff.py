"""TIFF accounted for byte by byte (insitu.disclosure.formats.tiff): a figure saved as TIFF
can pass; bytes between pages, after the last page or in a private tag cannot."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from insitu.disclosure import DisclosureContext, SiteIdentifiers, Verdict, check_file

PAYLOAD = bytes(range(256)) * 8  # 2 KiB a researcher wants out


@pytest.fixture(scope="module")
def ctx() -> DisclosureContext:
    return DisclosureContext(identifiers=SiteIdentifiers(slice_shapes=frozenset({(48, 40)})))


def _figure(seed: int) -> np.ndarray:
    """A small colour bar chart (not the size of any slice)."""
    out = np.full((90, 120, 3), 255, np.uint8)
    heights = np.random.default_rng(seed).integers(20, 80, 6)
    for i, h in enumerate(heights):
        out[90 - h :, 10 + 18 * i : 22 + 18 * i] = (40, 90, 200)
    return out


def _pillow_tiff(*pages: np.ndarray, **options: object) -> bytes:
    buf = io.BytesIO()
    images = [Image.fromarray(p) for p in pages]
    images[0].save(buf, format="TIFF", save_all=True, append_images=images[1:], **options)
    return buf.getvalue()


def _page_ifd(strip: int, nbytes: int, next_ifd: int, extra: list[tuple] | None = None) -> bytes:
    """An IFD of a 90x120 RGB page stored as one uncompressed strip (little-endian)."""
    entries = [
        (256, 3, 1, 120), (257, 3, 1, 90), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 2),
        (273, 4, 1, strip), (277, 3, 1, 3), (278, 3, 1, 90), (279, 4, 1, nbytes),
        *(extra or []),
    ]  # fmt: skip
    entries.sort()
    body = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
        body += struct.pack("<HHI", tag, kind, count) + packed
    return body + struct.pack("<I", next_ifd)


def _hand_tiff(pages: list[np.ndarray], gap: bytes = b"", private: bytes = b"") -> bytes:
    """Two pages laid out by hand: [header][strip 1][IFD 1][gap][strip 2][IFD 2][private]."""
    out = bytearray(b"II*\0" + struct.pack("<I", 0))
    ifd_at: list[int] = []
    n_entries = [9, 9 + (1 if private else 0)]
    for k, page in enumerate(pages):
        if k == 1:
            out += gap
        strip = len(out)
        out += page.tobytes()
        ifd_at.append(len(out))
        out += b"\0" * (2 + 12 * n_entries[k] + 4)  # filled below
    private_at = len(out)
    out += private
    for k, page in enumerate(pages):
        strip = ifd_at[k] - page.nbytes
        nxt = ifd_at[k + 1] if k + 1 < len(pages) else 0
        extra = [(65000, 7, len(private), private_at)] if private and k == 1 else None
        ifd = _page_ifd(strip, page.nbytes, nxt, extra)
        out[ifd_at[k] : ifd_at[k] + len(ifd)] = ifd
    out[4:8] = struct.pack("<I", ifd_at[0])
    return bytes(out)


def _verdicts(data: bytes, ctx: DisclosureContext) -> dict[str, Verdict]:
    return check_file(data, name="figure.tif", ctx=ctx).by_rule()


def test_a_figure_saved_as_tiff_can_pass(ctx) -> None:
    for data in (
        _pillow_tiff(_figure(1)),
        _pillow_tiff(_figure(1), _figure(2)),  # two pages
        _pillow_tiff(_figure(3), compression="tiff_lzw"),
        _hand_tiff([_figure(4), _figure(5)]),
    ):
        report = check_file(data, name="figure.tif", ctx=ctx)
        assert report.verdict is Verdict.PASS, report.findings


def test_bytes_between_pages_fail_as_hidden_data(ctx) -> None:
    verdicts = _verdicts(_hand_tiff([_figure(4), _figure(5)], gap=PAYLOAD), ctx)
    assert verdicts["hidden-data"] is Verdict.FAIL


def test_bytes_after_the_last_page_fail(ctx) -> None:
    tail = _pillow_tiff(_figure(1), _figure(2)) + PAYLOAD
    assert _verdicts(tail, ctx)["hidden-data"] is Verdict.FAIL
    # zeros then a payload (not alignment: alignment is a few zeros only)
    padded = _pillow_tiff(_figure(1)) + b"\0" * 8 + b"II*\0" + PAYLOAD[:4]
    assert _verdicts(padded, ctx)["hidden-data"] is Verdict.FAIL


def test_a_private_tag_carrying_bytes_needs_a_person(ctx) -> None:
    verdicts = _verdicts(_hand_tiff([_figure(4), _figure(5)], private=PAYLOAD), ctx)
    assert verdicts["not-understood"] is Verdict.REVIEW
    assert "hidden-data" not in verdicts or verdicts["hidden-data"] is Verdict.PASS


def test_offsets_outside_the_file_are_malformed(ctx) -> None:
    data = bytearray(_hand_tiff([_figure(4), _figure(5)]))
    data[4:8] = struct.pack("<I", len(data) + 100)
    assert _verdicts(bytes(data), ctx)["malformed"] is Verdict.FAIL
