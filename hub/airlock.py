"""The airlock: the one way a researcher's result leaves the site.

A release request moves through a small state machine, as airlocks of
trusted research environments do::

    draft ──submit──> submitted ──approve──> approved ──download──> released
                          └──────deny──────> denied

``submit`` copies the output into ``home.airlock/requests/<id>/`` (a draft),
records its SHA-256, runs the disclosure engine (:mod:`insitu.hub.airlock_checks`)
and only then marks it submitted; from then on the file and its checks never
change. A steward approves or denies with a reason; a request whose checks
failed can only be approved with a written override reason, and never by the
researcher who asked; one that carries pixels of a never-leave series (fundus,
OCT: rule ``never-leave``) cannot be approved at all (the attempt is audited as
``release.override_refused``). Only the researcher's own approved requests can be
downloaded, and every download re-checks the SHA-256. Every step is audited
(``release.submit``, ``release.approve``, ``release.deny``, ``release.download``).

Role checks (who is a steward) belong to the callers: the airlock service
checks the hub's roles, the CLI on the node runs as the admin.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from insitu._sqlite import connect
from insitu.audit import AuditLog
from insitu.config import NodeHome, SiteConfig, load_config
from insitu.errors import (
    AccessDeniedError,
    NeverLeaveError,
    ReleaseNotFoundError,
    ReleaseStateError,
)
from insitu.hub.airlock_checks import (
    CheckResult,
    check_admissible,
    overall_status,
    run_checks,
)
from insitu.hub.airlock_preview import Preview, build_preview

__all__ = ["STATES", "TRANSITIONS", "Airlock", "ReleaseRequest"]

STATES = ("draft", "submitted", "approved", "denied", "released")
TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"submitted"}),
    "submitted": frozenset({"approved", "denied"}),
    "approved": frozenset({"released"}),
    "denied": frozenset(),
    "released": frozenset(),
}
DOWNLOADABLE = ("approved", "released")
NEVER_LEAVE_RULE = "never-leave"  # a failed check no steward override can approve

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    purpose TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('draft', 'submitted', 'approved', 'denied', 'released')),
    filename TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT '',
    checks TEXT NOT NULL DEFAULT '[]',
    created TEXT NOT NULL,
    submitted TEXT,
    decided TEXT,
    decided_by TEXT,
    reason TEXT,
    override_reason TEXT,
    released TEXT,
    downloads INTEGER NOT NULL DEFAULT 0
);
-- First approvals under two-person review ([policy] two_person_review): the
-- request stays submitted until a second, different steward approves.
CREATE TABLE IF NOT EXISTS first_approvals (
    request_id INTEGER PRIMARY KEY REFERENCES requests(id),
    steward TEXT NOT NULL,
    reason TEXT NOT NULL,
    override_reason TEXT,
    decided TEXT NOT NULL
);
"""

# A request with the steward who gave the first of two approvals, if one has.
_SELECT = (
    "SELECT r.*, f.steward AS first_approved_by FROM requests r "
    "LEFT JOIN first_approvals f ON f.request_id = r.id"
)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ReleaseRequest:
    """One release request, as the researcher and the steward see it."""

    id: int
    user: str
    purpose: str
    state: str
    filename: str
    kind: str
    size: int
    sha256: str
    status: str  # overall outcome of the checks: pass, review or fail
    checks: list[dict[str, str]]
    created: str
    submitted: str | None
    decided: str | None
    decided_by: str | None
    reason: str | None
    override_reason: str | None
    released: str | None
    downloads: int
    first_approved_by: str | None = None  # two-person review: the first of two approvals

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ReleaseRequest:
        data = dict(row)
        data["checks"] = json.loads(data["checks"])
        return cls(**data)

    @property
    def awaiting(self) -> str | None:
        """What a submitted request waits for (a steward's panel shows it)."""
        if self.state != "submitted":
            return None
        if self.first_approved_by:
            return "a second, different steward's approval"
        return "a steward's decision"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"awaiting": self.awaiting}

    @property
    def failed_rules(self) -> list[str]:
        return [c["rule"] for c in self.checks if c["status"] == "fail"]


def _clean_filename(filename: str) -> str:
    name = _SAFE_NAME.sub("_", Path(str(filename)).name).strip("._")
    if not name:
        raise ReleaseStateError(
            f"{filename!r} is not a usable file name: give one such as 'table.csv' or 'figure.png'"
        )
    return name


