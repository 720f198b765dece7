"""The pixel-provenance detector's corpora (tests/test_provenance.py, bench/bench_provenance.py).

Site series: the synthetic trial's CT phantom (insitu.datasets.synthetic) with
noise, plus a colour fundus-like photograph. Attacks: slices of those series
transformed as a researcher could (crop, resize, flip, transpose, rescale,
window, JPEG, noise, RGB channels, a rendered matplotlib figure). Legitimate
outputs: figures a trial researcher releases (histograms, box plots,
Kaplan-Meier curves, scatter plots, a Dice plot, a loss curve) and images of
OTHER people (pydicom's test images, never ingested at the site).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

SPACING = (5.0, 2.97, 2.97)


def site_volumes(n: int, *, size: int = 96, slices: int = 24, seed: int = 5) -> list[np.ndarray]:
    """``n`` noisy CT phantoms (HU, float32), as the synthetic trial makes them."""
    from insitu.datasets.synthetic import TrialSpec, _smooth_noise, phantom_hu

    spec = TrialSpec(size=size, slices=slices)
    out = []
    for j in range(n):
        rng = np.random.default_rng([seed, j])
        hu = phantom_hu(spec, rng, body_scale=0.85 + 0.3 * rng.random(), appendicitis=bool(j % 2))
        hu += _smooth_noise(rng, hu.shape, 11.0 + 11.0 * (j % 2))
        out.append(hu.astype(np.float32))
    return out


def fundus(seed: int = 3, size: int = 384) -> np.ndarray:
    """A colour fundus-like photograph (1, y, x, 3) uint8: a disc, vessels, a dark rim."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size - 0.5
    r = np.hypot(x, y)
    red = 180 - 120 * r + 10 * rng.standard_normal((size, size))
    green = 90 - 60 * r + 6 * rng.standard_normal((size, size))
    vessels = np.zeros((size, size))
    cx, cy = rng.uniform(-0.2, 0.2, 2)
    for _ in range(12):
        angle, bend = rng.uniform(0, 2 * np.pi), rng.uniform(-2, 2)
        t = np.linspace(0, 0.6, 400)
        px = cx + t * np.cos(angle + bend * t)
        py = cy + t * np.sin(angle + bend * t)
        ix = np.clip(((px + 0.5) * size).astype(int), 0, size - 1)
        iy = np.clip(((py + 0.5) * size).astype(int), 0, size - 1)
        for d in (-1, 0, 1):
            vessels[np.clip(iy + d, 0, size - 1), ix] = 1
    disc = np.hypot(x - cx, y - cy) < 0.07
    red = np.where(vessels > 0, red * 0.55, red) + 60 * disc
    green = np.where(vessels > 0, green * 0.5, green) + 80 * disc
    blue = 30 + 10 * rng.standard_normal((size, size)) + 40 * disc
    rgb = np.stack([red, green, blue], axis=-1)
    rgb[r > 0.48] = 0
    return np.clip(rgb, 0, 255).astype(np.uint8)[None]


def _window(hu: np.ndarray, lo: float = -160.0, hi: float = 240.0) -> np.ndarray:
    return np.clip((hu - lo) / (hi - lo) * 255.0, 0, 255).astype(np.uint8)


def _resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(image.astype(np.float32), mode="F")
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def _jpeg(image: np.ndarray, quality: int = 70) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf))


