"""Asks for new work held open until the work comes (long polling), on this host.

Flower 1.42's components find new work by asking again and again:

- a SuperNode asks the SuperLink for a message (Fleet ``PullMessages``), and when
  there is none waits ``[federation] poll_interval`` (:mod:`insitu.federation.supernode`)
  and asks again; a run's message reached its sites up to one interval after the
  ServerApp sent it (about 0.2 s of a 1.5-s 3-site query);
- an executor asks for a task (Runtime ``AcquireTask``): the coordinator's
  (:mod:`insitu.federation.coordinator_exec`) at its SuperLink, each site's
  (:mod:`insitu.federation.site_exec`) at its SuperNode, every 0.1 s. These asks were
  a fifth of an idle SuperLink's CPU, and most of an idle SuperNode's.

Here an ask that finds nothing is answered only when new work is stored (then it
looks again) or after ``HOLD_SECONDS``. The asker's wait counts from its previous ask,
so after a held ask it asks again at once; against a server that answers at once it
still waits its interval. What is answered is unchanged: the held ask calls Flower's
own handler (after Flower's own authentication of the request) and hands out the
same messages and tasks.

A message is stored before its contents (records, arrays: one upload each). A site
answered in between found them missing and retried (from 0.05 s, doubling): a message
found is answered once its objects have arrived (:class:`Contents`), or after
``CONTENTS_SECONDS``, when the site retries the missing ones itself as before.

At most ``MAX_HELD`` asks (of all kinds) are held at the same time in one server; more
are answered at once, as Flower does. Held asks wait in the server's request threads (40 by
default, shared with every other request), so most stay free for the rest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "CONTENTS_SECONDS",
    "HOLD_SECONDS",
    "MAX_HELD",
    "Bell",
    "Contents",
    "held",
    "hold_acquire_task",
    "hold_pull_messages",
    "task_makers",
]

# The longest an ask that finds nothing is held: an idle site or executor then asks
# about once a second, and a server that is stopped waits at most this long for it.
HOLD_SECONDS = 1.0
# Asks held at the same time in this process, all kinds together (the server's request
# threads are 40: at least 24 stay free for every other request).
MAX_HELD = 16
_HELD = threading.BoundedSemaphore(MAX_HELD)
# A message found is answered once its objects are uploaded, or after this long.
CONTENTS_SECONDS = 1.0
# A message whose objects are not all uploaded after this long is no longer followed.
FORGET_SECONDS = 60.0


class Bell:
    """Counts the times new work was stored; lets an ask wait for the next one."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._count = 0

    def ring(self) -> None:
        with self._changed:
            self._count += 1
            self._changed.notify_all()

    def count(self) -> int:
        with self._changed:
            return self._count

    def wait_past(self, seen: int, timeout: float) -> bool:
        """Wait until new work was stored after ``seen``; False at the timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count != seen, timeout)


class Contents:
    """Follows which stored messages still miss objects (uploaded one request each)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._missing: dict[str, tuple[float, set[str]]] = {}  # message: (since, objects)

    def expect(self, message: str, tree: set[str], new: set[str]) -> None:
        """``message`` (its tree's objects ``tree``) waits for ``new`` objects and any
        of its objects another message still waits for."""
        with self._changed:
            now = time.monotonic()
            for key, (since, _) in list(self._missing.items()):
                if now - since > FORGET_SECONDS:  # its sender gave up: forget it
                    del self._missing[key]
            waiting = set(new)
            for _, objects in self._missing.values():
                waiting |= objects & tree
            if waiting:
                self._missing[message] = (now, waiting)

    def arrived(self, object_id: str) -> None:
        with self._changed:
            done = []
            for key, (_, objects) in self._missing.items():
                objects.discard(object_id)
                if not objects:
                    done.append(key)
            for key in done:
                del self._missing[key]
            if done:
                self._changed.notify_all()

    def wait_complete(self, message: str, timeout: float) -> bool:
        """Wait until every object of ``message`` arrived; False at the timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: message not in self._missing, timeout)

    def all_there(self, response: Any) -> bool:
        """Wait (up to ``CONTENTS_SECONDS`` each) for the contents of the messages in a
        pull's ``response``; True if it has any message."""
        for tree in response.message_object_trees:
            self.wait_complete(tree.object_id, CONTENTS_SECONDS)
        return len(response.messages_list) > 0


