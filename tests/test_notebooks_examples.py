"""The example notebooks run headless (nbclient) against the demo's sites, on the node."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parents[1] / "kernels" / "notebooks"


def run_notebook(
    name: str, cwd: Path, env: dict[str, str], params: str | None = None
) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if params is not None:  # the parameter cell, as papermill would set it
        cell = next(c for c in nb.cells if c.cell_type == "code")
        cell.source = params
    saved = dict(os.environ)
    os.environ.update(env)  # the kernel inherits it, as in a user server
    try:
        NotebookClient(
            nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


def outputs(nb: nbformat.NotebookNode) -> str:
    text = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text.append(out.get("text", ""))
            data = out.get("data", {})
            text.append(data.get("text/plain", ""))
            text.append(data.get("text/html", ""))
    return "\n".join(text)


def widget_views(nb: nbformat.NotebookNode) -> int:
    return sum(
        "application/vnd.jupyter.widget-view+json" in out.get("data", {})
        for cell in nb.cells
        for out in cell.get("outputs", [])
    )


def test_shipped_notebooks_are_the_built_ones() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("nb_build", NOTEBOOKS / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    for name, cells in build.NOTEBOOKS.items():
        shipped = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert len(shipped.cells) == len(cells), f"{name}: run kernels/notebooks/build.py"
        assert all(not c.get("outputs") for c in shipped.cells), f"{name} ships outputs"


def test_explore_a_dataset(demo_root: Path, tmp_path: Path) -> None:
    nb = run_notebook(
        "01-explore-a-dataset.ipynb",
        tmp_path,
        {"INSITU_HOME": str(demo_root / "site-a"), "INSITU_USER": "alice"},
    )
    text = outputs(nb)
    assert "locat" in text
    assert "<insitu.Dataset locat v2: 4 subjects, 4 series>" in text  # v2 adds the table
    assert "slice at z = 87.5 mm" in text
    assert widget_views(nb) == 2, "the browser and the viewer render as widgets"


def test_noise_by_dose_arm(demo_root: Path, tmp_path: Path) -> None:
    nb = run_notebook(
        "02-noise-by-dose-arm.ipynb",
        tmp_path,
        {"INSITU_HOME": str(demo_root / "site-b"), "INSITU_USER": "alice"},
        params='DATASET = "locat"',
    )
    text = outputs(nb)
    ratio = float(text.split("low-dose noise is ")[1].split(" x")[0])
    assert ratio > 1.4, text
    assert any(
        "image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", [])
    )
