"""The mods a site wraps around every ClientApp call it runs (the app cannot opt out).

The app itself runs in a sandbox process and its reply is parsed and checked
by the site's checker before any mod sees it (:mod:`insitu.federation.site_runner`,
:mod:`insitu.federation.checker`); the mods run in the runner, on the checked
content. ``site_mods(...)`` returns them outermost first, in Flower's mod order:

1. the envelope: the site names itself in the reply and audits what leaves;
2. ``secaggplus_mod`` when the site turned on secure aggregation
   (policy.secure_aggregation): the coordinator then sees only the sum;
3. the SecAgg guard (with secure aggregation on): a reply with arrays that is
   not a SecAgg+ train round is refused, whatever its message type;
4. the site's differential privacy when policy.differential_privacy is on:
   clip and Gaussian noise on the arrays of every reply, whatever its
   message type, with the privacy spent written to the audit log.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from insitu.config import NodeHome
from insitu.federation import node_data as node_data_module
from insitu.federation.policy import reply_size

__all__ = [
    "ERROR_APP_FAILED",
    "ERROR_BUDGET_EXHAUSTED",
    "ERROR_EGRESS_REFUSED",
    "ERROR_NOT_APPROVED",
    "ERROR_RESEARCHER_REFUSED",
    "ERROR_RESOURCE_LIMIT",
    "ERROR_SITE_FAILURE",
    "SiteRun",
    "clip_and_noise",
    "site_mods",
]

# Error codes of the replies a site sends instead of content (Flower uses 0-8).
ERROR_NOT_APPROVED = 4001
ERROR_EGRESS_REFUSED = 4002
ERROR_SITE_FAILURE = 4003
ERROR_APP_FAILED = 4004
ERROR_RESEARCHER_REFUSED = 4005
ERROR_RESOURCE_LIMIT = 4006  # the app hit a sandbox limit (time, CPU, memory, files, processes)
ERROR_BUDGET_EXHAUSTED = 4007  # the researcher's budget for the dataset at this site is spent
SECAGG_CONFIGS = "secaggplus_configs"
SITE_RECORD = "insitu.site"
# Replies that carry a result (not SecAgg+'s key-exchange stages) carry the site's credit.
CREDITED_MESSAGES = ("query", "train", "evaluate")


@dataclass(frozen=True)
class SiteRun:
    """Who is asking what of this site in one ClientApp call."""

    home: NodeHome
    site: str
    dataset: str
    fingerprint: str
    app: str
    run_id: int
    # The researcher the run works for (verified; "... (unverified)" in refusals).
    researcher: str = ""

    def audit(self, kind: str, **details: Any) -> None:
        from insitu.audit import AuditLog

        AuditLog(self.home).append(
            kind,
            user=self.researcher or f"federation:{self.app}",
            app=self.app,
            dataset=self.dataset,
            site=self.site,
            fingerprint=self.fingerprint,
            run_id=self.run_id,
            **details,
        )


def dp_epsilon(noise_multiplier: float, delta: float) -> float:
    """Epsilon of one Gaussian release with std = noise_multiplier x sensitivity."""
    return math.sqrt(2 * math.log(1.25 / delta)) / noise_multiplier


def _incoming_arrays(msg: Any) -> list[Any]:
    """The arrays the coordinator sent with the task (a model to train), as NumPy."""
    arrays: list[Any] = []
    for record in msg.content.array_records.values():
        arrays.extend(a.numpy() for a in record.values() if a.data)
    return arrays


def clip_and_noise(
    reply: list[Any], reference: list[Any] | None, *, clip: float, noise_multiplier: float, rng: Any
) -> list[Any]:
    """The site's Gaussian mechanism on a reply's arrays (any message type).

    With a ``reference`` of matching shapes (the model the task carried), the
    update ``reply - reference`` is clipped to L2 norm ``clip`` and noised;
    otherwise the arrays themselves are. Noise std = noise_multiplier x clip.
    Integer arrays (counts) get rounded noise and keep their dtype.
    """
    import numpy as np

    base = (
        reference
        if reference is not None
        and len(reference) == len(reply)
        and all(r.shape == a.shape for r, a in zip(reference, reply, strict=True))
        else [np.zeros_like(a, dtype=np.float64) for a in reply]
    )
    deltas = [
        np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
        for a, b in zip(reply, base, strict=True)
    ]
    norm = math.sqrt(sum(float(np.sum(d * d)) for d in deltas))
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    out = []
    for a, b, d in zip(reply, base, deltas, strict=True):
        noisy = np.asarray(b, dtype=np.float64) + d * scale
        noisy = noisy + rng.normal(0.0, noise_multiplier * clip, size=d.shape)
        if a.dtype.kind in "iub":
            noisy = np.rint(noisy)
        out.append(noisy.astype(a.dtype))
    return out


def _dp_mod(run: SiteRun, policy: Any, delta: float) -> Callable[..., Any]:
    """The site's clip + Gaussian noise on the arrays of EVERY reply, audited.

    Train replies are clipped as an update against the model the task carried
    (what Flower's LocalDpMod does, for the Message API and the legacy one
    alike); other message types (evaluate, query, ...) are clipped and noised
    as they are, so the same tensors cannot leave exact under another type.
    Metrics (scalars) are not noised: they are bounded by the manifest.
    """
    import numpy as np
    from flwr.app import Array, ArrayRecord

    epsilon = dp_epsilon(policy.dp_noise_multiplier, delta)
    rng = np.random.default_rng()

    def mod(msg: Any, ctx: Any, call_next: Callable[..., Any]) -> Any:
        reference = _incoming_arrays(msg) if msg.has_content() else []
        reply = call_next(msg, ctx)
        if reply.has_error() or not reply.content.array_records:
            return reply
        names = [
            (record, key)
            for record, arrays in reply.content.array_records.items()
            for key in arrays
        ]
        values = [reply.content.array_records[r][k].numpy() for r, k in names]
        noised = clip_and_noise(
            values,
            reference or None,
            clip=policy.dp_clipping_norm,
            noise_multiplier=policy.dp_noise_multiplier,
            rng=rng,
        )
        records: dict[str, dict[str, Any]] = {}
        for (record, key), array in zip(names, noised, strict=True):
            records.setdefault(record, {})[key] = Array(array)
        for record, arrays in records.items():
            reply.content.array_records[record] = ArrayRecord(arrays)
        run.audit(
            "federation.privacy",
            message_type=msg.metadata.message_type,
            mechanism="gaussian, clip then noise at the site (every message type)",
            epsilon=epsilon,
            delta=delta,
            clipping_norm=policy.dp_clipping_norm,
            noise_multiplier=policy.dp_noise_multiplier,
        )
        return reply

    return mod


def secagg_guard(run: SiteRun) -> Callable[..., Any]:
    """With secure aggregation on, arrays leave only masked by SecAgg+ (train stages)."""
    from flwr.app import Error, Message

    def mod(msg: Any, ctx: Any, call_next: Callable[..., Any]) -> Any:
        reply = call_next(msg, ctx)
        if reply.has_error() or not reply.content.array_records:
            return reply
        masked = (
            msg.metadata.message_type == "train" and SECAGG_CONFIGS in msg.content.config_records
        )
        if masked:
            return reply
        reason = (
            f"site {run.site!r} refused to send this reply: secure aggregation is on at this "
            "site, and arrays may leave only in SecAgg+ train rounds"
        )
        run.audit(
            "federation.reply",
            message_type=msg.metadata.message_type,
            decision="refused",
            reasons=["arrays outside SecAgg+"],
            size_bytes=0,
        )
        return Message(Error(code=ERROR_EGRESS_REFUSED, reason=reason), reply_to=msg)

    return mod


def envelope_mod(run: SiteRun) -> Callable[..., Any]:
    """Outermost: audit what really leaves (after DP noise or SecAgg masking)."""
    from flwr.app import ConfigRecord, MetricRecord

    from insitu.federation.credit import CREDIT_RECORD, site_credit

    def mod(msg: Any, ctx: Any, call_next: Callable[..., Any]) -> Any:
        reply = call_next(msg, ctx)
        if not reply.has_error():
            # The site names itself, so a coordinator can say which site dropped out.
            reply.content.metric_records[SITE_RECORD] = MetricRecord({f"site:{run.site}": 1})
            # ... and says how to cite what it contributed (public metadata, issue 17).
            credit = site_credit(run.home, run.site, run.dataset, node_data_module.current())
            if credit is not None and msg.metadata.message_type in CREDITED_MESSAGES:
                reply.content.config_records[CREDIT_RECORD] = ConfigRecord(credit)
            run.audit(
                "federation.send",
                message_type=msg.metadata.message_type,
                size_bytes=reply_size(reply.content),
            )
        return reply

    return mod


def site_mods(
    run: SiteRun, policy_section: Any, *, dp_delta: float = 1e-5
) -> list[Callable[..., Any]]:
    """The site's mods for one ClientApp call, outermost first."""
    mods: list[Callable[..., Any]] = [envelope_mod(run)]
    if policy_section.secure_aggregation:
        from flwr.client.mod import secaggplus_mod

        mods += [secaggplus_mod, secagg_guard(run)]
    if policy_section.differential_privacy:
        mods.append(_dp_mod(run, policy_section, dp_delta))
    return mods
