"""`operator_app`: the dashboard page and its JSON API, behind the operator's auth."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .._errors import MethodNotAllowedError, NotFoundError, PermissionDeniedError
from ..asgi._http import error_response, guarded
from ..durable.engine import DurableEngine
from ..flow import ContextProvider, RequestContext
from ..streams.manager import StreamManager
from ._auth import NO_AUTH
from ._executions import ExecutionEndpoints
from ._streams import StreamEndpoints

__all__ = ["operator_app"]

logger = logging.getLogger("stream_gateway.operator")
STATIC = Path(__file__).parent / "static"

Handler = Callable[[Request], Awaitable[Response]]


async def _refuse(request: Request) -> RequestContext:
    raise PermissionDeniedError(NO_AUTH)


async def _anyone(request: Request) -> RequestContext:
    return RequestContext(principal="anonymous operator")


def operator_app(
    *,
    engine: DurableEngine | None = None,
    streams: StreamManager | None = None,
    auth: ContextProvider | None = None,
    dangerously_allow_unauthenticated: bool = False,
    max_body_bytes: int = 1024 * 1024,
    keep_alive_interval: float = 15.0,
) -> Starlette:
    """The operator dashboard over ``engine`` (durable executions and schedules) and
    ``streams`` (streams), as a Starlette app to mount, e.g. at ``/operator``.

    ``auth`` is a context provider (as for `Gateway`) run on every API request: it
    raises `UnauthenticatedError` (401) or `PermissionDeniedError` (403) to refuse,
    and returns a `RequestContext` naming the operator to admit (`token_auth` is one).
    Without ``auth`` every read and action is refused with 403 naming this option,
    unless ``dangerously_allow_unauthenticated=True``. Admitted operators see and act
    on every owner's streams, executions and schedules: keep it behind operator auth.

    The page and its assets (``/``, ``/static/...``) hold no data and are served to
    anyone; everything under ``/api`` goes through ``auth``. The app uses ``engine``
    and ``streams`` as they are: start them in the host app's lifespan (a `Gateway`'s
    lifespan starts its stream manager and durable engine). Each action is logged at
    INFO on ``stream_gateway.operator`` with the operator's name.
    """
    if engine is None and streams is None:
        raise ValueError("operator_app needs an engine, a stream manager or both")
    if auth is not None and dangerously_allow_unauthenticated:
        raise ValueError("give auth or dangerously_allow_unauthenticated=True, not both")
    if auth is None:
        if dangerously_allow_unauthenticated:
            logger.warning("operator app serves anyone: dangerously_allow_unauthenticated=True")
            auth = _anyone
        else:
            logger.warning("%s", NO_AUTH)
            auth = _refuse
    api = _Api(auth)
    routes: list[BaseRoute] = [Route("/api/whoami", api.read(api.whoami), methods=["GET"])]
    features = {"streams": streams is not None, "durable": engine is not None}

    async def config(request: Request) -> Response:
        return JSONResponse(features)

    routes.append(Route("/api/features", api.read(config), methods=["GET"]))
    if streams is not None:
        s = StreamEndpoints(streams, keep_alive_interval)
        routes += [
            Route("/api/streams", api.read(s.streams), methods=["GET"]),
            Route("/api/streams/{id}", api.read(s.info), methods=["GET"]),
            Route("/api/streams/{id}/tail", api.read(s.tail), methods=["GET"]),
            Route("/api/streams/{id}/cancel", api.act(s.cancel, "cancel stream"), methods=["POST"]),
            Route("/api/streams/{id}/stop", api.act(s.stop, "stop stream"), methods=["POST"]),
        ]
    if engine is not None:
        e = ExecutionEndpoints(engine, max_body_bytes)
        routes += [
            Route("/api/flows", api.read(e.flows), methods=["GET"]),
            Route("/api/flows/{flow}/shape", api.read(e.shape), methods=["GET"]),
            Route("/api/executions", api.read(e.executions), methods=["GET"]),
            Route("/api/executions/{id}", api.read(e.detail), methods=["GET"]),
            Route("/api/executions/{id}/cancel", api.act(e.cancel, "cancel"), methods=["POST"]),
            Route("/api/executions/{id}/resume", api.act(e.resume, "resume"), methods=["POST"]),
            Route(
                "/api/executions/{id}/signals/{name}",
                api.act(e.signal, "signal"),
                methods=["POST"],
            ),
            Route("/api/executions/{id}/recover", api.act(e.recover, "recover"), methods=["POST"]),
            Route("/api/executions/{id}/wake", api.act(e.wake, "wake"), methods=["POST"]),
            Route("/api/schedules", api.read(e.schedules), methods=["GET"]),
            Route(
                "/api/schedules/{id}/pause",
                api.act(e.pause_schedule, "pause schedule"),
                methods=["POST"],
            ),
            Route(
                "/api/schedules/{id}/resume",
                api.act(e.resume_schedule, "resume schedule"),
                methods=["POST"],
            ),
        ]

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)

    routes += [
        Route("/", index, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC)),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _routing_error})


# The page loads only its own assets and talks only to its own API.
_PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class _Api:
    """Wraps handlers in the operator's auth and the one request guard."""

    def __init__(self, auth: ContextProvider) -> None:
        self.auth = auth

    def read(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            request.state.operator = await self.auth(request)
            return await handler(request)

        return guarded(endpoint, "operator endpoint")

    def act(self, handler: Handler, action: str) -> Handler:
        async def endpoint(request: Request) -> Response:
            operator: RequestContext = await self.auth(request)
            request.state.operator = operator
            target = request.path_params.get("id")
            logger.info("operator %r: %s %s", operator.principal, action, target)
            return await handler(request)

        return guarded(endpoint, "operator action")

    async def whoami(self, request: Request) -> Response:
        operator: RequestContext = request.state.operator
        return JSONResponse({"operator": operator.principal})


async def _routing_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return error_response(MethodNotAllowedError(f"method {request.method} not allowed here"))
    return error_response(NotFoundError("no such endpoint"))
