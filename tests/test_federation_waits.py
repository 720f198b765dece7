"""The site's waits: the SuperNode's poll interval and the runner started ahead.

Flower 1.42's SuperNode waits a fixed 3 s between polls; the site runs it through
insitu.federation.supernode with the wait capped at [federation] poll_interval.
A runner started ahead (prestart) imports and starts its sandbox before a task
exists; without a task it ends and leaves nothing behind. (Timings are measured
in bench/bench_round.py, never here.)
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from insitu.config import NodeHome, init_home
from insitu.errors import ConfigError
from insitu.federation import object_pulls, site_service, supernode
from insitu.federation.settings import parse_federation


def test_the_pinned_supernode_loop_still_waits_through_its_module_clock():
    # If a Flower upgrade changes the loop, the cap no longer applies: this says so.
    from flwr.supernode import start_client_internal as loop

    source = inspect.getsource(loop)
    assert "time.sleep(3)" in source
    assert "time.sleep(0.5)" in source


def test_the_cap_shortens_long_waits_only(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(supernode.time, "sleep", slept.append)
    clock = supernode.CappedClock(0.25, local=0.5)
    clock.sleep(3)
    clock.sleep(0.1)
    assert slept == [0.25, 0.1]


def test_local_looks_wait_less_than_requests_to_the_coordinator(monkeypatch):
    # sleep(3): between requests to the SuperLink; sleep(0.5): looking at its own state.
    slept: list[float] = []
    monkeypatch.setattr(supernode.time, "sleep", slept.append)
    clock = supernode.CappedClock(0.5)
    clock.sleep(3)
    clock.sleep(0.5)
    assert slept == [0.5, supernode.LOCAL_WAIT]
    assert clock.monotonic is time.monotonic  # everything else is the time module


def test_cap_waits_replaces_the_loop_modules_clock(monkeypatch):
    from flwr.supernode import start_client_internal as loop

    monkeypatch.setattr(loop, "time", loop.time)  # restored afterwards
    assert supernode.cap_waits(0.5) is loop
    assert isinstance(loop.time, supernode.CappedClock) and loop.time.cap == 0.5


def test_supernode_arguments_pass_through():
    assert supernode.split_argv(["--poll-interval", "0.2", "--", "--insecure"]) == (
        0.2,
        ["--insecure"],
    )
    plain = ["--insecure", "--port", "1"]
    assert supernode.split_argv(plain) == (None, plain)


def test_the_site_service_runs_flower_supernode_with_the_sites_interval(tmp_path):
    home = NodeHome(tmp_path / "site")
    init_home(home, "site-a")
    command = [
        "/venv/bin/flower-supernode",
        "--insecure",
        "--node-config",
        f'insitu-home="{home.root}" insitu-dataset="locat"',
    ]
    assert site_service.node_home_of(command) == str(home.root)
    settings = site_service._settings(site_service.node_home_of(command))
    assert settings.poll_interval == 0.25 and settings.prestart
    rewritten = site_service.supernode_command(command, 0.5)
    assert rewritten[:3] == [sys.executable, "-m", "insitu.federation.supernode"]
    assert rewritten[3:6] == ["--poll-interval", "0.5", "--"]
    assert rewritten[6:] == command[1:]
    # Anything else (a wrapper the operator chose) is left alone.
    assert site_service.supernode_command(["other", "--x"], 0.5) == ["other", "--x"]
    assert site_service.node_home_of(["flower-supernode", "--insecure"]) is None


def test_poll_interval_and_prestart_are_validated():
    assert parse_federation({"poll_interval": 2, "prestart": False}).poll_interval == 2.0
    with pytest.raises(ConfigError, match="poll_interval must lie in"):
        parse_federation({"poll_interval": 0})
    with pytest.raises(ConfigError, match="prestart must be true or false"):
        parse_federation({"prestart": "yes"})


def test_a_runner_started_ahead_ends_without_a_task_and_leaves_no_sandbox(tmp_path):
    home = NodeHome(tmp_path / "site")
    init_home(home, "site-a")
    scratch = tmp_path / "tmp"  # where the sandbox's folder is made (other runs use /tmp)
    scratch.mkdir()
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "insitu.federation.site_runner",
            "--runtime-api-address",
            "127.0.0.1:1",
            "--insecure",
            "--insitu-home",
            str(home.root),
        ],
        stdin=subprocess.DEVNULL,  # the executor ended before it had a task for this runner
        stderr=subprocess.PIPE,
        env=os.environ | {"TMPDIR": str(scratch)},
    )
    _, err = runner.communicate(timeout=300)
    assert runner.returncode == 0, err.decode()[-2000:]
    assert b"no sandbox started ahead" not in err  # one was started ...
    assert not list(scratch.iterdir())  # ... and removed


@pytest.fixture
def pull_defaults():
    """Flower's own pull_objects defaults (and those of every function object_pulls
    sets), restored after the test."""
    from flwr.supercore.inflatable import inflatable_utils

    functions = [getattr(inflatable_utils, name) for name in object_pulls.PULLS]
    saved = [dict(f.__kwdefaults__) for f in functions]
    yield inflatable_utils.pull_objects.__kwdefaults__
    for function, defaults in zip(functions, saved, strict=True):
        function.__kwdefaults__.update(defaults)


def test_the_pinned_object_pulls_still_back_off_from_one_second(pull_defaults):
    # If a Flower upgrade changes these, object_pulls needs a look.
    assert pull_defaults["initial_backoff"] == 1 and pull_defaults["backoff_cap"] == 10
    import inspect

    from flwr.supercore.inflatable import inflatable_utils
    from flwr.supernode.runtime import run_clientapp

    inflate = inflatable_utils.pull_and_inflate_object_from_tree
    assert inflate.__kwdefaults__["backoff_cap"] == 10
    assert "backoff_cap=backoff_cap" in inspect.getsource(inflate)  # passed on to pull_objects
    # the runner's task input is pulled with those defaults
    assert "backoff" not in inspect.getsource(run_clientapp.pull_task_input)


def test_object_pulls_retry_at_the_poll_interval_and_wait_as_long_in_all(pull_defaults):
    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError, pull_objects

    flower_longest = pull_defaults["max_tries_per_object"] * pull_defaults["backoff_cap"]
    object_pulls.cap_pull_backoff(0.2)
    assert pull_defaults["initial_backoff"] == 0.05 and pull_defaults["backoff_cap"] == 0.2
    assert pull_defaults["max_tries_per_object"] * 0.2 >= flower_longest
    tries: list[float] = []

    def pull(object_id: str) -> bytes:  # the object arrives on the fourth try
        tries.append(time.monotonic())
        if len(tries) < 4:
            raise ObjectUnavailableError(object_id)
        return b"content"

    assert pull_objects(["a"], pull) == {"a": b"content"}
    assert tries[-1] - tries[0] < 1.0  # Flower's own: 1 + 2 + 4 s


class _Grid:
    """Stands in for a ServerApp's Grid: replies come after some polls; sites may leave."""

    def __init__(self, polls_until_reply: int, online: list[int]) -> None:
        self.polls_until_reply = polls_until_reply
        self.online = online
        self.pulls = 0
        self.node_asks = 0
        self.sent: list[object] = []

    def push_messages(self, messages: list[Any]) -> list[str]:
        self.sent = messages
        for i, message in enumerate(messages):
            message.metadata.__dict__["_message_id"] = f"m{i}"
        return [f"m{i}" for i in range(len(messages))]

    def pull_messages(self, ids: list[str]) -> list[object]:
        from flwr.app import Message, RecordDict

        self.pulls += 1
        if self.pulls < self.polls_until_reply:
            return []
        sent = {m.metadata.message_id: m for m in self.sent}
        return [Message(RecordDict(), reply_to=sent[i]) for i in ids]

    def get_nodes(self) -> list[object]:
        from types import SimpleNamespace

        self.node_asks += 1
        return [SimpleNamespace(node_id=n, status="online") for n in self.online]


