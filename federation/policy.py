"""The site's egress rules for a federated reply, as one plain function.

:func:`check_reply` looks at what a ClientApp wants to send and says whether
it may leave the site, and why not. It knows nothing about Flower's transport:
the site mod (:mod:`insitu.federation.site_mod`) calls it on every reply, and
tests call it directly. The rules (docs/federation.md, "Egress policy"):

- only ArrayRecords and MetricRecords (no ConfigRecords: free text and bytes;
  the legacy API's numeric metrics and "Success" status records are allowed);
- metric values are single finite numbers (no lists), arrays are finite;
- the reply covers at least ``min_subjects`` subjects, counted by the site
  from what it handed the app (not from what the app claims);
- not as many metric values as subjects (that is a per-subject listing), and
  no metric named after a subject or series the app was handed;
- no array shaped like the store's images (a volume, a slice, a plane) unless
  the site allows model updates of that shape;
- the whole reply is at most ``max_reply_bytes``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

LEGACY_METRIC_CONFIGS = frozenset({"fitres.metrics", "evaluateres.metrics"})
LEGACY_STATUS_CONFIGS = frozenset({"fitres.status", "evaluateres.status"})

__all__ = ["EgressDecision", "EgressPolicy", "check_reply", "image_like_shapes", "reply_size"]


@dataclass(frozen=True)
class EgressPolicy:
    min_subjects: int = 10
    max_reply_bytes: int = 200 * 1024 * 1024
    allow_image_shaped: bool = False

    @classmethod
    def from_config(cls, policy: Any) -> EgressPolicy:
        """From insitu.toml's [policy] section (a PolicySection)."""
        return cls(
            min_subjects=policy.min_subjects,
            max_reply_bytes=policy.max_reply_bytes,
            allow_image_shaped=policy.allow_model_updates_shaped_like_images,
        )


@dataclass
class EgressDecision:
    allowed: bool
    reasons: list[str] = field(default_factory=list)
    size_bytes: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    num_examples: float | None = None
    subjects: int = 0

    def require_allowed(self) -> None:
        """Raise :class:`~insitu.errors.EgressRefusedError` with the reasons (app tests use it)."""
        if not self.allowed:
            from insitu.errors import EgressRefusedError

            raise EgressRefusedError("the site would refuse this reply: " + "; ".join(self.reasons))

    def summary(self) -> dict[str, Any]:
        """What the audit log keeps about the reply (never its values)."""
        return {
            "decision": "allowed" if self.allowed else "refused",
            "reasons": self.reasons,
            "size_bytes": self.size_bytes,
            "kinds": self.kinds,
            "num_examples": self.num_examples,
            "subjects": self.subjects,
        }


def image_like_shapes(image_shapes: Iterable[tuple[int, ...]]) -> set[tuple[int, ...]]:
    """Shapes that would carry image content: each volume, its planes in any direction."""
    shapes: set[tuple[int, ...]] = set()
    for shape in image_shapes:
        shape = tuple(int(s) for s in shape)
        shapes.add(shape)
        if len(shape) == 3:
            z, y, x = shape
            shapes.update({(y, x), (z, x), (z, y)})
    return {s for s in shapes if len(s) >= 2 and min(s) > 1}


def _array_is_image_like(shape: tuple[int, ...], forbidden: set[tuple[int, ...]]) -> bool:
    # A stack or batch of images ends in the image's plane or volume shape.
    return any(len(shape) >= len(f) and shape[-len(f) :] == f for f in forbidden)


def reply_size(content: Any) -> int:
    """Bytes of the reply's arrays and metric values (what the policy limits)."""
    size = 0
    for record in content.array_records.values():
        for array in record.values():
            size += len(array.data)
    for record in content.metric_records.values():
        for value in record.values():
            size += 8 * (len(value) if isinstance(value, list) else 1)
    for record in content.config_records.values():
        for value in record.values():
            size += len(value) if isinstance(value, str | bytes) else 8
    return size


