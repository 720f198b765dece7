"""Is there still a face? Render the skin surface and run a face detector.

This is how defacing is evaluated in the literature (e.g. Schwarz et al.,
NeuroImage 2021; Theyers et al., Front. Psychiatry 2021): render the head's
skin surface as seen from the front and ask a face detector. We ray-cast
along the anterior-posterior axis to the first voxel above the skin
threshold, shade the depth map with a headlight (Lambert), and run OpenCV's
Haar frontal-face cascade (shipped with opencv-python-headless, works offline).
Used by the tests, the bench and ``insitu`` ingest reports; never on the
serving path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from insitu.datasets.deface import _reorient, _to_rps

__all__ = ["CASCADES", "FaceCheck", "detect_faces", "render_face", "skin_threshold"]

# The "alt" cascades; "default" also fires on the cut surface of a defaced head
# (its exposed sinuses look like eyes), see bench/BENCHMARKS.md.
CASCADES = ("haarcascade_frontalface_alt.xml", "haarcascade_frontalface_alt2.xml")


@dataclass(frozen=True)
class FaceCheck:
    faces: list[tuple[int, int, int, int]]  # x, y, w, h in the rendering
    cascade: str

    @property
    def found(self) -> bool:
        return bool(self.faces)


def skin_threshold(volume: np.ndarray, modality: str) -> float:
    """CT: skin is above -200 HU; MR: a fraction of the Otsu tissue level."""
    if modality.upper() == "CT":
        return -200.0
    from insitu.datasets.deface import _otsu

    v = np.asarray(volume, dtype=np.float32)
    background = v > np.percentile(v, 2) + 1e-6
    return 0.5 * _otsu(v[background]) if background.any() else float(v.max())


def render_face(
    volume: np.ndarray, affine: np.ndarray, modality: str, *, mm_per_pixel: float = 1.0
) -> np.ndarray:
    """A uint8 image of the head seen from the front (rows superior at top)."""
    from scipy import ndimage

    perm, flip, spacing = _to_rps(affine)
    v = _reorient(np.asarray(volume, dtype=np.float32), perm, flip)  # (R, P, S)
    zoom = spacing / mm_per_pixel
    threshold = skin_threshold(volume, modality)
    skin = ndimage.gaussian_filter(v, 1.0 / zoom) > threshold
    if not np.allclose(zoom, 1.0, atol=0.1):  # resample the mask only (cheap)
        skin = ndimage.zoom(skin.astype(np.uint8), zoom, order=0).astype(bool)
    hit = skin.any(axis=1)  # (R, S)
    depth = np.where(hit, skin.argmax(axis=1), skin.shape[1]).astype(np.float32)
    depth = ndimage.gaussian_filter(depth, 1.0)
    gr, gs = np.gradient(depth)
    # headlight: the brightness is the cosine between the surface and the view
    shade = np.where(hit, 1.0 / np.sqrt(gr**2 + gs**2 + 1.0), 0.0)
    # viewer faces the subject: subject's right on the image left, superior up
    image = np.flipud(shade.T)
    rendered: np.ndarray = np.clip(image * 255, 0, 255).astype(np.uint8)
    return rendered


def detect_faces(image: np.ndarray, cascades: tuple[str, ...] = CASCADES) -> FaceCheck:
    """Run Haar frontal-face cascades on a rendering; any plausible hit is a face.

    The rendering is cropped to the head, padded by a quarter (the cascades
    were trained on faces with a margin) and scaled to 200 pixels. A face
    seen from the front spans most of the head's width (bizygomatic breadth
    is ~90 % of head breadth); a hit narrower than 60 % of the head is texture
    (e.g. the sinuses exposed by the cut, which look like eyes).
    """
    import cv2
    import cv2.data  # the cascades' folder; a submodule the package does not import for us

    ys, xs = np.nonzero(image)
    if not len(ys):
        return FaceCheck(faces=[], cascade=",".join(cascades))
    img = image[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    head_width = img.shape[1]
    pad = int(0.25 * max(img.shape))
    img = np.pad(img, pad)
    scale = 200 / max(img.shape)
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    min_size = max(int(0.6 * head_width * scale), 24)
    for name in cascades:
        cascade = cv2.CascadeClassifier(str(cv2.data.haarcascades) + name)
        found = cascade.detectMultiScale(
            img, scaleFactor=1.05, minNeighbors=4, minSize=(min_size, min_size)
        )
        if len(found):
            boxes = [
                (
                    int(x / scale) - pad + int(xs.min()),
                    int(y / scale) - pad + int(ys.min()),
                    int(w / scale),
                    int(h / scale),
                )
                for x, y, w, h in found
            ]
            return FaceCheck(faces=boxes, cascade=name)
    return FaceCheck(faces=[], cascade=",".join(cascades))
