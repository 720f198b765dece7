"""Arrays found anywhere (weights, image frames, JSON lists): values counted, grids checked."""

from __future__ import annotations

import numpy as np

from insitu.disclosure._types import Verdict
from insitu.disclosure.grid import check_grid
from insitu.disclosure.scan import Scan

__all__ = ["scan_array"]


def scan_array(
    scan: Scan, array: np.ndarray, where: str, *, count: bool = True, image: bool = False
) -> None:
    """Count an array's values against the budget and run the grid rules on it."""
    scan.ok("image-resolution", "no array, image or grid the size of the site's images")
    if array.dtype.kind not in "biufc":
        scan.add(
            "not-understood",
            Verdict.REVIEW,
            f"an array of {array.dtype} values: only numbers are understood",
            where,
        )
        return
    if scan.kept is not None:
        scan.kept.append((where, array, image))
    if count:
        scan.count_values(array.size)
    scan.stats["grids"] += 1
    scan.findings.extend(check_grid(array, ctx=scan.ctx, where=where, image=image))
