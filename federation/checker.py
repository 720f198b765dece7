"""The site's checker: parse a sandboxed app's serialised reply and decide what leaves.

The app runs in its own process (:mod:`insitu.federation.sandbox`) and hands
its reply over as the bytes of Flower's ``Message`` protobuf. The checker
never touches an object the app built: it parses those bytes itself
(:func:`parse_reply`), including every array's NumPy header, and compares
the declared shape and dtype with the actual byte length. What passes is
rebuilt from the parsed values (:meth:`CheckResult.content`), so nothing of
the app's own objects, metadata or words reaches the SuperNode.

Rules (docs/federation.md, "Egress policy"), all on parsed content:

- the message type, every array (name, dtype, shape, count) and every metric
  name must be in the egress manifest approved with the app;
- arrays are finite numbers; none is shaped like the site's images (a volume,
  a plane, a stack of planes) nor holds as many values as a plane or volume
  (a flattened plane), nor one value per subject or series served;
- names (records, arrays, metrics) pass the disclosure engine's text rules
  and never contain a subject or series identifier the app was handed;
- the arrays, each and all 1-D ones joined, pass the disclosure engine's
  array rules (image resolution, pixel provenance) when the engine is
  installed;
- the reply covers at least ``min_subjects`` subjects (counted by the data
  API, not by the app), metric values are fewer than subjects, and the
  numbers in the reply and in the run stay within the manifest's and the
  site's budgets.

Reasons are the site's own words: they name arrays and metrics by position
(``array #2``), never by the app's names, so neither the error reply nor the
audit log carries text the app chose.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from insitu.federation.manifest import NUMERIC_DTYPES, EgressManifest
from insitu.federation.policy import EgressPolicy, image_like_shapes

__all__ = [
    "CheckResult",
    "MalformedReplyError",
    "ParsedReply",
    "Tally",
    "check_parsed",
    "fingerprint_text",
    "parse_array",
    "parse_reply",
]

LEGACY_METRIC_CONFIGS = frozenset({"fitres.metrics", "evaluateres.metrics"})
LEGACY_STATUS_CONFIGS = frozenset({"fitres.status", "evaluateres.status"})
MAX_NAME = 200
MAX_NPY_HEADER = 4096


class MalformedReplyError(ValueError):
    """The bytes are not a reply the checker can fully parse (the reason is the site's)."""


@dataclass
class ParsedReply:
    message_type: str
    error_code: int | None = None
    error_text: str = ""
    arrays: list[tuple[str, np.ndarray]] = field(default_factory=list)
    metrics: list[tuple[str, float | int]] = field(default_factory=list)
    legacy_status: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    size_bytes: int = 0

    @property
    def values(self) -> int:
        return sum(int(a.size) for _, a in self.arrays) + len(self.metrics)


@dataclass
class Tally:
    """What the site's data API handed the app for this task (kept outside the app)."""

    subjects: set[str] = field(default_factory=set)
    series: set[str] = field(default_factory=set)
    identifiers: set[str] = field(default_factory=set)
    image_shapes: list[tuple[int, ...]] = field(default_factory=list)


@dataclass
class CheckResult:
    allowed: bool
    reasons: list[str]
    parsed: ParsedReply
    subjects: int

    def summary(self) -> dict[str, Any]:
        """What the audit log keeps (never values, never the app's names)."""
        return {
            "decision": "allowed" if self.allowed else "refused",
            "reasons": self.reasons,
            "size_bytes": self.parsed.size_bytes,
            "kinds": {"arrays": len(self.parsed.arrays), "metrics": len(self.parsed.metrics)},
            "values": self.parsed.values,
            "subjects": self.subjects,
        }

    def content(self) -> Any:
        """A new RecordDict built from the parsed values only."""
        from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

        records: dict[str, Any] = {}
        for name, array in self.parsed.arrays:
            record, key = name.split("/", 1)
            records.setdefault(record, {})[key] = Array(np.ascontiguousarray(array))
        out = RecordDict({r: ArrayRecord(v) for r, v in records.items()})
        metrics: dict[str, dict[str, float | int]] = {}
        for name, value in self.parsed.metrics:
            record, key = name.split("/", 1)
            metrics.setdefault(record, {})[key] = value
        for record, values in metrics.items():
            if record in LEGACY_METRIC_CONFIGS:
                out[record] = ConfigRecord(dict(values))
            else:
                out[record] = MetricRecord(dict[str, Any](values))
        for record, status in self.parsed.legacy_status:
            out[record] = ConfigRecord(status)
        return out


def fingerprint_text(text: str) -> dict[str, Any]:
    """How the audit log refers to the app's words: length and hash, never the text."""
    raw = text.encode("utf-8", "replace")
    return {"chars": len(text), "sha256": hashlib.sha256(raw).hexdigest()[:16]}


# -- parsing -----------------------------------------------------------------


def parse_array(proto: Any) -> np.ndarray:
    """A NumPy array from Flower's ``Array`` protobuf, trusting no declaration."""
    if proto.stype != "numpy.ndarray":
        raise MalformedReplyError("an array is not serialised as numpy.ndarray")
    # Flower's legacy Parameters declare neither dtype nor shape (dtype "", shape ()):
    # then the .npy header is all there is, and the byte count is still checked.
    legacy = proto.dtype == "" and len(proto.shape) == 0
    if not legacy and proto.dtype not in NUMERIC_DTYPES:
        raise MalformedReplyError("an array declares a dtype that is not a plain number type")
    declared_shape = tuple(int(s) for s in proto.shape)
    data = bytes(proto.data)
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                buf, max_header_size=MAX_NPY_HEADER
            )
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                buf, max_header_size=MAX_NPY_HEADER
            )
        else:
            raise MalformedReplyError("an array has an unknown .npy format version")
    except (ValueError, SyntaxError, TypeError, EOFError) as exc:
        if isinstance(exc, MalformedReplyError):
            raise
        raise MalformedReplyError("an array's bytes are not a valid .npy header") from None
    if (
        dtype.hasobject
        or dtype.byteorder not in ("<", "=", "|")
        or dtype.name not in NUMERIC_DTYPES
    ):
        raise MalformedReplyError("an array's bytes hold a dtype that is not a plain number type")
    if not legacy and dtype.name != proto.dtype:
        raise MalformedReplyError("an array's bytes hold another dtype than it declares")
    if not legacy and tuple(shape) != declared_shape:
        raise MalformedReplyError("an array's bytes hold another shape than it declares")
    payload = data[buf.tell() :]
    expected = math.prod(shape) * dtype.itemsize
    if len(payload) != expected:
        raise MalformedReplyError(
            f"an array declares {expected} bytes of data and carries {len(payload)}"
        )
    array = np.frombuffer(payload, dtype=dtype.newbyteorder("=")).reshape(
        shape, order="F" if fortran else "C"
    )
    return np.array(array, copy=True)


