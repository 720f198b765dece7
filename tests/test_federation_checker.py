"""The site's checker on serialised replies (no federation needed): parsing that trusts no
declaration, the egress manifest, budgets, and the classes of leak from issue 13."""

from __future__ import annotations

import io

import numpy as np
import pytest

from insitu.errors import InvalidRequestError
from insitu.federation.checker import (
    MalformedReplyError,
    Tally,
    check_parsed,
    parse_reply,
)
from insitu.federation.manifest import EgressManifest, manifest_from_toml
from insitu.federation.policy import EgressPolicy

MANIFEST = manifest_from_toml(
    """
[tool.insitu.egress]
message-types = ["train"]
max-replies = 3
max-values-per-reply = 500
max-values-per-run = 800
metrics = ["metrics/loss", "metrics/num-examples"]

[[tool.insitu.egress.arrays]]
name = "arrays/w"
dtype = "float32"
shape = [4, 3]

[[tool.insitu.egress.arrays]]
name = "arrays/v*"
dtype = "float64"
shape = [-1]
max-count = 2
"""
)
POLICY = EgressPolicy(min_subjects=10, max_reply_bytes=1 << 20)
SUBJECTS = {f"sub-{i:04d}" for i in range(12)}
SERIES = {f"2.25.{1000 + i}" for i in range(12)}
TALLY = Tally(
    subjects=SUBJECTS,
    series=SERIES,
    identifiers=SUBJECTS | SERIES,
    image_shapes=[(8, 32, 32)] * 12,
)


def _bytes(content: dict, message_type: str = "train", error: str | None = None) -> bytes:
    from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
    from flwr.common.serde import message_to_proto
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 5, 1
    incoming = Message(RecordDict(), dst_node_id=1, message_type=message_type)
    incoming.metadata.__dict__["_message_id"] = "x"  # reply_to needs an id
    if error is not None:
        reply = Message(Error(code=7, reason=error), reply_to=incoming)
    else:
        records = {}
        for record, values in content.items():
            if all(isinstance(v, np.ndarray) for v in values.values()):
                records[record] = ArrayRecord({k: Array(v) for k, v in values.items()})
            else:
                records[record] = MetricRecord(values)
        reply = Message(RecordDict(records), reply_to=incoming)
    return message_to_proto(reply).SerializeToString()


def _check(data: bytes, run_values: int = 0, message_type: str = "train"):
    parsed = parse_reply(data, max_bytes=1 << 20)
    return check_parsed(
        parsed,
        message_type=message_type,
        manifest=MANIFEST,
        policy=POLICY,
        tally=TALLY,
        run_values=run_values,
    )


def _good() -> dict:
    return {
        "arrays": {"w": np.ones((4, 3), np.float32), "v1": np.arange(5, dtype=np.float64)},
        "metrics": {"loss": 0.5, "num-examples": 12},
    }


def test_a_reply_within_the_manifest_passes_and_is_rebuilt_from_parsed_values():
    result = _check(_bytes(_good()))
    assert result.allowed, result.reasons
    content = result.content()
    np.testing.assert_array_equal(content["arrays"]["w"].numpy(), np.ones((4, 3), np.float32))
    assert dict(content["metrics"]) == {"loss": 0.5, "num-examples": 12}
    assert result.summary()["values"] == 12 + 5 + 2


def _tamper(data: bytes, edit) -> bytes:
    from flwr.proto.message_pb2 import Message as ProtoMessage

    proto = ProtoMessage.FromString(data)
    array = proto.content.items[0].array_record.items[0].value
    edit(array)
    return proto.SerializeToString()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


@pytest.mark.parametrize(
    "edit",
    [
        # declared shape smaller than the bytes: a whole plane behind a (4, 3) label
        lambda a: (
            a.ClearField("shape")
            or a.shape.extend([4, 3])
            or setattr(a, "data", _npy(np.ones((32, 32), np.float32)))
        ),
        # header says (4, 3) but the bytes go on (a plane appended after the header)
        lambda a: setattr(a, "data", bytes(a.data) + b"\0" * 4096),
        # declared dtype differs from the header's
        lambda a: setattr(a, "dtype", "int32"),
        # a dtype string that is not a number type (free text in the dtype)
        lambda a: setattr(a, "dtype", "sub-0001"),
        # an object array (pickle) is never parsed
        lambda a: setattr(a, "data", _npy(np.ones((4, 3), np.float32)).replace(b"<f4", b"|O")),
        lambda a: setattr(a, "stype", "torch.Tensor"),
    ],
)
def test_declared_shape_or_dtype_that_differs_from_the_bytes_is_malformed(edit):
    data = _tamper(_bytes(_good()), edit)
    with pytest.raises(MalformedReplyError):
        parse_reply(data, max_bytes=1 << 20)


