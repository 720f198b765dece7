"""The steward's preview renders what the researcher sends (hub/airlock_preview.py)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
from PIL import Image

from insitu.hub.airlock import Airlock
from insitu.hub.airlock_preview import MAX_TENSORS, PREVIEW_SIDE, build_preview


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_an_image_is_shown_downscaled_with_its_sniffed_type_and_findings(airlock: Airlock):
    big = (np.random.default_rng(0).random((1200, 900)) * 255).astype(np.uint8)
    request = airlock.submit("ada", _png(big), "figure.png", purpose="a figure")
    preview = airlock.preview_details(request.id)
    assert preview.sniffed == "png" and preview.frames == 1
    shown = Image.open(io.BytesIO(preview.image))
    assert max(shown.size) <= PREVIEW_SIDE  # safe to display, never the full resolution
    assert {c["rule"] for c in preview.findings} == {c["rule"] for c in request.checks}
    text = airlock.preview(request.id)
    assert text.startswith("PNG image 900x1200") and "content: png" in text


def test_a_text_suffix_on_an_image_shows_what_it_is(airlock: Airlock):
    pixels = np.zeros((40, 40), dtype=np.uint8)
    request = airlock.submit("ada", _png(pixels), "notes.txt", purpose="notes")
    preview = airlock.preview_details(request.id)
    assert preview.sniffed == "png" and preview.declared == "text" and preview.image


def test_a_table_head_and_notebook_outputs(airlock: Airlock):
    table = "arm,n\n" + "".join(f"A{i},{30 + i}\n" for i in range(40))
    request = airlock.submit("ada", table.encode(), "counts.csv", purpose="counts")
    preview = airlock.preview_details(request.id)
    assert preview.table[0] == ["arm", "n"] and len(preview.table) == 11
    figure = base64.b64encode(_png(np.full((30, 30), 200, dtype=np.uint8))).decode()
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "source": "x",
                "metadata": {},
                "execution_count": 1,
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": "mean 4.2\n"},
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {"image/png": figure, "text/plain": "<Figure>"},
                    },
                    {"output_type": "error", "ename": "E", "evalue": "boom", "traceback": []},
                ],
            }
        ],
    }
    request = airlock.submit("ada", json.dumps(notebook).encode(), "a.ipynb", purpose="nb")
    preview = airlock.preview_details(request.id)
    assert preview.frames == 1 and preview.image
    assert any("mean 4.2" in o for o in preview.outputs) and any(
        "boom" in o for o in preview.outputs
    )


# --- what the engine extracts: a PDF's embedded images, a weights file's tensors -------


def _pdf_with_image(pixels: np.ndarray) -> bytes:
    import zlib

    from disclosure_corpus import PDF_PAGE, minimal_pdf, pdf_stream

    rows, cols = pixels.shape
    head = (
        f"/Type /XObject /Subtype /Image /Width {cols} /Height {rows} "
        "/ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode"
    )
    content = pdf_stream("", b"q 200 0 0 200 0 0 cm /Im1 Do Q")
    return minimal_pdf([*PDF_PAGE, content, pdf_stream(head, zlib.compress(pixels.tobytes()))])


def _decoded(picture: Any) -> np.ndarray:
    with Image.open(io.BytesIO(picture.png)) as image:
        assert max(image.size) <= PREVIEW_SIDE
        return np.asarray(image)


def test_a_pdfs_embedded_image_is_drawn(airlock: Airlock):
    gradient = np.tile(np.linspace(0, 255, 900).astype(np.uint8), (300, 1))  # dark -> light
    request = airlock.submit("ada", _pdf_with_image(gradient), "fig.pdf", purpose="a figure")
    preview = airlock.preview_details(request.id)
    assert preview.sniffed == "pdf" and len(preview.pictures) == 1 and preview.image
    shown = _decoded(preview.pictures[0])
    assert shown.shape[1] == PREVIEW_SIDE and abs(shown.shape[0] - PREVIEW_SIDE / 3) <= 1
    assert shown[:, :20].mean() < 20 and shown[:, -20:].mean() > 235
    assert "embedded image 300x900" in preview.pictures[0].label
    assert "embedded image" in airlock.preview(request.id)
    assert preview.to_json()["pictures"][0]["image"]


def test_weights_tensors_are_drawn_largest_first_and_bounded():
    rng = np.random.default_rng(1)
    ramp = np.tile(np.arange(64, dtype=np.float32), (32, 1)) * 3.0 - 50  # min-max normalised
    arrays = {f"layer{i}": rng.normal(size=(8 + i, 8)).astype(np.float32) for i in range(12)}
    arrays["big"] = ramp
    arrays["bias"] = np.zeros(8, dtype=np.float32)  # 1-D: not drawn
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    preview = build_preview(buf.getvalue(), declared="weights", findings=[])
    assert len(preview.pictures) == MAX_TENSORS
    first = preview.pictures[0]
    assert first.label.endswith("big.npy: 32x64 float32")
    shown = _decoded(first)
    assert shown.shape == (32, 64) and shown[:, 0].max() == 0 and shown[:, -1].min() == 255
    assert "layer11" in preview.pictures[1].label  # then by size

    from disclosure_corpus import safetensors

    preview = build_preview(safetensors({"w": ramp.T}), declared="weights", findings=[])
    assert [p.label for p in preview.pictures] == ["safetensors/w: 64x32 float32"]
    assert _decoded(preview.pictures[0])[-1].min() == 255


def test_a_large_tensor_is_drawn_downscaled():
    buf = io.BytesIO()
    np.save(buf, np.outer(np.arange(3000), np.ones(1500)).astype(np.float32))
    preview = build_preview(buf.getvalue(), declared="weights", findings=[])
    shown = _decoded(preview.pictures[0])
    assert shown.shape == (PREVIEW_SIDE, PREVIEW_SIDE // 2)


def test_hostile_files_do_not_blow_up_the_preview():
    import struct
    import zipfile

    bomb = io.BytesIO()  # 64 MiB of zeros in a small npz: the engine's ratio limit stops it
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": (4096, 4096)}
        )
        archive.writestr("w.npy", header.getvalue() + bytes(4096 * 4096 * 4))
    preview = build_preview(bomb.getvalue(), declared="weights", findings=[])
    assert preview.pictures == []
    huge = io.BytesIO()  # a header that declares 10^10 values over 16 bytes of data
    np.lib.format.write_array_header_1_0(
        huge, {"descr": "<f8", "fortran_order": False, "shape": (100_000, 100_000)}
    )
    assert (
        build_preview(huge.getvalue() + bytes(16), declared="weights", findings=[]).pictures == []
    )
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [100_000, 100_000], "data_offsets": [0, 40_000_000_000]}}
    ).encode()
    tensors = struct.pack("<Q", len(header)) + header + bytes(64)
    assert build_preview(tensors, declared="weights", findings=[]).pictures == []
    wide = np.zeros((20_000, 20_000), dtype=np.uint8)[:1]  # declared 20000x20000 image
    pdf = _pdf_with_image(wide).replace(b"/Height 1 ", b"/Height 20000 ")
    assert build_preview(pdf, declared="pdf", findings=[]).pictures == []


def test_pixels_drawn_as_pdf_cells_are_drawn_back():
    from disclosure_corpus import vector_lattice

    ramp = np.tile(np.arange(0, 240, 5, dtype=np.uint8), (30, 1))  # 30x48, dark -> light
    preview = build_preview(vector_lattice(ramp), declared="pdf", findings=[])
    assert [p.label.split(": ")[1] for p in preview.pictures] == ["drawn cells 30x48"]
    shown = _decoded(preview.pictures[0])
    assert shown.shape == (30, 48) and shown[:, 0].max() == 0 and shown[:, -1].min() == 255
