"""Asks for new work held open until it comes (insitu.federation.long_poll).

A site's ask for a message, a ServerApp's ask for replies and an executor's ask for
a task are answered when new work is stored, or empty after the hold. The held ask
calls Flower's own handler: what is answered does not change, only when. The live
federation tests (test_federation_live.py) run every ask through a real SuperLink
and SuperNodes; timings are measured in bench/bench_round.py, never here.
"""

from __future__ import annotations

import importlib
import inspect
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from insitu.federation import long_poll, supernode


class _Asks:
    """A handler that answers nothing until ``ready`` is set, and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.ready = False
        self.args: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        self.calls += 1
        self.args.append((args, kwargs))
        return SimpleNamespace(found=self.ready)


def _found(answer: SimpleNamespace) -> bool:
    return bool(answer.found)


def _held_in_thread(
    ask: _Asks, bell: long_poll.Bell, hold: float
) -> tuple[threading.Thread, list[SimpleNamespace]]:
    """Start a held ask in a thread; return once it has looked (and is held)."""
    got: list[SimpleNamespace] = []
    asking = threading.Thread(target=lambda: got.append(long_poll.held(ask, bell, _found, hold)()))
    asking.start()
    while ask.calls == 0:
        time.sleep(0.001)
    return asking, got


def test_an_answer_with_work_is_given_at_once():
    ask, bell = _Asks(), long_poll.Bell()
    ask.ready = True
    answer = long_poll.held(ask, bell, _found, hold=5.0)("request", state="state")
    assert answer.found and ask.calls == 1
    assert ask.args == [(("request",), {"state": "state"})]  # passed on as given


def test_an_empty_ask_is_held_until_work_is_stored_then_looks_again():
    ask, bell = _Asks(), long_poll.Bell()
    asking, got = _held_in_thread(ask, bell, hold=5.0)
    assert asking.is_alive()  # held, not answered empty
    ask.ready = True
    bell.ring()
    asking.join(timeout=5)
    assert not asking.is_alive() and got[0].found and ask.calls == 2


def test_an_empty_ask_is_answered_empty_after_the_hold():
    ask, bell = _Asks(), long_poll.Bell()
    started = time.monotonic()
    answer = long_poll.held(ask, bell, _found, hold=0.2)()
    assert not answer.found and ask.calls == 1
    assert time.monotonic() - started >= 0.2


def test_a_ring_for_other_work_looks_again_and_keeps_holding():
    ask, bell = _Asks(), long_poll.Bell()
    asking, got = _held_in_thread(ask, bell, hold=0.5)
    bell.ring()  # work for another site: this ask finds nothing and waits on
    while ask.calls < 2:
        time.sleep(0.001)
    assert asking.is_alive()
    asking.join(timeout=5)
    assert not got[0].found and ask.calls == 2


def test_asks_beyond_the_held_limit_are_answered_at_once():
    ask, bell = _Asks(), long_poll.Bell()
    slots = threading.BoundedSemaphore(1)
    slots.acquire()  # one ask is held already
    started = time.monotonic()
    answer = long_poll.held(ask, bell, _found, hold=5.0, slots=slots)()
    assert not answer.found and ask.calls == 1 and time.monotonic() - started < 1.0


def test_a_handler_error_reaches_the_asker_and_frees_the_slot():
    bell = long_poll.Bell()
    slots = threading.BoundedSemaphore(1)

    def refuses(*args: Any) -> Any:
        raise PermissionError("run is not running")

    with pytest.raises(PermissionError, match="not running"):
        long_poll.held(refuses, bell, _found, hold=5.0, slots=slots)()
    assert slots.acquire(blocking=False)  # released


# --- contents: a message is answered once its objects arrived -------------------------


def test_a_message_waits_for_its_missing_objects():
    contents = long_poll.Contents()
    contents.expect("m", tree={"m", "record", "array"}, new={"record", "array"})
    assert not contents.wait_complete("m", 0.01)
    contents.arrived("record")
    assert not contents.wait_complete("m", 0.01)
    contents.arrived("array")
    assert contents.wait_complete("m", 0.01)


def test_an_object_still_uploading_for_another_message_is_waited_for_too():
    # Flower uploads an object shared by several messages once: the second message's
    # preregistration does not list it, but it is not there yet either.
    contents = long_poll.Contents()
    contents.expect("to-site-a", tree={"to-site-a", "shared"}, new={"to-site-a", "shared"})
    contents.expect("to-site-b", tree={"to-site-b", "shared"}, new={"to-site-b"})
    contents.arrived("to-site-b")
    assert not contents.wait_complete("to-site-b", 0.01)
    contents.arrived("shared")
    assert contents.wait_complete("to-site-b", 0.01)
    assert not contents.wait_complete("to-site-a", 0.01)


def test_a_message_with_everything_there_is_not_followed():
    contents = long_poll.Contents()
    contents.expect("m", tree={"m", "record"}, new=set())
    assert contents.wait_complete("m", 0)


def test_a_message_whose_sender_gave_up_is_forgotten(monkeypatch):
    contents = long_poll.Contents()
    contents.expect("old", tree={"old", "x"}, new={"x"})
    later = time.monotonic() + long_poll.FORGET_SECONDS + 1
    monkeypatch.setattr(long_poll.time, "monotonic", lambda: later)
    contents.expect("new", tree={"new"}, new={"new"})
    assert contents.wait_complete("old", 0)


def test_a_pulls_answer_waits_for_the_contents_of_each_message():
    contents = long_poll.Contents()
    contents.expect("m", tree={"m", "record"}, new={"record"})
    response = SimpleNamespace(
        messages_list=["m"], message_object_trees=[SimpleNamespace(object_id="m")]
    )
    threading.Timer(0.05, contents.arrived, args=("record",)).start()
    started = time.monotonic()
    assert contents.all_there(response)
    assert 0.04 <= time.monotonic() - started < long_poll.CONTENTS_SECONDS
    empty = SimpleNamespace(messages_list=[], message_object_trees=[])
    assert not contents.all_there(empty)


# --- installed on the pinned Flower ---------------------------------------------------


def test_the_pinned_flower_calls_the_handlers_that_are_held_through_their_modules():
    # If a Flower upgrade binds these differently, the hold no longer applies: this says so.
    # The modules (their packages export the routers under the same names).
    fleet_router = importlib.import_module("flwr.superlink.routers.fleet.router")
    runtime_router = importlib.import_module("flwr.supercore.routers.runtime.router")

    assert "fleet_handlers.pull_messages(" in inspect.getsource(fleet_router.fleet_pull_messages)
    runtime = inspect.getsource(runtime_router)
    assert "handlers.pull_messages(request, state, task)" in runtime
    assert "handlers.acquire_task(request, state)" in runtime
    # A message is stored and its tree preregistered in one call (one transaction).
    from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState

    both = inspect.getsource(SqlLinkState.store_message_and_object_tree)
    assert "self.store_message_ins(message)" in both
    assert "self.preregister_object_tree(object_tree, session_id)" in both


@pytest.fixture
def restored():
    """Flower's classes and handler modules as they were (the hold patches them)."""
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState
    from flwr.supercore.corestate.in_memory_corestate import InMemoryCoreState
    from flwr.supercore.corestate.sql_corestate import SqlCoreState
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
    from flwr.supercore.object_store.sql_object_store import SqlObjectStore

    saved = [
        (cls, name, cls.__dict__[name])
        for cls, name in [
            (InMemoryLinkState, "store_message_and_object_tree"),
            (SqlLinkState, "store_message_and_object_tree"),
            (InMemoryLinkState, "create_run"),
            (SqlLinkState, "create_run"),
            (InMemoryCoreState, "store_object"),
            (SqlCoreState, "store_object"),
            (InMemoryCoreState, "create_task"),
            (SqlCoreState, "create_task"),
            (InMemoryObjectStore, "preregister"),
            (SqlObjectStore, "preregister"),
        ]
    ]
    modules = [
        importlib.import_module(name)
        for name in (
            "flwr.superlink.servicer.fleet.fleet_handlers",
            "flwr.superlink.servicer.runtime.runtime_handlers",
            "flwr.supernode.servicer.runtime.runtime_handlers",
        )
    ]
    handlers = [
        (m, n, m.__dict__[n])
        for m in modules
        for n in ("pull_messages", "acquire_task")
        if n in m.__dict__
    ]
    yield
    for cls, name, flower in saved:
        setattr(cls, name, flower)
    for module, name, flower in handlers:
        setattr(module, name, flower)