def _metric_value(value: Any) -> float | int:
    kind = value.WhichOneof("value")
    if kind == "double":
        return float(value.double)
    if kind == "sint64":
        return int(value.sint64)
    if kind == "uint64":
        return int(value.uint64)
    raise MalformedReplyError("a metric is not a single number (lists may not leave)")


def _check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise MalformedReplyError("a record or entry name is empty, too long or not printable")
    return name


def parse_reply(data: bytes, *, max_bytes: int) -> ParsedReply:
    """Parse the serialised ``Message`` protobuf a sandboxed app sent."""
    from flwr.proto.message_pb2 import Message as ProtoMessage
    from google.protobuf.message import DecodeError

    if len(data) > max_bytes + 65536:
        raise MalformedReplyError(f"the reply is larger than this site's limit ({max_bytes} bytes)")
    proto = ProtoMessage()
    try:
        proto.ParseFromString(data)
    except DecodeError:
        raise MalformedReplyError("the reply is not a Flower message") from None
    parsed = ParsedReply(message_type=str(proto.metadata.message_type), size_bytes=len(data))
    if proto.HasField("error"):
        parsed.error_code = int(proto.error.code)
        parsed.error_text = str(proto.error.reason)
        return parsed
    for item in proto.content.items:
        record = _check_name(item.key)
        kind = item.WhichOneof("value")
        if kind == "array_record":
            for entry in item.array_record.items:
                name = f"{record}/{_check_name(entry.key)}"
                parsed.arrays.append((name, parse_array(entry.value)))
        elif kind == "metric_record":
            for entry in item.metric_record.items:
                name = f"{record}/{_check_name(entry.key)}"
                parsed.metrics.append((name, _metric_value(entry.value)))
        elif kind == "config_record" and record in LEGACY_METRIC_CONFIGS:
            for entry in item.config_record.items:
                name = f"{record}/{_check_name(entry.key)}"
                parsed.metrics.append((name, _config_number(entry.value)))
        elif kind == "config_record" and record in LEGACY_STATUS_CONFIGS:
            parsed.legacy_status.append((record, _legacy_status(item.config_record)))
        else:
            raise MalformedReplyError(
                "the reply carries a ConfigRecord (free text or bytes): only arrays and "
                "scalar metrics may leave the site"
            )
    return parsed


