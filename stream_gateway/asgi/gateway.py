"""`Gateway` (many flows under one mount) and `FlowHandler` (one flow), as ASGI apps."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import Receive, Scope, Send

from .._errors import (
    GatewayError,
    InternalError,
    MethodNotAllowedError,
    NotFoundError,
    UnavailableError,
)
from ..flow import ContextProvider, Flow
from ..streams.manager import StreamManager
from ._http import error_response
from ._signals import on_shutdown_signal
from .endpoints import FlowEndpoints, GatewaySettings
from .runner import FlowRunner

if TYPE_CHECKING:
    from ..durable import DurableEngine, Worker

__all__ = ["FlowHandler", "Gateway"]

logger = logging.getLogger("stream_gateway.http")


class Gateway:
    """Serves many flows: ``POST /{flow}``, ``GET|DELETE /{flow}/streams/{id}``, ``GET /``.

    Put it in a host app with `route` (or a Starlette ``Mount`` / FastAPI
    ``app.mount``, which redirect the bare mount path) and run its `lifespan` in the
    host app's lifespan; served on its own, it runs it itself. Without the lifespan
    every request is answered 503, saying so. The lifespan starts the stream manager
    and the runner of flows and, on shutdown, drains running flows for
    ``drain_grace`` seconds. With ``drain_on_signal`` (the default) the drain starts
    as soon as the process gets SIGTERM or SIGINT, not when the server runs the
    lifespan shutdown (uvicorn does that only after every connection closed); see
    docs/shutdown.md.

    With a ``stream_manager``, streaming runs are persisted and detached from their
    request: a client that disconnects can come back with the stream id. Without one,
    a streaming run lives and dies with its response.
    """

    def __init__(
        self,
        flows: Iterable[Flow[Any, Any, Any]],
        *,
        stream_manager: StreamManager | None = None,
        context_provider: ContextProvider | None = None,
        max_body_bytes: int = 1024 * 1024,
        max_chunk_bytes: int | None = None,
        max_stream_chunks: int | None = None,
        keep_alive_interval: float = 15.0,
        drain_grace: float = 10.0,
        max_running_flows: int = 1000,
        max_running_flows_per_principal: int | None = None,
        durable: DurableEngine | Worker | None = None,
        drain_on_signal: bool = True,
        stop_grace: float = 10.0,
    ) -> None:
        """``max_chunk_bytes`` / ``max_stream_chunks`` apply to every run of these
        flows; they default to the manager's limits. ``max_running_flows`` caps the
        runs at once, streaming or not, and ``max_running_flows_per_principal`` (off
        by default) those of one principal; more get 429 ``RESOURCE_EXHAUSTED``.

        ``durable``: also serve that engine's operations under ``/durable`` (same
        context provider and error format), serve its streaming flows (``chunk=``,
        registered before the gateway is made) like plain flows on the gateway's
        ``stream_manager``, and run a worker in the lifespan: give
        ``engine.worker(worker_id="web-1", lease=10, ...)`` to choose its options (a
        stable id lets a restarted process take its executions back at once).

        ``drain_on_signal``: start the drain on SIGTERM/SIGINT (the server's own
        handler still runs); False leaves it to the lifespan shutdown.

        ``stop_grace``: seconds a flow asked to stop (``POST .../streams/{id}/stop``)
        has to return its partial result before it is cancelled.
        """
        self.drain_on_signal = drain_on_signal
        self.durable_worker: Worker | None = None
        self.durable: DurableEngine | None = None
        if durable is not None:
            from ..durable import Worker

            if isinstance(durable, Worker):
                self.durable_worker, self.durable = durable, durable.engine
            else:
                self.durable = durable
        manager = stream_manager
        self.stream_manager = manager
        self.runner = FlowRunner(
            grace=drain_grace,
            max_running=max_running_flows,
            max_running_per_principal=max_running_flows_per_principal,
            stop_grace=stop_grace,
        )
        self.settings = GatewaySettings(
            stream_manager=manager,
            context_provider=context_provider,
            runner=self.runner,
            max_body_bytes=max_body_bytes,
            max_chunk_bytes=max_chunk_bytes or (manager.max_chunk_bytes if manager else 256 * 1024),
            max_stream_chunks=max_stream_chunks
            or (manager.max_stream_chunks if manager else 1_000_000),
            keep_alive_interval=keep_alive_interval,
        )
        self.endpoints: dict[str, FlowEndpoints] = {}
        for flow in flows:
            if durable is not None and flow.name == "durable":
                raise ValueError("a flow named 'durable' would be hidden by the durable routes")
            if flow.name in self.endpoints:
                raise ValueError(f"two flows are named {flow.name!r}")
            self.endpoints[flow.name] = FlowEndpoints(flow, self.settings)
        if self.durable is not None:
            self._serve_streaming_durable_flows(self.durable)
        self._started = False
        self._warned = False
        self.app = Starlette(
            routes=self._routes(),
            lifespan=self._app_lifespan,
            exception_handlers={HTTPException: _routing_error},
        )
        # An API answers a stray trailing slash with its own 404, not a redirect.
        self.app.router.redirect_slashes = False

    def _serve_streaming_durable_flows(self, engine: DurableEngine) -> None:
        """Serve the engine's streaming flows (``chunk=``) as flows of this gateway,
        on the gateway's stream manager (which becomes the engine's)."""
        from .durable_flows import DurableFlowEndpoints

        streaming = [f for f in engine.flows.values() if f.streaming]
        if not streaming:
            return
        manager = self.stream_manager
        if manager is None:
            raise ValueError(
                f"durable flow {streaming[0].name!r} streams (chunk=): give the Gateway a "
                "stream_manager"
            )
        if engine.streams is None:
            engine.streams = manager
        elif engine.streams is not manager:
            raise ValueError("the durable engine streams on another manager than the Gateway's")
        for flow in streaming:
            if flow.name in self.endpoints or flow.name == "durable":
                raise ValueError(f"two flows are named {flow.name!r}")
            self.endpoints[flow.name] = DurableFlowEndpoints(flow, self.settings, engine)

    def _routes(self) -> list[BaseRoute]:
        return [
            *self._durable_routes(),
            Route("/", self._list, methods=["GET"]),
            Route("/{flow}", self._dispatch("post"), methods=["POST"]),
            Route("/{flow}", self._dispatch("describe"), methods=["GET"]),
            Route("/{flow}/streams/{stream_id}", self._dispatch("sse"), methods=["GET"]),
            Route("/{flow}/streams/{stream_id}", self._dispatch("cancel"), methods=["DELETE"]),
            Route("/{flow}/streams/{stream_id}/stop", self._dispatch("stop"), methods=["POST"]),
            Route(
                "/{flow}/conversations/{conversation_id}",
                self._dispatch("conversation"),
                methods=["GET"],
            ),
        ]

    def _durable_routes(self) -> list[BaseRoute]:
        if self.durable is None:
            return []
        from ..durable import durable_routes

        router = durable_routes(
            self.durable,
            context_provider=self.settings.context_provider,
            max_body_bytes=self.settings.max_body_bytes,
        )
        return [Mount("/durable", app=router)]

    def _dispatch(self, name: str) -> Any:
        async def endpoint(request: Request) -> Response:
            endpoints = self.endpoints.get(request.path_params["flow"])
            if endpoints is None:
                # Authenticate first, so an unknown flow tells no more than a known one.
                return await self._guarded_auth(request) or error_response(
                    NotFoundError("no such flow")
                )
            response: Response = await getattr(endpoints, name)(request)
            return response

        return endpoint

    async def _list(self, request: Request) -> Response:
        rejected = await self._guarded_auth(request)
        if rejected is not None:
            return rejected
        return JSONResponse({"flows": [e.description() for e in self.endpoints.values()]})

    async def _guarded_auth(self, request: Request) -> Response | None:
        """Run the context provider; its rejection as a response, or None to go on."""
        provider = self.settings.context_provider
        if provider is None:
            return None
        try:
            await provider(request)
        except GatewayError as exc:
            return error_response(exc)
        except Exception:
            logger.exception("context provider failed")
            return error_response(InternalError("Internal Error"))
        return None

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Start the stream manager and the flow runner; drain and stop them on exit.

        Pass it as (or call it from) the host app's ``lifespan``.
        """
        try:
            async with AsyncExitStack() as stack:
                if self.stream_manager is not None:
                    await stack.enter_async_context(self.stream_manager)
                if self.durable is not None:
                    await stack.enter_async_context(self.durable)
                    await stack.enter_async_context(self.durable_worker or self.durable.worker())
                await stack.enter_async_context(self.runner)
                stack.callback(self.begin_shutdown)  # exits run in reverse: before the runner's
                if self.drain_on_signal:
                    stack.enter_context(on_shutdown_signal(self.begin_shutdown))
                self._started = True
                yield
        finally:
            # Only once everything has stopped: reconnects are served during the drain.
            self._started = False

    def begin_shutdown(self) -> None:
        """Start the drain now: refuse new runs, give running flows ``drain_grace``
        seconds, and end the responses that follow streams this process does not
        write (their clients resume elsewhere). Idempotent; the lifespan calls it on
        SIGTERM/SIGINT (with ``drain_on_signal``) and at the latest on exit."""
        if self.stream_manager is not None:
            self.stream_manager.interrupt_followers()
        self.runner.begin_drain()

    @asynccontextmanager
    async def _app_lifespan(self, app: object) -> AsyncIterator[None]:
        async with self.lifespan(app):
            yield

    def route(self, path: str, *, name: str | None = None) -> Mount:
        """A route serving this gateway under ``path``, for a host app's ``routes``.

        Unlike a plain ``Mount(path, app=gateway)``, which Starlette answers with a
        307 redirect for the bare ``path`` (``POST /chat`` to ``/chat/``), it serves
        ``path`` itself as well as ``path/`` and everything under it. In FastAPI:
        ``app.router.routes.append(gateway.route("/chat"))``.
        """
        return _GatewayMount(path, app=self, name=name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._started:
            # Without the lifespan nothing works (no runner, no stream manager): say
            # so on every request, not only on the ones that happen to need them.
            if not self._warned:
                self._warned = True
                logger.error("%s", _NOT_STARTED)
            await error_response(UnavailableError(_NOT_STARTED))(scope, receive, send)
            return
        await self.app(scope, receive, send)


_NOT_STARTED = (
    "gateway is not started: run its lifespan. Serve the gateway as the app, or pass "
    "lifespan=gateway.lifespan to the host app (Starlette(..., lifespan=gateway.lifespan), "
    "FastAPI(lifespan=gateway.lifespan)), or enter `async with gateway.lifespan():` "
    "in the host's own lifespan"
)


def _route_path(scope: Scope) -> str:
    """The path below the app's mount point, as Starlette's routers match it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class _GatewayMount(Mount):
    """A `Mount` that also serves its bare path (``/chat`` as well as ``/chat/``)."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.NONE and scope["type"] == "http":
            if _route_path(scope) == self.path:
                slashed = scope["path"] + "/"
                match, child = super().matches({**scope, "path": slashed})
                if match is not Match.NONE:
                    child = {**child, "path": slashed}
        return match, child


async def _routing_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods answer in the gateway's error format too."""
    assert isinstance(exc, HTTPException)
    error: GatewayError
    if exc.status_code == 405:
        error = MethodNotAllowedError(f"method {request.method} not allowed here")
    else:
        error = NotFoundError("no such endpoint")
    return error_response(error, headers=exc.headers)


class FlowHandler(Gateway):
    """Serves one flow at the root of its mount: ``POST /``, ``GET|DELETE /streams/{id}``.

    The analogue of Genkit's ``expressHandler(flow, {streamManager})``; options as in
    `Gateway`.
    """

    def __init__(self, flow: Flow[Any, Any, Any], **options: Any) -> None:
        self.flow = flow
        super().__init__([flow], **options)

    def _routes(self) -> list[BaseRoute]:
        endpoints = self.endpoints[self.flow.name]
        return [
            *self._durable_routes(),
            Route("/", endpoints.post, methods=["POST"]),
            Route("/", endpoints.describe, methods=["GET"]),
            Route("/streams/{stream_id}", endpoints.sse, methods=["GET"]),
            Route("/streams/{stream_id}", endpoints.cancel, methods=["DELETE"]),
            Route("/streams/{stream_id}/stop", endpoints.stop, methods=["POST"]),
            Route("/conversations/{conversation_id}", endpoints.conversation, methods=["GET"]),
        ]
