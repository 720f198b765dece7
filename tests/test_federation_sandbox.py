"""Sandbox resource limits (issue 13): an approved app that allocates too much, spins,
forks, writes a huge file or hangs is stopped by the site with a fixed error (code 4006,
the site's words, never the app's), every process it started ends, and the site serves
the next call. Real sandbox processes (own account and network namespace as root) run
through the site runner's AppCall and checker on an ingested node home
(tests/sandbox_driver.py); the SuperLink is not needed for this."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from fixtures_federation import DATASET, read_audit

from insitu.federation.apps import build_fab

pytestmark = pytest.mark.slow

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "greedy"
version = "1.0.0"
description = "an app that takes more than its share"
license = "Apache-2.0"

[tool.flwr.app]
publisher = "mallory"

[tool.flwr.app.components]
serverapp = "greedy_app:server"
clientapp = "greedy_app:client"

[tool.flwr.app.config]
insitu-identity = ""
marker = ""
bait = ""
home = ""

[tool.insitu.egress]
message-types = ["query.*"]
metrics = ["m/*"]
"""

APP = """
import os
import time

import numpy as np
from flwr.app import Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from insitu.federation import site_data

client = ClientApp()
server = ServerApp()


def _reply(msg, **values):
    return Message(RecordDict({"m": MetricRecord(values)}), reply_to=msg)


@client.query("allocate")
def allocate(msg, context):
    held = []
    for _ in range(2048):  # up to 64 GiB of address space, 32 MiB at a time (untouched)
        held.append(np.empty(32 << 20, dtype=np.uint8))
    return _reply(msg, held=float(len(held)))


@client.query("spin")
def spin(msg, context):
    while True:
        pass


@client.query("fork")
def fork(msg, context):
    for _ in range(200):
        if os.fork() == 0:  # each child leaves the app's session and waits
            os.setsid()
            os.execv("/bin/sleep", [context.run_config["marker"], "600"])
    return _reply(msg, forked=200.0)


@client.query("write")
def write(msg, context):
    with open("big.bin", "wb") as out:
        for _ in range(64):
            out.write(b"subject 0042 " * 80000)
    return _reply(msg, written=64.0)


@client.query("sleep")
def sleep(msg, context):
    time.sleep(600)


@client.query("snoop")
def snoop(msg, context):
    opened = 0.0
    for path in (context.run_config["bait"], context.run_config["home"] + "/insitu.toml"):
        try:
            with open(path, "rb") as f:
                f.read(1)
            opened += 1
        except OSError:
            continue  # refused: what the site must make happen
    data = site_data(context)  # an honest aggregate beside it (the site's minimum subjects)
    values = [float(data.image(str(s)).mean()) for s in data.series.series_id]
    return _reply(msg, opened=opened, mean=sum(values) / len(values))


@client.query("mean")
def mean(msg, context):
    data = site_data(context)
    values = [float(data.image(str(s)).mean()) for s in data.series.series_id]
    return _reply(msg, mean=sum(values) / len(values))
"""

SITE = "site-a"
MARKER = f"insitu-fork-attack-{uuid.uuid4().hex[:12]}"
TIGHT = {
    "allocate": {"sandbox_memory_mb": 512},
    "spin": {"sandbox_cpu_seconds": 3},
    "fork": {"sandbox_max_processes": 16},
    "write": {"sandbox_file_size_mb": 8},
    "sleep": {"sandbox_timeout": 5.0},
    "snoop": {},  # reads outside its folder: a file any account may read, the node home
    "mean": {},  # afterwards, with the site's defaults: the site goes on
}


