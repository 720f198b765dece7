"""Write the example notebooks from the cell sources below (run after editing them).

    .venv/bin/python kernels/notebooks/build.py

The .ipynb files are what ships (package data of ``insitu.kernels``); this
script keeps their source reviewable as plain Python and free of outputs.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

EXPLORE = [
    "md:# Explore a dataset\n\nThe site's datasets, your access to each, and one CT series "
    "in a slice viewer. The images never leave the site: this notebook runs next to them, and "
    "every read goes through the site's data gate (checked and audited).",
    'DATASET = "locat"  # the demo trial, as this site published it',
    "import insitu\nfrom insitu.widgets import DatasetBrowser, SliceViewer\n\ninsitu.catalog()",
    "md:The browser shows each dataset's description, citation, counts and your access; "
    "where you have none, ask for it in place (a steward decides).",
    "DatasetBrowser()",
    "ds = insitu.open_dataset(DATASET)\nds",
    "ds.subjects.head()",
    'ds.series[["subject_id", "modality", "study_date", "shape", "spacing"]].head()',
    "md:Measurement tables (e.g. appendix diameter, diagnosis, arm) sit beside the images, "
    "keyed by the same pseudonymous subject IDs.",
    "{name: len(table) for name, table in ds.tables.items()}",
    "md:A series is a lazy `xarray.DataArray` with coordinates in millimetres (DICOM patient "
    "space). Nothing is read until a computation needs it.",
    "series_id = ds.series.series_id.iloc[0]\nimage = ds.image(series_id)\nimage",
    "md:The viewer reads only the slice it shows. Switch planes, scrub, and try the CT window "
    "presets (soft tissue, lung, bone, brain) or type your own level and width.",
    "viewer = SliceViewer(image)\nviewer",
    "md:Computations are lazy too: this reads one slice near the liver dome (z = 80 mm).",
    'top = image.sel(z=80, method="nearest")\n'
    'print(f"slice at z = {float(top.z):.1f} mm, mean {float(top.mean()):.1f} HU")',
]

NOISE = [
    "md:# Image noise by dose arm at one site\n\nThe trial randomised subjects to low-dose "
    "and standard-dose CT. Lower dose means more quantum noise: we measure it as the standard "
    "deviation of HU in a region of uniform liver tissue, reading one slice per series.",
    'DATASET = "locat"',
    "import matplotlib.pyplot as plt\nimport pandas as pd\n\nimport insitu\n"
    "from insitu.progress import progress\n\nds = insitu.open_dataset(DATASET)\nds",
    "md:The arm of each subject: from the site's measurement table when it was ingested, "
    "otherwise from the dose the scanner recorded (CTDIvol, kept in the de-identified header).",
    "def arm_from_header(series_id: str) -> str:\n"
    '    ctdi = ds.header(series_id).get("00189345", {}).get("Value", [None])[0]\n'
    '    return "unknown" if ctdi is None else ("low-dose" if ctdi < 4 else "standard-dose")\n\n\n'
    'series = ds.series[["subject_id", "series_id"]].copy()\n'
    'tables = {name: t for name, t in ds.tables.items() if "arm" in t.columns}\n'
    "if tables:\n"
    '    arms = next(iter(tables.values()))[["subject_id", "arm"]].drop_duplicates()\n'
    '    series = series.merge(arms, on="subject_id", how="left")\n'
    "else:\n"
    '    series["arm"] = [arm_from_header(s) for s in series.series_id]\n'
    'series.groupby("arm").size()',
    "md:Noise in a 20 mm circle of liver (patient right, x = -70 mm) on the slice nearest "
    "z = 80 mm: physical coordinates, so it works whatever the pixel spacing.",
    "rows = []\n"
    'for row in progress(list(series.itertuples()), desc="noise"):\n'
    '    plane = ds.image(row.series_id).sel(z=80, method="nearest")\n'
    "    roi = plane.where((plane.x + 70) ** 2 + plane.y**2 < 20**2)\n"
    "    rows.append(\n"
    '        {"arm": row.arm, "noise_hu": float(roi.std()), "liver_hu": float(roi.mean())}\n'
    "    )\n"
    "noise = pd.DataFrame(rows)\n"
    'summary = noise.groupby("arm").agg(\n'
    '    n=("noise_hu", "size"), noise_hu=("noise_hu", "mean"), liver_hu=("liver_hu", "mean")\n'
    ")\nsummary.round(1)",
    "fig, ax = plt.subplots(figsize=(5, 3.5))\n"
    "groups = sorted(noise.arm.unique())\n"
    "ax.boxplot([noise.noise_hu[noise.arm == g] for g in groups])\n"
    "ax.set_xticks(range(1, len(groups) + 1), groups)\n"
    'ax.set_ylabel("noise (SD of HU in liver)")\n'
    'ax.set_title(f"Image noise by dose arm, {DATASET}")\nfig.tight_layout()',
    "md:Low dose: roughly twice the noise of standard dose (noise scales with "
    "1/sqrt(dose); the low-dose arm had a quarter of the dose).",
    'ratio = summary.loc["low-dose", "noise_hu"] / summary.loc["standard-dose", "noise_hu"]\n'
    'print(f"low-dose noise is {ratio:.2f} x standard-dose noise")',
]

RELEASE = [
    "md:# Release a result through the airlock\n\nNothing leaves the site unless a data "
    "steward approves it. `insitu.release` submits a table, a figure or a file; automatic "
    "disclosure checks run at once (minimum cell counts, dominance, no per-subject rows, no "
    "image arrays, no identifiers) and the steward sees them beside your purpose.",
    'DATASET = "locat"',
    "import matplotlib.pyplot as plt\nimport pandas as pd\n\nimport insitu\n"
    "from insitu.widgets import AirlockPanel\nfrom insitu.widgets.sources import ClientSource"
    "\n\nds = insitu.open_dataset(DATASET)",
    "md:A small result: the mean liver HU on the slice nearest z = 80 mm, per subject, then "
    "summarised. Per-subject rows must not leave the site; a summary may.",
    "values = []\nfor series_id in ds.series.series_id:\n"
    '    plane = ds.image(series_id).sel(z=80, method="nearest")\n'
    "    roi = plane.where((plane.x + 70) ** 2 + plane.y**2 < 20**2)\n"
    "    values.append(float(roi.mean()))\n"
    'per_subject = pd.DataFrame({"liver_hu": values})\n'
    "fig, ax = plt.subplots(figsize=(4, 3))\n"
    'ax.hist(per_subject.liver_hu, bins=8)\nax.set_xlabel("liver HU")\n'
    'ax.set_title("Liver enhancement at this site")\nfig.tight_layout()',
    "md:Submit the figure: it passes the checks and waits for a steward.",
    'figure_request = insitu.release(fig, purpose="Liver enhancement histogram for the paper")\n'
    "print(figure_request)",
    "md:A table with small cells fails the minimum-cell-count rule: the steward can only "
    "approve it with a written override, so think twice.",
    'small = pd.DataFrame({"group": ["a", "b"], "n": [3, len(values) - 3], '
    '"mean_hu": [100.0, 104.0]})\n'
    'table_request = insitu.release(small, purpose="Liver HU by group")\n'
    "print(table_request)",
    "md:Your releases and their states; approved ones get a download link.",
    "AirlockPanel(ClientSource())",
]

FEDERATED_ANALYSIS = [
    "md:# A federated analysis across the three sites\n\nEach site computes mergeable "
    "summaries of a feature on its own data (counts, moments, histograms, quantile sketches), "
    "withholds cells below its minimum count and sends only those numbers; the coordinator "
    "merges them. The result equals the pooled computation, but no image and no per-subject "
    "value leaves a site. Each site's steward must have approved the analytics app.",
    'FEDERATION = "locat"  # a coordinator connection in $FLWR_HOME/config.toml, or:\n'
    'ADDRESS = None  # "host:port" of the coordinator (the loopback demo runs it insecure)\n'
    'DATASET = "locat"  # each site answers with the dataset its steward joined\n'
    "BINS = [0, 50, 100, 200, 400]  # histogram edges of the noise feature (HU)",
    "from insitu.federation import analyze\n\n"
    'where = {"federation": FEDERATION} if ADDRESS is None else '
    '{"address": ADDRESS, "insecure": True}',
    "md:Mean and spread of the noise feature (`hu_std`: the HU standard deviation in the "
    "central region of each series) per tube voltage, which is the dose arm here (100 kV "
    "low dose, 120 kV standard dose): read from each series' de-identified header.",
    "table = analyze(\n"
    '    **where, dataset=DATASET, feature="hu_std", by="KVP", bins=BINS\n'
    ")\ntable",
    "md:Who answered, who refused (and why), and how many cells each site withheld "
    "(never which: a withheld cell must not be told apart from an empty one):",
    'print("sites:", table.attrs["sites"])\n'
    'print("refused:", table.attrs["refused"])\n'
    'print("suppressed:", table.attrs["suppressed"])',
]

FEDERATED_TRAINING = [
    "md:# Federated training across the three sites\n\nA small CNN learns from 2-D "
    "slices read lazily at each site; FedAvg combines the sites' model updates weighted by "
    "their example counts. Only model parameters and scalar metrics leave a site, after the "
    "site's egress policy checked them. Each site's steward must have approved the app.",
    'FEDERATION = "locat"\nADDRESS = None  # "host:port" of the coordinator (loopback demo)\n'
    "ROUNDS = 3",
    "from insitu.federation.apps import RunHandle\n"
    "from insitu.federation.train_app import training_fab\n"
    "from insitu.widgets import JobMonitor\n\n"
    'where = {"federation": FEDERATION} if ADDRESS is None else '
    '{"address": ADDRESS, "insecure": True}',
    "md:Submit the run; it goes on at the sites in the background. The monitor asks the "
    "coordinator for its state every second and shows each round's sites and loss when the "
    "run reports them.",
    "run = RunHandle.submit(\n"
    '    training_fab(), **where, run_config={"num-rounds": ROUNDS, "min-sites": 2}\n'
    ")\n"
    'monitor = JobMonitor(title=f"FedAvg across three sites (run {run.run_id})", '
    "rounds=ROUNDS)\n"
    "monitor.watch(run.status)\nmonitor",
    "outcome = run.wait()\nmonitor.thread.join(timeout=60)\n"
    'for r in outcome.result["rounds"]:\n'
    "    print(f\"round {r['round']}: sites {r['sites']}, train loss {r['train_loss']:.3f}\")",
]

STEWARD_REVIEW = [
    "md:# Steward: access requests and releases\n\nFor data stewards. The panel lists the "
    "access requests and the releases waiting for a decision; every decision needs a reason "
    "(the researcher and the public register see it), and a release whose automatic checks "
    "failed can only be approved with a written override. Researchers who open this "
    "notebook are refused by the site's services.",
    "from insitu.widgets import StewardPanel\nfrom insitu.widgets.sources import "
    "HubStewardSource\n\nStewardPanel(HubStewardSource())",
]

NOTEBOOKS = {
    "01-explore-a-dataset.ipynb": EXPLORE,
    "02-noise-by-dose-arm.ipynb": NOISE,
    "03-release-through-the-airlock.ipynb": RELEASE,
    "04-federated-analysis.ipynb": FEDERATED_ANALYSIS,
    "05-federated-training.ipynb": FEDERATED_TRAINING,
    "06-steward-review.ipynb": STEWARD_REVIEW,
}


def build(cells: list[str]) -> nbformat.NotebookNode:
    # nbformat's builders carry no type hints: each call is ignored narrowly.
    nb: nbformat.NotebookNode = new_notebook()  # type: ignore[no-untyped-call]
    # The site's kernel (insitu.kernels.kernelspec), so notebooks open in it.
    nb.metadata["kernelspec"] = {
        "name": "insitu",
        "display_name": "Python 3 (insitu)",
        "language": "python",
    }
    nb.cells = [
        new_markdown_cell(c[3:])  # type: ignore[no-untyped-call]
        if c.startswith("md:")
        else new_code_cell(c)  # type: ignore[no-untyped-call]
        for c in cells
    ]
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"
    return nb


def main() -> None:
    import subprocess
    import sys

    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(cells), HERE / name)  # type: ignore[no-untyped-call]  # untyped
    ruff = Path(sys.executable).with_name("ruff")
    subprocess.run([str(ruff), "format", "-q", str(HERE)], check=True)


if __name__ == "__main__":
    main()
