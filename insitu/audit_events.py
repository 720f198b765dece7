"""The audit log's event kinds, declared in one place, with the fields each requires.

Every ``AuditLog.append(kind, ...)`` names a kind declared here;
:meth:`insitu.audit.AuditLog.append` refuses any other kind, and an entry
without the detail fields its kind requires (tests/test_audit_events.py also
reads every call in the code). Required fields are the ones every writer of
the kind gives; writers may add more. ``user`` and ``dataset`` are top-level
fields of every entry, never required here.

:data:`SCHEMA_VERSION` is written into every new entry (``"schema"``). Entries
written before the schema existed have no such field (version 0); their hash
chain verifies as before. Raise the version when a kind's required fields
change, and say what changed in :data:`SCHEMA_CHANGES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EVENTS", "SCHEMA_VERSION", "EventKind", "check_event", "declared"]

SCHEMA_VERSION = 1
SCHEMA_CHANGES = {
    0: "entries before the schema: no 'schema' field, kinds and fields as written",
    1: "kinds declared in insitu.audit_events with their required detail fields",
}


@dataclass(frozen=True)
class EventKind:
    """One kind of audit event: its name, what it records, the details it requires."""

    name: str
    about: str
    required: tuple[str, ...] = ()


# The federation site's events all come through RunInfo.audit (federation/site_mod.py),
# which adds these to every entry.
_FEDERATION_RUN = ("app", "site", "fingerprint", "run_id")

_KINDS = (
    # node and accounts
    EventKind("config", "a change of the node's configuration or services", ("action",)),
    EventKind(
        "user", "an account added, removed, its role or password changed", ("action", "account")
    ),
    EventKind("login", "a login to the hub, accepted or refused", ("outcome",)),
    EventKind("compute", "a dask-gateway cluster started or changed", ("action",)),
    # data in
    EventKind(
        "ingest", "a dataset version published (images, tables, derived objects)", ("status",)
    ),
    EventKind("pacs.pull", "images pulled from a PACS (counts only)", ("source", "status")),
    EventKind("pacs.receive", "images received by the site's DICOM receiver", ("status",)),
    EventKind("fingerprints.rebuild", "the series fingerprint index rebuilt", ("versions",)),
    EventKind("dataset.cite", "a dataset version's citation set", ("version", "title")),
    EventKind(
        "dataset.retire",
        "a dataset version retired (its data no longer read), or an attempt refused",
        ("version", "reason"),
    ),
    EventKind(
        "archive.export", "a dataset version exported as an archive package", ("version", "files")
    ),
    EventKind("archive.import", "an archive package imported", ("version", "source", "status")),
    # access
    EventKind("access.request", "a researcher asked for access", ("request",)),
    EventKind("access.approve", "a steward approved a request", ("request", "for_user")),
    EventKind(
        "access.deny",
        "a steward denied a request (or it closed with the account)",
        ("request", "for_user"),
    ),
    EventKind("access.revoke", "an approval revoked", ("request", "for_user")),
    EventKind(
        "read", "a researcher's reads of one version, summed", ("version", "via", "requests")
    ),
    EventKind("read.denied", "reads the gate refused, summed", ("via", "requests", "reason")),
    # the airlock
    EventKind("release.submit", "an output submitted for release", ("request", "status")),
    EventKind("release.approve", "a release approved (the last review)", ("request", "researcher")),
    EventKind(
        "release.approve_first",
        "the first of two reviews approved a release",
        ("request", "researcher"),
    ),
    EventKind("release.deny", "a release denied", ("request", "researcher")),
    EventKind(
        "release.approve_refused",
        "an approval refused: the submitter's own, or the same steward twice (two-person)",
        ("request", "researcher", "reason"),
    ),
    EventKind(
        "release.override_refused",
        "an approval of a never-leave output refused",
        ("request", "researcher"),
    ),
    EventKind("release.download", "an approved output downloaded (or refused)", ("request",)),
    # federation
    EventKind(
        "federation.approve", "a steward approved a federated app for a dataset", ("fingerprint",)
    ),
    EventKind("federation.revoke", "a federated app's approval revoked", ("fingerprint",)),
    EventKind("federation.trust", "a coordinator's or site's key trusted", ("site", "key")),
    EventKind(
        "federation.budget", "a run's disclosure budget spent or refused", ("run_id", "decision")
    ),
    EventKind("federation.run", "an approved app ran at this site", _FEDERATION_RUN),
    EventKind(
        "federation.refuse", "a message refused before the app ran", (*_FEDERATION_RUN, "reason")
    ),
    EventKind("federation.reply", "a reply checked by the egress policy", ("run_id", "decision")),
    EventKind(
        "federation.privacy",
        "differential privacy applied to a reply",
        (*_FEDERATION_RUN, "mechanism"),
    ),
    EventKind("federation.send", "a reply left the site", (*_FEDERATION_RUN, "size_bytes")),
    EventKind("federation.sandbox", "how the app was isolated at this site", _FEDERATION_RUN),
    EventKind("control.token", "a Control API token issued", ("role",)),
    EventKind("control.register_node", "a SuperNode registered with the coordinator", ("node_id",)),
    EventKind("control.revoke", "Control API tokens revoked", ("tokens",)),
    EventKind("control.refuse", "a Control API call refused", ("role", "action")),
    EventKind("control.run", "a run submitted through the Control API", ("run_id",)),
)

EVENTS: Mapping[str, EventKind] = {kind.name: kind for kind in _KINDS}


def declared(kind: str) -> EventKind:
    """The declaration of ``kind``; ValueError names the declared kinds when it is not one."""
    try:
        return EVENTS[kind]
    except (KeyError, TypeError):
        raise ValueError(
            f"audit event kind {kind!r} is not declared: add it to insitu/audit_events.py "
            f"(declared: {', '.join(sorted(EVENTS))})"
        ) from None


def check_event(kind: str, details: Mapping[str, Any]) -> EventKind:
    """Raise ValueError unless ``kind`` is declared and ``details`` has its required fields."""
    event = declared(kind)
    missing = [name for name in event.required if name not in details]
    if missing:
        raise ValueError(
            f"audit event {kind!r} needs the detail field(s) {', '.join(missing)} "
            "(insitu/audit_events.py)"
        )
    return event