def _render(draw: Callable[[object], None], dpi: int = 60) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, ax = plt.subplots(figsize=(5, 4))
    draw(ax)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def attacks(
    volumes: list[np.ndarray], colour: np.ndarray, *, n_series: int = 3
) -> dict[str, np.ndarray]:
    """Transformed slices of the site's series, each a grid an output could carry."""
    rng = np.random.default_rng(11)
    out: dict[str, np.ndarray] = {}
    for j, v in enumerate(volumes[:n_series]):
        z, h, w = v.shape
        k = z // 2 + j
        axial = v[k]
        win = _window(axial)
        out[f"s{j} axial plane"] = axial
        out[f"s{j} coronal plane"] = v[:, h // 2 + 3 * j, :]
        out[f"s{j} sagittal plane"] = v[:, :, w // 2 - 5 + j]
        out[f"s{j} HU to 0..255 (affine)"] = (axial - axial.min()) / np.ptp(axial) * 255
        out[f"s{j} soft-tissue window (clipped)"] = win
        out[f"s{j} transposed"] = win.T
        out[f"s{j} flipped"] = win[:, ::-1]
        out[f"s{j} rotated 90"] = np.rot90(win)
        out[f"s{j} upscaled 2.5x"] = _resize(win, (int(h * 2.5), int(w * 2.5)))
        out[f"s{j} downscaled 0.5x"] = _resize(axial, (h // 2, w // 2))
        out[f"s{j} stretched"] = _resize(win, (h, int(w * 1.6)))
        out[f"s{j} crop 70%"] = axial[int(0.1 * h) : int(0.8 * h), int(0.2 * w) : int(0.9 * w)]
        out[f"s{j} crop 50% flipped"] = win[
            int(0.3 * h) : int(0.8 * h), int(0.2 * w) : int(0.7 * w)
        ][::-1]
        out[f"s{j} crop 55% upscaled"] = _resize(
            axial[int(0.25 * h) : int(0.8 * h), int(0.3 * w) : int(0.85 * w)], (200, 200)
        )
        out[f"s{j} coronal crop"] = v[2 : z - 2, h // 2, int(0.2 * w) : int(0.8 * w)]
        out[f"s{j} JPEG q70"] = _jpeg(win)
        out[f"s{j} noise 5 %"] = win + rng.normal(0, 0.05 * 255, win.shape)
        rgb = np.stack([win, rng.integers(0, 255, win.shape), rng.integers(0, 255, win.shape)], -1)
        out[f"s{j} in the red channel"] = rgb.astype(np.uint8)
        shifted = np.clip(axial + 1024, 0, 4095)
        high, low = (shifted // 16).astype(np.uint8), (shifted % 16 * 16).astype(np.uint8)
        out[f"s{j} high byte in red"] = np.stack([high, low, np.zeros_like(win)], axis=-1)
        out[f"s{j} matplotlib figure (bone colormap)"] = _render(
            lambda ax, a=axial: ax.imshow(a, cmap="bone", vmin=-160, vmax=240)
        )
        out[f"s{j} 1-D flattened plane"] = axial.reshape(-1)
    photo = colour[0]
    ph, pw = photo.shape[:2]
    out["fundus as is"] = photo
    out["fundus green channel"] = photo[..., 1]
    out["fundus grey"] = photo.mean(axis=-1)
    out["fundus crop 60%"] = photo[int(0.2 * ph) : int(0.8 * ph), int(0.2 * pw) : int(0.8 * pw)]
    out["fundus JPEG q70"] = _jpeg(photo)
    out["fundus downscaled"] = np.stack(
        [_resize(photo[..., c], (ph // 3, pw // 3)) for c in range(3)], -1
    )
    return out


def random_crops(
    volumes: list[np.ndarray], *, n_series: int = 3, seed: int = 1
) -> dict[str, np.ndarray]:
    """Crops of 50 % to 90 % of a side at random places of an axial slice, each raw, in a
    display window, resized 1.7x and flipped, transposed with an affine value map, and
    windowed with 5 % Gaussian noise (the issue's "any sizeable crop")."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for j, v in enumerate(volumes[:n_series]):
        z, h, w = v.shape
        plane = v[z // 2 + 1]
        for f in (0.5, 0.6, 0.7, 0.8, 0.9):
            y0 = int(rng.uniform(0, 1 - f) * h)
            x0 = int(rng.uniform(0, 1 - f) * w)
            crop = plane[y0 : y0 + int(f * h), x0 : x0 + int(f * w)]
            win = _window(crop)
            big = (int(crop.shape[0] * 1.7), int(crop.shape[1] * 1.7))
            out[f"s{j} crop {f:.0%} raw"] = crop
            out[f"s{j} crop {f:.0%} window"] = win
            out[f"s{j} crop {f:.0%} resized 1.7x flipped"] = _resize(win, big)[:, ::-1]
            out[f"s{j} crop {f:.0%} transposed affine"] = crop.T * 0.1 + 7
            out[f"s{j} crop {f:.0%} window + noise 5 %"] = win + rng.normal(
                0, 0.05 * 255, win.shape
            )
    return out


def legitimate(seed: int = 2) -> dict[str, np.ndarray]:
    """Figures and images a researcher may release: none holds the site's pixels."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    out["histogram"] = _render(lambda ax: ax.hist(rng.normal(8, 2, 300), bins=25))
    out["histogram two arms"] = _render(
        lambda ax: (
            ax.hist(rng.normal(8, 2, 150), bins=20, alpha=0.6),
            ax.hist(rng.normal(10, 2, 150), bins=20, alpha=0.6),
        )
    )
    out["box plot"] = _render(lambda ax: ax.boxplot([rng.normal(0, 1, 60), rng.normal(1, 1, 60)]))
    t = np.arange(0, 60)
    out["Kaplan-Meier"] = _render(
        lambda ax: (ax.step(t, np.exp(-t / 40)), ax.step(t, np.exp(-t / 25)))
    )
    out["scatter"] = _render(lambda ax: ax.scatter(rng.normal(size=120), rng.normal(size=120)))
    out["Dice per subject"] = _render(
        lambda ax: ax.bar(range(24), np.clip(rng.normal(0.85, 0.05, 24), 0, 1))
    )
    out["Dice box + strip"] = _render(
        lambda ax: (
            ax.boxplot([np.clip(rng.normal(0.8, 0.06, 30), 0, 1)]),
            ax.plot(np.ones(30) + rng.normal(0, 0.03, 30), rng.normal(0.8, 0.06, 30), "."),
        )
    )
    out["loss curve"] = _render(
        lambda ax: ax.plot(np.exp(-np.arange(200) / 40) + rng.normal(0, 0.01, 200))
    )
    out["confusion matrix"] = rng.integers(0, 40, (2, 2))
    out["bland-altman"] = _render(
        lambda ax: ax.scatter(rng.normal(8, 2, 80), rng.normal(0, 0.5, 80))
    )
    out["random 64x64 grid"] = rng.normal(size=(64, 64))
    out["smooth random field"] = _resize(rng.normal(size=(8, 8)), (128, 128))
    import pydicom
    from pydicom.data import get_testdata_file

    for name in ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "US1_UNCR.dcm", "SC_rgb.dcm"):
        path = get_testdata_file(name)
        if path is None:
            continue
        pixels = np.asarray(pydicom.dcmread(path).pixel_array)
        if pixels.ndim == 3 and pixels.shape[-1] != 3:
            pixels = pixels[0]
        out[f"other image {name}"] = pixels
        if pixels.ndim == 2:
            out[f"other image {name} rendered"] = _render(
                lambda ax, p=pixels: ax.imshow(p, cmap="gray")
            )
    ct = get_testdata_file("CT_small.dcm")
    if ct is not None:  # a segmentation-overlap figure: two masks' contours on a slice
        pixels = np.asarray(pydicom.dcmread(ct).pixel_array, dtype=np.float32)
        yy, xx = np.mgrid[0 : pixels.shape[0], 0 : pixels.shape[1]]
        ref = np.hypot(yy - 60, xx - 70) < 18
        pred = np.hypot(yy - 63, xx - 72) < 17
        out["segmentation overlap (other image)"] = _render(
            lambda ax: (
                ax.imshow(pixels, cmap="gray"),
                ax.contour(ref, levels=[0.5], colors="lime"),
                ax.contour(pred, levels=[0.5], colors="red"),
            )
        )
    out["segmentation overlap bars"] = _render(
        lambda ax: ax.bar(["TP", "FP", "FN"], [rng.integers(800, 900), 60, 45])
    )
    return out
