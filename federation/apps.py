"""Build, fingerprint and submit Flower apps; read back what their ServerApp reported.

A fingerprint is the SHA-256 of the FAB bytes, computed by Flower's own
builder (the same deterministic zip ``flwr build`` and ``flwr run`` make), so
the number a steward approves is the number the site sees at run time.

Submission goes through Flower's Control API exactly like ``flwr run``:
``StartRun`` with the FAB and run-config overrides, then ``ListRuns`` until
the run finishes, then ``StreamLogs``. A ServerApp reports its result as one
log line ``INSITU-RESULT {json}`` (the Control API's log stream is the
channel every researcher already has to the coordinator).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from insitu.errors import ServiceError
from insitu.federation import control_client
from insitu.federation.identity import Signer
from insitu.hub.run_identity import IDENTITY_KEY

__all__ = [
    "RESULT_PREFIX",
    "RunHandle",
    "RunOutcome",
    "build_fab",
    "fingerprint",
    "job_status",
    "online_nodes",
    "pull_replies",
    "report_result",
    "run_fab",
    "send_and_collect",
    "wait_between_looks",
]

RESULT_PREFIX = "INSITU-RESULT "
# How often a ServerApp looks for the sites' replies (Flower's own Grid.send_and_receive
# waits 3 s between looks): it runs beside its SuperLink, so a look is a local request.
# insitu's SuperLink holds a look that finds no reply until one is stored, or a second
# (insitu.federation.long_poll): counted from the previous look, the wait is then 0.
REPLY_POLL_SECONDS = 0.1
# How often a researcher's client asks whether its run has ended (a request to the
# coordinator): every POLL_SECONDS for a run's first LONG_RUN_SECONDS (a query ends
# within seconds), then every LONG_POLL_SECONDS (a training run goes on for minutes).
POLL_SECONDS = 0.1
LONG_RUN_SECONDS = 10.0
LONG_POLL_SECONDS = 1.0
# How often a ServerApp waiting for replies asks which sites are still online (a request
# to the SuperLink, served between the sites' uploads; a site that left is noticed this late).
ONLINE_CHECK_SECONDS = 1.0
# Replies whose objects a ServerApp pulls at the same time (each with Flower's own two
# parallel object pulls).
MAX_PARALLEL_REPLIES = 4
TOKEN_ENV = "INSITU_COORDINATOR_TOKEN"  # noqa: S105 (a variable name, not a secret)


def build_fab(app: str | Path | Mapping[str, bytes]) -> bytes:
    """FAB bytes of an app folder, or of in-memory files {path: bytes}."""
    from flwr.cli.build import build_fab_from_disk, build_fab_from_files

    if isinstance(app, Mapping):
        return build_fab_from_files(dict(app))[0]
    return build_fab_from_disk(Path(app))


def fingerprint(app: str | Path | Mapping[str, bytes] | bytes) -> str:
    """The app's fingerprint: SHA-256 of its FAB, as Flower computes it."""
    fab = app if isinstance(app, bytes) else build_fab(app)
    return hashlib.sha256(fab).hexdigest()


def report_result(result: Any) -> None:
    """Called in a ServerApp: print the result where `run_fab` finds it."""
    print(RESULT_PREFIX + json.dumps(result, default=_jsonable), flush=True)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and value != value:  # NaN
        return None
    raise TypeError(f"cannot report {type(value).__name__} as JSON")


@dataclass
class RunOutcome:
    run_id: int
    status: str  # "finished:completed", "finished:failed", ...
    details: str
    logs: str
    result: Any  # what the ServerApp reported, or None

    @property
    def completed(self) -> bool:
        return self.status.endswith("completed")


def _token(token: str | None) -> str:
    """The researcher's coordinator token: given, else ``$INSITU_COORDINATOR_TOKEN``."""
    import os

    return token or os.environ.get(TOKEN_ENV, "")


def _identity_token(
    identity: str | Signer | None, fab: bytes, fab_hash: str, run_config: Mapping[str, Any]
) -> str | None:
    """The signed identity to put in the run config, or None (the app has no slot)."""
    from flwr.common.config import get_fab_config

    slots = get_fab_config(fab).get("tool", {}).get("flwr", {}).get("app", {}).get("config", {})
    if IDENTITY_KEY not in slots:
        return None  # Flower refuses undeclared keys; the sites refuse the unsigned run
    if identity is None:
        from insitu.federation.identity import default_signer

        identity = default_signer()
    if identity is None or isinstance(identity, str):
        return identity
    return identity(fab_hash, run_config)


