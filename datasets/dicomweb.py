"""Pull a trial's studies from the site's PACS over DICOMweb into staging.

``insitu ingest dicomweb://host:port/path --dataset NAME --accession A ...``
finds studies with QIDO-RS (accession numbers, a study date range, a
modality), lists their instances, fetches each one with WADO-RS in the
transfer syntax the PACS stored it in, and writes it under
``private/staging/pacs/<source fingerprint>/``. The normal ingest then
de-identifies and publishes those files; once it has, the staged originals
are deleted (re-running the same pull fetches them again and the ingest
reports "unchanged").

A transfer that stops (killed, or the PACS goes away) keeps every instance
already staged; the next run of the same command fetches only the rest. A
file exists under its final name only when complete (see pacs_staging).

Credentials come from ``[pacs]`` in insitu.toml (see pacs_config) and are
only ever sent to ``pacs.url``. Messages name the PACS's base URL and counts,
never an instance URL (it holds UIDs) or a secret.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from insitu.config import NodeHome, resolve_home
from insitu.datasets.pacs_config import PacsSettings, load_pacs_settings
from insitu.datasets.pacs_staging import StagingArea, pacs_area
from insitu.errors import ConfigError, SourceError

__all__ = [
    "PacsQuery",
    "PullResult",
    "fingerprint",
    "is_dicomweb",
    "pull",
    "pulled_sources",
    "resolve_url",
]

SCHEMES = {"dicomweb": "http", "dicomwebs": "https"}
STOP_AFTER_ENV = "INSITU_PACS_STOP_AFTER"  # test hook: os._exit(70) after N new instances
ANY_TRANSFER_SYNTAX = (("application/dicom", "*"),)
_DATE_RANGE = re.compile(r"^(\d{8})?-(\d{8})?$")
_MODALITY = re.compile(r"^[A-Z0-9]{1,16}$")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
Echo = Callable[[str], None]


def is_dicomweb(source: str | os.PathLike[str]) -> bool:
    """True for ``dicomweb://...`` and ``dicomwebs://...`` sources."""
    return str(source).lower().startswith(("dicomweb:", "dicomwebs:"))


# --- which PACS ------------------------------------------------------------


def _normalise(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme.lower(), host + port, parts.path.rstrip("/"), "", ""))


def fingerprint(url: str) -> str:
    """A short, stable name for a PACS (its staging folder)."""
    import hashlib

    return hashlib.sha256(_normalise(url).encode()).hexdigest()[:16]


def resolve_url(source: str, settings: PacsSettings) -> str:
    """The http(s) base URL of a ``dicomweb(s)://`` source (no host: ``pacs.url``)."""
    parts = urlsplit(str(source))
    scheme = SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise SourceError(f"{source}: not a dicomweb:// or dicomwebs:// source")
    if parts.username or parts.password:
        raise SourceError(
            "the source URL holds credentials: they never go on the command line; put them in "
            f"{settings.source} as pacs.username and pacs.password_file (or pacs.token_file)"
        )
    if parts.query or parts.fragment:
        raise SourceError(
            f"{urlunsplit(parts._replace(query='', fragment=''))}: filters go in --accession, "
            "--date-range and --modality, not in the URL"
        )
    if not parts.netloc:
        if not settings.url:
            raise ConfigError(
                f"{source} names no PACS and {settings.source} has no pacs.url: give "
                "dicomweb://host:port/path or set pacs.url"
            )
        url = settings.url
    else:
        url = urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    if settings.has_credentials and _normalise(url) != _normalise(settings.url):
        raise SourceError(
            f"{url} is not the PACS of {settings.source} (pacs.url = {settings.url}); the "
            "[pacs] credentials are only ever sent to pacs.url: set pacs.url to this PACS, "
            "or write dicomweb:// without a host to use pacs.url"
        )
    parsed = urlsplit(url)
    if settings.username and parsed.scheme == "http" and parsed.hostname not in _LOOPBACK:
        raise ConfigError(
            f"{settings.source}: pacs.url {url} is plain http to another host: the password "
            "would cross the network in clear text; use https:// (dicomwebs://)"
        )
    return url


# --- what to fetch -----------------------------------------------------------


def _check_date(value: str, what: str) -> None:
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise SourceError(f"--date-range: {what} {value!r} is not a date (YYYYMMDD)") from None