def _messages(*nodes: int) -> list[object]:
    from flwr.app import Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0  # a ServerApp's
    return [Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes]


def test_waiting_for_replies_asks_for_the_online_sites_once_a_second_not_every_poll():
    from insitu.federation import apps

    grid = _Grid(polls_until_reply=12, online=[1, 2])
    replies = apps.send_and_collect(grid, _messages(1, 2), timeout=30, poll=0.05)
    assert len(replies) == 2 and grid.pulls == 12
    assert grid.node_asks <= 12 * 0.05 / apps.ONLINE_CHECK_SECONDS + 1


def test_waiting_for_replies_stops_when_every_missing_site_has_left():
    from insitu.federation import apps

    grid = _Grid(polls_until_reply=10**6, online=[])
    assert apps.send_and_collect(grid, _messages(1, 2), timeout=30, poll=0.05) == []
    # One look at the online sites, not one a second until the 30-s timeout: it stopped there.
    assert grid.node_asks == 1


# --- the SuperLink's state: the look for expired task claims, throttled -----------------


def test_the_pinned_link_state_looks_for_expired_claims_before_each_read_and_checks_tokens_itself():
    # If a Flower upgrade changes these, superlink.throttle_token_cleanup needs a look.
    from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState
    from flwr.supercore.corestate.sql_corestate import SqlCoreState

    cleanup = inspect.getsource(SqlCoreState.__dict__["_cleanup_expired_task_tokens"])
    assert cleanup.count("update(TaskModel)") == 2
    assert "self._cleanup_expired_task_tokens()" in inspect.getsource(SqlLinkState.get_run_status)
    # A token's expiry is checked where it is used, not left to the cleanup.
    assert "row.active_until < current" in inspect.getsource(SqlCoreState.get_task_by_token)


