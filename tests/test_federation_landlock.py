"""Landlock on this kernel (security review S26): a process confined by
:func:`insitu.federation.landlock.restrict` reads only what it was given, writes only its
folder, opens no TCP connection and signals nobody outside, also as root; the sandbox
refuses to start when the node home lies inside what an app may read."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from insitu.federation import landlock
from insitu.federation.sandbox import ConfinementError, confine, readable_paths

ATTEMPTS = r"""
import json, os, socket, sys
from pathlib import Path
from insitu.federation import landlock
from insitu.federation.sandbox import readable_paths

bait, folder, port, parent = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
confinement = landlock.restrict(readable_paths(), [folder])
result = {"describe": confinement.describe()}

def attempt(name, action):
    try:
        action()
        result[name] = "done"
    except OSError as exc:
        result[name] = exc.errno

attempt("read bait", lambda: open(bait).read())
attempt("list bait's folder", lambda: os.listdir(Path(bait).parent))
attempt("write own folder", lambda: (folder / "out.txt").write_text("ok"))
attempt("write beside bait", lambda: Path(bait).with_name("planted").write_text("x"))
attempt("connect tcp", lambda: socket.create_connection(("127.0.0.1", port), timeout=5))
attempt("signal parent", lambda: os.kill(parent, 0))
attempt("read parent's environ", lambda: open(f"/proc/{parent}/environ", "rb").read())
import numpy, pandas, flwr.clientapp  # the installation stays readable
result["imports"] = "done"
print(json.dumps(result))
"""


@pytest.fixture()
def bait() -> Iterator[Path]:
    """A file every account may read, outside anything an app is given."""
    folder = Path(tempfile.mkdtemp(prefix="insitu-bait-", dir="/tmp"))
    folder.chmod(0o755)
    path = folder / "subject-0042.txt"
    path.write_text("PatientName=DOE^JANE")
    path.chmod(0o644)
    try:
        yield path
    finally:
        for item in folder.iterdir():
            item.unlink()
        folder.rmdir()


def test_the_isolation_record_says_what_this_kernel_gives() -> None:
    # Development and CI machines here run Linux 6.18 (ABI 7). On another kernel the
    # tests below check what its ABI offers, and the audit says what held.
    abi = landlock.abi_version()
    expected = landlock.Confinement(abi, files=abi > 0, tcp=abi >= 4, signals=abi >= 6)
    text = expected.describe()
    assert text.startswith(f"Landlock ABI {abi}:") if abi else "not confined" in text
    assert ("no TCP" in text) == (abi >= 4) and ("no signals" in text) == (abi >= 6)


def test_a_confined_process_reaches_only_what_it_was_given(bait: Path, tmp_path: Path) -> None:
    own = tmp_path / "own"
    own.mkdir()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-c", ATTEMPTS, str(bait), str(own), str(port), str(os.getpid())],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    abi = landlock.abi_version()
    if abi == 0:  # no Landlock in this kernel: nothing is confined, and it says so
        assert result["describe"].startswith("not confined")
        return
    denied = 13  # EACCES: Landlock refuses, also for root
    assert result["read bait"] == denied
    assert result["list bait's folder"] == denied
    assert result["write beside bait"] == denied
    assert result["write own folder"] == "done" and (own / "out.txt").read_text() == "ok"
    assert result["connect tcp"] == (denied if abi >= 4 else "done")
    assert result["signal parent"] == (1 if abi >= 6 else "done")  # EPERM: outside its domain
    assert result["read parent's environ"] == denied
    assert result["imports"] == "done"
    assert result["describe"].startswith(f"Landlock ABI {abi}:")
    assert not bait.with_name("planted").exists()


def test_the_sandbox_will_not_start_beside_a_home_an_app_could_read() -> None:
    inside = readable_paths()[0] / "some-node-home"
    # Checked before Landlock is touched: this process stays unconfined.
    with pytest.raises(ConfinementError, match=r"lies inside .*which a federated app may read"):
        confine([str(inside)])
