"""The mods a site wraps around every ClientApp it runs (the app cannot opt out).

``site_mods(...)`` returns them outermost first, in Flower's mod order:

1. ``secaggplus_mod`` when the site turned on secure aggregation
   (policy.secure_aggregation): the coordinator then sees only the sum;
2. a local differential-privacy mod when policy.differential_privacy is on:
   Flower's ``LocalDpMod`` (clip the update, add Gaussian noise at the site),
   with the privacy spent written to the audit log;
3. the egress mod, closest to the app: every reply the app builds is checked
   by :func:`insitu.federation.policy.check_reply` and audited; a refused
   reply is replaced by an error reply that says why, so no content leaves.

The egress mod checks the app's own reply, before noise or masking: that is
what the app chose to say; DP and SecAgg only take information away.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from insitu.config import NodeHome
from insitu.federation import node_data as node_data_module
from insitu.federation.policy import EgressPolicy, check_reply, reply_size

__all__ = [
    "ERROR_EGRESS_REFUSED",
    "ERROR_NOT_APPROVED",
    "SiteRun",
    "egress_mod",
    "site_mods",
]

# Error codes of the replies a site sends instead of content (Flower uses 0-8).
ERROR_NOT_APPROVED = 4001
ERROR_EGRESS_REFUSED = 4002
ERROR_SITE_FAILURE = 4003
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

    def audit(self, kind: str, **details: Any) -> None:
        from insitu.audit import AuditLog

        AuditLog(self.home).append(
            kind,
            user=f"federation:{self.app}",
            dataset=self.dataset,
            site=self.site,
            fingerprint=self.fingerprint,
            run_id=self.run_id,
            **details,
        )


def egress_mod(run: SiteRun, policy: EgressPolicy) -> Callable[..., Any]:
    """Check and audit every reply; refuse one that breaks the site's policy."""
    from flwr.app import Error, Message

    def mod(msg: Any, ctx: Any, call_next: Callable[..., Any]) -> Any:
        reply = call_next(msg, ctx)
        message_type = msg.metadata.message_type
        if reply.has_error():
            run.audit(
                "federation.reply",
                message_type=message_type,
                decision="error",
                reason=reply.error.reason,
                size_bytes=0,
            )
            return reply
        data = node_data_module.current()
        served = data.served_subjects if data is not None else set()
        identifiers = data.identifiers if data is not None else set()
        shapes = data.image_shapes() if data is not None and reply.content.array_records else []
        decision = check_reply(
            reply.content,
            policy=policy,
            subjects_served=served,
            identifiers=identifiers,
            image_shapes=shapes,
        )
        run.audit("federation.reply", message_type=message_type, **decision.summary())
        if decision.allowed:
            return reply
        reason = f"site {run.site!r} refused to send this reply: " + "; ".join(decision.reasons)
        return Message(Error(code=ERROR_EGRESS_REFUSED, reason=reason), reply_to=msg)

    return mod


def dp_epsilon(noise_multiplier: float, delta: float) -> float:
    """Epsilon of one Gaussian release with std = noise_multiplier x sensitivity."""
    return math.sqrt(2 * math.log(1.25 / delta)) / noise_multiplier


def _dp_mod(run: SiteRun, policy: Any, delta: float) -> Callable[..., Any]:
    """Flower's LocalDpMod, plus an audit entry with the privacy it spent."""
    from flwr.clientapp.mod import LocalDpMod

    epsilon = dp_epsilon(policy.dp_noise_multiplier, delta)
    inner = LocalDpMod(
        clipping_norm=policy.dp_clipping_norm,
        sensitivity=policy.dp_clipping_norm,
        epsilon=epsilon,
        delta=delta,
    )

    def mod(msg: Any, ctx: Any, call_next: Callable[..., Any]) -> Any:
        from flwr.app import MessageType

        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctx)
        reply = inner(msg, ctx, call_next)
        if not reply.has_error():
            run.audit(
                "federation.privacy",
                mechanism="gaussian, clip then noise at the site (Flower LocalDpMod)",
                epsilon=epsilon,
                delta=delta,
                clipping_norm=policy.dp_clipping_norm,
                noise_multiplier=policy.dp_noise_multiplier,
            )
        return reply

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

        mods.append(secaggplus_mod)
    if policy_section.differential_privacy:
        mods.append(_dp_mod(run, policy_section, dp_delta))
    mods.append(egress_mod(run, EgressPolicy.from_config(policy_section)))
    return mods
