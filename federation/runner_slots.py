"""The site executor's runners: which have their task, which are still taking it.

A task the executor acquires from the SuperNode is *claimed*: Flower gives its token
:data:`CLAIM_SECONDS` to be used (the runner pulls the task, which starts it), then
voids the token and puts the task back in the queue. A runner still starting when
that happens (a loaded machine: imports and a sandbox to start) can never take its
task, and the executor would claim the same task again for a new runner; under load
that loop piled up a runner per site every 30 s, each loading the machine more.

So the executor (:mod:`insitu.federation.site_exec`) keeps these rules:

- a runner tells it has taken its task by writing to a pipe (``--taken-fd``);
- no task is claimed while a runner is still taking one (one start at a time);
- a runner that has not taken its task when the claim runs out is stopped: its
  token is void, and the task, back in the queue, goes to a new runner.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["CLAIM_SECONDS", "Runner", "RunnerSlots"]


def _claim_seconds() -> float:
    # Flower's window between claiming a task and starting it (its claim_task sets the
    # token's deadline to now + HEARTBEAT_DEFAULT_INTERVAL); tests pin the pairing.
    from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL

    return float(HEARTBEAT_DEFAULT_INTERVAL)


CLAIM_SECONDS = _claim_seconds()
STOP_GRACE_SECONDS = 10.0  # SIGTERM lets a runner stop its sandbox; then SIGKILL


@dataclass
class Runner:
    process: subprocess.Popen[bytes]
    taken_fd: int  # the read end of the runner's "I have my task" pipe
    handed_at: float | None = None  # when its task's token was written to it
    taken: bool = False  # it started its task (or gave up and is ending)

    @property
    def taking(self) -> bool:
        """Has a token, has not started its task yet, still running."""
        return self.handed_at is not None and not self.taken and self.process.poll() is None


@dataclass
class RunnerSlots:
    """Launches runners and keeps track of them (see the module's rules)."""

    command: Sequence[str]
    claim_seconds: float = CLAIM_SECONDS
    runners: list[Runner] = field(default_factory=list)
    # When a runner last had a task (None: none has had one yet), seen at each poll.
    last_busy: float | None = None

    def launch(self) -> Runner:
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        try:
            # Same process group as the SuperNode: `insitu federation stop` ends all.
            process = subprocess.Popen(
                [*self.command, "--taken-fd", str(write_end)],
                stdin=subprocess.PIPE,
                pass_fds=(write_end,),
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        runner = Runner(process, read_end)
        self.runners.append(runner)
        return runner

    def hand(self, runner: Runner, token: str) -> None:
        """Give ``runner`` its task's token (on stdin, never on a command line)."""
        assert runner.process.stdin is not None
        runner.handed_at = time.monotonic()
        try:
            runner.process.stdin.write(token.encode() + b"\n")
            runner.process.stdin.close()
        except BrokenPipeError:  # it ended meanwhile; its claim runs out and is retried
            runner.taken = True

    @property
    def busy(self) -> bool:
        """A runner has a task (taking or running it)."""
        return any(r.handed_at is not None and r.process.poll() is None for r in self.runners)

    @property
    def taking(self) -> bool:
        return any(r.taking for r in self.runners)

    def idle_seconds(self) -> float:
        """How long no runner has had a task (as of the last :meth:`poll`); infinite
        before the first task."""
        if self.busy:
            return 0.0
        return math.inf if self.last_busy is None else time.monotonic() - self.last_busy

    def poll(self) -> None:
        """Note which runners took their task, stop those whose claim ran out, forget
        those that ended."""
        now = time.monotonic()
        if self.busy:
            self.last_busy = now
        for runner in self.runners:
            if runner.handed_at is None or runner.taken:
                continue
            with contextlib.suppress(BlockingIOError):
                os.read(runner.taken_fd, 1)  # a byte: it started; b"": it is ending
                runner.taken = True
            if not runner.taken and now - runner.handed_at > self.claim_seconds:
                print(
                    f"insitu site executor: runner {runner.process.pid} did not start its "
                    f"task within Flower's {self.claim_seconds:.0f} s claim (a loaded "
                    "machine?); stopped, the task goes to a new runner",
                    file=sys.stderr,
                    flush=True,
                )
                stop(runner.process)
                runner.taken = True
        for runner in [r for r in self.runners if r.process.poll() is not None]:
            os.close(runner.taken_fd)
            self.runners.remove(runner)

    def close(self) -> None:
        for runner in self.runners:
            with contextlib.suppress(OSError):
                os.close(runner.taken_fd)
        self.runners.clear()


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the runner stops its sandbox on the way out), SIGKILL after a grace."""
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
