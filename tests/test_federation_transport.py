"""A site's checked reply packed into one Flower object, and restored at the ServerApp.

The live federation tests (tests/test_federation_live.py) run it end to end through a
real SuperLink and SuperNodes; here: the round trip is exact, only the exact request
is taken, what is not asked for or too large keeps Flower's form, and the Flower
behaviour this relies on (Flower's serde, a message's id kept when its content is
replaced, one object per record) is pinned.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from insitu.federation import transport


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 7, 3


def _instruction() -> Any:
    from flwr.app import Message, RecordDict

    message = Message(RecordDict(), dst_node_id=3, message_type="query")
    message.metadata.__dict__["_message_id"] = message.object_id
    return message


def _reply(instruction: Any) -> Any:
    """An analytics-like reply: arrays, metrics and the envelope's credit record."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    content = RecordDict(
        {
            "summary": ArrayRecord(
                {
                    "g:120/moments": Array(np.array([24.0, 1.5, 3.25, 1e-17])),
                    "g:120/subjects": Array(np.array([24], dtype=np.int64)),
                    "g:120/sketch_means": Array(np.linspace(-3.0, 3.0, 7)),
                    "g:120/sketch_counts": Array(np.arange(1, 8, dtype=np.int64)),
                    "withheld": Array(np.array([1], dtype=np.int64)),
                }
            ),
            "meta": MetricRecord({"site:site-a": 1, "num-examples": 24}),
            "insitu.credit": ConfigRecord({"site": "site-a", "subjects": 24, "citation": "{}"}),
        }
    )
    return Message(content, reply_to=instruction)


def _same(a: Any, b: Any) -> None:
    from flwr.app import ArrayRecord

    assert list(a.keys()) == list(b.keys())
    for name, record in a.items():
        other = b[name]
        assert type(record) is type(other)
        if isinstance(record, ArrayRecord):
            assert list(record.keys()) == list(other.keys())
            for key, array in record.items():
                left, right = array.numpy(), other[key].numpy()
                assert left.dtype == right.dtype and left.shape == right.shape
                assert np.array_equal(left, right)
        else:
            assert dict(record) == dict(other)


def test_a_packed_reply_is_restored_exactly() -> None:
    instruction = _instruction()
    original = _reply(instruction)
    reply = _reply(instruction)
    assert transport.pack(reply)
    assert transport.is_packed(reply) and list(reply.content.keys()) == [transport.PACKED_RECORD]
    transport.unpack(reply)
    _same(reply.content, original.content)
    assert reply.metadata.reply_to_message_id == instruction.metadata.message_id


def test_a_packed_reply_is_three_flower_objects_instead_of_one_per_array_and_chunk() -> None:
    # Flower uploads and downloads one object per request: this is the saving.
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    instruction = _instruction()
    reply = _reply(instruction)
    before = len(get_all_nested_objects(reply))
    transport.pack(reply)
    assert before >= 12 and len(get_all_nested_objects(reply)) == 3


def test_the_site_takes_only_the_exact_request_and_the_app_never_sees_it() -> None:
    from flwr.app import ConfigRecord

    message = _instruction()
    message_id = message.metadata.message_id
    transport.ask_packed(message)
    assert transport.REQUEST_RECORD in message.content
    assert transport.take_request(message)
    assert transport.REQUEST_RECORD not in message.content
    assert message.metadata.message_id == message_id  # the reply still answers it
    assert not transport.take_request(message)  # nothing left to take

    other = _instruction()
    other.content[transport.REQUEST_RECORD] = ConfigRecord({transport.REQUEST_KEY: 2})
    assert not transport.take_request(other)  # a format this site does not know: the app's
    assert transport.REQUEST_RECORD in other.content


def test_error_replies_and_large_replies_keep_flowers_form() -> None:
    from flwr.app import Error, Message

    instruction = _instruction()
    error = Message(Error(code=3, reason="refused"), reply_to=instruction)
    assert not transport.pack(error) and not transport.is_packed(error)
    assert transport.unpack(error) is error and error.error.reason == "refused"

    reply = _reply(instruction)
    assert not transport.pack(reply, max_bytes=100)
    assert "summary" in reply.content and not transport.is_packed(reply)


def test_an_unpacked_reply_is_returned_as_it_is() -> None:
    instruction = _instruction()
    original = _reply(instruction)
    reply = _reply(instruction)
    assert transport.unpack(reply) is reply
    _same(reply.content, original.content)


