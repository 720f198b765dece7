"""One progress bar for terminals and notebooks (tqdm picks the right one)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

__all__ = ["progress"]


def progress(
    items: Iterable[T], *, total: int | None = None, desc: str = "", enabled: bool | None = None
) -> Iterator[T]:
    """Iterate with a progress bar on a terminal or in a notebook; plain elsewhere.

    ``enabled=None`` shows the bar only where a person watches (a TTY on
    stderr, or a Jupyter kernel), so logs and ``--json`` output stay clean.
    """
    if enabled is None:
        enabled = sys.stderr.isatty() or "ipykernel" in sys.modules
    if not enabled:
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, total=total, desc=desc, leave=False)
