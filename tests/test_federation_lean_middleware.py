"""The SuperLink's middleware: each path-bound layer only on its own API's paths.

Flower's Control-only and Fleet-only layers pass every other request straight on;
insitu.federation.lean_middleware puts the same path test in front of each, so the
others skip them. What runs on a layer's own paths is Flower's, unchanged: the live
federation tests check that Control tokens and SuperNode signatures are still
required (test_federation_live.py).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, ClassVar

import pytest

from insitu.federation import lean_middleware


class _Layer:
    """A middleware that records the paths it saw, then calls the rest."""

    seen: ClassVar[list[str]] = []

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        _Layer.seen.append(scope.get("path", scope["type"]))
        await self.app(scope, receive, send)


def _through(path: str, kind: str = "http") -> tuple[list[str], list[str]]:
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope.get("path", scope["type"]))

    _Layer.seen = []
    only = lean_middleware.OnlyOn(app, layer=_Layer, prefix=lean_middleware.CONTROL)
    scope: dict[str, Any] = {"type": kind, "headers": []}
    if kind == "http":
        scope |= {"path": path, "scheme": "http", "server": ("127.0.0.1", 1), "query_string": b""}
    asyncio.run(only(scope, None, None))
    return _Layer.seen, reached


def test_a_request_on_the_layers_paths_goes_through_it():
    assert _through("/v1/control/list-runs") == (
        ["/v1/control/list-runs"],
        ["/v1/control/list-runs"],
    )


def test_a_request_on_other_paths_skips_it():
    assert _through("/v1/fleet/pull-messages") == ([], ["/v1/fleet/pull-messages"])
    assert _through("/v1/runtime/acquire-task") == ([], ["/v1/runtime/acquire-task"])


@pytest.mark.parametrize(
    "path",
    ["/v1/control", "/v1/controlx/list-runs", "//v1/control/list-runs", "/V1/control/x"],
)
def test_the_test_in_front_is_the_layers_own(path):
    # Whatever Flower's own test says for a path (request.url.path.startswith), the
    # layer in front says the same: the path as Starlette's Request computes it.
    from starlette.requests import Request

    scope = {"type": "http", "path": path, "headers": [], "scheme": "http", "query_string": b""}
    scope["server"] = ("127.0.0.1", 1)
    flower_runs_it = Request(scope).url.path.startswith(lean_middleware.CONTROL)
    seen, _ = _through(path)
    assert bool(seen) == flower_runs_it


def test_other_connections_go_to_the_layer_as_before():
    assert _through("", kind="lifespan") == (["lifespan"], ["lifespan"])


def test_the_pinned_flowers_path_bound_layers_test_their_path_first():
    # If a Flower upgrade makes one of these act on other paths, it must not be skipped.
    for layer, prefix in lean_middleware.path_bound().items():
        body = inspect.getsource(layer.dispatch).split('"""')[2]
        first = body.strip().splitlines()[0]
        if prefix == lean_middleware.CONTROL:
            # Pass on what is not Control, or (no-cache headers) change only Control routes.
            assert "not _is_control_path(request.url.path)" in first or (
                first == "response = await call_next(request)"
                and "if _is_control_sensitive_route(request):" in body
            ), (layer, first)
        else:
            # Return at once off Fleet paths, or act only on them.
            assert first in (
                'if not request.url.path.startswith("/v1/fleet/"):',
                'if request.url.path.startswith("/v1/fleet/") and isinstance(',
            ), (layer, first)
    from flwr.superlink.routers.control import middlewares

    assert 'return path.startswith("/v1/control/")' in inspect.getsource(
        middlewares._is_control_path
    )
    sensitive = middlewares.CONTROL_SENSITIVE_ROUTE_KEYS
    assert all(path.startswith(lean_middleware.CONTROL) for _, path in sensitive)


def test_installing_keeps_flowers_layers_and_their_order(monkeypatch):
    from flwr.superlink import main

    monkeypatch.setattr(main, "_get_middleware", main._get_middleware)  # restored afterwards
    flower = [m.cls for m in main._get_middleware()]
    lean_middleware.install()
    lean_middleware.install()  # twice: wrapped once
    layers = main._get_middleware()
    bound = lean_middleware.path_bound()
    assert [m.kwargs.get("layer", m.cls) for m in layers] == flower
    wrapped = [m.kwargs["layer"] for m in layers if m.cls is lean_middleware.OnlyOn]
    assert set(wrapped) == set(bound)  # all six, and only those
