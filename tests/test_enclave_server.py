"""The insitu kernel spec and its installation (the enclave's server settings are
tested on a spawned server in test_enclave_hub.py::test_the_server_is_an_enclave),
and the server arguments the hub adds."""

from __future__ import annotations

import json
import os
from pathlib import Path

from insitu.kernels.enclave import server_args
from insitu.kernels.kernelspec import DISPLAY_NAME, KERNEL_NAME, write_kernelspec


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
        # the reading stack was loaded while the kernel started, and left no names behind
        check = (
            "import sys; from insitu.kernels.preload import MODULES; "
            "assert all(m in sys.modules for m in MODULES), [m for m in MODULES "
            "if m not in sys.modules]; "
            "assert not [n for n in dir() if n.startswith('_insitu')]"
        )
        reply = client.execute_interactive(check, timeout=60)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_insitu_kernel_install_writes_the_spec(tmp_path: Path, capsys):
    from insitu.cli import main

    assert main(["kernel", "install", "--prefix", str(tmp_path)]) == 0
    spec = json.loads((tmp_path / "share/jupyter/kernels/insitu/kernel.json").read_text())
    assert spec["display_name"] == DISPLAY_NAME
    assert any(a.startswith("--IPKernelApp.exec_lines=import insitu;") for a in spec["argv"])
    assert "installed the insitu kernel spec" in capsys.readouterr().out


def test_server_args_switch_off_downloads_and_pick_the_insitu_kernel():
    args = server_args()
    assert (
        "--ServerApp.contents_manager_class=insitu.kernels.enclave.EnclaveContentsManager" in args
    )
    assert "--ServerApp.extra_services=insitu.kernels.enclave" in args
    assert "--ServerApp.terminals_enabled=False" in args
    assert "--MappingKernelManager.default_kernel_name=insitu" in args
    from insitu.kernels import enclave

    assert {p for p, _ in enclave.default_handlers} == {r"/files/.*", r"/nbconvert/.*", r"/view/.*"}
