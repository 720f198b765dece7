"""The SuperLink's request middleware, each layer run only on the paths it acts on.

Flower 1.42 passes every SuperLink request through eight middleware layers, most of
them Starlette ``BaseHTTPMiddleware``: each runs the rest of the request in a new task
with memory streams between, on the one event loop that serves every site, ServerApp
and researcher. Six of them act only on Control API paths (authentication, licence,
event log, no-cache headers) or only on Fleet API paths (SuperNode authentication,
event log): each one's ``dispatch`` first tests ``request.url.path`` and passes any
other request straight on. A site's Fleet request went through four layers that only
passed it on, a ServerApp's Runtime request through six.

:func:`install` gives each of those layers the same test in front of it
(:class:`OnlyOn`, with the path as ``request.url.path`` computes it), so a request
the layer would only pass on goes to the next layer directly. Nothing else changes:
the layers, their order and what each does on its own paths are Flower's.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import URL

__all__ = ["CONTROL", "FLEET", "OnlyOn", "install", "path_bound"]

CONTROL = "/v1/control/"
FLEET = "/v1/fleet/"


class OnlyOn:
    """ASGI middleware: ``layer`` for requests whose path starts with ``prefix``;
    every other request goes on to ``app`` without it."""

    def __init__(self, app: Any, layer: type, prefix: str) -> None:
        self.app = app
        self.layer = layer(app)
        self.prefix = prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # URL(scope=...).path is what the layer's own request.url.path is.
        if scope["type"] == "http" and not URL(scope=scope).path.startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        await self.layer(scope, receive, send)


def path_bound() -> dict[type, str]:
    """Flower's layers that act only on one API's paths, with that API's prefix."""
    from flwr.superlink.routers.control.middlewares import (
        ControlAuthenticationMiddleware,
        ControlEventLogMiddleware,
        ControlLicenseMiddleware,
        ControlSensitiveResponseMiddleware,
    )
    from flwr.superlink.routers.fleet.middlewares import FleetEventLogMiddleware
    from flwr.superlink.routers.fleet.node_auth import NodeAuthMiddleware

    return {
        ControlSensitiveResponseMiddleware: CONTROL,
        ControlAuthenticationMiddleware: CONTROL,
        ControlLicenseMiddleware: CONTROL,
        ControlEventLogMiddleware: CONTROL,
        NodeAuthMiddleware: FLEET,
        FleetEventLogMiddleware: FLEET,
    }


def install() -> None:
    """Have Flower's SuperLink app (built in this process) use :class:`OnlyOn` layers."""
    import importlib

    from starlette.middleware import Middleware

    main = importlib.import_module("flwr.superlink.main")

    flower = main.__dict__.get("_get_middleware")
    if flower is None:  # a Flower that changed it: stop
        raise RuntimeError("flwr.superlink.main has no _get_middleware to make lean")
    if getattr(flower, "insitu_lean", False):
        return
    bound = path_bound()

    def middleware() -> list[Any]:
        layers: list[Any] = []
        for layer in flower():
            prefix = bound.get(layer.cls)
            if prefix is None or layer.args or layer.kwargs:
                layers.append(layer)
            else:
                layers.append(Middleware(OnlyOn, layer=layer.cls, prefix=prefix))
        return layers

    middleware.insitu_lean = True  # type: ignore[attr-defined]
    main._get_middleware = middleware  # type: ignore[attr-defined]
