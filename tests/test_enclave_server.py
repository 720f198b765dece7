"""The enclave's server settings on a real Jupyter server, and the insitu kernel."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from insitu.kernels.enclave import server_args
from insitu.kernels.kernelspec import DISPLAY_NAME, KERNEL_NAME, write_kernelspec

TOKEN = "enclave-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def enclave_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A jupyter server with the enclave's settings over a folder with a few files."""
    tmp_path = tmp_path_factory.mktemp("enclave-server")
    work = tmp_path / "work"
    work.mkdir()
    (work / "table.csv").write_text("arm,n\nA,12\n")
    (work / "slice.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (work / "nb.ipynb").write_text(
        json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    jupyter_path = tmp_path / "share"
    write_kernelspec(jupyter_path)
    port = free_port()
    env = dict(os.environ, JUPYTER_PATH=str(jupyter_path), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"))
    env.pop("INSITU_HOME", None)
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
            f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={work}",
            *server_args(),
        ],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/api/status", timeout=2, headers=auth()).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "jupyter server did not start:\n" + (tmp_path / "server.log").read_text()
                )
            time.sleep(0.1)  # polling interval, not a readiness guess
        yield url, work
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def auth() -> dict[str, str]:
    return {"Authorization": f"token {TOKEN}"}


def test_download_and_export_routes_are_refused(enclave_server):
    url, _ = enclave_server
    for path in (
        "/files/table.csv",
        "/files/table.csv?download=1",
        "/nbconvert/html/nb.ipynb?download=true",
        "/nbconvert/script/nb.ipynb",
        "/view/table.csv",
    ):
        answer = requests.get(url + path, headers=auth(), timeout=10)
        assert answer.status_code == 403, path
        assert "airlock" in answer.json()["message"]
    post = requests.post(url + "/nbconvert/html", headers=auth(), json={}, timeout=10)
    assert post.status_code == 403


def test_binary_content_is_refused_but_notebooks_and_text_open(enclave_server):
    url, _ = enclave_server
    image = requests.get(url + "/api/contents/slice.png", headers=auth(), timeout=10)
    assert image.status_code == 403 and "airlock" in image.json()["message"]
    text = requests.get(url + "/api/contents/table.csv", headers=auth(), timeout=10)
    assert text.ok and text.json()["content"].startswith("arm,n")
    notebook = requests.get(url + "/api/contents/nb.ipynb", headers=auth(), timeout=10)
    assert notebook.ok and notebook.json()["type"] == "notebook"
    listing = requests.get(url + "/api/contents/", headers=auth(), timeout=10)
    assert {m["name"] for m in listing.json()["content"]} >= {"slice.png", "table.csv"}


def test_terminals_are_off_and_insitu_is_the_default_kernel(enclave_server):
    url, _ = enclave_server
    terminal = requests.post(url + "/api/terminals", headers=auth(), timeout=10)
    assert terminal.status_code in (403, 404)
    specs = requests.get(url + "/api/kernelspecs", headers=auth(), timeout=10).json()
    assert specs["default"] == KERNEL_NAME
    assert specs["kernelspecs"][KERNEL_NAME]["spec"]["display_name"] == DISPLAY_NAME


def test_the_insitu_kernel_starts_with_insitu_imported(tmp_path: Path):
    from jupyter_client.manager import start_new_kernel

    jupyter_path = tmp_path / "share"
    write_kernelspec(jupyter_path)
    os.environ["JUPYTER_PATH"] = str(jupyter_path)
    try:
        manager, client = start_new_kernel(kernel_name=KERNEL_NAME)
    finally:
        del os.environ["JUPYTER_PATH"]
    try:
        reply = client.execute_interactive("assert insitu.__version__", timeout=60)
        assert reply["content"]["status"] == "ok"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_insitu_kernel_install_writes_the_spec(tmp_path: Path, capsys):
    from insitu.cli import main

    assert main(["kernel", "install", "--prefix", str(tmp_path)]) == 0
    spec = json.loads((tmp_path / "share/jupyter/kernels/insitu/kernel.json").read_text())
    assert spec["display_name"] == DISPLAY_NAME
    assert "--IPKernelApp.exec_lines=import insitu" in spec["argv"]
    assert "installed the insitu kernel spec" in capsys.readouterr().out
