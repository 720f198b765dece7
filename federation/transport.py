"""A site's checked reply in one Flower object instead of one per array (issue 15).

Flower 1.42 moves a message as a tree of objects (the message, its RecordDict,
each record, each array and each array chunk), one HTTP request per object from
the SuperNode to the SuperLink and again from the SuperLink to the ServerApp. An
analytics reply is ~18 objects; three sites make ~54 uploads and ~54 downloads per
query, each a handful of SQLite statements in the one SuperLink process, and that
was most of a query's time after the sites had answered.

Here a ServerApp that collects replies with :func:`insitu.federation.apps.send_and_collect`
asks for packed replies (a ConfigRecord ``insitu.transport`` in each instruction,
:func:`ask_packed`). The site runner removes that record before anything of the site
or the app sees the message (:func:`take_request`), runs the task exactly as before
(the app in its sandbox, the checker on the app's serialised reply, the site's mods
and envelope, the audit), and only then, when the reply it lets out is small
(:data:`MAX_PACKED_BYTES`), replaces the reply's content by one ConfigRecord
``insitu.packed`` holding that content serialised by Flower's own serde
(:func:`pack`): the same records, arrays and numbers, now three objects (message,
RecordDict, record). ``send_and_collect`` restores the content before the app's
ServerApp sees the reply (:func:`unpack`).

Nothing the checker decides changes: it judges the app's reply as before, and what is
packed is the content it let out, built by the site (from the parsed values, plus the
envelope's credit), never the app's bytes. A site that does not know this record
(an older runner) hands it to the app (the built-in apps ignore records they do not
read) and replies unpacked; a ServerApp that did not ask gets unpacked replies.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MAX_PACKED_BYTES",
    "PACKED_RECORD",
    "REQUEST_RECORD",
    "ask_packed",
    "is_packed",
    "pack",
    "take_request",
    "unpack",
]

# The instruction's record asking for a packed reply, and its format version.
REQUEST_RECORD = "insitu.transport"
REQUEST_KEY = "pack-replies"
FORMAT = 1
# The reply's one record: the content, serialised (flwr.proto.recorddict_pb2.RecordDict).
PACKED_RECORD = "insitu.packed"
PACKED_KEY = "recorddict"
# Larger replies (model updates) keep Flower's form: its arrays are chunked and pushed
# in parallel, and one object of many megabytes would be one long request.
MAX_PACKED_BYTES = 512 * 1024


def ask_packed(message: Any) -> None:
    """ServerApp side: ask the site to pack its reply to ``message`` (in place)."""
    from flwr.app import ConfigRecord

    if message.has_content():
        message.content[REQUEST_RECORD] = ConfigRecord({REQUEST_KEY: FORMAT})


def take_request(message: Any) -> bool:
    """Site side: remove the request from ``message``; True when it asked for packing.

    Only the exact request (one ConfigRecord holding this format) is taken; anything
    else under that name stays in the message for the app, as any record would.
    """
    from flwr.app import ConfigRecord

    if not message.has_content():
        return False
    record = message.content.get(REQUEST_RECORD)
    if not isinstance(record, ConfigRecord) or dict(record) != {REQUEST_KEY: FORMAT}:
        return False
    del message.content[REQUEST_RECORD]
    return True


def pack(reply: Any, *, max_bytes: int = MAX_PACKED_BYTES) -> bool:
    """Site side, after the checks: the reply's content as one record (in place).

    Error replies and content larger than ``max_bytes`` serialised are left as they
    are. True when packed.
    """
    from flwr.app import ConfigRecord, RecordDict
    from flwr.common.serde import recorddict_to_proto

    if not reply.has_content():
        return False
    data = recorddict_to_proto(reply.content).SerializeToString()
    if len(data) > max_bytes:
        return False
    reply.content = RecordDict({PACKED_RECORD: ConfigRecord({PACKED_KEY: data})})
    return True


def is_packed(reply: Any) -> bool:
    """Does ``reply`` carry its content packed by :func:`pack`?"""
    from flwr.app import ConfigRecord

    if reply.has_error() or not reply.has_content():
        return False
    content = reply.content
    if list(content.keys()) != [PACKED_RECORD]:
        return False
    record = content[PACKED_RECORD]
    return (
        isinstance(record, ConfigRecord)
        and list(record.keys()) == [PACKED_KEY]
        and isinstance(record[PACKED_KEY], bytes)
    )


def unpack(reply: Any) -> Any:
    """ServerApp side: restore a packed reply's content (in place); other replies as they
    are. Returns the reply."""
    from flwr.common.serde import recorddict_from_proto
    from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict

    if is_packed(reply):
        data = reply.content[PACKED_RECORD][PACKED_KEY]
        reply.content = recorddict_from_proto(ProtoRecordDict.FromString(data))
    return reply
