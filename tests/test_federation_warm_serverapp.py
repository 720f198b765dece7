"""The coordinator's ServerApp processes started ahead (insitu.federation.coordinator_exec).

Each run's ServerApp is a process that was started and imported before the run came,
and gets the run's token on its stdin, never on a command line. These tests drive the
executor with a stand-in for the ServerApp process (a script that records what it was
given); the live tests (test_federation_live.py) run the real one.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flwr.common.constant import FLWR_TASK_TOKEN_LENGTH
from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor.types import ExecutionSpec, LaunchResultStatus

from insitu.federation import coordinator_exec, serverapp
from insitu.federation.coordinator_exec import LaunchKey, WarmExecutor

# Stands in for insitu.federation.serverapp: waits for a token, writes what it got.
STAND_IN = """
import os, sys
out = sys.argv[1]
token = sys.stdin.readline().strip()
if token:
    with open(os.path.join(out, f"{os.getpid()}.run"), "w") as fh:
        fh.write(token + "\\n" + " ".join(sys.argv) + "\\n")
"""


def _token(n: int) -> str:
    return f"{n:x}".rjust(FLWR_TASK_TOKEN_LENGTH * 2, "a")


def _spec(n: int, address: str = "127.0.0.1:9091") -> ExecutionSpec:
    return ExecutionSpec(
        task_type=TaskType.SERVER_APP,
        runtime_api_address=address,
        token=_token(n),
        insecure=True,
        root_certificates_path=None,
        runtime_dependency_install=False,
        parent_pid=os.getpid(),
        suppress_output=False,
        task_id=n,
    )


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The stand-in replaces the ServerApp command; what each process got lands here."""
    monkeypatch.setattr(
        LaunchKey, "command", lambda self: [sys.executable, "-c", STAND_IN, str(tmp_path)]
    )
    return tmp_path


def _close(executor: WarmExecutor) -> None:
    """Close as the SuperExec does, after the runs' stand-ins have ended (reaped)."""
    for process, _ in executor.running:
        process.wait(timeout=30)
    executor.close()