@dataclass(frozen=True)
class PacsQuery:
    """The study and series filters of a trial's pull.

    ``date_range`` is ``YYYYMMDD-YYYYMMDD`` (either end may be open) or one
    day ``YYYYMMDD``. Wildcards are refused: a filter may only narrow a pull.
    """

    accessions: tuple[str, ...] = ()
    date_range: str = ""
    modality: str = ""

    def __post_init__(self) -> None:
        for accession in self.accessions:
            if not 0 < len(accession) <= 16 or any(c in accession for c in "*?\\,"):
                raise SourceError(
                    "--accession: an accession number has 1-16 characters and no wildcards "
                    "(* ? \\ ,); give one number per --accession"
                )
        if self.date_range:
            value = self.date_range
            match = _DATE_RANGE.match(value) if "-" in value else None
            if "-" not in value:
                _check_date(value, "the date")
            elif match is None or value == "-":
                raise SourceError(
                    f"--date-range {value!r}: use YYYYMMDD-YYYYMMDD (either end may be left "
                    "open) or one day YYYYMMDD"
                )
            else:
                start, end = match.groups()
                if start:
                    _check_date(start, "the start")
                if end:
                    _check_date(end, "the end")
                if start and end and start > end:
                    raise SourceError(f"--date-range {value!r}: the start is after the end")
        if self.modality and not _MODALITY.match(self.modality):
            raise SourceError(
                f"--modality {self.modality!r}: a DICOM modality code such as CT, MR or PT"
            )

    @property
    def is_empty(self) -> bool:
        return not (self.accessions or self.date_range or self.modality)

    def describe(self) -> str:
        """The filters in words, without the accession numbers themselves."""
        parts = []
        if self.accessions:
            n = len(self.accessions)
            parts.append(f"{n} accession number{'s' if n != 1 else ''}")
        if self.date_range:
            parts.append(f"study date {self.date_range}")
        if self.modality:
            parts.append(f"modality {self.modality}")
        return ", ".join(parts) or "no filter"

    def study_filters(self) -> list[dict[str, str]]:
        """QIDO-RS study queries: one per accession number (lists are not portable)."""
        base: dict[str, str] = {}
        if self.date_range:
            base["StudyDate"] = self.date_range
        if self.modality:
            base["ModalitiesInStudy"] = self.modality
        if not self.accessions:
            return [base]
        return [base | {"AccessionNumber": a} for a in self.accessions]

    def study_matches(self, study: dict[str, Any]) -> bool:
        """Re-check a QIDO answer: a PACS that ignores a filter must not widen the pull."""
        accession = _value(study, "00080050")
        if self.accessions and accession is not None and accession not in self.accessions:
            return False
        date = _value(study, "00080020")
        if self.date_range and date:
            if "-" in self.date_range:
                start, end = self.date_range.split("-", 1)
            else:
                start = end = self.date_range
            if (start and date < start) or (end and date > end):
                return False
        return True


def _value(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value")
    return str(values[0]) if values else None


@dataclass(frozen=True)
class _Instance:
    study: str
    series: str
    sop: str

    @property
    def key(self) -> str:
        return f"{self.study}/{self.series}/{self.sop}"


@dataclass
class _Plan:
    instances: list[_Instance] = field(default_factory=list)
    studies: int = 0
    series: int = 0


def _search_all(
    search: Callable[..., list[dict[str, Any]]], tag: str, *args: Any, **kwargs: Any
) -> list[dict[str, Any]]:
    """Every QIDO-RS match, page by page.

    Not dicomweb-client's ``get_remaining``: a server that ignores ``offset`` (Orthanc
    does with some filters) would repeat its first page for ever. A page that brings
    nothing new ends the search.
    """
    found: dict[str, dict[str, Any]] = {}
    while True:
        page = search(*args, offset=len(found), **kwargs)
        new = {uid: item for item in page if (uid := _value(item, tag)) and uid not in found}
        if not new:
            return list(found.values())
        found.update(new)


def _find(client: Any, query: PacsQuery) -> _Plan:
    plan = _Plan()
    studies: dict[str, None] = {}
    for filters in query.study_filters():
        for study in _search_all(client.search_for_studies, "0020000D", search_filters=filters):
            uid = _value(study, "0020000D")
            if uid and query.study_matches(study):
                studies[uid] = None
    plan.studies = len(studies)
    seen: set[str] = set()
    for study_uid in studies:
        series_filter = {"Modality": query.modality} if query.modality else None
        for series in _search_all(
            client.search_for_series, "0020000E", study_uid, search_filters=series_filter
        ):
            series_uid = _value(series, "0020000E")
            modality = _value(series, "00080060")
            if not series_uid or (query.modality and modality and modality != query.modality):
                continue
            plan.series += 1
            for item in _search_all(client.search_for_instances, "00080018", study_uid, series_uid):
                sop = _value(item, "00080018")
                if sop and sop not in seen:
                    seen.add(sop)
                    plan.instances.append(_Instance(study_uid, series_uid, sop))
    return plan


# --- talking to the PACS ---------------------------------------------------------


def _session(settings: PacsSettings) -> Any:
    import requests

    session = requests.Session()
    if settings.token_file:
        session.headers["Authorization"] = f"Bearer {settings.token()}"
    elif settings.username:
        session.auth = (settings.username, settings.password())
    if settings.ca_file:
        session.verify = str(settings.ca_file)
    return session


def _client(url: str, settings: PacsSettings) -> Any:
    from dicomweb_client.api import DICOMwebClient

    credentials = settings.has_credentials and _normalise(url) == _normalise(settings.url)
    session = _session(settings) if credentials else None
    client = DICOMwebClient(url, session=session, timeout=settings.timeout)
    # Retry only answers that mean "busy"; a refused connection fails at once.
    client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=500)
    return client


