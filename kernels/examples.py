"""The example notebooks researchers find in their servers (``kernels/notebooks/``).

The hub's spawners copy them into each new user folder, the demo into its
users' folders, and ``insitu notebooks copy DEST`` anywhere; a researcher's
edited copy is never replaced (unless ``overwrite``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["copy_examples", "example_notebooks"]


def example_notebooks() -> list[Path]:
    """The example notebooks shipped with insitu (package data of insitu.kernels)."""
    return sorted((Path(__file__).parent / "notebooks").glob("*.ipynb"))


def copy_examples(dest: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Copy the example notebooks into ``dest``; a researcher's edited copy is kept."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for source in example_notebooks():
        target = dest / source.name
        if overwrite or not target.exists():
            shutil.copyfile(source, target)
            copied.append(target)
    return copied
