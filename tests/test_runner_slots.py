"""The site executor's runner bookkeeping (federation/runner_slots.py), with real processes.

Found in CI on a loaded machine: a runner still importing when Flower's 30-s claim ran
out could never take its task; the executor claimed the task again for a new runner,
every 30 s, and 80 runners per site piled up. These tests hold the rules that stop it.
"""

from __future__ import annotations

import inspect
import os
import sys
import time
from pathlib import Path

import pytest

from insitu.federation import runner_slots, site_runner
from insitu.federation.runner_slots import CLAIM_SECONDS, RunnerSlots

# A stand-in runner: reads its token, then does what the test asks (argv: --taken-fd N).
RUNNER = """
import os, signal, sys, time
fd = int(sys.argv[-1])
token = sys.stdin.readline().strip()
mode = {mode!r}
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open({ready!r}, "w").close()
if mode == "takes":
    os.write(fd, b"1"); os.close(fd)
if mode == "exits":
    sys.exit(0)
time.sleep(60)
"""


def _slots(mode: str, claim: float = 60.0, ready: Path | None = None) -> RunnerSlots:
    script = RUNNER.format(mode=mode, ready=str(ready))
    return RunnerSlots([sys.executable, "-c", script], claim_seconds=claim)


def _until(check: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "waited too long"
        time.sleep(0.05)


def test_a_runner_that_takes_its_task_lets_the_next_be_claimed() -> None:
    slots = _slots("takes")
    runner = slots.launch()
    assert not slots.busy and not slots.taking, "a spare has no task yet"
    slots.hand(runner, "t0ken")
    assert slots.busy and slots.taking

    def took() -> bool:
        slots.poll()
        return not slots.taking

    _until(took)
    assert runner.process.poll() is None, "it runs its task; nobody stopped it"
    assert slots.busy
    runner.process.kill()
    runner.process.wait()
    slots.poll()
    assert slots.runners == [] and not slots.busy


def test_a_runner_that_misses_the_claim_is_stopped_and_said(
    capfd: pytest.CaptureFixture[str],
) -> None:
    slots = _slots("slow", claim=0.5)
    runner = slots.launch()
    slots.hand(runner, "t0ken")
    time.sleep(0.6)
    slots.poll()
    assert runner.process.returncode is not None, "stopped: its token is void"
    assert slots.runners == [] and not slots.taking
    assert "did not start its task within Flower's 0 s claim" in capfd.readouterr().err


def test_a_runner_deaf_to_sigterm_is_killed_after_the_grace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(runner_slots, "STOP_GRACE_SECONDS", 0.5)
    ready = tmp_path / "ignoring"
    slots = _slots("ignore-term", claim=0.5, ready=ready)
    runner = slots.launch()
    slots.hand(runner, "t0ken")
    _until(ready.exists)  # it has read its token and ignores SIGTERM
    time.sleep(0.5)
    slots.poll()
    assert runner.process.returncode == -9


def test_a_runner_that_ends_without_its_task_is_forgotten() -> None:
    slots = _slots("exits")
    runner = slots.launch()
    slots.hand(runner, "t0ken")
    runner.process.wait(timeout=20)

    def forgotten() -> bool:
        slots.poll()
        return not slots.runners

    _until(forgotten)
    assert not slots.taking and not slots.busy


def test_the_token_never_goes_on_the_command_line() -> None:
    slots = _slots("takes")
    runner = slots.launch()
    try:
        slots.hand(runner, "s3cret-t0ken")
        cmdline = Path(f"/proc/{runner.process.pid}/cmdline")
        _until(lambda: b"--taken-fd" in cmdline.read_bytes())  # exec'd (not the fork)
        assert b"s3cret" not in cmdline.read_bytes()
    finally:
        runner.process.kill()
        runner.process.wait()
        slots.close()


def test_the_claim_window_is_flowers() -> None:
    """Flower voids a claimed task's token HEARTBEAT_DEFAULT_INTERVAL after the claim
    (both its states); if that changes, the executor's window must follow."""
    from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL
    from flwr.supercore.corestate.in_memory_corestate import InMemoryCoreState
    from flwr.supercore.corestate.sql_corestate import SqlCoreState

    assert CLAIM_SECONDS == HEARTBEAT_DEFAULT_INTERVAL
    for state in (InMemoryCoreState, SqlCoreState):
        source = inspect.getsource(state.claim_task)
        assert "timedelta(seconds=HEARTBEAT_DEFAULT_INTERVAL)" in source, state


def test_the_runner_tells_it_took_its_task_once() -> None:
    read_end, write_end = os.pipe()
    site_runner._tell_taken(write_end)
    assert os.read(read_end, 8) == b"1"
    assert os.read(read_end, 8) == b"", "closed after telling"
    site_runner._tell_taken(None)  # no executor listening: nothing to do
    os.close(read_end)


def test_the_site_counts_its_idle_time_from_the_end_of_its_last_task() -> None:
    # The executor starts the next runner only after a second without a task, so the
    # spare's imports do not compete with the reply still being uploaded.
    slots = _slots("takes")
    assert slots.idle_seconds() == float("inf")  # no task yet: start a spare at once
    runner = slots.launch()
    slots.hand(runner, "t0ken")
    slots.poll()
    assert slots.idle_seconds() == 0.0  # a task is running
    runner.process.kill()
    runner.process.wait()
    slots.poll()
    assert 0.0 <= slots.idle_seconds() < 5.0  # from when it was last seen with its task
    slots.last_busy = time.monotonic() - 2.0
    assert slots.idle_seconds() >= 2.0


def test_the_executor_waits_a_second_of_idleness_before_the_next_runner() -> None:
    from insitu.federation import site_exec

    source = inspect.getsource(site_exec.main)
    assert "slots.idle_seconds() >= SPARE_AFTER_IDLE_SECONDS" in source
    assert site_exec.SPARE_AFTER_IDLE_SECONDS == 1.0
