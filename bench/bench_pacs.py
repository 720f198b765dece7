"""PACS benchmarks (issue 6): pulling a trial over DICOMweb and receiving a push.

A real Orthanc (Debian, DICOMweb plugin, authentication on) on loopback holds
a trial of 512x512 CT series built from real pydicom-data slices (the same
input as the ingest benchmark). Measured in one run, each as a whole process:

- ``insitu`` pull into staging (QIDO-RS, then WADO-RS per instance, written
  atomically), with ``pacs.parallel`` 1 and 4;
- what a site would script instead: dicomweb-client's ``retrieve_series``
  (one multipart request per series) writing the files to a folder;
- pull and ingest in one command (``insitu ingest dicomweb://``) vs that
  script followed by ``insitu ingest FOLDER``;
- Orthanc pushing the same studies by C-STORE to ``insitu receive``
  (staging only, from the REST call to its return).

Run: ``.venv/bin/python bench/run.py pacs`` (env BENCH_SERIES, BENCH_SLICES
change the input size; BENCH_KEEP=1 keeps the work folder).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_ingest import build_input

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))

BASELINE = """
import sys, requests
from pathlib import Path
from dicomweb_client.api import DICOMwebClient
url, user, password, out = sys.argv[1:5]
session = requests.Session(); session.auth = (user, password)
client = DICOMwebClient(url, session=session)
out = Path(out); n = 0
for study in client.search_for_studies(search_filters={"ModalitiesInStudy": "CT"}):
    st = study["0020000D"]["Value"][0]
    for series in client.search_for_series(st, search_filters={"Modality": "CT"}):
        se = series["0020000E"]["Value"][0]
        for ds in client.retrieve_series(st, se, media_types=(("application/dicom", "*"),)):
            n += 1
            ds.save_as(out / f"{n:06d}.dcm", enforce_file_format=True)
print(n)
"""

PULL = """
from insitu.datasets.dicomweb import PacsQuery, pull
result = pull("dicomweb://", PacsQuery(modality="CT"), dataset="bench")
print(len(result.paths))
"""


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return took, proc.stdout


def _set_parallel(home: Path, n: int) -> None:
    config = home / "insitu.toml"
    lines = [ln for ln in config.read_text().splitlines() if not ln.startswith("parallel")]
    config.write_text("\n".join(lines) + f"\nparallel = {n}\n")


def main() -> None:
    n_series = int(os.environ.get("BENCH_SERIES", "2"))
    n_slices = int(os.environ.get("BENCH_SLICES", "100"))
    work = Path(tempfile.mkdtemp(prefix="insitu-bench-pacs-"))
    try:
        _main(work, n_series, n_slices)
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


def _main(work: Path, n_series: int, n_slices: int) -> None:
    from fixtures_pacs import PASSWORD, USER, OrthancServer, configure_pacs

    from insitu.config import NodeHome, init_home

    inputs = work / "dicom"
    dicom_bytes = build_input(inputs, n_series, n_slices)
    files = sorted(inputs.rglob("*.dcm"))
    print(f"input: {n_series} series x {n_slices} slices of 512x512 CT, "
          f"{dicom_bytes / 1e6:.0f} MB DICOM", flush=True)  # fmt: skip
    server = OrthancServer(work / "orthanc")
    server.folder.mkdir(parents=True)
    server.start()
    try:
        server.load(files)
        home = NodeHome(work / "home")
        init_home(home, "bench")
        configure_pacs(home, server.url)
        env = {**os.environ, "INSITU_HOME": str(home.root)}
        python, insitu = str(VENV_BIN / "python"), str(VENV_BIN / "insitu")
        staging = home.staging / "pacs"
        rows: list[tuple[str, float]] = []
        for parallel in (1, 4):
            _set_parallel(home.root, parallel)
            took, out = _run([python, "-c", PULL], env)
            assert int(out) == len(files), out
            rows.append((f"insitu pull to staging, pacs.parallel = {parallel}", took))
            shutil.rmtree(staging)
        folder = work / "baseline"
        folder.mkdir()
        t_base, out = _run([python, "-c", BASELINE, server.url, USER, PASSWORD, str(folder)], env)
        assert int(out) == len(files), out
        rows.append(("dicomweb-client retrieve_series script to a folder", t_base))
        t_pull_ingest, _ = _run(
            [insitu, "ingest", "dicomweb://", "--dataset", "pulled", "--modality", "CT"], env
        )
        rows.append(("insitu ingest dicomweb:// (pull + ingest, parallel 4)", t_pull_ingest))
        t_ingest, _ = _run([insitu, "ingest", str(folder), "--dataset", "scripted"], env)
        rows.append(("script + insitu ingest FOLDER", t_base + t_ingest))
        t_push = _push(server, env)
        rows.append(("Orthanc C-STORE push to insitu receive (staging)", t_push))
    finally:
        server.kill()
    mb = dicom_bytes / 1e6
    machine = f"{platform.platform()}, {os.cpu_count()} cores"
    print(f"\nmachine: {machine}, Python {platform.python_version()}")
    print("| step | seconds | instances/s | MB/s | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    reference = {"insitu ingest dicomweb": t_base + t_ingest}
    for label, took in rows:
        if label.startswith("insitu pull"):
            ratio = f"{took / t_base:.2f} vs script"
        elif label.startswith("insitu ingest dicomweb"):
            ratio = f"{took / reference['insitu ingest dicomweb']:.2f} vs script + ingest"
        else:
            ratio = ""
        print(f"| {label} | {took:.1f} | {len(files) / took:.0f} | {mb / took:.1f} | {ratio} |")
    print("\n(BENCHMARKS.md section: PACS (issue 6))")


def _push(server: object, env: dict[str, str]) -> float:
    """Seconds for Orthanc to C-STORE every study to a running ``insitu receive``."""
    import signal

    proc = subprocess.Popen(
        [str(VENV_BIN / "insitu"), "receive", "--dataset", "pushed", "--port", "0",
         "--batch-seconds", "3600"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.split("127.0.0.1:")[1].split()[0])
        with server.session() as session:  # type: ignore[attr-defined]
            ids = session.get(f"{server.base}/studies").json()  # type: ignore[attr-defined]
        start = time.perf_counter()
        result = server.push("INSITU", port, ids)  # type: ignore[attr-defined]
        took = time.perf_counter() - start
        assert result["FailedInstancesCount"] == 0, result
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    return took
