"""A ServerApp process started ahead of its run: ``flwr-serverapp``, already imported.

Flower 1.42's SuperExec starts a fresh ``flwr-serverapp`` for every run, and
that process first imports Flower's runtime (and, once the app loads, numpy and
insitu): seconds on a busy coordinator before the run's first message goes
out. The coordinator's executor (:mod:`insitu.federation.coordinator_exec`)
keeps one of these processes waiting instead: it imports all of that, then
reads one run token from stdin (never a command line or the environment: S27
in docs/security-review.md), and from there does exactly what
``flwr-serverapp`` does (Flower's own ``run_serverapp``) for that one run, and
exits. A process serves one run only, so nothing of one run (its app's
modules, its state, a failure) is there for the next. Its object pulls retry at
the ServerApp's poll interval (:mod:`insitu.federation.object_pulls`), not
after 1, 2, 4 ... s. At the run's end its logs (which carry the result line)
are flushed as soon as they are uploaded, not after Flower's fixed extra
second, and the flush has the uploader send them at once instead of after the
rest of its 0.2 s pause between uploads (:func:`exact_log_flush`).

    python -m insitu.federation.serverapp --runtime-api-address ADDR --insecure < token
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import threading
import time
from collections.abc import Sequence
from queue import Queue
from typing import IO, Any

__all__ = ["CountingQueue", "exact_log_flush", "main", "read_token"]

# A message this module logs when the run starts, as ``flwr-serverapp`` does.
STARTED = "Start `flwr-serverapp` process"
# The longest wait for the run's last log lines before it is reported finished (Flower's).
FLUSH_SECONDS = 3.0
# Modules a run imports anyway (Flower's runtime, the built-in apps): loaded ahead.
PRELOAD = (
    "flwr.superlink.runtime",
    "flwr.serverapp",
    "flwr.server.run_serverapp",
    "httpcore",  # httpx imports its transport (and trio) when the run's client is made
    "insitu.federation.analytics",
    "insitu.federation.apps",
    "insitu.federation.credit",
    "insitu.federation.stats",
    "insitu.federation.train_app",
)


def read_token(stream: IO[str]) -> str | None:
    """One run token from ``stream`` (a line of hex); None when it closes without one."""
    from flwr.common.constant import FLWR_TASK_TOKEN_LENGTH

    line = stream.readline(FLWR_TASK_TOKEN_LENGTH * 2 + 2)
    if not line:
        return None
    token = line.rstrip("\n")
    if re.fullmatch(f"[0-9a-f]{{{FLWR_TASK_TOKEN_LENGTH * 2}}}", token) is None:
        raise SystemExit("insitu ServerApp: stdin did not hold exactly one run token")
    return token


class CountingQueue(Queue[str | None]):
    """The ServerApp's log queue, counting the lines put in and the lines uploaded."""

    def __init__(self) -> None:
        super().__init__()
        self.lines_put = 0
        self.lines_pushed = 0
        self.pushed = threading.Condition()
        self.wake = threading.Event()

    def _put(self, item: str | None) -> None:
        if item is not None:
            self.lines_put += 1
        super()._put(item)

    def count_pushed(self, lines: int) -> None:
        with self.pushed:
            self.lines_pushed += lines
            self.pushed.notify_all()

    def pause(self, seconds: float) -> None:
        """The uploader's pause between two uploads: ``seconds``, or until a flush."""
        self.wake.wait(seconds)
        self.wake.clear()

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait until every line put so far has been uploaded (False: ``timeout`` passed).

        The uploader, if it is pausing between uploads, uploads at once."""
        with self.mutex:
            target = self.lines_put
        self.wake.set()
        with self.pushed:
            return self.pushed.wait_for(lambda: self.lines_pushed >= target, timeout)


class _CountingClient:
    """The Runtime API client the log uploader gets: ``PushLogs`` counts what it uploaded."""

    def __init__(self, client: Any, log_queue: CountingQueue) -> None:
        self._client = client
        self._queue = log_queue

    def PushLogs(self, request: Any) -> Any:
        response = self._client.PushLogs(request)
        self._queue.count_pushed(len(request.logs))
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


_uploader = threading.local()  # .queue: the CountingQueue this uploader thread serves


class _UploaderClock:
    """``flwr.supercore.logger``'s ``time``, except that an uploader thread started by
    :func:`exact_log_flush` pauses between uploads through its queue (a flush ends it)."""

    def sleep(self, seconds: float) -> None:
        queue = getattr(_uploader, "queue", None)
        if isinstance(queue, CountingQueue):
            queue.pause(seconds)
        else:
            time.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def exact_log_flush(log_queue: CountingQueue) -> None:
    """Flower's ServerApp runtime, with a flush of its logs that waits only as long as needed.

    ``flwr.superlink.runtime.run_serverapp`` flushes the run's logs before it reports the
    ServerApp finished: it waits for the log queue to empty, then sleeps 1 s more
    (``flush_logs``: "allow the PushLogs call to complete"), on every run. Here the
    uploader's client counts the lines it uploaded and the flush waits until every line
    put so far is uploaded (``FLUSH_SECONDS`` at most, as Flower's), so the result line is
    at the SuperLink before the run is marked finished, without the fixed second.

    Flower's uploader (``flwr.supercore.logger._log_uploader``) pauses 0.2 s
    (``LOG_UPLOAD_INTERVAL``) after each upload, so the result line, printed just
    before the ServerApp returns, waited up to 0.2 s more. The uploader runs here as
    Flower's, in a thread whose pause ends when the flush starts: the last lines go
    at once; while the run goes on, lines are still batched every 0.2 s.
    """
    module = importlib.import_module("flwr.superlink.runtime.run_serverapp")
    for name in ("flush_logs", "start_log_uploader"):
        if not callable(getattr(module, name, None)):  # a Flower that changed it: stop
            raise RuntimeError(f"flwr's ServerApp runtime has no {name} to replace")
    logger = importlib.import_module("flwr.supercore.logger")
    flower_uploader = getattr(logger, "_log_uploader", None)
    if not callable(flower_uploader) or getattr(logger, "time", None) is None:
        raise RuntimeError("flwr's logger has no _log_uploader pausing with time.sleep")
    if not isinstance(logger.time, _UploaderClock):
        setattr(logger, "time", _UploaderClock())  # noqa: B010 (the module's `time`)
    flower_start = module.start_log_uploader

    def run_uploader(log_queue: CountingQueue, node_id: int, run_id: int, client: Any) -> None:
        _uploader.queue = log_queue
        flower_uploader(log_queue, node_id, run_id, client)

    def start_log_uploader(log_queue: Any, node_id: int, run_id: int, client: Any) -> Any:
        if not isinstance(log_queue, CountingQueue):
            return flower_start(log_queue=log_queue, node_id=node_id, run_id=run_id, client=client)
        client = _CountingClient(client, log_queue)
        thread = threading.Thread(
            target=run_uploader, args=(log_queue, node_id, run_id, client), daemon=True
        )
        thread.start()
        return thread

    def flush_logs(queue: Any, timeout: float = FLUSH_SECONDS) -> bool:
        return queue.flush(timeout) if isinstance(queue, CountingQueue) else False

    setattr(module, "start_log_uploader", start_log_uploader)  # noqa: B010 (the module's name)
    setattr(module, "flush_logs", flush_logs)  # noqa: B010


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="insitu ServerApp (one run, token on stdin)")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates", default=None)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument(
        "--allow-runtime-dependency-installation",
        dest="runtime_dependency_install",
        action="store_true",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from flwr.supercore.app_utils import start_parent_process_monitor

    if args.parent_pid is not None:
        start_parent_process_monitor(args.parent_pid)  # no orphan when the SuperExec ends
    _preload()
    from insitu.federation.apps import REPLY_POLL_SECONDS
    from insitu.federation.object_pulls import cap_pull_backoff

    cap_pull_backoff(REPLY_POLL_SECONDS)  # replies are read as soon as their objects are there
    token = read_token(sys.stdin)
    if token is None:  # the executor ended before it had a run for this process
        return 0
    sys.stdin.close()

    from logging import INFO

    from flwr.supercore import log
    from flwr.supercore.logger import mirror_output_to_queue, restore_output
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.superlink.runtime import run_serverapp

    # From here on as Flower's `flwr-serverapp` (flwr.superlink.cli.flwr_serverapp).
    log_queue = CountingQueue()
    exact_log_flush(log_queue)
    mirror_output_to_queue(log_queue)
    log(INFO, STARTED)
    run_serverapp(
        runtime_api_address=args.runtime_api_address,
        log_queue=log_queue,
        token=token,
        insecure=args.insecure,
        certificates=validate_and_resolve_root_certificates(args.root_certificates, args.insecure),
        parent_pid=args.parent_pid,
        runtime_dependency_install=args.runtime_dependency_install,
    )
    restore_output()
    return 0


if __name__ == "__main__":
    from insitu.federation.quick_exit import run_and_exit

    run_and_exit(main)