def test_holding_the_superlinks_pulls_twice_keeps_one_set_of_bells(restored):
    first = long_poll.hold_pull_messages()
    assert long_poll.hold_pull_messages() == first
    from flwr.superlink.servicer.fleet import fleet_handlers
    from flwr.superlink.servicer.runtime import runtime_handlers

    assert fleet_handlers.pull_messages.insitu_bell is first[0]
    assert runtime_handlers.pull_messages.insitu_bell is first[1]


def test_a_sites_executor_gets_a_task_the_moment_its_supernode_makes_one(restored):
    # Flower's own SuperNode state and Runtime API handler, held.
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    handlers = importlib.import_module("flwr.supernode.servicer.runtime.runtime_handlers")
    long_poll.hold_acquire_task(handlers, long_poll.task_makers(link=False), hold=10.0)
    state = InMemoryNodeState(InMemoryObjectStore())
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
    got: list[Any] = []
    asking = threading.Thread(target=lambda: got.append(handlers.acquire_task(request, state)))
    asking.start()
    time.sleep(0.1)
    assert asking.is_alive()  # no task: held
    made = state.create_task(task_type=TaskType.CLIENT_APP, run_id=1, fab_hash="f" * 64)
    asking.join(timeout=5)
    assert not asking.is_alive()
    assert got[0].HasField("task") and got[0].task.task_id == made and got[0].token


def test_an_executor_of_another_task_type_is_answered_empty_after_the_hold(restored):
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    handlers = importlib.import_module("flwr.supernode.servicer.runtime.runtime_handlers")
    long_poll.hold_acquire_task(handlers, long_poll.task_makers(link=False), hold=0.3)
    state = InMemoryNodeState(InMemoryObjectStore())
    state.create_task(task_type=TaskType.CLIENT_APP, run_id=1, fab_hash="f" * 64)
    request = AcquireTaskRequest(supported_task_types=[TaskType.SERVER_APP])
    answer = handlers.acquire_task(request, state)
    assert not answer.HasField("task")  # the ClientApp task is not handed to it


# --- the askers: the wait counts from the previous ask ----------------------------------


def test_a_supernode_asks_again_at_once_after_a_held_ask(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(supernode.time, "sleep", slept.append)
    now = [100.0]
    monkeypatch.setattr(supernode.time, "monotonic", lambda: now[0])
    clock = supernode.CappedClock(0.25)
    clock.sleep(3)  # the first wait: the whole interval
    now[0] += 1.0  # the next ask was held a second
    clock.sleep(3)
    now[0] += 0.01  # one answered at once
    clock.sleep(3)
    assert slept == [0.25, 0.0, pytest.approx(0.24)]
