"""The steward's preview renders what the researcher sends (hub/airlock_preview.py)."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image

from insitu.hub.airlock import Airlock
from insitu.hub.airlock_preview import PREVIEW_SIDE


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
