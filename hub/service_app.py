"""What every insitu hub service shares: hub-token authentication, JSON errors,
loopback binding and an immediate, clean exit on SIGTERM.

A service handler subclasses :class:`ServiceHandler`; ``self.user`` is the
hub user's name after :meth:`prepare`. Missing or unknown tokens get 401,
tokens without ``access:services!service=<name>`` get 403, and every
:class:`~insitu.errors.InsituError` becomes its HTTP status with the (public)
message as JSON, so clients can show the reason as it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from tornado import web

from insitu.config import NodeHome, resolve_home
from insitu.errors import (
    AccessDeniedError,
    AuthenticationError,
    InsituError,
    InvalidRequestError,
)

__all__ = ["ServiceHandler", "run_service"]

log = logging.getLogger("insitu.hub")
TOKEN_CACHE_SECONDS = 60


class ServiceHandler(HubOAuthenticated, web.RequestHandler):  # type: ignore[misc]  # jupyterhub is untyped
    """Base handler: the hub user in ``self.user``, errors as JSON."""

    user: str = ""
    # An HTML page sends the browser to the hub's login; the API answers 401.
    browser_login = False

    @property
    def home(self) -> NodeHome:
        home: NodeHome = self.settings["home"]
        return home

    async def prepare(self) -> None:
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            if self.browser_login and self.request.method in ("GET", "HEAD"):
                self.redirect(self.get_login_url())
                return
            raise AuthenticationError(
                "no valid JupyterHub token: log in to the hub (notebooks send the token "
                "for you); API clients send 'Authorization: token <token>'"
            )
        scopes = self.hub_auth.access_scopes
        if scopes and not self.hub_auth.check_scopes(scopes, model):
            raise AccessDeniedError(
                f"this token may not use {self.request.path.split('/')[2]}: it lacks "
                f"{', '.join(sorted(scopes))}"
            )
        if model.get("kind", "user") != "user":
            raise AccessDeniedError("only hub users may use this service")
        if self.request.method not in ("GET", "HEAD") and not getattr(
            self, "_token_authenticated", False
        ):
            # Changes need a token: a browser's cookie alone could be forged cross-site.
            raise AuthenticationError("changes need 'Authorization: token <token>'")
        self.user = model["name"]

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    def json_body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body or b"{}")
        except (ValueError, RecursionError):  # bad JSON or UTF-8; absurdly deep nesting
            raise InvalidRequestError("the request body is not JSON") from None
        if not isinstance(data, dict):
            raise InvalidRequestError("the request body must be a JSON object")
        return data

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, InsituError) and exc.public:
            message = str(exc)
        elif isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        else:
            message = HTTPStatus(status_code).phrase
        self.set_header("Content-Type", "application/json")
        if exc is not None:
            self.set_header("X-Insitu-Error", type(exc).__name__)  # HEAD answers have no body
        self.finish(json.dumps({"status": status_code, "error": type(exc).__name__ if exc else "",
                                "message": message}))  # fmt: skip

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, InsituError):
            return  # expected refusals are not server errors
        super().log_exception(typ, value, tb)

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, InsituError):
            status_code = exc.http_status  # on the error class (insitu.errors)
        super().send_error(status_code, **kwargs)


def run_service(
    make_app: Callable[[NodeHome, str], web.Application],
    *,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Serve ``make_app(home, prefix)`` on the loopback address JupyterHub gave us.

    SIGTERM and SIGINT stop at once, after ``on_stop`` (e.g. flushing the
    read ledger to the audit log).
    """
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(name)s] %(message)s")
    home = resolve_home().require_initialized()
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", ""))
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    port = url.port
    if not port:
        raise SystemExit("JUPYTERHUB_SERVICE_URL is not set: the hub starts this service")
    # Token lookups are cached (every chunk read carries the token); a token the hub
    # deletes stops working here within this many seconds. Access decisions are
    # never cached (insitu.hub.access.check_read runs on every read).
    HubOAuth.instance(cache_max_age=TOKEN_CACHE_SECONDS)

    async def main() -> None:
        app = make_app(home, prefix)
        # Loopback locally (the hub gives 127.0.0.1); the pod's address in Kubernetes,
        # where the Helm chart sets JUPYTERHUB_SERVICE_URL=http://0.0.0.0:<port>.
        address = url.hostname or "127.0.0.1"
        # A service may lower Tornado's 100 MB body limit with the setting max_body_size.
        server = app.listen(
            port,
            address=address,
            xheaders=False,
            max_body_size=app.settings.get("max_body_size", 100 * 2**20),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("serving %s on %s:%s", prefix, address, url.port)
        await stop.wait()
        server.stop()
        if on_stop is not None:
            on_stop()

    asyncio.run(main())


def oauth_routes(prefix: str) -> list[tuple[str, type, dict[str, Any]]]:
    """The OAuth callback that lets a browser log in to a service's HTML page."""
    return [(prefix + "oauth_callback", HubOAuthCallbackHandler, {})]


def app_settings(home: NodeHome, prefix: str) -> dict[str, Any]:
    return {
        "home": home,
        "cookie_secret": os.urandom(32),
        "xsrf_cookies": False,
        "static_url_prefix": prefix + "static/",
    }
