"""HTTP status mapping of insitu errors, both ways: a service answers with the
error's status and name, the one client helper raises the same error again."""

from __future__ import annotations

import json

import pytest

from insitu import errors
from insitu.errors import (
    AccessDeniedError,
    AuthenticationError,
    DatasetNotFoundError,
    InsituError,
    InvalidRequestError,
    NeverLeaveError,
    ReleaseNotFoundError,
    ServiceError,
    VersionRetiredError,
    from_http,
)
from insitu.http import raise_for_status

ERROR_TYPES = [
    getattr(errors, name)
    for name in errors.__all__
    if isinstance(getattr(errors, name), type) and issubclass(getattr(errors, name), InsituError)
]


def _answer(exc: InsituError) -> tuple[int, bytes]:
    """What insitu.hub.service_app answers for ``exc``: its status, JSON with name and message."""
    body = {"status": exc.http_status, "error": type(exc).__name__, "message": str(exc)}
    return exc.http_status, json.dumps(body).encode()


@pytest.mark.parametrize("kind", ERROR_TYPES, ids=lambda k: k.__name__)
def test_every_error_survives_the_round_trip(kind: type[InsituError]) -> None:
    status, body = _answer(kind("the reason, what to do"))
    with pytest.raises(InsituError) as raised:
        raise_for_status(status, body, service="the test service")
    if status == 500:  # a server-side failure: never taken for the client's own error
        assert type(raised.value) is ServiceError
        assert "the test service answered 500: the reason, what to do" in str(raised.value)
    else:
        assert type(raised.value) is kind
        assert "the reason, what to do" in str(raised.value)


def test_statuses_on_the_classes() -> None:
    assert InvalidRequestError.http_status == 400
    assert AuthenticationError.http_status == 401
    assert AccessDeniedError.http_status == NeverLeaveError.http_status == 403
    assert DatasetNotFoundError.http_status == ReleaseNotFoundError.http_status == 404
    assert VersionRetiredError.http_status == 410
    assert InsituError.http_status == ServiceError.http_status == 500


def test_a_name_that_disagrees_with_the_status_is_not_believed() -> None:
    # A body that claims a ConfigError (exit 78 at the client) with a 403: the status wins.
    assert type(from_http(403, "no", "ConfigError")) is AccessDeniedError
    # Names of anything but insitu errors are ignored.
    assert type(from_http(404, "no", "SystemExit")) is DatasetNotFoundError
    assert type(from_http(404, "no", "__builtins__")) is DatasetNotFoundError


def test_answers_without_an_insitu_body_map_by_status() -> None:
    with pytest.raises(DatasetNotFoundError, match="Not Found"):
        raise_for_status(404, b"<html>proxy</html>", "Not Found")
    with pytest.raises(ServiceError, match="the site's gate answered 502: Bad Gateway"):
        raise_for_status(502, b"", "Bad Gateway", service="the site's gate")
    raise_for_status(200, b"{}")
    raise_for_status(304, b"")


def test_a_refused_token_says_what_to_do() -> None:
    with pytest.raises(AuthenticationError, match="restart your server from the hub home page"):
        raise_for_status(401, json.dumps({"message": "bad token"}).encode())


def test_the_header_names_the_error_of_a_head_answer() -> None:
    with pytest.raises(ReleaseNotFoundError):
        raise_for_status(404, b"", "Not Found", error="ReleaseNotFoundError")