def test_collecting_replies_asks_for_packing_and_hands_the_app_unpacked_content() -> None:
    from insitu.federation import apps

    sent: list[Any] = []

    class Grid:
        def push_messages(self, messages: list[Any]) -> list[str]:
            sent.extend(messages)
            return [m.metadata.message_id for m in messages]

        def pull_messages(self, ids: list[str]) -> list[Any]:
            replies = []
            for message in sent:
                assert transport.take_request(message)  # as the site runner does
                reply = _reply(message)
                transport.pack(reply)
                replies.append(reply)
            return replies

    message = _instruction()
    (reply,) = apps.send_and_collect(Grid(), [message], timeout=5)
    assert not transport.is_packed(reply)
    _same(reply.content, _reply(_instruction()).content)


# --- the ServerApp pulls the objects of several waiting replies at once ----------------


class _RuntimeClient:
    """Stands in for the SuperLink's Runtime API: the replies' objects, from a dict."""

    def __init__(self, replies: list[Any]) -> None:
        from flwr.app.message import remove_content_from_message
        from flwr.common.serde import message_to_proto
        from flwr.supercore.inflatable.inflatable_object import (
            get_all_nested_objects,
            get_object_tree,
        )

        self.objects: dict[str, bytes] = {}
        self.protos, self.trees = [], []
        for reply in replies:
            reply.metadata.__dict__["_message_id"] = reply.object_id
            self.objects |= {i: o.deflate() for i, o in get_all_nested_objects(reply).items()}
            self.protos.append(message_to_proto(remove_content_from_message(reply)))
            self.trees.append(get_object_tree(reply))
        self.pull_messages = 0
        self.confirmed: list[str] = []

    def PullMessages(self, request: Any) -> Any:
        from flwr.proto.runtime_pb2 import PullAppMessagesResponse

        self.pull_messages += 1
        return PullAppMessagesResponse(messages_list=self.protos, message_object_trees=self.trees)

    def PullObject(self, request: Any) -> Any:
        from flwr.proto.message_pb2 import PullObjectResponse

        content = self.objects[request.object_id]
        return PullObjectResponse(object_found=True, object_available=True, object_content=content)

    def ConfirmMessageReceived(self, request: Any) -> Any:
        self.confirmed.append(request.message_object_id)


def test_the_pinned_grid_pull_uses_only_its_run_node_and_runtime_client() -> None:
    # pull_replies hands Flower's HttpGrid.pull_messages a stand-in with these three.
    import inspect
    import re

    from flwr.superlink.grid.http_grid import HttpGrid

    source = inspect.getsource(HttpGrid.pull_messages)
    assert set(re.findall(r"self\.(\w+)", source)) == {"_run", "_runtime_client", "node"}
    assert source.count("PullMessages(") == 1


def test_several_waiting_replies_are_pulled_with_one_request_and_come_back_whole() -> None:
    from types import SimpleNamespace

    from flwr.superlink.grid.http_grid import HttpGrid

    from insitu.federation import apps

    instructions = [_instruction() for _ in range(3)]
    replies = [_reply(i) for i in instructions]
    transport.pack(replies[0])  # packed and unpacked replies alike
    client = _RuntimeClient(replies)
    grid = HttpGrid(token="t" * 8)
    grid._client = client  # type: ignore[assignment]
    grid._run = SimpleNamespace(run_id=7)  # type: ignore[assignment]
    ids = [i.metadata.message_id for i in instructions]
    pulled = apps.pull_replies(grid, ids)
    assert client.pull_messages == 1
    assert [r.metadata.reply_to_message_id for r in pulled] == ids
    assert sorted(client.confirmed) == sorted(r.metadata.message_id for r in replies)
    for reply in pulled:
        _same(transport.unpack(reply).content, _reply(_instruction()).content)


def test_a_pull_too_large_for_the_superlink_is_logged_and_gives_nothing_as_flowers() -> None:
    from types import SimpleNamespace

    import httpx
    from flwr.superlink.grid.http_grid import HttpGrid

    from insitu.federation import apps

    class TooLarge:
        def PullMessages(self, request: Any) -> Any:
            response = httpx.Response(413, request=httpx.Request("POST", "http://link"))
            raise httpx.HTTPStatusError("too large", request=response.request, response=response)

    grid = HttpGrid(token="t" * 8)
    grid._client = TooLarge()  # type: ignore[assignment]
    grid._run = SimpleNamespace(run_id=7)  # type: ignore[assignment]
    assert apps.pull_replies(grid, ["a", "b"]) == []