def _served(folder: Path, count: int, timeout: float = 30.0) -> dict[int, list[str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {int(p.stem): p.read_text().splitlines() for p in folder.glob("*.run")}
        if len(found) >= count and all(len(v) == 2 for v in found.values()):
            return found
        time.sleep(0.05)
    raise AssertionError(f"{count} runs were not served within {timeout} s: {found}")


def test_two_runs_in_a_row_each_get_their_own_process_started_ahead(runs: Path) -> None:
    executor = WarmExecutor(LaunchKey.of(_spec(1)))
    clock = coordinator_exec.RunAwareClock(executor, busy=0.0)
    try:
        first_spare = executor.spare
        assert first_spare is not None  # started before any run came
        assert executor.launch(_spec(1)).status == LaunchResultStatus.ACCEPTED
        clock.sleep(0.01)  # the SuperExec's wait between two asks
        assert executor.spare is None  # not while the run that just started goes on
        _served(runs, 1)
        first_spare.wait(timeout=30)  # the run ended
        clock.sleep(0.01)
        assert executor.spare is not None and executor.spare is not first_spare
        second_spare = executor.spare
        assert executor.launch(_spec(2)).status == LaunchResultStatus.ACCEPTED
        served = _served(runs, 2)
        assert served[first_spare.pid][0] == _token(1)
        assert served[second_spare.pid][0] == _token(2)  # one process per run
        for token, argv in served.values():
            assert token not in argv  # the token came on stdin
    finally:
        _close(executor)


def test_a_run_that_goes_on_gets_the_next_process_started_after_a_while(runs: Path) -> None:
    executor = WarmExecutor(LaunchKey.of(_spec(1)), spare_after=5.0)
    long_run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert executor.spare is not None
        coordinator_exec._end(executor._take(executor.key))  # type: ignore[arg-type]  # a run took it
        executor.running.append((long_run, time.monotonic()))
        executor.reconcile()
        assert executor.spare is None  # the run started less than 5 s ago
        executor.running[-1] = (long_run, time.monotonic() - 5.0)
        executor.reconcile()
        assert executor.spare is not None  # ready for a second researcher's run
    finally:
        long_run.kill()
        long_run.wait()
        _close(executor)


def test_a_spare_that_died_does_not_lose_the_run(runs: Path) -> None:
    executor = WarmExecutor(LaunchKey.of(_spec(1)))
    try:
        assert executor.spare is not None
        executor.spare.kill()
        executor.spare.wait()
        assert executor.launch(_spec(7)).status == LaunchResultStatus.ACCEPTED
        assert [v[0] for v in _served(runs, 1).values()] == [_token(7)]
    finally:
        _close(executor)


def test_a_run_with_other_settings_gets_a_process_with_those(runs: Path) -> None:
    executor = WarmExecutor(LaunchKey.of(_spec(1, address="127.0.0.1:1")))
    try:
        spare = executor.spare
        assert spare is not None
        assert executor.launch(_spec(3, address="127.0.0.1:2")).status == "accepted"
        assert spare.wait(timeout=10) == 0  # the unfitting spare was ended, unused
        assert executor.key == LaunchKey.of(_spec(3, address="127.0.0.1:2"))
        assert [v[0] for v in _served(runs, 1).values()] == [_token(3)]
    finally:
        _close(executor)


def test_close_ends_the_spare_without_a_run(runs: Path) -> None:
    executor = WarmExecutor(LaunchKey.of(_spec(1)))
    spare = executor.spare
    assert spare is not None
    executor.close()
    assert spare.poll() == 0
    assert not list(runs.glob("*.run"))


def test_a_spare_that_cannot_start_is_not_restarted_every_poll(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        LaunchKey, "command", lambda self: [sys.executable, "-c", "raise SystemExit(3)"]
    )
    executor = WarmExecutor(LaunchKey.of(_spec(1)))
    try:
        first = executor.spare
        assert first is not None and first.wait(timeout=30) == 3
        executor.reconcile()
        assert executor.spare is first  # within RESTART_SECONDS: no new process
    finally:
        _close(executor)


def test_the_serverapp_command_carries_no_token() -> None:
    key = LaunchKey.of(_spec(5))
    command = key.command()
    assert command[:3] == [sys.executable, "-m", "insitu.federation.serverapp"]
    assert _token(5) not in command and "--token" not in command
    assert "--token-file" not in command


def test_read_token_takes_one_line_of_hex() -> None:
    assert serverapp.read_token(io.StringIO(_token(9) + "\n")) == _token(9)
    assert serverapp.read_token(io.StringIO("")) is None  # executor ended: no run
    with pytest.raises(SystemExit, match="exactly one run token"):
        serverapp.read_token(io.StringIO("not a token\n"))


def test_a_serverapp_process_without_a_token_ends_quietly() -> None:
    # What a spare does when the SuperExec stops before a run came (its stdin closes).
    done = subprocess.run(
        [sys.executable, "-m", "insitu.federation.serverapp", "--runtime-api-address",
         "127.0.0.1:1", "--insecure"],
        input=b"", capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_other_task_types_keep_the_token_file(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(
        coordinator_exec, "launch_with_token_file", lambda self, spec: seen.append(spec.token)
    )
    executor = WarmExecutor(None)
    spec = _spec(4)
    other = ExecutionSpec(**{**spec.__dict__, "task_type": TaskType.SIMULATION})
    executor.launch(other)
    assert seen == [_token(4)] and executor.spare is None


def test_the_superexec_gets_the_warm_executor_with_its_own_settings(
    runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    from flwr.supercore.constant import ExecutorType

    loop = importlib.import_module("flwr.supercore.superexec.run_superexec")
    monkeypatch.setattr(loop, "get_executor", loop.get_executor)  # restored afterwards
    monkeypatch.setattr(loop, "time", loop.time)
    made: list[WarmExecutor] = []

    def flower_run_superexec(**kwargs: object) -> None:  # what Flower's loop does first
        made.append(loop.get_executor(ExecutorType.SUBPROCESS, None, insecure=True))

    coordinator_exec._with_warm_executor(flower_run_superexec)(
        runtime_api_address="127.0.0.1:9091",
        insecure=True,
        root_certificates_path=None,
        runtime_dependency_install=False,
    )
    (executor,) = made
    try:
        assert isinstance(executor, WarmExecutor) and executor.spare is not None
        # What Flower's plugin will put in a ServerApp's spec: the spare fits the first run.
        from flwr.supercore.superexec.plugin import AutoExecPlugin

        plugin = AutoExecPlugin("127.0.0.1:9091", True, None, False, executor=executor)
        spec = plugin._build_execution_spec(_token(1), TaskType.SERVER_APP, 1)
        assert executor.key == LaunchKey.of(spec)
        assert isinstance(loop.time, coordinator_exec.RunAwareClock)
        assert loop.time.executor is executor
    finally:
        _close(executor)


def test_the_pinned_superexec_loop_still_waits_through_its_module_clock() -> None:
    # If a Flower upgrade changes the loop, RunAwareClock no longer applies: this says so.
    import importlib
    import inspect

    loop = importlib.import_module("flwr.supercore.superexec.run_superexec")
    source = inspect.getsource(loop)
    assert "\nimport time\n" in source and source.count("time.sleep(") == 1
    assert "time.sleep(task_poll_interval)" in source


def test_the_superexec_asks_less_often_while_a_serverapp_runs() -> None:
    executor = WarmExecutor(None)
    clock = coordinator_exec.RunAwareClock(executor, busy=0.6)
    start = time.monotonic()
    clock.sleep(0.05)  # idle: Flower's interval
    idle = time.monotonic() - start
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    executor.running.append((running, time.monotonic()))
    try:
        start = time.monotonic()
        clock.sleep(0.05)
        busy = time.monotonic() - start
        threading.Timer(0.2, running.kill).start()  # the run ends during the wait
        start = time.monotonic()
        clock.sleep(0.05)
        ended = time.monotonic() - start
    finally:
        running.kill()
        running.wait()
    assert idle < 0.3 and busy >= 0.6 and ended < 0.5
    assert clock.monotonic is time.monotonic  # everything else is the time module


# --- the run's last log lines: flushed when uploaded, not after a fixed second ---------


@pytest.fixture
def runtime_module(monkeypatch: pytest.MonkeyPatch) -> object:
    """Flower's ServerApp runtime module; what exact_log_flush replaces is restored."""
    import importlib

    from flwr.supercore import logger

    module = importlib.import_module("flwr.superlink.runtime.run_serverapp")
    for name in ("flush_logs", "start_log_uploader"):
        monkeypatch.setattr(module, name, getattr(module, name))
    monkeypatch.setattr(logger, "time", logger.time)
    return module


def test_the_pinned_serverapp_runtime_still_flushes_with_a_fixed_second() -> None:
    # If a Flower upgrade changes these, serverapp.exact_log_flush needs a look.
    import importlib
    import inspect

    from flwr.supercore import logger

    assert "time.sleep(min(1, remaining))" in inspect.getsource(logger.flush_logs)
    source = inspect.getsource(importlib.import_module("flwr.superlink.runtime.run_serverapp"))
    assert "flush_logs(log_queue)" in source
    assert "client=grid._runtime_client" in source and "start_log_uploader(" in source
    assert source.index("flush_logs(log_queue)") < source.index("PushTaskOutput(")
    # the uploader pauses through the module's `time` (exact_log_flush ends the pause)
    assert "time.sleep(LOG_UPLOAD_INTERVAL)" in inspect.getsource(logger._log_uploader)


class _Uploads:
    """Stands in for the Runtime API client: records each PushLogs, may fail them."""

    def __init__(self, fail: bool = False) -> None:
        self.lines: list[str] = []
        self.fail = fail

    def PushLogs(self, request: object) -> object:
        import httpx

        if self.fail:
            raise httpx.ConnectError("down")
        time.sleep(0.05)  # a request takes a while
        self.lines += list(request.logs)  # type: ignore[attr-defined]
        return object()


@contextlib.contextmanager
def _uploading(runtime_module: object) -> Iterator[tuple[serverapp.CountingQueue, _Uploads]]:
    """The ServerApp's log queue with insitu's exact flush and Flower's uploader running."""
    queue = serverapp.CountingQueue()
    serverapp.exact_log_flush(queue)
    client = _Uploads()
    uploader = runtime_module.start_log_uploader(  # type: ignore[attr-defined]
        log_queue=queue, node_id=0, run_id=1, client=client
    )
    try:
        yield queue, client
    finally:
        queue.put(None)  # Flower's stop signal, then any pause is ended
        queue.wake.set()
        uploader.join(timeout=5.0)


def test_the_flush_waits_until_the_last_line_is_uploaded_and_no_longer(
    runtime_module: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flwr.supercore import logger

    sleeps: list[float] = []  # Flower's own flush sleeps a fixed second once the queue is empty
    with _uploading(runtime_module) as (queue, client):
        clock = logger.time  # the clock exact_log_flush gave Flower's logger
        pause = clock.sleep

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            pause(seconds)

        monkeypatch.setattr(clock, "sleep", sleep)
        for i in range(5):
            queue.put(f"line {i}\n")
        queue.put("INSITU-RESULT {}\n")
        assert runtime_module.flush_logs(queue) is True  # type: ignore[attr-defined]
        assert client.lines[-1] == "INSITU-RESULT {}\n" and len(client.lines) == 6
    assert all(seconds < 1 for seconds in sleeps), sleeps


def test_the_flush_ends_the_uploaders_pause_between_uploads(
    runtime_module: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flwr.supercore import logger

    monkeypatch.setattr(logger, "LOG_UPLOAD_INTERVAL", 60.0)  # a pause no flush outlasts
    with _uploading(runtime_module) as (queue, client):
        queue.put("first\n")
        assert runtime_module.flush_logs(queue, timeout=5.0) is True  # type: ignore[attr-defined]
        queue.put("INSITU-RESULT {}\n")  # the uploader is pausing again: the flush ends it
        assert runtime_module.flush_logs(queue, timeout=5.0) is True  # type: ignore[attr-defined]
        assert client.lines == ["first\n", "INSITU-RESULT {}\n"]


def test_the_flush_gives_up_after_its_timeout_when_uploads_fail(runtime_module: object) -> None:
    from flwr.supercore.logger import stop_log_uploader

    queue = serverapp.CountingQueue()
    serverapp.exact_log_flush(queue)
    uploader = runtime_module.start_log_uploader(  # type: ignore[attr-defined]
        log_queue=queue, node_id=0, run_id=1, client=_Uploads(fail=True)
    )
    try:
        queue.put("lost\n")
        assert runtime_module.flush_logs(queue, timeout=0.3) is False  # type: ignore[attr-defined]
    finally:
        stop_log_uploader(queue, uploader, timeout=1.0)
