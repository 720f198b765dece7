"""Which federated apps this site lets touch which dataset, and until when.

A steward approves an app by its fingerprint: the SHA-256 of its FAB (the
Flower App Bundle), exactly as Flower computes it (``flwr build`` and
``flwr run`` hash the same deterministic zip). Any change to the app's code
or configuration changes the fingerprint, so a changed app is a new app.

An approval carries the app's egress manifest (:mod:`insitu.federation.manifest`):
what its replies may contain. :func:`approve` takes it, or derives it from the
FAB (given, or recorded when the app was refused) or from a built-in app.

The state lives in ``$INSITU_HOME/federation/approvals.json`` (decisions)
and ``pending.json`` (apps that tried to run and were refused), each written
atomically under an exclusive lock. Every decision goes to the audit log.
"""

from __future__ import annotations

import fcntl
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from insitu.config import NodeHome
from insitu.errors import AppNotApprovedError, InvalidRequestError
from insitu.federation.manifest import EgressManifest, manifest_from_fab

__all__ = [
    "Approval",
    "PendingApp",
    "approvals",
    "approve",
    "check",
    "derive_manifest",
    "federation_dir",
    "normalise_fingerprint",
    "pending",
    "record_refusal",
    "revoke",
]

_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_DATASET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_DAYS = 366


@dataclass(frozen=True)
class Approval:
    fingerprint: str
    dataset: str
    approved_by: str
    approved_at: str
    expires_at: str
    revoked_at: str | None = None
    revoked_by: str | None = None
    note: str = ""
    manifest: dict[str, Any] | None = None

    def egress_manifest(self) -> EgressManifest | None:
        return None if self.manifest is None else EgressManifest.from_dict(self.manifest)

    def state(self, now: datetime | None = None) -> str:
        """'active', 'expired' or 'revoked'."""
        if self.revoked_at:
            return "revoked"
        now = now or datetime.now(UTC)
        return "expired" if datetime.fromisoformat(self.expires_at) <= now else "active"


@dataclass(frozen=True)
class PendingApp:
    fingerprint: str
    dataset: str
    app: str
    first_seen: str
    last_seen: str
    attempts: int
    last_run_id: int
    reason: str
    manifest: dict[str, Any] | None = None


def federation_dir(home: NodeHome) -> Path:
    """Approvals, pending apps and the site's Flower home live here."""
    return home.root / "federation"


def normalise_fingerprint(value: str) -> str:
    fingerprint = value.strip().lower()
    if not _FINGERPRINT.match(fingerprint):
        raise InvalidRequestError(
            f"{value!r} is not an app fingerprint: give the 64 hex digits of the FAB's "
            "SHA-256 (`insitu federation fingerprint APP_DIR`, or `insitu federation "
            "pending` for apps that tried to run)"
        )
    return fingerprint


def _check_dataset(dataset: str) -> str:
    if not _DATASET.match(dataset):
        raise InvalidRequestError(
            f"{dataset!r} is not a dataset name (letters, digits, '.', '_' and '-')"
        )
    return dataset


@contextmanager
def _locked(home: NodeHome) -> Iterator[Path]:
    folder = federation_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "approvals.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except json.JSONDecodeError:
        raise InvalidRequestError(
            f"{path} is not valid JSON: restore it from backup (the audit log lists every decision)"
        ) from None
    if not isinstance(data, list):
        raise InvalidRequestError(f"{path} must hold a JSON list")
    return data


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _now() -> datetime:
    return datetime.now(UTC)


def _audit(home: NodeHome, kind: str, *, user: str | None, dataset: str, **details: Any) -> None:
    from insitu.audit import AuditLog

    AuditLog(home).append(kind, user=user, dataset=dataset, **details)


def _builtin_manifest(fingerprint: str) -> EgressManifest | None:
    """The manifest of a registered analytic (analytics, training) with this fingerprint."""
    from insitu.federation.analytic import by_fingerprint

    analytic = by_fingerprint(fingerprint)
    return None if analytic is None else analytic.manifest


def derive_manifest(
    home: NodeHome, fingerprint: str, dataset: str, fab: bytes | None = None
) -> EgressManifest:
    """The manifest an app declares: from its FAB, a refused run's record, or a built-in."""
    import hashlib

    if fab is not None:
        if hashlib.sha256(fab).hexdigest() != fingerprint:
            raise InvalidRequestError(
                f"the FAB given has fingerprint {hashlib.sha256(fab).hexdigest()[:12]}…, not "
                f"{fingerprint[:12]}…"
            )
        return manifest_from_fab(fab)
    for row in pending(home):
        if row.fingerprint == fingerprint and row.manifest is not None:
            return EgressManifest.from_dict(row.manifest)
    builtin = _builtin_manifest(fingerprint)
    if builtin is not None:
        return builtin
    raise InvalidRequestError(
        f"no egress manifest known for app {fingerprint[:12]}…: give --manifest FILE or --app "
        "PATH (its folder or .fab), or wait until it tried to run here (then `insitu "
        "federation pending` shows what it declares)"
    )