def check_reply(
    content: Any,
    *,
    policy: EgressPolicy,
    subjects_served: Collection[str],
    identifiers: Collection[str] = (),
    image_shapes: Iterable[tuple[int, ...]] = (),
) -> EgressDecision:
    """Decide whether a reply's RecordDict may leave the site.

    ``subjects_served`` are the pseudonyms of the subjects whose data the site
    handed the app while it built this reply; ``identifiers`` are every subject
    and series id it was handed (metric names must not carry them).
    """
    reasons: list[str] = []
    kinds = {
        "arrays": sum(len(r) for r in content.array_records.values()),
        "metrics": sum(len(r) for r in content.metric_records.values()),
        "configs": sum(len(r) for r in content.config_records.values()),
    }
    metric_items: list[tuple[str, str, Any]] = [
        (name, key, value)
        for name, record in content.metric_records.items()
        for key, value in record.items()
    ]
    for name, record in content.config_records.items():
        if name in LEGACY_METRIC_CONFIGS:
            # Flower's legacy FitRes/EvaluateRes carry metrics in a ConfigRecord.
            for key, value in record.items():
                if isinstance(value, str | bytes | bool):
                    reasons.append(f"{name}.{key} is not a number: metrics must be numbers")
                else:
                    metric_items.append((name, key, value))
        elif name in LEGACY_STATUS_CONFIGS:
            if dict(record) not in ({"code": 0, "message": "Success"}, {"code": 0, "message": ""}):
                reasons.append(
                    f"{name} carries a status other than success: free text may not leave"
                )
        else:
            reasons.append(
                f"the reply carries a ConfigRecord ({name}): only ArrayRecords and scalar "
                "metrics may leave the site"
            )

    num_examples: float | None = None
    metric_values = 0
    ids = {i for i in identifiers if i}
    for record_name, key, value in metric_items:
        if isinstance(value, list):
            reasons.append(
                f"metric {record_name}.{key} is a list of {len(value)} values: "
                "metrics must be single numbers"
            )
            continue
        metric_values += 1
        if not math.isfinite(float(value)):
            reasons.append(f"metric {record_name}.{key} is not finite ({value})")
        if key in ("num-examples", "num_examples"):
            num_examples = float(value)
        if any(i in key for i in ids):
            reasons.append(
                f"metric {record_name}.{key} is named after a subject or series: "
                "per-subject results may not leave the site"
            )

    subjects = len(set(subjects_served))
    if subjects < policy.min_subjects:
        reasons.append(
            f"the reply covers {subjects} subject(s); this site's minimum is {policy.min_subjects}"
        )
    elif metric_values >= subjects:
        reasons.append(
            f"the reply has {metric_values} metric values for {subjects} subjects: "
            "that could list one value per subject"
        )

    forbidden = set() if policy.allow_image_shaped else image_like_shapes(image_shapes)
    for record_name, record in content.array_records.items():
        for key, array in record.items():
            shape = tuple(int(s) for s in array.shape)
            if forbidden and _array_is_image_like(shape, forbidden):
                reasons.append(
                    f"array {record_name}.{key} has shape {shape}, the shape of image data "
                    "in this site's store: raw images may not leave the site"
                )
            values = array.numpy()
            if values.dtype.kind in "fc" and not bool(_all_finite(values)):
                reasons.append(f"array {record_name}.{key} has values that are not finite")

    size = reply_size(content)
    if size > policy.max_reply_bytes:
        reasons.append(
            f"the reply is {size} bytes; this site's limit is {policy.max_reply_bytes} "
            "(policy.max_reply_bytes)"
        )
    return EgressDecision(
        allowed=not reasons,
        reasons=reasons,
        size_bytes=size,
        kinds=kinds,
        num_examples=num_examples,
        subjects=subjects,
    )


def _all_finite(values: Any) -> bool:
    import numpy as np

    return bool(np.isfinite(values).all())