def _config_number(value: Any) -> float | int:
    kind = value.WhichOneof("value")
    if kind in ("double", "sint64", "uint64"):
        return _metric_value(value)
    raise MalformedReplyError("a legacy metric is not a number: metrics must be numbers")


def _legacy_status(record: Any) -> dict[str, Any]:
    values = {}
    for entry in record.items:
        kind = entry.value.WhichOneof("value")
        values[entry.key] = getattr(entry.value, kind) if kind else None
    if values not in ({"code": 0, "message": "Success"}, {"code": 0, "message": ""}):
        raise MalformedReplyError("a legacy status other than success: free text may not leave")
    return values


# -- rules ---------------------------------------------------------------------


def _engine() -> Any | None:
    """The disclosure engine (insitu.disclosure) when installed, else None."""
    try:
        return importlib.import_module("insitu.disclosure")
    except ImportError:
        return None


def _flat_sizes(image_shapes: Iterable[tuple[int, ...]]) -> set[int]:
    sizes: set[int] = set()
    for shape in image_shapes:
        if len(shape) == 3:
            z, y, x = shape
            sizes.update({y * x, z * x, z * y, z * y * x})
        elif len(shape) == 2:
            sizes.add(shape[0] * shape[1])
    return {s for s in sizes if s >= 16}


# An array whose manifest entry fixes a small shape (e.g. the 4 moments of a
# feature) does not grow with the subjects served: at a tiny site its length may
# equal their number by coincidence. Larger fixed shapes are still checked, since
# an app could declare the length of a site's published subject count.
FIXED_SUMMARY_MAX = 8


