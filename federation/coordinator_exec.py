"""The coordinator's SuperExec: Flower's own, with ServerApps started ahead, tokens off argv.

Flower 1.42's SuperLink starts ``flower-superexec``, whose ``SubprocessExecutor``
launches each run's ``flwr-serverapp`` when the run is submitted, with
``--token <run token>`` on its command line. Two problems: the token is
readable in ``/proc/<pid>/cmdline`` by every local account of the host (with it
a local user could act as that run's ServerApp; docs/security-review.md, S27),
and the run waits while a new Python process imports Flower's runtime.

The SuperLink that ``insitu federation coordinator`` starts
(:mod:`insitu.federation.superlink`) launches this module instead: Flower's
SuperExec with :class:`WarmExecutor`. It keeps one ServerApp process
(:mod:`insitu.federation.serverapp`) started and imported ahead, and hands it
the run's token on its stdin when a run comes. Each process serves one run. The
next one is started when no run is going on, or once a run has gone on for
``SPARE_AFTER_SECONDS``: its imports (about a second of CPU) would otherwise
compete with the run that just started, at the SuperLink on the same host, for
most of a short query; a long run (training) still has the next researcher's
process ready. While a ServerApp runs, the SuperExec asks the SuperLink
for the next run once a second instead of every 0.1 s (:class:`RunAwareClock`):
those asks compete with the run's own requests at the SuperLink. Other task
types (none at a SuperLink today) get Flower's command with the token in a 0600
file of a 0700 folder (``--token-file``), removed as soon as the process has
ended.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

if TYPE_CHECKING:
    from flwr.supercore.superexec.executor.types import ExecutionSpec, LaunchResult

__all__ = [
    "LaunchKey",
    "RunAwareClock",
    "WarmExecutor",
    "launch_with_token_file",
    "main",
    "token_file",
]

STOP_SECONDS = 5.0  # a spare that is told to end (stdin closed) gets this long
# A spare that ended on its own (it failed to start) is started again at most this often,
# so a broken installation does not start a process every poll.
RESTART_SECONDS = 5.0
# While a ServerApp runs, the SuperExec asks the SuperLink for the next run at most this
# often (idle: every FLWR_SUPEREXEC_TASK_POLL_INTERVAL, 0.1 s): each ask is a request the
# SuperLink serves between the run's own (its sites' uploads, the ServerApp's pulls).
BUSY_POLL_SECONDS = 1.0
# The next run's ServerApp process is started while a run goes on only once it has gone
# on this long (see the module's docstring).
SPARE_AFTER_SECONDS = 5.0


def token_file(token: str) -> Path:
    """The token in a new file only this account can read (its folder is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="insitu-serverapp-"))
    path = folder / "token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token)
    return path


def _connection_flags(key: LaunchKey) -> list[str]:
    """The flags Flower's executor gives an app process besides its address and token."""
    flags: list[str] = []
    if key.insecure:
        flags.append("--insecure")
    elif key.root_certificates_path is not None:
        flags += ["--root-certificates", key.root_certificates_path]
    if key.parent_pid is not None:
        flags += ["--parent-pid", str(key.parent_pid)]
    if key.runtime_dependency_install:
        flags.append("--allow-runtime-dependency-installation")
    return flags


def _remove_when_done(process: subprocess.Popen[bytes], folder: Path) -> None:
    process.wait()
    shutil.rmtree(folder, ignore_errors=True)


def launch_with_token_file(self: Any, spec: ExecutionSpec) -> LaunchResult:
    """``SubprocessExecutor.launch`` with ``--token-file`` in place of ``--token``."""
    from flwr.supercore.constant import TASK_TYPE_TO_APPIO_API_ADDRESS_ARG, TASK_TYPE_TO_COMMAND
    from flwr.supercore.superexec.executor.types import LaunchResult as Accepted

    path = token_file(spec.token)
    args = [
        TASK_TYPE_TO_COMMAND[spec.task_type],
        TASK_TYPE_TO_APPIO_API_ADDRESS_ARG[spec.task_type],
        spec.runtime_api_address,
        "--token-file",
        str(path),
    ]
    args += _connection_flags(LaunchKey.of(spec))
    output = subprocess.DEVNULL if spec.suppress_output else None
    try:
        process = subprocess.Popen(args, stdout=output, stderr=output)
    except OSError:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    threading.Thread(target=_remove_when_done, args=(process, path.parent), daemon=True).start()
    return Accepted.accepted()


@dataclass(frozen=True)
class LaunchKey:
    """Everything a ServerApp process is started with, except its run's token."""

    runtime_api_address: str
    insecure: bool
    root_certificates_path: str | None
    runtime_dependency_install: bool
    parent_pid: int | None
    suppress_output: bool

    @classmethod
    def of(cls, spec: ExecutionSpec) -> LaunchKey:
        return cls(
            spec.runtime_api_address,
            spec.insecure,
            spec.root_certificates_path,
            spec.runtime_dependency_install,
            spec.parent_pid,
            spec.suppress_output,
        )

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "insitu.federation.serverapp"]
        command += ["--runtime-api-address", self.runtime_api_address]
        return command + _connection_flags(self)

    def start(self) -> subprocess.Popen[bytes]:
        output = subprocess.DEVNULL if self.suppress_output else None
        return subprocess.Popen(self.command(), stdin=subprocess.PIPE, stdout=output, stderr=output)


