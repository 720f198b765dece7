"""A real PACS for the PACS tests: Orthanc (Debian) with its DICOMweb plugin.

Each server runs on loopback with a temporary configuration: a free HTTP
port, storage in a temp folder, remote access off, HTTP authentication on
with one test user (so insitu.toml's [pacs] credentials are exercised), no
DICOM listener (Orthanc only pushes, as an SCU). Orthanc 1.10 has no option
to choose the HTTP bind address; ``RemoteAccessAllowed: false`` makes it
refuse every client that is not on loopback. Readiness is polled on
``/system``; every server is killed at teardown, also when a test fails.

The trial on it is built from real files: a 6-slice CT series and a 4-slice
one from pydicom's CT_small.dcm (new positions and UIDs), and pydicom's
MR_small.dcm, each with an accession number and a study date.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest
import requests
from fixtures_datasets import dicom_file, make_series

from insitu.config import NodeHome

USER, PASSWORD = "trial-bot", "pacs-Pa55-word-7q"

# accession -> (study date, modality, number of instances)
TRIAL = {
    "ACC-CT-1": ("20240115", "CT", 6),
    "ACC-MR-1": ("20240320", "MR", 1),
    "ACC-CT-2": ("20230601", "CT", 4),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _orthanc() -> str:
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(binary).exists():
        pytest.fail("Orthanc is not installed: apt-get install orthanc orthanc-dicomweb")
    return binary


def dicomweb_plugin() -> str:
    """The plugin's .so, as Debian's orthanc-dicomweb package installs it."""
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listing = []
    candidates = [p for p in listing if "/plugins/" in p and ".so" in p] or [
        str(p) for p in Path("/usr/share/orthanc/plugins").glob("libOrthancDicomWeb.so*")
    ]
    if not candidates:
        pytest.fail("the Orthanc DICOMweb plugin is missing: apt-get install orthanc-dicomweb")
    return candidates[0]


@dataclass
class OrthancServer:
    """One Orthanc process on loopback; ``url`` is its DICOMweb base URL."""

    folder: Path
    http_port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"{self.base}/dicom-web"

    @property
    def source(self) -> str:
        return f"dicomweb://127.0.0.1:{self.http_port}/dicom-web"

    def _config(self) -> Path:
        storage = self.folder / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "insitu-test-pacs",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "DicomServerEnabled": False,
            "DicomAet": "TESTPACS",
            "DicomModalities": {},
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "HttpCompressionEnabled": False,
            "StorageCompression": False,
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config, indent=2))
        return path

    def session(self) -> requests.Session:
        session = requests.Session()
        session.auth = (USER, PASSWORD)
        return session

    def start(self, timeout: float = 60.0) -> OrthancServer:
        config = self._config()
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            [_orthanc(), str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        with self.session() as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"Orthanc exited with {self.process.returncode}: "
                        + (self.folder / "orthanc.log").read_text()[-2000:]
                    )
                try:
                    if session.get(f"{self.base}/system", timeout=2).status_code == 200:
                        return self
                except requests.ConnectionError:
                    pass
                time.sleep(0.1)  # polling /system, not a readiness sleep
        self.kill()
        raise RuntimeError(f"Orthanc did not answer /system within {timeout} s")

    def kill(self) -> None:
        """SIGKILL the whole process group (a PACS that goes away at once)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def load(self, files: list[Path]) -> None:
        """Store files through the REST API, as a PACS would get them from modalities."""
        with self.session() as session:
            for path in files:
                response = session.post(f"{self.base}/instances", data=path.read_bytes())
                response.raise_for_status()

    def studies_by_accession(self) -> dict[str, str]:
        """Orthanc's study ids (for /modalities/.../store) by accession number."""
        out = {}
        with self.session() as session:
            for study in session.get(f"{self.base}/studies?expand").json():
                out[study["MainDicomTags"].get("AccessionNumber", "")] = study["ID"]
        return out

    def push(self, aet: str, port: int, study_ids: list[str]) -> dict[str, object]:
        """C-STORE studies to a receiver (Orthanc as SCU), synchronously."""
        with self.session() as session:
            modality = {"AET": aet, "Host": "127.0.0.1", "Port": port}
            session.put(f"{self.base}/modalities/insitu", json=modality).raise_for_status()
            response = session.post(
                f"{self.base}/modalities/insitu/store", json=study_ids, timeout=120
            )
            response.raise_for_status()
            result: dict[str, object] = response.json()
            return result


def trial_files(folder: Path) -> dict[str, list[Path]]:
    """The trial's DICOM files by accession number (real pixel data, see module doc)."""
    out: dict[str, list[Path]] = {}
    for k, (accession, (date, modality, n)) in enumerate(TRIAL.items()):
        target = folder / accession
        if modality == "MR":
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(dicom_file("MR_small.dcm"), target / "mr.dcm")
        else:
            make_series(target, n=n, patient_id=f"PAT-{k:04d}", seed=k)
        files = sorted(target.glob("*.dcm"))
        for path in files:
            ds = pydicom.dcmread(path)
            ds.AccessionNumber, ds.StudyDate = accession, date
            ds.save_as(path)
        out[accession] = files
    return out


@dataclass
class Pacs:
    server: OrthancServer
    files: dict[str, list[Path]]


def _start_pacs(folder: Path, accessions: tuple[str, ...] | None = None) -> Pacs:
    files = trial_files(folder / "trial")
    server = OrthancServer(folder / "orthanc")
    server.folder.mkdir(parents=True, exist_ok=True)
    server.start()
    try:
        server.load([p for a, paths in files.items() if not accessions or a in accessions
                     for p in paths])  # fmt: skip
    except Exception:
        server.kill()
        raise
    return Pacs(server, files)


@pytest.fixture(scope="session")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    """One Orthanc with the whole trial, shared by the tests that do not stop it."""
    running = _start_pacs(tmp_path_factory.mktemp("pacs"))
    try:
        yield running
    finally:
        running.server.kill()


@pytest.fixture
def own_pacs(tmp_path: Path) -> Iterator[Pacs]:
    """An Orthanc of the test's own (with ACC-CT-1 only), for tests that kill it."""
    running = _start_pacs(tmp_path / "own-pacs", ("ACC-CT-1",))
    try:
        yield running
    finally:
        running.server.kill()


def configure_pacs(home: NodeHome, url: str, *, password: str = PASSWORD, extra: str = "") -> Path:
    """Write [pacs] with the test user's credentials into the home's insitu.toml."""
    secret = home.private / "pacs-password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    text = home.config_path.read_text()
    if "[pacs]" in text:
        text = text[: text.index("[pacs]")]
    home.config_path.write_text(
        text + f'\n[pacs]\nurl = "{url}"\nusername = "{USER}"\n'
        f'password_file = "private/pacs-password"\n{extra}'
    )
    return secret


@pytest.fixture
def pacs_home(home: NodeHome, pacs: Pacs) -> NodeHome:
    """The ``home`` fixture with [pacs] pointing at the shared Orthanc."""
    configure_pacs(home, pacs.server.url)
    return home
