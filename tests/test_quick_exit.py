"""One-task processes (site runner, ServerApp) end without Python's teardown, output kept."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import atexit, logging, sys
from insitu.federation.quick_exit import run_and_exit
atexit.register(lambda: print("teardown ran"))
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

def main():
    try:
        print("buffered, no newline", end="")
        logging.getLogger("task").info("logged line")
        {end}
    finally:
        print(" / finally ran", end="")

run_and_exit(main)
"""


def _run(end: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(end=end)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("end", "code", "message"),
    [("return 3", 3, ""), ("sys.exit(0)", 0, ""), ("sys.exit('bad config')", 1, "bad config")],
)
def test_the_process_ends_with_its_code_and_all_its_output(end: str, code: int, message: str):
    done = _run(end)
    assert done.returncode == code
    assert done.stdout == "buffered, no newline / finally ran"  # flushed; no teardown
    assert "logged line" in done.stderr and message in done.stderr


def test_an_unexpected_error_leaves_the_normal_way_with_its_traceback():
    done = _run("raise RuntimeError('boom')")
    assert done.returncode == 1
    assert "RuntimeError: boom" in done.stderr and "teardown ran" in done.stdout
