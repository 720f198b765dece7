"""The "insitu" Jupyter kernel: Python with ``import insitu`` already run.

The spec is written into a folder on the user server's ``JUPYTER_PATH``
(``home.run/jupyter`` for the hub's spawner) or installed with
``insitu kernel install [--prefix P | --user]``. The kernel starts with
``import insitu``, so ``insitu.catalog()`` works in the first cell, and shows
insitu's errors (a refused read) as one line (:mod:`insitu.kernels.display`); the gate,
airlock and gateway addresses and the researcher's token come from the
server's environment, never from the researcher. It also loads zarr, xarray,
dask and distributed while it starts (:mod:`insitu.kernels.preload`), so the
first read in a fresh kernel costs about what later reads cost.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["DISPLAY_NAME", "KERNEL_NAME", "install_kernelspec", "kernel_spec", "write_kernelspec"]

KERNEL_NAME = "insitu"
DISPLAY_NAME = "Python 3 (insitu)"
# ``import insitu``, insitu's errors shown as one clear line (insitu.kernels.display),
# and the image-reading stack loaded before the first cell (insitu.kernels.preload).
STARTUP = (
    "import insitu; import insitu.kernels.display as _insitu_display; "
    "_insitu_display.install(); del _insitu_display; "
    "import insitu.kernels.preload as _insitu_preload; _insitu_preload.preload(); "
    "del _insitu_preload"
)


def kernel_spec(python: str | None = None) -> dict[str, Any]:
    """The kernel.json content."""
    return {
        "argv": [
            python or sys.executable,
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
            f"--IPKernelApp.exec_lines={STARTUP}",
        ],
        "display_name": DISPLAY_NAME,
        "language": "python",
        "metadata": {"debugger": True, "insitu": True},
    }


def write_kernelspec(jupyter_path: Path, python: str | None = None) -> Path:
    """Write ``<jupyter_path>/kernels/insitu/kernel.json``; return its folder.

    Safe when several hubs start at once: the file is replaced atomically, and
    only when its content changes.
    """
    folder = jupyter_path / "kernels" / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "kernel.json"
    text = json.dumps(kernel_spec(python), indent=2) + "\n"
    if target.exists() and target.read_text() == text:
        return folder
    partial = folder / f".kernel.json.{os.getpid()}"
    partial.write_text(text)
    partial.replace(target)
    return folder


def install_kernelspec(*, prefix: str | None = None, user: bool = False) -> str:
    """Install the spec with jupyter_client (like ``jupyter kernelspec install``)."""
    from jupyter_client.kernelspec import KernelSpecManager

    with tempfile.TemporaryDirectory() as tmp:
        source = write_kernelspec(Path(tmp))
        return str(
            KernelSpecManager().install_kernel_spec(
                str(source), kernel_name=KERNEL_NAME, user=user, prefix=prefix
            )
        )