class RunHandle:
    """A submitted run: ``status()`` for the job monitor, ``wait()`` for the outcome."""

    def __init__(self, connection: Any, run_id: int, token: str = "") -> None:
        self.connection = connection
        self.run_id = run_id
        self.token = token
        self.outcome: RunOutcome | None = None

    @classmethod
    def submit(
        cls,
        fab: bytes,
        *,
        federation: str | None = None,
        address: str | None = None,
        insecure: bool = False,
        run_config: Mapping[str, Any] | None = None,
        identity: str | Signer | None = None,
        token: str | None = None,
    ) -> RunHandle:
        """StartRun through the Control API, as ``flwr run`` does.

        ``identity``: the researcher's signed identity (a token, or a signer
        called with the FAB hash and run config); by default signed by the
        home site named by ``$INSITU_HOME`` for ``$INSITU_USER`` (or
        ``$JUPYTERHUB_USER``). ``token``: the researcher's coordinator token
        (default ``$INSITU_COORDINATOR_TOKEN``).
        """
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest
        from flwr.supercore.fab import Fab

        connection = control_client.connection(federation, address, insecure)
        token = _token(token)
        fab_hash = hashlib.sha256(fab).hexdigest()
        config = dict(run_config or {})
        signed = _identity_token(identity, fab, fab_hash, config)
        if signed is not None:
            config[IDENTITY_KEY] = signed
        with control_client.control(connection, token) as client:
            res = client.StartRun(
                StartRunRequest(
                    fab=fab_to_proto(Fab(fab_hash, fab, {})),
                    override_config=user_config_to_proto(config),
                    federation=connection.federation or "",
                )
            )
        if not res.HasField("run_id"):
            raise ServiceError("the coordinator did not start the run (no run id returned)")
        return cls(connection, int(res.run_id), token)

    def _state(self, client: Any) -> tuple[str, str]:
        from flwr.proto.control_pb2 import ListRunsRequest

        proto = client.ListRuns(ListRunsRequest(run_id=self.run_id)).run_dict[self.run_id]
        if proto.status.status == "finished":
            return f"finished:{proto.status.sub_status}", proto.status.details
        return proto.status.status, proto.status.details

    def wait(self, timeout: float = 600.0) -> RunOutcome:
        """Wait until the run finishes; read its logs and the ServerApp's result."""
        from flwr.proto.control_pb2 import StreamLogsRequest

        started = time.monotonic()
        deadline = started + timeout
        with control_client.control(self.connection, self.token) as client:
            while True:
                status, details = self._state(client)
                if status.startswith("finished"):
                    break
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"run {self.run_id} did not finish within {timeout:.0f} s (status "
                        f"{status}); stop it with `flwr stop` or wait and read `flwr log`"
                    )
                time.sleep(wait_between_looks(time.monotonic() - started))
            logs = "".join(
                r.log_output for r in client.StreamLogs(StreamLogsRequest(run_id=self.run_id))
            )
        result = None
        for line in logs.splitlines():
            if line.startswith(RESULT_PREFIX):
                result = json.loads(line[len(RESULT_PREFIX) :])
        self.outcome = RunOutcome(self.run_id, status, details, logs, result)
        return self.outcome

    def status(self) -> dict[str, Any]:
        """The job monitor's status dict (docs/architecture.md, "Federated job status")."""
        if self.outcome is None:
            with control_client.control(self.connection, self.token) as client:
                status, details = self._state(client)
            if status.startswith("finished"):
                return job_status(self.wait(timeout=60.0))
            state = "running" if status == "running" else "pending"
            return {"run_id": str(self.run_id), "state": state, "message": details}
        return job_status(self.outcome)


def wait_between_looks(waited: float) -> float:
    """Seconds a researcher's client waits before it asks again whether its run ended."""
    return POLL_SECONDS if waited < LONG_RUN_SECONDS else LONG_POLL_SECONDS


def job_status(outcome: RunOutcome) -> dict[str, Any]:
    """A finished run as the job monitor's status dict."""
    sub = outcome.status.split(":", 1)[-1]
    state = {"completed": "finished", "failed": "failed", "stopped": "stopped"}.get(sub, sub)
    status: dict[str, Any] = {"run_id": str(outcome.run_id), "state": state}
    if outcome.details:
        status["message"] = outcome.details
    result = outcome.result if isinstance(outcome.result, dict) else {}
    sites: dict[str, Any] = {}
    for site in result.get("sites", []):
        sites[site] = "done"
    for refusal in result.get("refused", []):
        reason = str(refusal.get("reason", ""))
        name = reason.split("'")[1] if reason.startswith("site '") else f"node {refusal['node']}"
        sites[name] = {"state": "refused", "detail": reason}
    rounds = result.get("rounds")
    if isinstance(rounds, list) and rounds:
        status["round"], status["rounds"] = len(rounds), len(rounds)
        status["metrics"] = {"train_loss": [[r["round"], r["train_loss"]] for r in rounds]}
        for site in rounds[-1]["sites"]:
            sites[site] = "done"
        for problem in rounds[-1]["problems"]:
            sites[problem.split(":", 1)[0]] = {"state": "dropped", "detail": problem}
    if sites:
        status["sites"] = sites
    return status


def run_fab(
    fab: bytes,
    *,
    federation: str | None = None,
    address: str | None = None,
    insecure: bool = False,
    run_config: Mapping[str, Any] | None = None,
    timeout: float = 600.0,
    identity: str | Signer | None = None,
    token: str | None = None,
) -> RunOutcome:
    """Submit a FAB to a SuperLink, wait for the run to finish, return its outcome.

    ``federation`` names a connection in ``$FLWR_HOME/config.toml``
    (``[superlink.NAME]``); or give ``address`` (and ``insecure`` on loopback).
    """
    handle = RunHandle.submit(
        fab,
        federation=federation,
        address=address,
        insecure=insecure,
        run_config=run_config,
        identity=identity,
        token=token,
    )
    return handle.wait(timeout)


