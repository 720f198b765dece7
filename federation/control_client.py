"""The client side of the coordinator's Control API: its connection and its auth.

A researcher's notebook, ``insitu federation`` commands and the coordinator's
admin all reach the SuperLink's Control API the same way: a
:func:`connection` (an address, or a named federation of Flower's config),
then :func:`control`, Flower's HTTP client sending the bearer token that
``insitu federation token issue`` made (:class:`TokenCliAuth`). The server
side (tokens, owner checks) is :mod:`insitu.federation.control_auth`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

__all__ = ["TokenCliAuth", "connection", "control"]


def connection(federation: str | None, address: str | None, insecure: bool) -> Any:
    """A SuperLink connection: ``address`` when given, else the named Flower federation."""
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.typing import SuperLinkConnection

    if address is not None:
        return SuperLinkConnection(name=federation or "insitu", address=address, insecure=insecure)
    return read_superlink_connection(federation)


@contextmanager
def control(found: Any, token: str = "") -> Iterator[Any]:
    """Flower's Control API client on connection ``found``, sending ``token``."""
    import contextlib
    import io

    from flwr.cli.utils import init_http_client_from_connection

    # Flower's CLI helper prints "Using SuperLink: ..." for humans; a notebook call
    # polling the run should not.
    with contextlib.redirect_stdout(io.StringIO()):
        client = init_http_client_from_connection(
            found, cast(Any, TokenCliAuth(token)) if token else None
        )
    try:
        yield client
    finally:
        client.close()


class TokenCliAuth:
    """A Flower CliAuthPlugin that sends one fixed bearer token."""

    def __init__(self, token: str) -> None:
        self.token = token

    @staticmethod
    def login(login_details: Any, control_client: Any) -> Any:
        from flwr.cli.auth_plugin.auth_plugin import LoginError

        raise LoginError("use a token from `insitu federation token issue` instead of login")

    def store_tokens(self, credentials: Any) -> None:
        pass

    def load_tokens(self) -> None:
        pass

    def write_tokens_to_metadata(
        self, metadata: Sequence[tuple[str, str | bytes]]
    ) -> Sequence[tuple[str, str | bytes]]:
        from flwr.common.constant import ACCESS_TOKEN_KEY

        return [*metadata, (ACCESS_TOKEN_KEY, self.token)]
