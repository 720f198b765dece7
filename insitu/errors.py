"""Every error insitu raises on purpose, in one tree.

    InsituError                      base; ``public``: the message is safe to show a user
    ├── ConfigError (ValueError)     insitu.toml or the node home is wrong         exit 78
    │   └── HomeNotInitializedError  no insitu.toml where INSITU_HOME points        exit 78
    ├── IngestError                  an input could not become a store             exit 1
    │   ├── InputNotFoundError (FileNotFoundError)  a given path does not exist   exit 1
    │   ├── InconsistentSeriesError  a series refused instead of resampled         exit 1
    │   ├── DefacingError            a head series could not be defaced            exit 1
    │   ├── SourceError              a PACS or table source failed or was refused   exit 1
    │   └── HeldBack                 de-id held an image back (burned-in text)      exit 1
    ├── DatasetNotFoundError (LookupError)   no such dataset / version             exit 4
    │   └── VersionRetiredError      the version was retired: cited, no longer read exit 4
    ├── LevelNotFoundError (ValueError)  Dataset.image: a level the series lacks  exit 1
    ├── AccessDeniedError (PermissionError)  no approval, expired, revoked, role    exit 4
    │   ├── AuthenticationError      missing or bad token                          exit 4
    │   └── AppNotApprovedError      federation: the site has not approved this app exit 4
    ├── InvalidRequestError (ValueError)  bad user, role, request id or state     exit 1
    │   └── BatchTooLargeError       gate: a multi-key read over its key or byte bound exit 1
    ├── AuditChainError              the audit log's hash chain is broken          exit 5
    ├── VerificationError            a store's checksums do not match              exit 5
    ├── PolicyViolationError         a reply or release broke the site's policy    exit 6
    │   ├── UnsupportedOutputError (ValueError)  airlock: a type it cannot release  exit 6
    │   ├── OutputTooLargeError      airlock: over policy.max_release_bytes        exit 6
    │   ├── EgressRefusedError       federation: a reply stopped by the site's mod  exit 6
    │   ├── BudgetExhaustedError     federation: a researcher's budget is used up   exit 6
    │   ├── QueryRefusedError        analytics: bins/levels, too fine, differencing exit 6
    │   └── NeverLeaveError (PermissionError)  airlock: never-leave pixels, no override exit 6
    ├── ReleaseNotFoundError (LookupError)   no airlock request with that id       exit 4
    ├── ReleaseStateError (ValueError)  airlock: not allowed in the request's state exit 1
    └── ServiceError                 a service could not start, stop or answer     exit 7
        ├── PortInUseError           the hub's port is taken by another program    exit 7
        └── DemoRunningError         a demo (or hub) already runs from that folder exit 7

Every subclass that mirrors a built-in also inherits it, so callers that
catch ``LookupError`` or ``PermissionError`` keep working (zarr does the same).
The CLI maps each type to its documented exit code (see docs/reference/cli.md).

Over HTTP, each type has its status (``http_status``: 400 InvalidRequestError,
401 AuthenticationError, 403 AccessDeniedError and NeverLeaveError, 404
DatasetNotFoundError and ReleaseNotFoundError, 409 ReleaseStateError, 410
VersionRetiredError, 413
OutputTooLargeError and BatchTooLargeError, 415 UnsupportedOutputError, else 500). Services answer
with it and the error's name (``insitu.hub.service_app``); clients turn the
answer back into the same type with :func:`from_http` (through
``insitu.http.raise_for_response``).
"""

from __future__ import annotations

__all__ = [
    "STATUS_ERRORS",
    "AccessDeniedError",
    "AppNotApprovedError",
    "AuditChainError",
    "AuthenticationError",
    "BatchTooLargeError",
    "BudgetExhaustedError",
    "ConfigError",
    "DatasetNotFoundError",
    "DefacingError",
    "DemoRunningError",
    "EgressRefusedError",
    "HeldBack",
    "HomeNotInitializedError",
    "InconsistentSeriesError",
    "IngestError",
    "InputNotFoundError",
    "InsituError",
    "InvalidRequestError",
    "LevelNotFoundError",
    "NeverLeaveError",
    "OutputTooLargeError",
    "PolicyViolationError",
    "PortInUseError",
    "QueryRefusedError",
    "ReleaseNotFoundError",
    "ReleaseStateError",
    "ServiceError",
    "SourceError",
    "UnsupportedOutputError",
    "VerificationError",
    "VersionRetiredError",
    "from_http",
]

# Exit codes of the `insitu` command. 2 is argparse's usage error and 3 is an
# ingest that published what it could but quarantined something.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_QUARANTINED = 3


class InsituError(Exception):
    """Base of every insitu error; ``public`` messages are safe to show a user."""

    exit_code: int = 1
    public: bool = True
    http_status: int = 500  # what a service answers with when it raises this


class ConfigError(InsituError, ValueError):
    """insitu.toml or the node home is wrong; the message names the key."""

    exit_code = 78


class HomeNotInitializedError(ConfigError):
    """INSITU_HOME points at a folder without insitu.toml."""


class IngestError(InsituError):
    """An input could not become a published store."""


class InputNotFoundError(IngestError, FileNotFoundError):
    """A file, folder or archive given to the ingest does not exist (nothing was read)."""


