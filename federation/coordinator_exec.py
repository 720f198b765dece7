"""The coordinator's SuperExec: Flower's own, but a ServerApp's run token never on argv.

Flower 1.42's SuperLink starts ``flower-superexec``, whose ``SubprocessExecutor``
launches each run's ``flwr-serverapp`` with ``--token <run token>`` on its command
line, readable in ``/proc/<pid>/cmdline`` by every local account of the host; with
it a local user could act as that run's ServerApp (docs/security-review.md, S27).
The SuperLink that ``insitu federation coordinator`` starts
(:mod:`insitu.federation.superlink`) launches this module instead: Flower's
executor, except that the token goes into a 0600 file in a 0700 folder
(``--token-file``), removed as soon as the ServerApp has ended.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
    from flwr.supercore.superexec.executor.types import ExecutionSpec, LaunchResult

__all__ = ["launch_with_token_file", "main", "token_file"]


def token_file(token: str) -> Path:
    """The token in a new file only this account can read (its folder is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="insitu-serverapp-"))
    path = folder / "token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token)
    return path


def _remove_when_done(process: subprocess.Popen[bytes], folder: Path) -> None:
    process.wait()
    shutil.rmtree(folder, ignore_errors=True)


def launch_with_token_file(self: SubprocessExecutor, spec: ExecutionSpec) -> LaunchResult:
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
    if spec.insecure:
        args.append("--insecure")
    elif spec.root_certificates_path is not None:
        args += ["--root-certificates", spec.root_certificates_path]
    if spec.parent_pid is not None:
        args += ["--parent-pid", str(spec.parent_pid)]
    if spec.runtime_dependency_install:
        args.append("--allow-runtime-dependency-installation")
    output = subprocess.DEVNULL if spec.suppress_output else None
    try:
        process = subprocess.Popen(args, stdout=output, stderr=output)
    except OSError:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    threading.Thread(target=_remove_when_done, args=(process, path.parent), daemon=True).start()
    return Accepted.accepted()


def main() -> None:
    """``flower-superexec`` with the token-file launcher."""
    from flwr.supercore.cli.flower_superexec import flower_superexec
    from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

    SubprocessExecutor.launch = launch_with_token_file  # type: ignore[method-assign]
    sys.argv[0] = "flower-superexec"
    flower_superexec()


if __name__ == "__main__":
    main()
