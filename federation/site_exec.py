"""The site's own SuperExec: launches every ClientApp task through insitu's runner.

The SuperNode is started with ``--isolation process``, so Flower does not
launch ClientApps itself. This loop takes the place of ``flower-superexec``:
it acquires ClientApp tasks from the SuperNode's Runtime API and starts
``python -m insitu.federation.site_runner`` for each one. The runner checks
the app's approval and wraps it in the site's mods; the app author cannot
choose a different entry point (see docs/federation.md, "Why the site runs
its own executor").

Only this process may take tasks: the SuperNode is started with a SuperExec
secret (``--superexec-auth-secret-file``, a 0600 file of the site's account)
and Flower then refuses ``AcquireTask`` requests not signed with it (HMAC).
A task's token goes to the runner on its stdin, never on a command line
(``/proc/<pid>/cmdline`` is readable by every local account).

With ``--prestart`` (``[federation] prestart``, on by default) the executor
starts the next runner while the site is idle (from the start, then one second
after each task): the runner imports what it
needs, starts its sandbox (which imports Flower and waits) and then waits for
a task token on stdin. A message then finds both processes ready instead of
waiting for two Python start-ups. Each task still gets its own fresh pair;
nothing of the app runs before the runner has checked its approval.

A task claimed from the SuperNode must be started within Flower's claim window (30 s)
or it goes back to the queue: :mod:`insitu.federation.runner_slots` keeps the executor
from piling up runners for the same task on a loaded machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from insitu.federation.runner_slots import Runner, RunnerSlots

__all__ = ["main"]

# How often at most the executor asks its own SuperNode (a local request) for a task.
# insitu's SuperNode holds an ask that finds none until it makes a task, or a second
# (insitu.federation.long_poll): the executor then asks about once a second.
POLL_SECONDS = 0.1
# The next runner is started once the site has had no task for this long. Started as
# soon as a task's runner ends, its imports (~2 s of CPU, ~1 s more for its sandbox)
# ran while the site's SuperNode was still uploading the reply; at a bench's three
# sites on one machine, while the other sites and the ServerApp were finishing the run
# (~0.4 s of a 3-site query). A training round's next task comes seconds later.
SPARE_AFTER_IDLE_SECONDS = 1.0
ACQUIRE_TASK = "/flwr.proto.Runtime/AcquireTask"


def _runner_command(args: argparse.Namespace) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "insitu.federation.site_runner",
        "--runtime-api-address",
        args.runtime_api_address,
        "--parent-pid",
        str(os.getpid()),
    ]
    if args.root_certificates:
        command += ["--root-certificates", args.root_certificates]
    else:
        command.append("--insecure")
    if args.prestart and args.insitu_home:
        command += ["--insitu-home", args.insitu_home]
    return command


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="insitu site executor (Flower SuperExec)")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--root-certificates", default=None)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--superexec-auth-secret-file", default=None)
    parser.add_argument("--prestart", action="store_true")
    parser.add_argument("--insitu-home", default=None)
    args = parser.parse_args(argv)

    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.app_utils import start_parent_process_monitor
    from flwr.supercore.auth import load_superexec_auth_secret
    from flwr.supercore.constant import TaskType
    from flwr.supercore.interceptors import (
        RuntimeVersionHttpInterceptor,
        SuperExecAuthHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient
    from flwr.supercore.tls import validate_and_resolve_root_certificates

    if args.parent_pid is not None:
        start_parent_process_monitor(args.parent_pid)
    interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    secret = load_superexec_auth_secret(args.superexec_auth_secret_file)
    if secret is not None:
        interceptors.append(
            SuperExecAuthHttpInterceptor(
                master_secret=secret, protected_methods=frozenset({ACQUIRE_TASK})
            )
        )
    client = RuntimeHttpClient.from_server_address(
        server_address=args.runtime_api_address,
        insecure=args.root_certificates is None,
        root_certificates=validate_and_resolve_root_certificates(
            args.root_certificates, args.root_certificates is None
        ),
        interceptors=interceptors,
        retry_invoker=make_simple_http_retry_invoker(),
    )
    slots = RunnerSlots(_runner_command(args))
    spare: Runner | None = None
    try:
        while True:
            slots.poll()
            if spare is not None and spare.process.poll() is not None:
                spare = None
            idle = slots.idle_seconds() >= SPARE_AFTER_IDLE_SECONDS
            if args.prestart and spare is None and idle:
                spare = slots.launch()  # idle: get the next task's processes ready
            if slots.taking:  # one task taking its place at a time (runner_slots)
                time.sleep(POLL_SECONDS)
                continue
            asked = time.monotonic()
            res = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP]))
            if res.HasField("task") and res.token:
                runner = spare if spare is not None else slots.launch()
                spare = None
                slots.hand(runner, res.token)
                continue
            # The SuperNode held the ask until a task came or a second passed
            # (insitu.federation.long_poll): ask again at once after a held ask.
            time.sleep(max(0.0, POLL_SECONDS - (time.monotonic() - asked)))
    except KeyboardInterrupt:
        return 0
    finally:
        if spare is not None and spare.process.stdin is not None:
            spare.process.stdin.close()  # an empty token: the spare runner ends
        slots.close()
        client.close()


if __name__ == "__main__":
    sys.exit(main())