@dataclass
class _Counts:
    total: int = 0
    already: int = 0
    fetched: int = 0
    folder: Path | None = None

    def describe(self) -> str:
        staged = self.already + self.fetched
        return (
            f" after {staged} of {self.total} instances were staged ({self.fetched} fetched "
            f"by this run); nothing is lost: they stay in {self.folder}, and running the same "
            f"command again fetches only the remaining {self.total - staged}"
        )


def _reason(exc: BaseException) -> str:
    """A short cause without the request URL (it would show UIDs)."""
    text = str(exc)
    for needle, words in (
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Read timed out", "timed out"),
        ("reset by peer", "connection reset"),
        ("RemoteDisconnected", "the PACS closed the connection"),
        ("IncompleteRead", "the answer was cut off"),
        ("Name or service not known", "unknown host"),
        ("CERTIFICATE_VERIFY_FAILED", "its TLS certificate is not trusted (see pacs.ca_file)"),
    ):
        if needle in text:
            return words
    return type(exc).__name__


def _as_source_error(
    exc: BaseException, url: str, settings: PacsSettings, counts: _Counts | None = None
) -> SourceError | None:
    """A clear SourceError for a requests failure (None for anything else)."""
    import requests

    where = counts.describe() if counts is not None and counts.total else ""
    if isinstance(exc, requests.HTTPError):
        code = exc.response.status_code if exc.response is not None else 0
        if code in (401, 403):
            fix = (
                f"check {settings.credential_keys} in {settings.source}"
                if settings.has_credentials
                else f"set {settings.credential_keys} in {settings.source}"
            )
            return SourceError(f"the PACS at {url} refused the login (HTTP {code}): {fix}{where}")
        if code == 404 and counts is None:
            return SourceError(
                f"the PACS at {url} has no DICOMweb service there (HTTP 404): check the path "
                f"of the source (and pacs.url in {settings.source})"
            )
        return SourceError(f"the PACS at {url} answered HTTP {code}{where}")
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return SourceError(f"the PACS at {url} cannot be reached ({_reason(exc)}){where}")
    return None


@contextmanager
def _talking_to(url: str, settings: PacsSettings) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        error = _as_source_error(exc, url, settings)
        if error is None:
            raise
        raise error from None


def _fetch(client: Any, item: _Instance) -> bytes:
    """One instance as a DICOM file, as stored (no transcoding)."""
    from insitu.datasets.dicom_read import quiet_pydicom

    with quiet_pydicom():
        ds = client.retrieve_instance(
            item.study, item.series, item.sop, media_types=ANY_TRANSFER_SYNTAX
        )
        if str(ds.get("SOPInstanceUID", "")) != item.sop:
            raise SourceError(
                "the PACS answered a WADO-RS request with a different instance than asked: "
                "nothing was staged for it; check the PACS"
            )
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _fetch_all(
    url: str,
    settings: PacsSettings,
    area: StagingArea,
    todo: list[_Instance],
    counts: _Counts,
    on_instance: Callable[[int], None] | None,
    show_progress: bool | None,
) -> None:
    """Fetch ``todo``, ``pacs.parallel`` requests at a time; every file lands whole.

    On the first failure the requests not yet started are cancelled, those in
    flight finish (their files are kept), and the error counts what is staged.
    """
    from concurrent.futures import Future, ThreadPoolExecutor, as_completed

    from insitu.progress import progress

    local = threading.local()  # one HTTP session per thread

    def fetch_one(item: _Instance) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = _client(url, settings)
        area.write_keyed(item.key, _fetch(client, item))

    pool = ThreadPoolExecutor(max_workers=settings.parallel, thread_name_prefix="insitu-pacs")
    futures: list[Future[None]] = [pool.submit(fetch_one, item) for item in todo]
    try:
        for future in progress(
            as_completed(futures), total=len(futures), desc="fetch", enabled=show_progress
        ):
            future.result()
            counts.fetched += 1
            if on_instance is not None:
                on_instance(counts.fetched)
            _stop_hook(counts.fetched)
    except BaseException as exc:
        pool.shutdown(wait=True, cancel_futures=True)
        counts.fetched = sum(
            1 for f in futures if f.done() and not f.cancelled() and f.exception() is None
        )
        error = _as_source_error(exc, url, settings, counts)
        if error is not None:
            raise error from None
        if isinstance(exc, SourceError):  # e.g. the staging disk is full
            raise SourceError(f"{exc}{counts.describe()}") from None
        raise
    finally:
        pool.shutdown(wait=True)