def check_parsed(
    parsed: ParsedReply,
    *,
    message_type: str,
    manifest: EgressManifest,
    policy: EgressPolicy,
    tally: Tally,
    run_values: int = 0,
    max_values_per_reply: int | None = None,
    max_values_per_run: int | None = None,
    disclosure_context: Any | None = None,
) -> CheckResult:
    """Decide on a parsed reply (it is not an error reply) against manifest, policy, tally."""
    reasons: list[str] = []
    if parsed.message_type != message_type:
        reasons.append("the reply's metadata names another message type than the task's")
    if not manifest.allows_type(message_type):
        reasons.append(f"message type {message_type!r} is not in the app's egress manifest")

    ids = {i for i in tally.identifiers if len(i) >= 4}
    names = [n for n, _ in parsed.arrays] + [n for n, _ in parsed.metrics]
    for i, name in enumerate(names):
        if any(ident in name for ident in ids):
            reasons.append(f"name #{i + 1} carries a subject or series identifier")

    counts: dict[int, int] = {}
    forbidden = set() if policy.allow_image_shaped else image_like_shapes(tally.image_shapes)
    flat = set() if policy.allow_image_shaped else _flat_sizes(tally.image_shapes)
    per_subject = {len(tally.subjects), len(tally.series)} - {0, 1}
    for i, (name, array) in enumerate(parsed.arrays, start=1):
        shape = tuple(int(s) for s in array.shape)
        spec = manifest.array_spec(name, array.dtype.name, shape)
        if spec is None:
            reasons.append(
                f"array #{i} ({array.dtype.name} {shape}) is not in the app's egress manifest"
            )
        else:
            counts[id(spec)] = counts.get(id(spec), 0) + 1
            if counts[id(spec)] > spec.max_count:
                reasons.append(
                    f"array #{i}: more arrays of one manifest entry than it allows "
                    f"({spec.max_count})"
                )
        if array.dtype.kind in "fc" and not bool(np.isfinite(array).all()):
            reasons.append(f"array #{i} has values that are not finite")
        if any(len(shape) >= len(f) and shape[-len(f) :] == f for f in forbidden):
            reasons.append(
                f"array #{i} has shape {shape}, the shape of image data in this site's store: "
                "raw images may not leave the site"
            )
        elif int(array.size) in flat and sum(1 for s in shape if s > 1) <= 1:
            reasons.append(
                f"array #{i} holds {array.size} values, as many as an image plane or volume "
                "of this site's store (a flattened image)"
            )
        fixed_summary = (
            spec is not None
            and spec.shape is not None
            and -1 not in spec.shape
            and int(array.size) <= FIXED_SUMMARY_MAX
        )
        if (
            int(array.size) in per_subject
            and sum(1 for s in shape if s > 1) == 1
            and not fixed_summary
        ):
            reasons.append(
                f"array #{i} has one entry per subject or series served ({array.size}): "
                "per-subject values may not leave the site"
            )

    for i, (name, value) in enumerate(parsed.metrics, start=1):
        if not manifest.allows_metric(name):
            reasons.append(f"metric #{i} is not in the app's egress manifest")
        if not math.isfinite(float(value)):
            reasons.append(f"metric #{i} is not finite")

    subjects = len(tally.subjects)
    if subjects < policy.min_subjects:
        reasons.append(
            f"the reply covers {subjects} subject(s); this site's minimum is {policy.min_subjects}"
        )
    elif len(parsed.metrics) >= subjects:
        reasons.append(
            f"the reply has {len(parsed.metrics)} metric values for {subjects} subjects: "
            "that could list one value per subject"
        )

    values = parsed.values
    reply_cap = min(
        manifest.max_values_per_reply, max_values_per_reply or manifest.max_values_per_reply
    )
    run_cap = min(manifest.max_values_per_run, max_values_per_run or manifest.max_values_per_run)
    if values > reply_cap:
        reasons.append(f"the reply has {values} numbers; the limit per reply is {reply_cap}")
    if run_values + values > run_cap:
        reasons.append(
            f"the run would have sent {run_values + values} numbers from this site; "
            f"the limit per run is {run_cap}"
        )
    if parsed.size_bytes > policy.max_reply_bytes:
        reasons.append(
            f"the reply is {parsed.size_bytes} bytes; this site's limit is "
            f"{policy.max_reply_bytes} (policy.max_reply_bytes)"
        )

    reasons.extend(_engine_findings(parsed, names, disclosure_context))
    return CheckResult(allowed=not reasons, reasons=reasons, parsed=parsed, subjects=subjects)


def _engine_findings(parsed: ParsedReply, names: list[str], ctx: Any | None) -> list[str]:
    """The disclosure engine's verdicts on names and arrays (rule ids only, no app text)."""
    engine = _engine()
    if engine is None or ctx is None:
        return []
    reasons: list[str] = []
    fail = engine.Verdict("pass")
    for i, name in enumerate(names, start=1):
        report = engine.check_text(name, where=f"name #{i}", ctx=ctx)
        if report.verdict != fail:
            rules = sorted({f.rule_id for f in report.findings if f.verdict != fail})
            reasons.append(f"name #{i} failed disclosure rule(s) {', '.join(rules) or '?'}")
    arrays = {f"array #{i}": a for i, (_, a) in enumerate(parsed.arrays, start=1)}
    joined = [a.ravel() for a in arrays.values() if a.ndim <= 1 or sum(s > 1 for s in a.shape) == 1]
    if len(joined) > 1:
        arrays["all 1-D arrays joined"] = np.concatenate([j.astype(np.float64) for j in joined])
    if arrays:
        report = engine.check_arrays(arrays, ctx=ctx, where="federated reply")
        if report.verdict != fail:
            for finding in report.findings:
                if finding.verdict != fail:
                    reasons.append(
                        f"{finding.where or 'an array'}: disclosure rule {finding.rule_id}"
                    )
    return reasons