# --- ServerApp helpers ------------------------------------------------------


def online_nodes(grid: Any) -> list[int]:
    """Node ids the SuperLink sees online (a stopped SuperNode deregisters at once)."""
    nodes = []
    for info in grid.get_nodes():
        status = getattr(info, "status", "")
        if status in ("", "online", "registered"):
            nodes.append(int(info.node_id))
    return sorted(nodes)


def send_and_collect(
    grid: Any, messages: list[Any], *, timeout: float, poll: float = REPLY_POLL_SECONDS
) -> list[Any]:
    """Like ``Grid.send_and_receive``, but stop waiting for sites that left.

    Flower's version waits the whole timeout for a reply from a SuperNode that
    has shut down; a federation round should go on as soon as every missing
    site is gone from the SuperLink (or the timeout passes).

    Sites are asked to send small replies packed into one Flower object
    (:mod:`insitu.federation.transport`); the replies returned carry their content
    as the site let it out, unpacked.
    """
    from insitu.federation import transport

    for message in messages:
        transport.ask_packed(message)
    ids = list(grid.push_messages(messages))
    destination = {mid: m.metadata.dst_node_id for mid, m in zip(ids, messages, strict=True)}
    waiting = set(ids)
    replies: list[Any] = []
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + ONLINE_CHECK_SECONDS
    while waiting:
        asked = time.monotonic()
        for reply in pull_replies(grid, list(waiting)):
            replies.append(transport.unpack(reply))
            waiting.discard(reply.metadata.reply_to_message_id)
        now = time.monotonic()
        if not waiting or now > deadline:
            break
        if now >= next_check:
            next_check = now + ONLINE_CHECK_SECONDS
            online = set(online_nodes(grid))
            if all(destination[mid] not in online for mid in waiting):
                break
        # insitu's SuperLink holds a pull until a reply comes or a second passed
        # (insitu.federation.long_poll): after a held pull, pull again at once.
        time.sleep(max(0.0, poll - (time.monotonic() - asked)))
    return replies


class _OneReply:
    """What Flower's ``HttpGrid.pull_messages`` uses of its grid (its run, its node, its
    Runtime API client), with a client whose ``PullMessages`` answers one reply of a
    response already pulled; every other call (objects, confirmations) is the grid's."""

    def __init__(self, grid: Any, response: Any, index: int) -> None:
        self._run = grid._run
        self.node = grid.node
        self._runtime_client = self
        self._client = grid._runtime_client
        self._response = response
        self._index = index

    def PullMessages(self, request: Any) -> Any:
        from flwr.proto.runtime_pb2 import PullAppMessagesResponse

        i, response = self._index, self._response
        return PullAppMessagesResponse(
            messages_list=[response.messages_list[i]],
            message_object_trees=[response.message_object_trees[i]],
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def pull_replies(grid: Any, message_ids: list[str]) -> list[Any]:
    """``grid.pull_messages(message_ids)``, with the objects of several replies pulled at
    the same time.

    Flower's ``HttpGrid.pull_messages`` asks the SuperLink once for every reply that is
    there, then pulls the replies' objects one reply after the other. Here that one
    request is made the same way, and each reply it returned is then handed to Flower's
    own ``pull_messages`` (object pulls, retries, confirmation, inflation, error replies)
    in a thread of its own. Any other grid is asked as it is.
    """
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from flwr.proto.runtime_pb2 import PullAppMessagesRequest
    from flwr.superlink.grid.http_grid import HttpGrid

    if type(grid) is not HttpGrid or len(message_ids) < 2:
        return list(grid.pull_messages(message_ids))
    request = PullAppMessagesRequest(message_ids=message_ids)
    try:
        response = grid._runtime_client.PullMessages(request)
    except httpx.HTTPStatusError as exc:  # as Flower's pull_messages: logged, nothing pulled
        if exc.response.status_code != httpx.codes.REQUEST_ENTITY_TOO_LARGE:
            raise
        from logging import ERROR

        from flwr.supercore import log
        from flwr.superlink.grid.http_grid import ERROR_MESSAGE_PULL_MESSAGES_PAYLOAD_TOO_LARGE

        log(ERROR, ERROR_MESSAGE_PULL_MESSAGES_PAYLOAD_TOO_LARGE)
        return []
    count = len(response.messages_list)
    if count == 0:
        return []

    def pull(index: int) -> list[Any]:
        return list(HttpGrid.pull_messages(_OneReply(grid, response, index), message_ids))  # type: ignore[arg-type]

    if count == 1:
        return pull(0)
    with ThreadPoolExecutor(max_workers=min(count, MAX_PARALLEL_REPLIES)) as pool:
        return [reply for part in pool.map(pull, range(count)) for reply in part]