def _marked() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if MARKER.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def outcomes(federation_sites, tmp_path_factory) -> dict[str, Any]:
    """Each action once, in this order, in one driver process (like one site runner each)."""
    home = federation_sites.homes[SITE]
    folder = tmp_path_factory.mktemp("greedy")
    # Bait any account may read (0755 folder, 0644 file): only Landlock keeps the app out.
    bait_folder = Path(tempfile.mkdtemp(prefix="insitu-bait-", dir="/tmp"))
    bait_folder.chmod(0o755)
    bait = bait_folder / "subject-0042.txt"
    bait.write_text("PatientName=DOE^JANE")
    bait.chmod(0o644)
    run_config = {"marker": MARKER, "bait": str(bait), "home": str(home.root)}
    fab = folder / "greedy.fab"
    fab.write_bytes(
        build_fab({"pyproject.toml": PYPROJECT.encode(), "greedy_app.py": APP.encode()})
    )
    spec = {
        "home": str(home.root),
        "dataset": DATASET,
        "site": SITE,
        "fab": str(fab),
        "fab_id": "mallory/greedy",
        "researcher": "mallory@site-b",
        "calls": [
            {"type": f"query.{action}", "federation": limits, "run_config": run_config}
            for action, limits in TIGHT.items()
        ],
    }
    driver = Path(__file__).with_name("sandbox_driver.py")
    leftover: list[int] = []
    (folder / "spec.json").write_text(json.dumps(spec))
    out, err = folder / "out.jsonl", folder / "err.log"
    try:
        # Files, not pipes: a process the app left behind must not keep this waiting.
        with (folder / "spec.json").open() as stdin, out.open("w") as stdout, err.open("w") as e:
            code = subprocess.call(
                [sys.executable, str(driver)], stdin=stdin, stdout=stdout, stderr=e, timeout=900
            )
    finally:
        shutil.rmtree(bait_folder, ignore_errors=True)
        leftover = _marked()
        for pid in leftover:  # never leave the attack's processes behind, also on failure
            os.kill(pid, signal.SIGKILL)
    assert code == 0, err.read_text()[-4000:]
    results = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
    return {r["type"].removeprefix("query."): r for r in results} | {"leftover": leftover}


def _stopped(outcome: dict[str, Any], what: str) -> None:
    assert outcome["code"] == 4006, outcome
    assert f"site '{SITE}': the ClientApp reached its {what}" in outcome["reason"], outcome
    assert "does not forward the app's own error text" in outcome["reason"]


def test_an_app_that_allocates_too_much_is_stopped(outcomes):
    _stopped(outcomes["allocate"], "memory limit (512 MiB, [federation] sandbox_memory_mb)")


def test_an_app_that_spins_is_stopped_by_its_cpu_limit(outcomes):
    _stopped(outcomes["spin"], "CPU time limit (3 s, [federation] sandbox_cpu_seconds)")


def test_an_app_that_forks_is_stopped_and_none_of_its_processes_survive(outcomes):
    from insitu.federation import sandbox_launch as launch

    if os.geteuid() != 0 and not launch._can_unshare(launch.CLONE_NEWUSER | launch.CLONE_NEWNET):
        pytest.skip("neither root nor user namespaces: the sandbox has no process count of its own")
    _stopped(outcomes["fork"], "process limit (16 processes and threads")
    # Children that left the app's session (setsid) were ended too, by the runner.
    assert outcomes["leftover"] == []


def test_an_app_that_writes_a_huge_file_is_stopped(outcomes):
    _stopped(outcomes["write"], "file size limit (8 MiB, [federation] sandbox_file_size_mb)")


def test_an_app_that_hangs_is_stopped_by_the_wall_clock(outcomes):
    _stopped(outcomes["sleep"], "time limit (5 s, [federation] sandbox_timeout)")


def test_an_app_reads_nothing_outside_its_folder(outcomes):
    """Landlock: neither a file every account may read nor the node home (as root the
    app's own account already keeps it out of the home; the bait only Landlock)."""
    assert outcomes["snoop"]["code"] is None, outcomes["snoop"]
    from insitu.federation.landlock import abi_version

    files = outcomes["snoop"]["isolation"]["files"]
    if abi_version() == 0:  # a kernel without Landlock: the record must say so
        assert files.startswith("not confined"), files
        return
    assert outcomes["snoop"]["metrics"]["m/opened"] == 0.0
    assert files.startswith("Landlock ABI "), files


def test_the_site_serves_the_next_call_and_audits_each_limit(outcomes, federation_sites):
    assert outcomes["mean"]["code"] is None, outcomes["mean"]
    assert set(outcomes["mean"]["metrics"]) == {"m/mean"}
    home = federation_sites.homes[SITE]
    entries = [
        e
        for e in read_audit(home, "federation.reply")
        if e["details"].get("app") == "mallory/greedy==1.0.0"
    ]
    limits = [e["details"].get("limit") for e in entries if e["details"].get("limit")]
    assert sorted(limits) == sorted(["memory", "cpu", "processes", "file-size", "time"])
    assert all(e["user"] == "mallory@site-b" for e in entries)
    assert "0042" not in json.dumps(entries)  # nothing the app wrote or said
    isolation = outcomes["mean"]["isolation"]
    assert isolation["limits"].startswith("memory 4096 MiB, CPU 1800 s, file size 1024 MiB")
    assert isolation["processes"] == "all ended after the call"
