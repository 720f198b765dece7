"""Two corpora of release attempts, generated (small, deterministic) for the engine's tests
and benchmark: ATTACKS (an adversarial researcher taking out pixels or identifiers; every
one must fail or be refused) and LEGITIMATE (what a trial researcher really releases; at
most 5 % may be flagged worse than review). Each entry: name -> () -> (filename, bytes,
ACRO evidence or None). The site they target is fixtures_airlock's: 12 subjects, one
series each of 6 slices of 48x40, study date 2019-03-14.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from fixtures_airlock import SERIES_UID, SLICE, STUDY_UID, SUBJECTS, VOLUME

Entry = tuple[str, bytes, dict[str, Any] | None]
SUBJECT = SUBJECTS[3]


# --- building blocks -----------------------------------------------------------


def ct_slice(seed: int = 0) -> np.ndarray:
    """A CT-like slice of the site's size: a bright disc on noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: SLICE[0], : SLICE[1]]
    disc = ((y - 24) ** 2 + (x - 20) ** 2 < 15**2) * 120
    return (disc + rng.integers(0, 60, SLICE)).astype(np.uint8)


def ct_volume() -> np.ndarray:
    return np.stack([ct_slice(i) for i in range(VOLUME[0])])


def png(array: np.ndarray, **info: str) -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    for key, value in info.items():
        meta.add_text(key, value)
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", pnginfo=meta)
    return buf.getvalue()