def _stop_hook(fetched: int) -> None:
    limit = os.environ.get(STOP_AFTER_ENV)
    if limit and fetched >= int(limit):
        os._exit(70)


@dataclass
class PullResult:
    """What a pull staged; ``paths`` go to the normal ingest."""

    url: str
    source: str  # the fingerprint: names the staging folder and audit entries
    paths: list[Path]
    studies: int
    series: int
    fetched: int
    already_staged: int
    area: StagingArea = field(repr=False)

    def summary(self) -> str:
        return (
            f"{self.url}: {len(self.paths)} instances in {self.series} series of {self.studies} "
            f"studies ({self.fetched} fetched, {self.already_staged} already staged)"
        )

    def discard(self) -> None:
        self.area.discard(self.paths)


def _audit(home: NodeHome, dataset: str, **details: Any) -> None:
    from insitu.audit import AuditLog

    AuditLog(home).append("pacs.pull", user=os.environ.get("USER"), dataset=dataset, **details)


def pull(
    source: str,
    query: PacsQuery,
    *,
    dataset: str,
    home: NodeHome | None = None,
    show_progress: bool | None = None,
    on_instance: Callable[[int], None] | None = None,
) -> PullResult:
    """Find and fetch ``query``'s instances into staging; return the staged files.

    ``on_instance(n)`` runs after the n-th newly fetched instance is staged.
    """

    home = (home or resolve_home()).require_initialized()
    if query.is_empty:
        raise SourceError(
            "give at least one of --accession, --date-range or --modality: insitu never pulls "
            "a whole PACS"
        )
    settings = load_pacs_settings(home)
    url = resolve_url(source, settings)
    area = pacs_area(home, fingerprint(url))
    counts = _Counts(folder=area.folder)
    with area.lock():
        area.remove_partials()
        client = _client(url, settings)
        with _talking_to(url, settings):
            plan = _find(client, query)
        if not plan.instances:
            raise SourceError(f"no instance on the PACS at {url} matches {query.describe()}")
        counts.total = len(plan.instances)
        todo = [i for i in plan.instances if not area.has(i.key)]
        counts.already = counts.total - len(todo)
        try:
            _fetch_all(url, settings, area, todo, counts, on_instance, show_progress)
        except SourceError:
            _audit(home, dataset, status="failed", source=fingerprint(url), studies=plan.studies,
                   series=plan.series, instances=counts.total, fetched=counts.fetched,
                   already_staged=counts.already)  # fmt: skip
            raise
    result = PullResult(
        url=url,
        source=fingerprint(url),
        paths=[area.path_for(i.key) for i in plan.instances],
        studies=plan.studies,
        series=plan.series,
        fetched=counts.fetched,
        already_staged=counts.already,
        area=area,
    )
    _audit(home, dataset, status="staged", source=result.source, studies=plan.studies,
           series=plan.series, instances=counts.total, fetched=counts.fetched,
           already_staged=counts.already)  # fmt: skip
    return result


@contextmanager
def pulled_sources(
    paths: Sequence[str],
    query: PacsQuery,
    *,
    dataset: str,
    home: NodeHome | None = None,
    show_progress: bool | None = None,
    echo: Echo | None = None,
) -> Iterator[list[str]]:
    """Replace ``dicomweb://`` sources by their staged files for the ingest.

    The staged originals are deleted when the ``with`` body finishes without
    an exception (the ingest then holds them, or quarantined copies); if it
    raises, they stay for the next run.
    """
    local: list[str] = []
    pulls: list[PullResult] = []
    for path in paths:
        if is_dicomweb(path):
            result = pull(path, query, dataset=dataset, home=home, show_progress=show_progress)
            if echo is not None:
                echo(result.summary())
            pulls.append(result)
            local.extend(str(p) for p in result.paths)
        else:
            local.append(str(path))
    if not pulls and not query.is_empty:
        raise SourceError(
            "--accession, --date-range and --modality filter a dicomweb:// source; none was given"
        )
    yield local
    for result in pulls:
        result.discard()
