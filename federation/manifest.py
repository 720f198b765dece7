"""The egress manifest: what an approved app's replies may contain at this site.

A steward approves an app's fingerprint *together with* its manifest; the
site's checker refuses anything a reply carries that the manifest does not
name. An app declares its manifest in its ``pyproject.toml`` (inside the FAB,
so the fingerprint covers it)::

    [tool.insitu.egress]
    message-types = ["train", "evaluate"]   # fnmatch patterns of message types
    max-replies = 20                        # replies per run at this site
    max-values-per-reply = 100000           # numbers (array entries + metrics) per reply
    max-values-per-run = 2000000            # numbers over the whole run at this site
    metrics = ["metrics/train-loss", "metrics/num-examples"]   # record/key patterns

    [[tool.insitu.egress.arrays]]
    name = "arrays/*"                       # record/key pattern
    dtype = "float32"                       # numpy dtype name, exact
    shape = [-1]                            # -1: any length in that axis; omit: any shape
    max-count = 8                           # arrays matching this entry per reply

Names are ``<record>/<key>``. ``insitu federation approve`` takes a manifest
file (TOML with the same ``[tool.insitu.egress]`` table, or the table alone),
or derives it from the FAB the app sent when it was refused
(``insitu federation pending`` shows it), or from a built-in app.
"""

from __future__ import annotations

import fnmatch
import io
import tomllib
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from insitu.errors import InvalidRequestError

__all__ = ["ArraySpec", "EgressManifest", "manifest_from_fab", "manifest_from_toml"]

NUMERIC_DTYPES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    }
)
# Hard ceilings a manifest cannot raise (the site's [policy] may lower them further).
MAX_REPLIES = 10_000
MAX_VALUES = 50_000_000


@dataclass(frozen=True)
class ArraySpec:
    name: str
    dtype: str
    shape: tuple[int, ...] | None = None
    max_count: int = 1

    def matches(self, name: str, dtype: str, shape: tuple[int, ...]) -> bool:
        if not fnmatch.fnmatchcase(name, self.name) or dtype != self.dtype:
            return False
        if self.shape is None:
            return True
        return len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        )


@dataclass(frozen=True)
class EgressManifest:
    message_types: tuple[str, ...]
    arrays: tuple[ArraySpec, ...] = ()
    metrics: tuple[str, ...] = ()
    max_replies: int = 1
    max_values_per_reply: int = 1_000
    max_values_per_run: int = 1_000
    notes: list[str] = field(default_factory=list, compare=False)

    # -- matching -------------------------------------------------------------

    def allows_type(self, message_type: str) -> bool:
        return any(fnmatch.fnmatchcase(message_type, p) for p in self.message_types)

    def allows_metric(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in self.metrics)

    def array_spec(self, name: str, dtype: str, shape: tuple[int, ...]) -> ArraySpec | None:
        for spec in self.arrays:
            if spec.matches(name, dtype, shape):
                return spec
        return None

    # -- (de)serialisation ---------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("notes")
        data["message_types"] = list(self.message_types)
        data["metrics"] = list(self.metrics)
        data["arrays"] = [
            {**asdict(a), "shape": None if a.shape is None else list(a.shape)} for a in self.arrays
        ]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EgressManifest:
        """From :meth:`to_dict` (approvals.json) or the TOML table (kebab-case keys)."""
        get = _getter(data)
        types = _strings(get("message_types"), "message-types")
        if not types:
            raise InvalidRequestError(
                "an egress manifest must list the message types the app answers "
                '(message-types = ["train"], for example)'
            )
        arrays = []
        for row in get("arrays") or []:
            if not isinstance(row, Mapping):
                raise InvalidRequestError("each manifest array entry must be a table")
            g = _getter(row)
            dtype = str(g("dtype") or "")
            if dtype not in NUMERIC_DTYPES:
                raise InvalidRequestError(
                    f"manifest array {g('name')!r}: dtype {dtype!r} is not one of "
                    f"{', '.join(sorted(NUMERIC_DTYPES))}"
                )
            shape = g("shape")
            arrays.append(
                ArraySpec(
                    name=_string(g("name"), "array name"),
                    dtype=dtype,
                    shape=None if shape is None else tuple(_int(s, "shape", -1) for s in shape),
                    max_count=_int(g("max_count") or 1, "max-count", 1),
                )
            )
        return cls(
            message_types=tuple(types),
            arrays=tuple(arrays),
            metrics=tuple(_strings(get("metrics"), "metrics")),
            max_replies=min(_int(get("max_replies") or 1, "max-replies", 1), MAX_REPLIES),
            max_values_per_reply=min(
                _int(get("max_values_per_reply") or 1000, "max-values-per-reply", 0), MAX_VALUES
            ),
            max_values_per_run=min(
                _int(get("max_values_per_run") or 1000, "max-values-per-run", 0), MAX_VALUES
            ),
        )

    def describe(self) -> list[str]:
        """Lines a steward reads (`insitu federation pending`)."""
        lines = [
            f"message types: {', '.join(self.message_types)}",
            f"at most {self.max_replies} replies per run; {self.max_values_per_reply} numbers "
            f"per reply, {self.max_values_per_run} per run",
        ]
        for a in self.arrays:
            shape = (
                "any shape"
                if a.shape is None
                else "x".join("*" if s < 0 else str(s) for s in a.shape)
            )
            lines.append(f"array {a.name}: {a.dtype} {shape} (up to {a.max_count} per reply)")
        lines.extend(f"metric {m}" for m in self.metrics)
        return lines


def _getter(data: Mapping[str, Any]) -> Any:
    def get(key: str) -> Any:
        if key in data:
            return data[key]
        return data.get(key.replace("_", "-"))

    return get


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise InvalidRequestError(f"manifest {what} must be a non-empty string (at most 256)")
    return value


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise InvalidRequestError(f"manifest {what} must be a list of strings")
    return [_string(v, what) for v in value]


def _int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequestError(f"manifest {what} must be an integer >= {minimum}, not {value!r}")
    return value


def manifest_from_toml(text: str) -> EgressManifest:
    """A manifest from a pyproject.toml, or a file holding ``[tool.insitu.egress]`` or its keys."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRequestError(f"the manifest is not valid TOML: {exc}") from None
    table = data.get("tool", {}).get("insitu", {}).get("egress")
    if table is None:
        table = data.get("egress", data if "message-types" in data else None)
    if not isinstance(table, Mapping) or not table:
        raise InvalidRequestError(
            "no egress manifest: the app's pyproject.toml needs a [tool.insitu.egress] table "
            "(docs/federation.md, 'Egress manifest')"
        )
    return EgressManifest.from_dict(table)


def manifest_from_fab(fab: bytes) -> EgressManifest:
    """The manifest an app declares in the pyproject.toml inside its FAB."""
    try:
        with zipfile.ZipFile(io.BytesIO(fab)) as archive:
            text = archive.read("pyproject.toml").decode("utf-8")
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError):
        raise InvalidRequestError("the FAB has no readable pyproject.toml") from None
    return manifest_from_toml(text)