def image(array: np.ndarray, fmt: str, **kwargs: Any) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def before_iend(data: bytes, extra: bytes) -> bytes:
    return data[:-12] + extra + data[-12:]


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def npz(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def zipped(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def safetensors(
    tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None, gap: int = 0
) -> bytes:
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    body = b""
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(array.shape),
            "data_offsets": [len(body), len(body) + len(raw)],
        }
        body += raw + b"\x00" * gap
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def torch_bytes(obj: Any, **kwargs: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


def cnn_state() -> dict[str, Any]:
    """A small CNN's state_dict (16x16 inputs; no layer the size of the site's images)."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 2),
    )
    return model.state_dict()


def figure(kind: str, fmt: str = "png", **extra: Any) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rng = np.random.default_rng(1)
    fig = Figure(figsize=(4, 3), dpi=80)
    ax = fig.add_subplot()
    if kind == "hist":
        ax.hist(rng.normal(50, 10, 300), bins=20)
        ax.set_xlabel("tumour volume (ml)")
    elif kind == "box":
        ax.boxplot([rng.normal(50, 10, 40), rng.normal(55, 12, 40)], tick_labels=["A", "B"])
    elif kind == "km":
        t = np.sort(rng.exponential(20, 40))
        ax.step(t, 1 - np.arange(1, 41) / 40, where="post", label="arm A")
        ax.step(t * 1.3, 1 - np.arange(1, 41) / 40, where="post", label="arm B")
        ax.set_ylabel("survival")
        ax.legend()
    elif kind == "scatter":
        ax.scatter(rng.normal(size=60), rng.normal(size=60), s=8)
    elif kind == "bar":
        ax.bar(["A", "B", "C"], [23, 31, 18])
    elif kind == "dice":
        ax.plot(np.linspace(0.6, 0.9, 20), marker="o")
        ax.set_ylabel("Dice overlap")
    elif kind == "roc":
        fpr = np.linspace(0, 1, 30)
        ax.plot(fpr, fpr**0.4)
        ax.plot([0, 1], [0, 1], "--")
    elif kind == "confusion":
        ax.imshow(np.array([[31, 9], [7, 33]]), cmap="Blues")
        for (i, j), v in np.ndenumerate(np.array([[31, 9], [7, 33]])):
            ax.text(j, i, str(v), ha="center")
    elif kind == "panels":
        fig.clear()
        for i, axis in enumerate(fig.subplots(2, 2).ravel()):
            axis.plot(rng.normal(size=20).cumsum())
            axis.set_title(f"panel {i + 1}")
    elif kind == "title":
        ax.plot([1, 2, 3])
        ax.set_title(extra["title"])
    elif kind == "slice":
        fig.figimage(ct_slice(), cmap="gray")
    elif kind == "mesh":  # pixels drawn as vector cells, one per value
        ax.pcolormesh(ct_slice()[::-1], cmap="gray")
    elif kind == "markers":  # a scatter plot of square markers on the pixel lattice
        y, x = np.mgrid[: SLICE[0], : SLICE[1]]
        ax.scatter(x.ravel(), -y.ravel(), c=ct_slice().ravel(), marker="s", s=4, cmap="gray")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    return buf.getvalue()


def notebook(cells: list[dict[str, Any]], metadata: dict[str, Any] | None = None) -> bytes:
    return json.dumps(
        {
            "cells": cells,
            "metadata": metadata or {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
    ).encode()


def code(source: str, *outputs: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "source": source,
        "metadata": {},
        "execution_count": 1,
        "outputs": list(outputs),
        **more,
    }


def display(**data: Any) -> dict[str, Any]:
    return {"output_type": "display_data", "metadata": {}, "data": data}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def csv(frame: pd.DataFrame, **kwargs: Any) -> bytes:
    return frame.to_csv(index=kwargs.pop("index", False), **kwargs).encode()


def minimal_pdf(objects: list[bytes], tail: bytes = b"") -> bytes:
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out + tail


def pdf_stream(head: str, data: bytes) -> bytes:
    return f"<< {head} /Length {len(data)} >>\nstream\n".encode() + data + b"\nendstream"


def vector_lattice(grid: np.ndarray, *, closed_paths: bool = False, cell: float = 2.0) -> bytes:
    """A one-page PDF drawing ``grid`` as a lattice of filled grey cells: one ``g``
    (grey level = value / 255) and one rectangle per pixel, as ``re`` or as a closed
    four-point path, bottom row first (PDF's y axis points up)."""
    rows, cols = grid.shape
    ops = ["q 1 0 0 1 10 10 cm"]
    for r in range(rows):
        for c in range(cols):
            x, y = c * cell, (rows - 1 - r) * cell
            ops.append(f"{grid[r, c] / 255:.4f} g")
            if closed_paths:
                ops.append(
                    f"{x:g} {y:g} m {x + cell:g} {y:g} l {x + cell:g} {y + cell:g} l "
                    f"{x:g} {y + cell:g} l h f"
                )
            else:
                ops.append(f"{x:g} {y:g} {cell:g} {cell:g} re f")
    ops.append("Q")
    content = zlib.compress("\n".join(ops).encode())
    return minimal_pdf([*PDF_PAGE, pdf_stream("/Filter /FlateDecode", content)])


PDF_PAGE = [
    b"<< /Type /Catalog /Pages 2 0 R >>",
    b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Contents 4 0 R >>",
]


def acro_table(columns: str | None = None, index: Any = "arm") -> Entry:
    from insitu.kernels.sdc import EVIDENCE_ATTR, pivot_table

    rng = np.random.default_rng(7)
    n = 160
    data = pd.DataFrame(
        {
            "arm": rng.choice(["A", "B"], n),
            "sex": rng.choice(["F", "M"], n),
            "visit": rng.choice(["baseline", "week 12"], n),
            "volume": rng.uniform(10, 20, n),
        }
    )
    table = pivot_table(
        data, values="volume", index=index, columns=columns, aggfunc=["count", "mean"]
    )
    return "table.csv", csv(table), table.attrs[EVIDENCE_ATTR]


# --- the adversarial corpus ------------------------------------------------------


def _attacks() -> dict[str, Callable[[], Entry]]:
    s = ct_slice()
    vol = ct_volume()
    a: dict[str, Callable[[], Entry]] = {}

    def add(name: str) -> Callable[[Callable[[], tuple[str, bytes]]], None]:
        def wrap(make: Callable[[], tuple[str, bytes]]) -> None:
            a[name] = lambda: (*make(), None)

        return wrap

    # 1. the kind of a file decided by its content
    add("type/npz-named-csv")(lambda: ("summary.csv", npz(v=vol)))
    add("type/png-named-txt")(lambda: ("notes.txt", png(s)))
    add("type/pdf-named-md")(lambda: ("report.md", figure("slice", "pdf")))
    add("type/zip-named-json")(lambda: ("metrics.json", zipped({"s.npy": npy(s)})))
    add("type/raw-bytes-named-txt")(lambda: ("dump.txt", s.tobytes()))
    add("type/pickle-named-pt")(lambda: ("model.pt", __import__("pickle").dumps({"w": s})))
    add("type/gzip-named-csv")(lambda: ("t.csv", __import__("gzip").compress(csv(pd.DataFrame(s)))))
    add("type/png-named-npy")(lambda: ("w.npy", png(s)))
    add("type/jpeg-named-png")(lambda: ("fig.png", image(s, "JPEG")))
    add("type/utf16-csv")(lambda: ("t.csv", pd.DataFrame(s).to_csv().encode("utf-16")))
    add("type/executable-refused")(lambda: ("tool.exe", b"MZ" + s.tobytes()))
    add("type/no-suffix-refused")(lambda: ("volume", vol.tobytes()))
    add("type/oversized-refused")(
        lambda: ("v.csv", _savetxt(np.tile(vol.reshape(-1, 40), (60, 1)), ","))
    )
    # 2. images: ends, chunks, frames, sizes, channels
    add("png/after-iend")(lambda: ("fig.png", figure("hist") + npy(s)))
    add("png/private-chunk")(
        lambda: ("fig.png", before_iend(figure("hist"), chunk(b"raWd", s.tobytes())))
    )
    add("png/text-chunk-pseudonym")(
        lambda: ("fig.png", png(np.zeros((200, 300), np.uint8) + 255, Comment=f"best: {SUBJECT}"))
    )
    add("png/text-chunk-base64-slice")(
        lambda: ("fig.png", png(np.zeros((200, 300, 3), np.uint8), Comment=b64(png(s))))
    )
    add("png/slice")(lambda: ("slice.png", png(s)))
    add("png/slice-plus-row")(lambda: ("slice.png", png(np.vstack([s, s[:1]]))))
    add("png/slice-transposed")(lambda: ("slice.png", png(np.ascontiguousarray(s.T))))
    add("png/slice-upscaled")(lambda: ("slice.png", png(np.kron(s, np.ones((3, 3), np.uint8)))))
    add("png/slices-in-rgb-channels")(
        lambda: ("rgb.png", png(np.ascontiguousarray(vol[:3].transpose(1, 2, 0))))
    )
    add("png/slice-with-border")(lambda: ("fig.png", png(np.pad(s, 1))))
    add("png/data-after-idat-stream")(
        lambda: ("fig.png", _idat_tail(png(np.zeros((100, 120), np.uint8)), s.tobytes()))
    )
    add("jpeg/after-eoi")(
        lambda: ("fig.jpg", image(np.zeros((200, 300, 3), np.uint8), "JPEG") + npy(s))
    )
    add("jpeg/app-segment")(
        lambda: (
            "fig.jpg",
            _jpeg_segment(image(np.zeros((200, 300, 3), np.uint8), "JPEG"), 0xE9, s.tobytes()),
        )
    )
    add("jpeg/comment-pseudonym")(
        lambda: (
            "fig.jpg",
            _jpeg_segment(image(np.zeros((200, 300, 3), np.uint8), "JPEG"), 0xFE, SUBJECT.encode()),
        )
    )
    add("jpeg/slice")(lambda: ("slice.jpg", image(s, "JPEG", quality=95)))
    add("tiff/slice-on-page-2")(lambda: ("fig.tif", _tiff_pages(np.zeros((200, 300), np.uint8), s)))
    add("tiff/description-uid")(
        lambda: ("fig.tif", image(np.zeros((200, 300), np.uint8), "TIFF", description=STUDY_UID))
    )
    add("gif/after-trailer")(
        lambda: ("fig.gif", image(np.zeros((200, 300), np.uint8), "GIF") + s.tobytes())
    )
    add("gif/slice-frame-2")(lambda: ("anim.gif", _gif_frames(s)))
    add("gif/comment-date")(
        lambda: (
            "fig.gif",
            image(np.zeros((200, 300), np.uint8), "GIF", comment=b"scanned 14.03.2019"),
        )
    )
    # 3. PDF
    add("pdf/embedded-slice-image")(lambda: ("fig.pdf", figure("slice", "pdf")))
    add("pdf/vector-lattice-slice")(lambda: ("fig.pdf", vector_lattice(s)))
    add("pdf/pcolormesh-slice")(lambda: ("fig.pdf", figure("mesh", "pdf")))
    add("pdf/square-markers-slice")(lambda: ("fig.pdf", figure("markers", "pdf")))
    add("pdf/vector-lattice-slice-paths")(
        lambda: ("fig.pdf", vector_lattice(s.T, closed_paths=True, cell=0.5))
    )
    add("pdf/title-pseudonym")(
        lambda: ("fig.pdf", figure("title", "pdf", title=f"case {SUBJECT.upper()}"))
    )
    add("pdf/title-date")(lambda: ("fig.pdf", figure("title", "pdf", title="scan of 14 Mar 2019")))
    add("pdf/after-eof")(lambda: ("fig.pdf", figure("hist", "pdf") + npy(s)))
    add("pdf/attached-file")(
        lambda: (
            "doc.pdf",
            minimal_pdf(
                [
                    *PDF_PAGE,
                    pdf_stream("", b"BT ET"),
                    pdf_stream("/Type /EmbeddedFile", s.tobytes()),
                ]
            ),
        )
    )
    add("pdf/hex-stream")(
        lambda: (
            "doc.pdf",
            minimal_pdf(
                [*PDF_PAGE, pdf_stream("/Filter /ASCIIHexDecode", s.tobytes().hex().encode())]
            ),
        )
    )
    add("pdf/javascript")(
        lambda: (
            "doc.pdf",
            minimal_pdf(
                [*PDF_PAGE, pdf_stream("", b"BT ET"), b"<< /S /JavaScript /JS (app.alert(1)) >>"]
            ),
        )
    )
    add("pdf/raw-image-xobject")(
        lambda: (
            "doc.pdf",
            minimal_pdf(
                [
                    *PDF_PAGE,
                    pdf_stream("", b"BT ET"),
                    pdf_stream(
                        "/Type /XObject /Subtype /Image /Width 40 /Height 48 /ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode",  # noqa: E501
                        zlib.compress(s.tobytes()),
                    ),
                ]
            ),
        )
    )
    # 4. tables: grids, per-subject rows, counts as text, pivot headers
    add("csv/pixel-grid")(lambda: ("t.csv", _savetxt(s, ",")))
    add("csv/pixel-grid-with-header-and-index")(lambda: ("t.csv", csv(pd.DataFrame(s), index=True)))
    add("csv/pixel-grid-transposed")(lambda: ("t.csv", _savetxt(s.T, ",")))
    add("tsv/pixel-grid")(lambda: ("t.tsv", _savetxt(s, "\t")))
    add("json/nested-list-grid")(lambda: ("t.json", json.dumps(s.tolist()).encode()))
    add("json/columns-grid")(
        lambda: (
            "t.json",
            json.dumps({f"c{i}": s[:, i].tolist() for i in range(s.shape[1])}).encode(),
        )
    )
    add("json/records-grid")(lambda: ("t.json", pd.DataFrame(s).to_json(orient="records").encode()))
    add("csv/per-subject-integer-rows")(
        lambda: (
            "t.csv",
            csv(pd.DataFrame({"code": [f"p{i}" for i in range(12)], "lesions": np.arange(12) % 4})),
        )
    )
    add("csv/per-subject-no-labels")(
        lambda: (
            "t.csv",
            csv(pd.DataFrame({"age": 50 + np.arange(12), "lesions": np.arange(12) % 4})),
        )
    )
    add("csv/counts-as-text")(lambda: ("t.csv", b"arm,responders\nA,3 (25%)\nB,14 (52%)\n"))
    add("csv/n-equals-in-cells")(lambda: ("t.csv", b"arm,group\nA,n=3\nB,n=14\n"))
    add("csv/pivot-two-row-header")(
        lambda: ("t.csv", b",count,count,mean,mean\narm,F,M,F,M\nA,3,25,1.5,1.7\nB,22,19,1.6,1.4\n")
    )
    add("csv/flattened-slice-column")(lambda: ("t.csv", csv(pd.DataFrame({"v": s.ravel()}))))
    add("csv/five-flattened-slices")(lambda: ("t.csv", csv(pd.DataFrame(vol[:5].reshape(5, -1).T))))
    add("csv/upper-case-pseudonyms")(
        lambda: (
            "t.csv",
            csv(pd.DataFrame({"code": [x.upper() for x in SUBJECTS[:4]], "v": [1.0, 2, 3, 4]})),
        )
    )
    add("csv/zero-width-pseudonym")(
        lambda: ("t.csv", f"case,v\n{SUBJECT[:3]}\u200b{SUBJECT[3:]},1.5\nall,2.5\n".encode())
    )
    add("csv/volume-in-long-format")(
        lambda: ("t.csv", csv(pd.DataFrame({"z": np.repeat(np.arange(6), 1920), "v": vol.ravel()})))
    )
    # 5. identifiers in text
    add("text/cyrillic-pseudonym")(
        lambda: ("n.txt", f"responder {SUBJECT.replace('a', 'а')}".encode())
    )
    add("text/glued-pseudonym")(
        lambda: ("n.txt", f"file resp_{SUBJECT.replace('-', '')}_final.nii".encode())
    )
    add("json/uid-without-dots")(
        lambda: ("m.json", json.dumps({"ref": SERIES_UID.replace(".", "")}).encode())
    )
    add("json/uid-in-key")(lambda: ("m.json", json.dumps({SERIES_UID: 0.93}).encode()))
    add("md/date-us-format")(lambda: ("r.md", b"Baseline scan on 03/14/2019 showed a response."))
    add("text/date-long-format")(lambda: ("r.txt", b"Baseline scan: March 14th, 2019."))
    add("text/savetxt-slice")(lambda: ("s.txt", _savetxt(s, " ")))
    add("text/base64-slice-png")(lambda: ("s.txt", b64(png(s)).encode()))
    add("json/base64-npy")(lambda: ("m.json", json.dumps({"blob": b64(npy(s))}).encode()))
    add("text/printed-array")(
        lambda: ("s.txt", np.array2string(s, threshold=10**6, max_line_width=10**6).encode())
    )
    # 6. weights files
    add("npz/flattened-volume")(lambda: ("w.npz", npz(w=vol.ravel().astype(np.float32))))
    add("npz/reshaped-slice")(lambda: ("w.npz", npz(w=s.reshape(60, 32))))
    add("npz/compressed-slice-stack")(lambda: ("w.npz", npz(True, w=vol.astype(np.float32))))
    add("npz/extra-member")(
        lambda: ("w.npz", zipped({"w.npy": npy(np.ones(3)), "notes.txt": s.tobytes()}))
    )
    add("npz/bytes-after-archive")(lambda: ("w.npz", npz(w=np.ones(3)) + s.tobytes()))
    add("npz/pseudonym-key")(lambda: ("w.npz", npz(**{f"w_{SUBJECT}": np.ones(3)})))
    add("npz/bomb")(lambda: ("w.npz", zipped({"w.npy": npy(np.zeros(600_000))})))
    add("npy/bytes-after-data")(lambda: ("w.npy", npy(np.ones(3)) + s.tobytes()))
    add("npy/object-array")(lambda: ("w.npy", npy(np.array([s, "x"], dtype=object))))
    add("safetensors/gap-between-tensors")(
        lambda: ("w.safetensors", safetensors({"a": np.ones(3), "b": np.ones(2)}, gap=960))
    )
    add("safetensors/trailing-payload")(
        lambda: ("w.safetensors", safetensors({"a": np.ones(3)}) + s.tobytes())
    )
    add("safetensors/metadata-pseudonym")(
        lambda: ("w.safetensors", safetensors({"a": np.ones(3)}, {"trained_on": SUBJECT}))
    )
    add("safetensors/slice-tensor")(
        lambda: ("w.safetensors", safetensors({"a": s.astype(np.float32)}))
    )
    add("safetensors/declared-small")(lambda: ("w.safetensors", _safetensors_lie(s)))
    add("pt/extra-member")(
        lambda: ("m.pt", _zip_add(torch_bytes(cnn_state()), "archive/extra.bin", s.tobytes()))
    )
    add("pt/storage-beyond-tensor")(
        lambda: (
            "m.pt",
            torch_bytes({"w": __import__("torch").from_numpy(s.astype(np.float32)).ravel()[:10]}),
        )
    )
    add("pt/code-in-pickle")(lambda: ("m.pt", torch_bytes({"w": _Evil()})))
    add("pt/reshaped-slice")(
        lambda: (
            "m.pt",
            torch_bytes(
                {"w": __import__("torch").from_numpy(s.astype(np.float32).reshape(32, 60))}
            ),
        )
    )
    add("pt/uid-key")(
        lambda: ("m.pt", torch_bytes({f"layer.{STUDY_UID}": __import__("torch").ones(3)}))
    )
    add("pt/legacy-format")(
        lambda: ("m.pt", torch_bytes(cnn_state(), _use_new_zipfile_serialization=False))
    )
    # 7. notebooks
    add("ipynb/slice-output")(
        lambda: ("nb.ipynb", notebook([code("show()", display(**{"image/png": b64(png(s))}))]))
    )
    add("ipynb/traceback-pseudonym")(
        lambda: (
            "nb.ipynb",
            notebook(
                [
                    code(
                        "load()",
                        {
                            "output_type": "error",
                            "ename": "KeyError",
                            "evalue": "'x'",
                            "traceback": [f"KeyError: 'subject {SUBJECT} missing'"],
                        },
                    )
                ]
            ),
        )
    )
    add("ipynb/metadata-date")(lambda: ("nb.ipynb", notebook([code("1")], {"scan": "2019-03-14"})))
    add("ipynb/attachment-slice")(
        lambda: (
            "nb.ipynb",
            notebook(
                [
                    {
                        "cell_type": "markdown",
                        "source": "![x](attachment:s.png)",
                        "metadata": {},
                        "attachments": {"s.png": {"image/png": b64(png(s))}},
                    }
                ]
            ),
        )
    )
    add("ipynb/json-output-grid")(
        lambda: ("nb.ipynb", notebook([code("x", display(**{"application/json": s.tolist()}))]))
    )
    add("ipynb/html-data-uri")(
        lambda: (
            "nb.ipynb",
            notebook(
                [
                    code(
                        "x",
                        display(
                            **{"text/html": f'<img src="data:image/png;base64,{b64(png(s))}">'}
                        ),
                    )
                ]
            ),
        )
    )
    add("ipynb/printed-array")(
        lambda: (
            "nb.ipynb",
            notebook(
                [
                    code(
                        "print(x)",
                        {
                            "output_type": "stream",
                            "name": "stdout",
                            "text": np.array2string(s, threshold=10**6, max_line_width=10**6),
                        },
                    )
                ]
            ),
        )
    )
    # 8. archives
    add("zip/slice-member")(
        lambda: ("out.zip", zipped({"summary.csv": b"arm,n\nA,20\n", "s.png": png(s)}))
    )
    add("zip/nested-deep")(lambda: ("out.zip", _nest(zipped({"a.txt": b"hello"}), 5)))
    add("zip/encrypted-member")(
        lambda: ("out.zip", _encrypt_flag(zipped({"a.csv": b"arm,n\nA,20\n"}, zipfile.ZIP_STORED)))
    )
    add("zip/pseudonym-member-name")(lambda: ("out.zip", zipped({f"{SUBJECT}.txt": b"fine"})))
    add("zip/prepended-data")(lambda: ("out.zip", s.tobytes() + zipped({"a.txt": b"hello"})))
    add("zip/bomb")(lambda: ("out.zip", zipped({"a.txt": b"0" * 5_000_000})))
    return a


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("pwned",))


def _savetxt(array: np.ndarray, sep: str) -> bytes:
    buf = io.BytesIO()
    np.savetxt(buf, array, fmt="%d", delimiter=sep)
    return buf.getvalue()


def _idat_tail(data: bytes, extra: bytes) -> bytes:
    """Append bytes inside the IDAT chunk, after the zlib stream ends."""
    pos = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[pos : pos + 4])
    body = data[pos + 8 : pos + 8 + length] + extra
    return data[:pos] + chunk(b"IDAT", body) + data[pos + 12 + length :]


def _jpeg_segment(data: bytes, marker: int, body: bytes) -> bytes:
    segment = bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body
    return data[:2] + segment + data[2:]


def _tiff_pages(first: np.ndarray, second: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(first).save(
        buf, format="TIFF", save_all=True, append_images=[Image.fromarray(second)]
    )
    return buf.getvalue()


def _gif_frames(second: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    frames = [Image.fromarray(np.zeros_like(second)), Image.fromarray(second)]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _safetensors_lie(array: np.ndarray) -> bytes:
    raw = array.astype("<f4").tobytes()
    header = json.dumps(
        {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, len(raw)]}}
    ).encode()
    return struct.pack("<Q", len(header)) + header + raw


def _zip_add(data: bytes, name: str, extra: bytes) -> bytes:
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a") as archive:
        archive.writestr(name, extra)
    return buf.getvalue()


def _nest(data: bytes, depth: int) -> bytes:
    for level in range(depth):
        data = zipped({f"level{level}.zip": data})
    return data


def _encrypt_flag(data: bytes) -> bytes:
    """Mark every member encrypted (local and central headers), as a password zip is."""
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = out.find(signature)
        while pos >= 0:
            out[pos + offset] |= 0x01
            pos = out.find(signature, pos + 4)
    return bytes(out)


# --- the legitimate corpus ---------------------------------------------------------


def _legitimate() -> dict[str, Callable[[], Entry]]:
    rng = np.random.default_rng(3)
    g: dict[str, Callable[[], Entry]] = {}

    def add(name: str, make: Callable[[], tuple[str, bytes]]) -> None:
        g[name] = lambda: (*make(), None)

    g["acro/per-arm-mean"] = lambda: acro_table()
    g["acro/arm-by-sex"] = lambda: acro_table(index=["arm", "sex"])
    g["acro/arm-by-visit-columns"] = lambda: acro_table(columns="visit")
    summary = pd.DataFrame(
        {"arm": ["A", "B"], "n": [41, 39], "mean_ml": [12.4, 14.1], "sd_ml": [3.1, 2.9]}
    )
    add("csv/summary", lambda: ("summary.csv", csv(summary)))
    add("tsv/summary", lambda: ("summary.tsv", csv(summary, sep="\t")))
    add(
        "json/summary-records", lambda: ("summary.json", summary.to_json(orient="records").encode())
    )
    add(
        "json/metrics",
        lambda: ("metrics.json", json.dumps({"auc": 0.81, "accuracy": 0.77, "n": 120}).encode()),
    )
    add(
        "csv/crosstab",
        lambda: (
            "crosstab.csv",
            csv(
                pd.DataFrame({"arm": ["A", "B"], "responder": [18, 22], "non_responder": [23, 17]})
            ),
        ),
    )
    add(
        "csv/histogram-bins",
        lambda: (
            "bins.csv",
            csv(
                pd.DataFrame(
                    {
                        "lower": np.arange(0, 50, 10),
                        "upper": np.arange(10, 60, 10),
                        "count": [12, 25, 31, 19, 13],
                    }
                )
            ),
        ),
    )
    add(
        "csv/regression",
        lambda: (
            "model.csv",
            csv(
                pd.DataFrame(
                    {
                        "term": ["intercept", "arm B", "age"],
                        "estimate": [1.2, 0.4, 0.02],
                        "se": [0.3, 0.1, 0.01],
                        "p": [0.001, 0.02, 0.04],
                    }
                )
            ),
        ),
    )
    add(
        "txt/report",
        lambda: (
            "report.txt",
            b"Mean tumour volume was 12.4 ml in arm A (n=41) and 14.1 ml in arm B (n=39); Dice 0.84.\n",  # noqa: E501
        ),
    )
    add(
        "md/report",
        lambda: (
            "report.md",
            b"# Results\n\n| arm | n | mean |\n|---|---|---|\n| A | 41 | 12.4 |\n| B | 39 | 14.1 |\n",  # noqa: E501
        ),
    )
    for kind in ("hist", "box", "km", "scatter", "bar", "dice", "roc", "confusion", "panels"):
        add(f"png/{kind}", lambda kind=kind: (f"{kind}.png", figure(kind)))
    for kind in ("hist", "km", "scatter", "box"):
        add(f"pdf/{kind}", lambda kind=kind: (f"{kind}.pdf", figure(kind, "pdf")))
    add("jpeg/hist", lambda: ("hist.jpg", figure("hist", "jpeg")))
    add("pt/cnn-state-dict", lambda: ("cnn.pt", torch_bytes(cnn_state())))
    add(
        "npz/cnn-weights",
        lambda: (
            "cnn.npz",
            npz(**{k.replace(".", "_"): v.numpy() for k, v in cnn_state().items()}),
        ),
    )
    add(
        "safetensors/cnn-weights",
        lambda: (
            "cnn.safetensors",
            safetensors({k: v.numpy() for k, v in cnn_state().items()}, {"format": "pt"}),
        ),
    )
    add("npy/coefficients", lambda: ("coef.npy", npy(rng.normal(size=(3, 5)))))
    hist = figure("hist")
    add("ipynb/plot-and-stream", lambda: ("analysis.ipynb", notebook([
        code("plt.hist(volumes)", display(**{"image/png": b64(hist), "text/plain": "<Figure size 320x240>"})),  # noqa: E501
        code("print(summary)", {"output_type": "stream", "name": "stdout", "text": "mean 12.4 ml (n=41)\n"}),  # noqa: E501
    ])))  # fmt: skip
    add("ipynb/markdown-and-result", lambda: ("notes.ipynb", notebook([
        {"cell_type": "markdown", "source": "# Per-arm volumes", "metadata": {}},
        code("auc", {"output_type": "execute_result", "execution_count": 1, "metadata": {}, "data": {"text/plain": "0.81"}}),  # noqa: E501
    ])))  # fmt: skip
    add(
        "zip/summary-and-figure",
        lambda: ("results.zip", zipped({"summary.csv": csv(summary), "hist.png": hist})),
    )
    add(
        "json/learning-curve",
        lambda: (
            "curve.json",
            json.dumps({"loss": list(np.round(np.exp(-np.arange(30) / 10), 4))}).encode(),
        ),
    )
    return g


ATTACKS = _attacks()
LEGITIMATE = _legitimate()