class InconsistentSeriesError(IngestError):
    """A series was refused (mixed sizes or orientations, gaps, duplicates)."""


class DefacingError(IngestError):
    """A head series could not be defaced (no brain found); it is not published."""


class SourceError(IngestError):
    """A PACS, C-STORE or table source failed or was refused; nothing was lost."""


class HeldBack(IngestError):
    """De-identification held an image back for review; ``reason`` says why.

    Raised for images that may show identifiers in their pixels (Burned In
    Annotation = YES, or US/SC/XC without a NO flag) unless the admin opted in.
    The reason never contains a value from the image's header.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DatasetNotFoundError(InsituError, LookupError):
    """No dataset or version of that name at this site."""

    exit_code = 4
    http_status = 404


class LevelNotFoundError(InsituError, ValueError):
    """``Dataset.image(level=)`` of a pyramid level the series does not have (since store
    format 4, a plane of 512 pixels or less has level 0 alone)."""

    http_status = 400


class VersionRetiredError(DatasetNotFoundError):
    """The version was retired (``insitu dataset retire``): its citation stays, its data
    is no longer read. HTTP 410 Gone at the gate."""

    http_status = 410


class AccessDeniedError(InsituError, PermissionError):
    """The user has no valid approval or role for this action."""

    exit_code = 4
    http_status = 403


class AuthenticationError(AccessDeniedError):
    """No token, or a token the hub does not know."""

    http_status = 401


class AppNotApprovedError(AccessDeniedError):
    """A federated app whose fingerprint the site has not approved for the dataset
    (never approved, expired or revoked)."""


class InvalidRequestError(InsituError, ValueError):
    """An account or access action that cannot apply: unknown user or request,
    bad name or role, a decision on a request that is no longer pending."""

    http_status = 400


class BatchTooLargeError(InvalidRequestError):
    """The gate: a multi-key read asks for more keys or bytes than one answer carries
    (the message names the bound); ask for fewer keys at a time."""

    http_status = 413


class AuditChainError(InsituError):
    """The audit log's hash chain is broken at a named entry."""

    exit_code = 5


class VerificationError(InsituError):
    """A published store no longer matches its recorded checksums."""

    exit_code = 5


class PolicyViolationError(InsituError):
    """A federated reply or an airlock release broke the site's policy."""

    exit_code = 6


class UnsupportedOutputError(PolicyViolationError, ValueError):
    """The airlock cannot release this kind of object or file type."""

    http_status = 415


class OutputTooLargeError(PolicyViolationError):
    """An output is larger than policy.max_release_bytes."""

    http_status = 413


class EgressRefusedError(PolicyViolationError):
    """A federated reply the site's egress policy stopped from leaving."""


class BudgetExhaustedError(PolicyViolationError):
    """A researcher's numeric-values or privacy (epsilon) budget for a dataset at a
    site is used up ([federation] values_budget / epsilon_budget)."""


class QueryRefusedError(PolicyViolationError):
    """A federated analytics query the site's disclosure settings refuse: too many
    bins or groups, bins narrower than allowed, or a query that differs from an
    earlier one by fewer subjects than the minimum cell count (differencing)."""


class NeverLeaveError(PolicyViolationError, PermissionError):
    """An output carries pixels of a never-leave series (fundus, OCT): no steward
    override can release it (rule ``never-leave``)."""

    http_status = 403


class ReleaseNotFoundError(InsituError, LookupError):
    """No airlock release request with that id (or not yours)."""

    exit_code = 4
    http_status = 404


class ReleaseStateError(InsituError, ValueError):
    """The request's state does not allow this step (or an override reason is missing)."""

    http_status = 409


class ServiceError(InsituError):
    """A node service could not start, stop or answer."""

    exit_code = 7


class PortInUseError(ServiceError):
    """The port the hub should listen on is taken (the message names it)."""


class DemoRunningError(ServiceError):
    """A demo already runs from that folder, or its hub was started by hand."""


DEFAULT_SERVICE = "the site's service"
# A status without a recognised error name (a proxy's 404, an old service) -> this type.
STATUS_ERRORS: dict[int, type[InsituError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: AccessDeniedError,
    404: DatasetNotFoundError,
    409: ReleaseStateError,
    410: VersionRetiredError,
    413: OutputTooLargeError,
    415: UnsupportedOutputError,
}


def from_http(status: int, message: str, error: str = "", *, service: str = "") -> InsituError:
    """The insitu error for an HTTP answer (status 400 or more) of an insitu service.

    ``error`` is the name the service sent (JSON ``error`` or header
    ``X-Insitu-Error``): when it names an insitu error with this very status,
    that type comes back; otherwise the status decides (:data:`STATUS_ERRORS`),
    and anything else (a 500 whatever its name: the service failed, not the
    caller) is a ``ServiceError`` naming ``service`` and the status.
    """
    found = globals().get(error) if error in __all__ and status != 500 else None
    if isinstance(found, type) and issubclass(found, InsituError) and found.http_status == status:
        kind: type[InsituError] = found
    elif status in STATUS_ERRORS:
        kind = STATUS_ERRORS[status]
    else:
        return ServiceError(f"{service or DEFAULT_SERVICE} answered {status}: {message}")
    return kind(message)