def held(
    ask: Callable[..., Any],
    bell: Bell,
    found: Callable[[Any], bool],
    hold: float = HOLD_SECONDS,
    slots: threading.Semaphore | None = None,
) -> Callable[..., Any]:
    """``ask`` (a Flower handler), held up to ``hold`` s while ``found(answer)`` is
    False, looking again each time ``bell`` rings."""
    slots = slots if slots is not None else _HELD

    def held_ask(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + hold
        if not slots.acquire(blocking=False):  # enough asks held: answer at once
            return ask(*args, **kwargs)
        try:
            while True:
                seen = bell.count()
                answer = ask(*args, **kwargs)
                left = deadline - time.monotonic()
                if found(answer) or left <= 0 or not bell.wait_past(seen, left):
                    return answer
        finally:
            slots.release()

    held_ask.insitu_bell = bell  # type: ignore[attr-defined]
    return held_ask


def _ringing(method: Callable[..., Any], bell: Bell) -> Callable[..., Any]:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            bell.ring()  # also after a refusal: a spurious ring only costs a look

    return call


def _wrap(cls: type, name: str, wrapper: Callable[[Callable[..., Any]], Any]) -> None:
    flower = cls.__dict__.get(name)
    if flower is None:  # a Flower that changed it: stop
        raise RuntimeError(f"flwr's {cls.__name__} has no {name} to follow")
    setattr(cls, name, wrapper(flower))


def _installed(module: Any, name: str) -> Any:
    flower = module.__dict__.get(name)
    if flower is None:  # a Flower that changed it: stop
        raise RuntimeError(f"flwr's {module.__name__} has no {name} to hold")
    return flower


def hold_pull_messages(hold: float = HOLD_SECONDS) -> tuple[Bell, Bell]:
    """Hold the SuperLink's empty ``PullMessages`` answers (in this process): a site's
    (Fleet API) until an instruction is stored, a ServerApp's (Runtime API) until a
    reply is; either answered once the message's objects have arrived. Returns the
    (instructions, replies) bells."""
    from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
    from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState
    from flwr.supercore.corestate.in_memory_corestate import InMemoryCoreState
    from flwr.supercore.corestate.sql_corestate import SqlCoreState
    from flwr.supercore.inflatable.inflatable_object import iterate_object_tree
    from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore
    from flwr.supercore.object_store.sql_object_store import SqlObjectStore
    from flwr.superlink.servicer.fleet import fleet_handlers
    from flwr.superlink.servicer.runtime import runtime_handlers

    fleet = _installed(fleet_handlers, "pull_messages")
    runtime = _installed(runtime_handlers, "pull_messages")
    if hasattr(fleet, "insitu_bell"):  # installed already: the same bells
        return fleet.insitu_bell, runtime.insitu_bell
    instructions, replies, contents = Bell(), Bell(), Contents()

    def expecting(preregister: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, run_id: int, object_tree: Any) -> Any:
            new = preregister(self, run_id, object_tree)
            tree = {node.object_id for node in iterate_object_tree(object_tree)}
            contents.expect(object_tree.object_id, tree, set(new))
            return new

        return call

    def arriving(store_object: Callable[..., Any]) -> Callable[..., Any]:
        def call(
            self: Any, run_id: int, session_id: str, object_id: str, object_content: bytes
        ) -> Any:
            stored = store_object(self, run_id, session_id, object_id, object_content)
            contents.arrived(object_id)  # stored (its transaction ended), or refused
            return stored

        return call

    def announcing(store: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, message: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return store(self, message, *args, **kwargs)
            finally:  # its transaction ended: an ask made now finds it
                reply = bool(message.metadata.reply_to_message_id)
                (replies if reply else instructions).ring()

        return call

    for state in (SqlLinkState, InMemoryLinkState):
        _wrap(state, "store_message_and_object_tree", announcing)
    for core in (SqlCoreState, InMemoryCoreState):
        _wrap(core, "store_object", arriving)
    for store in (SqlObjectStore, InMemoryObjectStore):  # called inside the above
        _wrap(store, "preregister", expecting)
    fleet_handlers.pull_messages = held(fleet, instructions, contents.all_there, hold)
    runtime_handlers.pull_messages = held(runtime, replies, contents.all_there, hold)
    return instructions, replies


def task_makers(link: bool) -> list[tuple[type, str]]:
    """Flower's state methods that make a pending task: ``create_task`` (both
    components), and at a SuperLink (``link``) ``create_run``, which writes its
    ServerApp's task itself."""
    from flwr.supercore.corestate.in_memory_corestate import InMemoryCoreState
    from flwr.supercore.corestate.sql_corestate import SqlCoreState

    makers: list[tuple[type, str]] = [
        (SqlCoreState, "create_task"),
        (InMemoryCoreState, "create_task"),
    ]
    if link:
        from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState
        from flwr.server.superlink.linkstate.sql_linkstate import SqlLinkState

        makers += [(SqlLinkState, "create_run"), (InMemoryLinkState, "create_run")]
    return makers


def hold_acquire_task(
    handlers: Any, makers: list[tuple[type, str]], hold: float = HOLD_SECONDS
) -> Bell:
    """Hold the empty ``AcquireTask`` answers of ``handlers`` (the Runtime API handler
    module of Flower's SuperLink or SuperNode, in this process) until one of
    ``makers`` (:func:`task_makers`) has made a task."""
    flower = _installed(handlers, "acquire_task")
    if hasattr(flower, "insitu_bell"):
        return flower.insitu_bell  # type: ignore[no-any-return]
    bell = Bell()
    for state, name in makers:
        _wrap(state, name, lambda f: _ringing(f, bell))
    handlers.acquire_task = held(flower, bell, lambda answer: answer.HasField("task"), hold)
    return bell