def test_the_look_for_expired_claims_runs_at_most_every_half_second(monkeypatch):
    from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState
    from flwr.supercore.corestate.sql_corestate import SqlCoreState

    from insitu.federation import superlink

    runs: list[object] = []
    monkeypatch.setattr(SqlCoreState, "_cleanup_expired_task_tokens", runs.append)
    superlink.throttle_token_cleanup(0.3)
    superlink.throttle_token_cleanup(0.3)  # twice: still one throttle
    state = object.__new__(SqlLinkState)  # the SuperLink's state (no database needed here)
    for _ in range(20):
        state._cleanup_expired_task_tokens()
    assert runs == [state]
    time.sleep(0.35)
    state._cleanup_expired_task_tokens()
    assert runs == [state, state]


def test_a_site_runner_retries_its_tasks_objects_at_the_executors_poll(
    pull_defaults, monkeypatch: pytest.MonkeyPatch
):
    # A task can reach its runner before the SuperNode has pulled the message's objects.
    import argparse

    from flwr.supercore.runtime import RuntimeHttpClient

    from insitu.federation import site_exec, site_runner

    class Stop(Exception):
        """Raised where the runner would make its client: the test ends there."""

    def no_client(*args: object, **kwargs: object) -> object:
        raise Stop

    monkeypatch.setattr(RuntimeHttpClient, "from_server_address", no_client)
    args = argparse.Namespace(
        runtime_api_address="127.0.0.1:1", insecure=True, root_certificates=None
    )
    with pytest.raises(Stop):
        site_runner._serve(args, "token")
    from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree

    task_input = pull_and_inflate_object_from_tree.__kwdefaults__  # what the runner pulls with
    for defaults in (pull_defaults, task_input):
        assert defaults["initial_backoff"] == 0.05
        assert defaults["backoff_cap"] == site_exec.POLL_SECONDS


def test_a_researcher_waits_briefly_for_a_query_and_seldom_asks_during_training():
    from insitu.federation import apps

    assert apps.wait_between_looks(0.0) == apps.wait_between_looks(9.9) == 0.1
    assert apps.wait_between_looks(10.0) == apps.wait_between_looks(3600.0) == 1.0
    # a ServerApp looks for replies at its own (local) SuperLink every 0.1 s
    assert inspect.signature(apps.send_and_collect).parameters["poll"].default == 0.1