class WarmExecutor(SubprocessExecutor):
    """Flower's subprocess executor; a ServerApp comes from a process started ahead.

    ``expected`` is what the SuperExec will launch ServerApps with (known from its
    own arguments): the first spare is started at once. A launch whose settings
    differ gets a process started for it (the token still on stdin) and the next
    spare uses those settings.
    """

    def __init__(
        self, expected: LaunchKey | None = None, spare_after: float = SPARE_AFTER_SECONDS
    ) -> None:
        self.key = expected
        self.spare_after = spare_after
        self.spare: subprocess.Popen[bytes] | None = None
        self.spare_started = 0.0
        # ServerApps launched and still running, with when each was launched.
        self.running: list[tuple[subprocess.Popen[bytes], float]] = []
        self.reconcile()

    def reconcile(self) -> None:
        """Between polls: reap ended ServerApps, keep one spare ready (not during a
        run's first ``spare_after`` seconds)."""
        now = time.monotonic()
        self.running = [(p, at) for p, at in self.running if p.poll() is None]
        if self.key is None:
            return
        if self.spare is not None and self.spare.poll() is not None:
            if now - self.spare_started < RESTART_SECONDS:
                return
            self.spare = None
        if self.spare is None and all(now - at >= self.spare_after for _, at in self.running):
            self.spare, self.spare_started = self.key.start(), now

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor.types import LaunchResult as Result

        if spec.task_type != TaskType.SERVER_APP:
            return launch_with_token_file(self, spec)
        key = LaunchKey.of(spec)
        process = self._take(key)
        try:
            self._hand_token(process, spec.token)
        except OSError:  # the spare died in between: one fresh process, same way
            _end(process)
            process = key.start()
            try:
                self._hand_token(process, spec.token)
            except OSError as exc:
                _end(process)
                return Result.failed(f"the ServerApp process did not take its token ({exc})")
        self.running.append((process, time.monotonic()))
        self.key = key
        return Result.accepted()

    def _take(self, key: LaunchKey) -> subprocess.Popen[bytes]:
        spare, self.spare = self.spare, None
        if spare is not None and spare.poll() is None and self.key == key:
            return spare
        if spare is not None:
            _end(spare)
        return key.start()

    @staticmethod
    def _hand_token(process: subprocess.Popen[bytes], token: str) -> None:
        assert process.stdin is not None
        process.stdin.write(token.encode() + b"\n")
        process.stdin.close()

    def busy(self) -> bool:
        """A ServerApp this executor launched is still running."""
        return any(p.poll() is None for p, _ in self.running)

    def close(self) -> None:
        """SuperExec shutdown: the spare ends (no token); running ServerApps end with
        their parent (Flower's parent-process monitor)."""
        if self.spare is not None:
            _end(self.spare)
            self.spare = None


class RunAwareClock:
    """The ``time`` module of Flower's SuperExec loop, whose one wait (between two asks
    for a task, ``time.sleep(task_poll_interval)``) lasts up to ``busy`` seconds while a
    ServerApp of ``executor`` runs; it ends as soon as none does. Idle, the wait is
    Flower's, so a run still starts within one poll interval."""

    def __init__(self, executor: WarmExecutor, busy: float = BUSY_POLL_SECONDS) -> None:
        self.executor = executor
        self.busy = busy

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + max(self.busy, seconds)
        time.sleep(seconds)
        while self.executor.busy() and time.monotonic() < deadline:
            time.sleep(min(seconds, deadline - time.monotonic()))
        self.executor.reconcile()  # a run ended (or went on long enough): the next spare

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _end(process: subprocess.Popen[bytes]) -> None:
    """End a process that has no run: close its stdin (it exits), then make sure."""
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _with_warm_executor(run_superexec: Any) -> Any:
    """Flower's ``run_superexec``, its subprocess executor replaced by ours."""
    import importlib

    from flwr.supercore.constant import ExecutorType, TaskType
    from flwr.supercore.superexec.plugin import AutoExecPlugin

    # The module (a package may export a function of the same name).
    loop = importlib.import_module("flwr.supercore.superexec.run_superexec")
    flower_get_executor = loop.get_executor

    def run(**kwargs: Any) -> None:
        # What Flower's plugin puts in a ServerApp's ExecutionSpec (base_exec_plugin.py).
        suppress = AutoExecPlugin.suppress_output and (
            TaskType.SERVER_APP not in AutoExecPlugin.visible_output_task_types
        )
        expected = LaunchKey(
            runtime_api_address=kwargs["runtime_api_address"],
            insecure=bool(kwargs["insecure"]),
            root_certificates_path=kwargs.get("root_certificates_path"),
            runtime_dependency_install=bool(kwargs.get("runtime_dependency_install")),
            parent_pid=os.getpid(),
            suppress_output=suppress,
        )

        def get_executor(executor_type: Any, *args: Any, **options: Any) -> Any:
            if executor_type == ExecutorType.SUBPROCESS:
                executor = WarmExecutor(expected)
                setattr(loop, "time", RunAwareClock(executor))  # noqa: B010 (the loop's `time`)
                return executor
            return flower_get_executor(executor_type, *args, **options)

        setattr(loop, "get_executor", get_executor)  # noqa: B010 (the loop's own name)
        run_superexec(**kwargs)

    return run


def main() -> None:
    """``flower-superexec`` with the warm ServerApp executor."""
    import importlib

    # The module (the package's attribute of that name is the function).
    cli = importlib.import_module("flwr.supercore.cli.flower_superexec")
    setattr(cli, "run_superexec", _with_warm_executor(cli.run_superexec))  # noqa: B010
    sys.argv[0] = "flower-superexec"
    cli.flower_superexec()


if __name__ == "__main__":
    main()