def approve(
    home: NodeHome,
    fingerprint: str,
    dataset: str,
    *,
    days: int,
    user: str,
    note: str = "",
    manifest: EgressManifest | None = None,
    fab: bytes | None = None,
) -> Approval:
    """Let the app with this fingerprint read ``dataset`` for ``days`` days, replying
    only what its egress manifest names (given, or derived: :func:`derive_manifest`)."""
    fingerprint = normalise_fingerprint(fingerprint)
    dataset = _check_dataset(dataset)
    if not 1 <= days <= MAX_DAYS:
        raise InvalidRequestError(
            f"--days {days}: an approval lasts 1 to {MAX_DAYS} days; approve again to renew"
        )
    if manifest is None:
        manifest = derive_manifest(home, fingerprint, dataset, fab)
    now = _now()
    approval = Approval(
        fingerprint=fingerprint,
        dataset=dataset,
        approved_by=user,
        approved_at=now.isoformat(timespec="seconds"),
        expires_at=(now + timedelta(days=days)).isoformat(timespec="seconds"),
        note=note,
        manifest=manifest.to_dict(),
    )
    with _locked(home) as folder:
        rows = [
            r
            for r in _read(folder / "approvals.json")
            if not (r["fingerprint"] == fingerprint and r["dataset"] == dataset)
        ]
        rows.append(asdict(approval))
        _write(folder / "approvals.json", rows)
        waiting = [
            r
            for r in _read(folder / "pending.json")
            if not (r["fingerprint"] == fingerprint and r["dataset"] == dataset)
        ]
        _write(folder / "pending.json", waiting)
    _audit(
        home,
        "federation.approve",
        user=user,
        dataset=dataset,
        fingerprint=fingerprint,
        expires_at=approval.expires_at,
        note=note,
        manifest=approval.manifest,
    )
    return approval


def revoke(home: NodeHome, fingerprint: str, dataset: str | None, *, user: str) -> list[Approval]:
    """Withdraw approvals of this fingerprint (for one dataset, or all); returns them."""
    fingerprint = normalise_fingerprint(fingerprint)
    now = _now().isoformat(timespec="seconds")
    revoked: list[Approval] = []
    with _locked(home) as folder:
        rows = _read(folder / "approvals.json")
        for row in rows:
            if row["fingerprint"] != fingerprint or row.get("revoked_at"):
                continue
            if dataset is not None and row["dataset"] != dataset:
                continue
            row["revoked_at"] = now
            row["revoked_by"] = user
            revoked.append(Approval(**row))
        if not revoked:
            where = f" for dataset {dataset!r}" if dataset else ""
            raise InvalidRequestError(
                f"no active approval of app {fingerprint[:12]}…{where}: "
                "`insitu federation approvals` lists them"
            )
        _write(folder / "approvals.json", rows)
    for approval in revoked:
        _audit(
            home,
            "federation.revoke",
            user=user,
            dataset=approval.dataset,
            fingerprint=fingerprint,
        )
    return revoked


def approvals(home: NodeHome) -> list[Approval]:
    return [Approval(**row) for row in _read(federation_dir(home) / "approvals.json")]


def check(home: NodeHome, fingerprint: str, dataset: str, now: datetime | None = None) -> Approval:
    """The active approval of this app for this dataset, or :class:`AppNotApprovedError`."""
    found = [a for a in approvals(home) if a.fingerprint == fingerprint and a.dataset == dataset]
    if not found:
        raise AppNotApprovedError(
            f"app {fingerprint[:12]}… is not approved for dataset {dataset!r} at this site: "
            "ask the site's steward to review it (it is listed in `insitu federation pending`)"
        )
    approval = found[-1]
    state = approval.state(now)
    if state == "revoked":
        raise AppNotApprovedError(
            f"the approval of app {fingerprint[:12]}… for dataset {dataset!r} was revoked "
            f"on {approval.revoked_at}"
        )
    if state == "expired":
        raise AppNotApprovedError(
            f"the approval of app {fingerprint[:12]}… for dataset {dataset!r} expired on "
            f"{approval.expires_at}: ask the site's steward to renew it"
        )
    return approval


def record_refusal(
    home: NodeHome,
    fingerprint: str,
    dataset: str,
    *,
    app: str,
    run_id: int,
    reason: str,
    manifest: dict[str, Any] | None = None,
) -> None:
    """Remember an app that tried to run and was refused, for the steward's review."""
    now = _now().isoformat(timespec="seconds")
    with _locked(home) as folder:
        rows = _read(folder / "pending.json")
        for row in rows:
            if row["fingerprint"] == fingerprint and row["dataset"] == dataset:
                row.update(
                    last_seen=now,
                    attempts=row["attempts"] + 1,
                    last_run_id=run_id,
                    reason=reason,
                    app=app,
                    manifest=manifest,
                )
                break
        else:
            rows.append(
                asdict(
                    PendingApp(
                        fingerprint=fingerprint,
                        dataset=dataset,
                        app=app,
                        first_seen=now,
                        last_seen=now,
                        attempts=1,
                        last_run_id=run_id,
                        reason=reason,
                        manifest=manifest,
                    )
                )
            )
        _write(folder / "pending.json", rows)


def pending(home: NodeHome) -> list[PendingApp]:
    return [PendingApp(**row) for row in _read(federation_dir(home) / "pending.json")]