class Airlock:
    """Release requests of one node home."""

    def __init__(self, home: NodeHome, config: SiteConfig | None = None) -> None:
        self.home = home
        self.config = config or load_config(home)
        self.root = home.airlock
        self.audit = AuditLog(home)
        self._db = connect(self.root / "airlock.sqlite", SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Airlock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def folder(self, request_id: int) -> Path:
        return self.root / "requests" / str(request_id)

    def path(self, request: ReleaseRequest) -> Path:
        return self.folder(request.id) / request.filename

    # --- researcher ---------------------------------------------------------

    def submit(
        self,
        user: str,
        source: Path | bytes,
        filename: str | None = None,
        *,
        purpose: str,
        evidence: dict[str, Any] | None = None,
    ) -> ReleaseRequest:
        """Store an output, run the checks, and submit it for a steward's review."""
        if not user:
            raise AccessDeniedError("a release request needs the user who makes it")
        purpose = (purpose or "").strip()
        if not purpose:
            raise ReleaseStateError(
                "say what the output is for: release(obj, purpose='...') — the steward "
                "reads it when deciding"
            )
        if isinstance(source, bytes | bytearray):
            if filename is None:
                raise ReleaseStateError("releasing bytes needs a filename such as 'table.csv'")
            size = len(source)
        else:
            source = Path(source)
            if not source.is_file():
                raise ReleaseStateError(f"{source} is not a file: nothing to release")
            size = source.stat().st_size
            filename = filename or source.name
        name = _clean_filename(filename)
        kind = check_admissible(name, size, self.config.policy)
        # Draft: the row and the stored copy, before any check runs.
        cursor = self._db.execute(
            "INSERT INTO requests (user, purpose, state, filename, kind, size, created) "
            "VALUES (?, ?, 'draft', ?, ?, ?, ?)",
            (user, purpose, name, kind, size, _now()),
        )
        request_id = int(cursor.lastrowid or 0)
        folder = self.folder(request_id)
        folder.mkdir(parents=True, exist_ok=False)
        target = folder / name
        partial = folder / (name + ".partial")
        digest = hashlib.sha256()
        with open(partial, "wb") as out:
            if isinstance(source, bytes | bytearray):
                out.write(source)
                digest.update(source)
            else:
                with open(source, "rb") as src:
                    while block := src.read(1 << 20):
                        out.write(block)
                        digest.update(block)
            out.flush()
            os.fsync(out.fileno())
        partial.rename(target)
        if evidence is not None:
            (folder / "evidence.json").write_text(json.dumps(evidence))
        try:
            results = run_checks(target, home=self.home, config=self.config, evidence=evidence)
        except Exception as exc:  # a check that crashes must not let the output through
            results = [
                CheckResult("checks", "fail", f"the checks could not run: {type(exc).__name__}")
            ]
        for path in folder.iterdir():
            path.chmod(0o440)  # immutable after submission (and the SHA-256 proves it)
        status = overall_status(results)
        self._db.execute(
            "UPDATE requests SET sha256 = ?, status = ?, checks = ? WHERE id = ?",
            (
                digest.hexdigest(),
                status,
                json.dumps([r.to_dict() for r in results]),
                request_id,
            ),
        )
        self._transition(request_id, "draft", "submitted", submitted=_now())
        request = self.get(request_id)
        self.audit.append(
            "release.submit",
            user=user,
            request=request_id,
            filename=name,
            output=kind,
            size=size,
            sha256=request.sha256,
            status=status,
            failed=request.failed_rules,
        )
        return request

    def get(self, request_id: int | str, *, user: str | None = None) -> ReleaseRequest:
        """One request; with ``user``, only if it is theirs (else not found)."""
        try:
            number = int(request_id)
        except (TypeError, ValueError):
            raise ReleaseNotFoundError(
                f"{request_id!r} is not a release request id (a number, see `insitu airlock list`)"
            ) from None
        row = None
        if -(2**63) <= number < 2**63:  # beyond SQLite's integers no request can exist
            row = self._db.execute(_SELECT + " WHERE r.id = ?", (number,)).fetchone()
        if row is None or (user is not None and row["user"] != user):
            raise ReleaseNotFoundError(
                f"no release request {number}"
                + (f" of {user}" if user is not None else "")
                + ": see `insitu airlock list` (or insitu.releases() in a notebook)"
            )
        return ReleaseRequest.from_row(row)

    def list(self, *, user: str | None = None, state: str | None = None) -> list[ReleaseRequest]:
        if state is not None and state not in STATES:
            raise ReleaseStateError(f"unknown state {state!r}: choose one of {', '.join(STATES)}")
        query = _SELECT + " WHERE r.state != 'draft'"
        args: list[Any] = []
        if user is not None:
            query += " AND r.user = ?"
            args.append(user)
        if state is not None:
            query += " AND r.state = ?"
            args.append(state)
        return [
            ReleaseRequest.from_row(r) for r in self._db.execute(query + " ORDER BY r.id", args)
        ]

    def download(self, request_id: int | str, *, user: str) -> tuple[ReleaseRequest, bytes]:
        """The approved output's bytes for the researcher who asked; marks it released."""
        request = self.get(request_id, user=user)
        if request.state not in DOWNLOADABLE:
            self.audit.append(
                "release.download",
                user=user,
                request=request.id,
                refused=True,
                state=request.state,
            )
            raise ReleaseStateError(
                f"release request {request.id} is {request.state}: only approved outputs "
                "can be downloaded"
            )
        data = self.path(request).read_bytes()
        if hashlib.sha256(data).hexdigest() != request.sha256:
            raise ReleaseStateError(
                f"release request {request.id}: the stored file no longer matches the SHA-256 "
                "recorded at submission; the admin must investigate"
            )
        if request.state == "approved":
            self._transition(request.id, "approved", "released", released=_now())
        self._db.execute(
            "UPDATE requests SET downloads = downloads + 1 WHERE id = ?", (request.id,)
        )
        self.audit.append(
            "release.download",
            user=user,
            request=request.id,
            filename=request.filename,
            sha256=request.sha256,
        )
        return self.get(request.id), data

    def citations(self, request_id: int | str, *, user: str | None = None) -> dict[str, bytes]:
        """CITATIONS.cff/.bib/.md of the datasets the request used (see release_credit)."""
        from insitu.hub.release_credit import citation_files

        request = self.get(request_id, user=user)
        return citation_files(self.home, request.id, request.user, request.submitted)

    def download_bundle(self, request_id: int | str, *, user: str) -> tuple[ReleaseRequest, bytes]:
        """The approved output with its citation files beside it, as one zip."""
        from insitu.hub.release_credit import bundle

        request, data = self.download(request_id, user=user)
        return request, bundle(request.filename, data, self.citations(request.id, user=user))

    # --- steward ------------------------------------------------------------

    def approve(
        self,
        request_id: int | str,
        *,
        steward: str,
        reason: str,
        override: str | None = None,
    ) -> ReleaseRequest:
        """Approve a submitted request; failed checks need a written override reason."""
        request = self.get(request_id)
        reason = (reason or "").strip()
        override = (override or "").strip() or None
        if request.user == steward:
            self._refuse(
                request,
                steward,
                f"{steward} submitted release request {request.id}: another steward must decide",
            )
        if request.state != "submitted":
            raise ReleaseStateError(
                f"release request {request.id} is {request.state}: only submitted requests "
                "can be approved"
            )
        if NEVER_LEAVE_RULE in request.failed_rules:
            self.audit.append(
                "release.override_refused",
                user=steward,
                request=request.id,
                researcher=request.user,
                sha256=request.sha256,
                rule=NEVER_LEAVE_RULE,
                override=override,
            )
            raise NeverLeaveError(
                f"release request {request.id} carries pixels of a never-leave series (rule "
                f"{NEVER_LEAVE_RULE}: fundus/OCT images identify a person): no override can "
                "approve it; deny it"
            )
        if not reason:
            raise ReleaseStateError("give a reason for the approval (it is audited)")
        if request.status == "fail" and override is None:
            raise ReleaseStateError(
                f"release request {request.id} failed the check(s) "
                f"{', '.join(request.failed_rules)}: approving it needs a written override "
                "reason (--override '...')"
            )
        first = self._first_approval(request.id)
        if self.config.policy.two_person_review and first is None:
            return self._approve_first(request, steward, reason, override)
        if first is not None and first["steward"] == steward:
            self._refuse(
                request,
                steward,
                f"{steward} already approved release request {request.id}: two-person "
                "review needs a second, different steward",
            )
        decided_by = steward if first is None else f"{first['steward']}+{steward}"
        self._transition(
            request.id,
            "submitted",
            "approved",
            decided=_now(),
            decided_by=decided_by,
            reason=reason,
            override_reason=override,
        )
        from insitu.hub.release_credit import used_datasets

        self.audit.append(
            "release.approve",
            user=steward,
            request=request.id,
            researcher=request.user,
            sha256=request.sha256,
            reason=reason,
            override=override,
            failed=request.failed_rules,
            # the credit ledger counts these; the download carries their citations
            datasets=used_datasets(self.home, request.user, request.submitted, request.id),
        )
        return self.get(request.id)

    def _refuse(self, request: ReleaseRequest, steward: str, message: str) -> NoReturn:
        """An approval this steward may not give: audited, then AccessDeniedError."""
        self.audit.append(
            "release.approve_refused",
            user=steward,
            request=request.id,
            researcher=request.user,
            sha256=request.sha256,
            reason=message,
        )
        raise AccessDeniedError(message)

    def _first_approval(self, request_id: int) -> Any:
        return self._db.execute(
            "SELECT * FROM first_approvals WHERE request_id = ?", (request_id,)
        ).fetchone()

    def _approve_first(
        self, request: ReleaseRequest, steward: str, reason: str, override: str | None
    ) -> ReleaseRequest:
        """Record the first of two approvals; the request stays submitted."""
        try:
            self._db.execute(
                "INSERT INTO first_approvals (request_id, steward, reason, override_reason,"
                " decided) VALUES (?, ?, ?, ?, ?)",
                (request.id, steward, reason, override, _now()),
            )
        except sqlite3.IntegrityError:
            raise ReleaseStateError(
                f"release request {request.id}: another steward approved it meanwhile; "
                "approve again to give the second approval"
            ) from None
        self.audit.append(
            "release.approve_first",
            user=steward,
            request=request.id,
            researcher=request.user,
            sha256=request.sha256,
            reason=reason,
            override=override,
            failed=request.failed_rules,
        )
        return self.get(request.id)

    def first_approver(self, request_id: int | str) -> str | None:
        """The steward who gave the first of two approvals, if one has."""
        row = self._first_approval(self.get(request_id).id)
        return None if row is None else str(row["steward"])

    def deny(self, request_id: int | str, *, steward: str, reason: str) -> ReleaseRequest:
        request = self.get(request_id)
        reason = (reason or "").strip()
        if request.state != "submitted":
            raise ReleaseStateError(
                f"release request {request.id} is {request.state}: only submitted requests "
                "can be denied"
            )
        if not reason:
            raise ReleaseStateError("give a reason for the denial (the researcher reads it)")
        self._transition(
            request.id, "submitted", "denied", decided=_now(), decided_by=steward, reason=reason
        )
        self.audit.append(
            "release.deny", user=steward, request=request.id, researcher=request.user, reason=reason
        )
        return self.get(request.id)

    def preview(self, request_id: int | str) -> str:
        """What the steward reads: sniffed type, every rule's finding, the content's text."""
        return self.preview_details(request_id).summary()

    def preview_details(self, request_id: int | str) -> Preview:
        """The steward's preview (:class:`insitu.hub.airlock_preview.Preview`): the real
        image downscaled, table head, notebook outputs, sniffed type, every finding."""
        request = self.get(request_id)
        return build_preview(
            self.path(request).read_bytes(), declared=request.kind, findings=request.checks
        )

    # --- state machine ------------------------------------------------------

    def _transition(self, request_id: int, old: str, new: str, **fields: Any) -> None:
        if new not in TRANSITIONS[old]:
            raise ReleaseStateError(f"a release request cannot go from {old} to {new}")
        sets = ", ".join(f"{key} = ?" for key in fields)
        cursor = self._db.execute(
            f"UPDATE requests SET state = ?{', ' + sets if sets else ''} "  # noqa: S608
            "WHERE id = ? AND state = ?",
            (new, *fields.values(), request_id, old),
        )
        if cursor.rowcount != 1:
            current = self.get(request_id).state
            raise ReleaseStateError(
                f"release request {request_id} is {current}, no longer {old}: someone decided "
                "it meanwhile"
            )