def test_config_records_lists_and_garbage_are_malformed():
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.common.serde import message_to_proto

    _bytes({})  # sets the task identity
    incoming = Message(RecordDict(), dst_node_id=1, message_type="train")
    incoming.metadata.__dict__["_message_id"] = "x"
    reply = Message(RecordDict({"c": ConfigRecord({"note": "sub-0001 is 71"})}), reply_to=incoming)
    with pytest.raises(MalformedReplyError, match="ConfigRecord"):
        parse_reply(message_to_proto(reply).SerializeToString(), max_bytes=1 << 20)
    with pytest.raises(MalformedReplyError, match="single number"):
        parse_reply(_bytes({"metrics": {"loss": [1.0, 2.0]}}), max_bytes=1 << 20)
    with pytest.raises(MalformedReplyError):
        parse_reply(b"\xff" * 100, max_bytes=1 << 20)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        # a flattened plane under a manifest name with a free length
        ({"arrays": {"v1": np.zeros(32 * 32)}}, "flattened image"),
        # a plane split into many small arrays: more than the manifest's count
        ({"arrays": {f"v{i}": np.zeros(32) for i in range(32)}}, "more arrays of one"),
        # one entry per subject
        ({"arrays": {"v1": np.arange(12.0)}}, "one entry per subject"),
        # an image-shaped array (not in the manifest either)
        ({"arrays": {"w": np.zeros((32, 32), np.float32)}}, "shape of image data"),
        # names carrying identifiers, and names outside the manifest
        ({"metrics": {"sub-0003": 1.0}}, "identifier"),
        ({"metrics": {"hu:2.25.1004": 1.0}}, "identifier"),
        ({"metrics": {"accuracy": 1.0}}, "not in the app's egress manifest"),
        ({"arrays": {"w": np.full((4, 3), np.nan, np.float32)}}, "not finite"),
        ({"arrays": {"v1": np.zeros(501)}}, "limit per reply is 500"),
    ],
)
def test_leaks_are_refused_with_the_sites_words(content, needle):
    result = _check(_bytes(content))
    assert not result.allowed
    joined = "; ".join(result.reasons)
    assert needle in joined, joined
    assert "sub-0003" not in joined and "2.25.1004" not in joined  # never the app's names


def test_run_budget_and_message_types():
    assert "limit per run is 800" in "; ".join(_check(_bytes(_good()), run_values=790).reasons)
    result = _check(_bytes(_good(), message_type="evaluate"), message_type="evaluate")
    assert "message type 'evaluate' is not in" in "; ".join(result.reasons)
    # The reply's own metadata naming another type than the task's is refused too.
    result = _check(_bytes(_good(), message_type="query"))
    assert "another message type" in "; ".join(result.reasons)


def test_an_app_error_reply_is_parsed_without_using_its_words():
    parsed = parse_reply(_bytes({}, error="subject sub-0001 has 71 HU"), max_bytes=1 << 20)
    assert parsed.error_code == 7  # the runner replaces it with a fixed text


def test_too_few_subjects_and_per_subject_metrics():
    few = Tally(subjects=set(list(SUBJECTS)[:3]), series=set(), identifiers=set())
    parsed = parse_reply(_bytes(_good()), max_bytes=1 << 20)
    result = check_parsed(parsed, message_type="train", manifest=MANIFEST, policy=POLICY, tally=few)
    assert "covers 3 subject(s)" in "; ".join(result.reasons)


def test_manifest_round_trip_and_refusals():
    assert EgressManifest.from_dict(MANIFEST.to_dict()) == MANIFEST
    with pytest.raises(InvalidRequestError, match="message types"):
        manifest_from_toml("[tool.insitu.egress]\nmetrics = []\n")
    with pytest.raises(InvalidRequestError, match="dtype"):
        manifest_from_toml(
            '[tool.insitu.egress]\nmessage-types = ["train"]\n'
            '[[tool.insitu.egress.arrays]]\nname = "a"\ndtype = "object"\n'
        )
    with pytest.raises(InvalidRequestError, match="no egress manifest"):
        manifest_from_toml("[project]\nname = 'x'\n")


def test_a_small_fixed_summary_may_equal_the_subjects_served_but_a_declared_long_one_may_not():
    """At a site of 4 subjects, the 4 moments of a feature are not per-subject values.

    The attack: an app declares a fixed shape equal to a site's published subject
    count (12 here) to carry one value per subject; fixed shapes above a few values
    are still checked against the tally.
    """
    manifest = manifest_from_toml(
        """
[tool.insitu.egress]
message-types = ["train"]
max-values-per-reply = 500
max-values-per-run = 800

[[tool.insitu.egress.arrays]]
name = "arrays/moments"
dtype = "float64"
shape = [4]

[[tool.insitu.egress.arrays]]
name = "arrays/per-site"
dtype = "float64"
shape = [12]
"""
    )
    four = {f"sub-{i:04d}" for i in range(4)}
    tiny = Tally(subjects=four, series=four, identifiers=four, image_shapes=[(8, 32, 32)] * 4)
    policy = EgressPolicy(min_subjects=4, max_reply_bytes=1 << 20)

    def check(content: dict, tally: Tally) -> list[str]:
        parsed = parse_reply(_bytes(content), max_bytes=1 << 20)
        return check_parsed(
            parsed, message_type="train", manifest=manifest, policy=policy, tally=tally
        ).reasons

    assert check({"arrays": {"moments": np.arange(4.0)}}, tiny) == []
    leak = check({"arrays": {"per-site": np.arange(12.0)}}, TALLY)
    assert any("one entry per subject" in r for r in leak), leak
