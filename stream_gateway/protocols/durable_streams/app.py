"""`DurableStreamsApp`: the Durable Streams protocol over any `StreamManager`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..._errors import GatewayError, InvalidArgumentError, StreamNotFoundError
from ..._ids import owner_key, validate_stream_id
from ...flow import ContextProvider, RequestContext
from ...streams.manager import StreamManager
from . import gets, writes
from .catalog import Catalog, DsStream
from .reads import StreamView
from .wire import DS_FLOW, EXPOSED_HEADERS, ProtocolError

__all__ = ["DurableStreamsApp"]

logger = logging.getLogger("stream_gateway.durable_streams")

_METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE"]


async def _anonymous(request: Request) -> RequestContext:
    return RequestContext()


class DurableStreamsApp:
    """Serves the Durable Streams protocol on every path under its mount.

    ``PUT`` creates a stream at its path, ``POST`` appends (with idempotent
    producers), ``GET`` reads (catch-up, ``live=long-poll``, ``live=sse``), ``HEAD``
    tells the tail, ``DELETE`` removes. Chunks go through ``manager``, so a stream is
    as durable as the manager's storage; the protocol's own state (paths, content
    types, TTLs, producer sequences) is kept by the process that created the stream,
    which is also its one writer.

    A flow's stream is readable too, read-only, at the path ``<stream id>``: a JSON
    stream of ``{"message": <chunk>}`` messages ended by ``{"result": ...}`` or
    ``{"error": ...}``. Only the principal that started the flow can read it.

    ``context_provider`` runs on every request; its principal owns the streams it
    creates, and another principal is told they do not exist.
    """

    def __init__(
        self,
        manager: StreamManager,
        *,
        context_provider: ContextProvider | None = None,
        long_poll_timeout: float = 30.0,
        sse_duration: float = 60.0,
        keep_alive_interval: float = 15.0,
        max_body_bytes: int = 8 * 1024 * 1024,
        max_read_bytes: int = 1024 * 1024,
        sweep_interval: float = 10.0,
        cors_origins: Sequence[str] = (),
    ) -> None:
        """``long_poll_timeout``: how long a long-poll waits before ``204``.
        ``sse_duration``: an SSE response ends after this long (the client comes
        back from its last offset), as the protocol advises for CDN collapsing.
        ``sweep_interval``: how often expired streams are removed (they are also
        refused as soon as they expire).
        ``cors_origins``: origins (or ``"*"``) whose pages may call this app from a
        browser; the protocol's headers are exposed to them.
        """
        self.manager = manager
        self.long_poll_timeout = long_poll_timeout
        self.sse_duration = sse_duration
        self.keep_alive_interval = keep_alive_interval
        self.max_body_bytes = max_body_bytes
        self.max_read_bytes = max_read_bytes
        self.sweep_interval = sweep_interval
        self.catalog = Catalog()
        self.create_lock = anyio.Lock()
        self._authenticate = context_provider or _anonymous
        app = Starlette(
            routes=[Route("/{path:path}", self._endpoint, methods=_METHODS)],
            lifespan=self._app_lifespan,
        )
        self.app: ASGIApp = app
        if cors_origins:
            self.app = CORSMiddleware(
                app,
                allow_origins=list(cors_origins),
                allow_methods=_METHODS,
                allow_headers=["*"],
                expose_headers=EXPOSED_HEADERS,
            )

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Start the manager and the expiry sweep; run it from the host app's lifespan."""
        async with self.manager, anyio.create_task_group() as tg:
            tg.start_soon(self._sweep_loop)
            yield
            tg.cancel_scope.cancel()

    @asynccontextmanager
    async def _app_lifespan(self, app: object) -> AsyncIterator[None]:
        async with self.lifespan(app):
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    # -- dispatch ----------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        try:
            context = await self._authenticate(request)
            path = _stream_path(request.path_params["path"])
            owner = owner_key(context.principal)
            if request.method == "PUT":
                return await writes.create(self, request, path, owner)
            if request.method == "POST":
                return await writes.append(self, request, path, owner)
            if request.method == "DELETE":
                return await writes.delete(self, path, owner)
            if request.method == "HEAD":
                return await gets.head(self, path, owner)
            return await gets.read(self, request, path, owner)
        except ProtocolError as exc:
            return exc.response()
        except GatewayError as exc:
            return ProtocolError(exc.http_status, exc.message).response()
        except Exception:
            logger.exception("durable streams %s %s failed", request.method, request.url.path)
            return ProtocolError(500, "Internal Error").response()

    # -- lookups -----------------------------------------------------------------------

    async def lookup(self, path: str, owner: str | None) -> DsStream | None:
        """The live stream at ``path`` for this owner; 410 once soft-deleted."""
        stream = self.catalog.peek(path)
        if stream is None or stream.owner != owner:
            return None
        if stream.soft_deleted:
            raise ProtocolError(410, "stream was deleted")
        if stream.expired(self.manager.clock()):
            await self.drop(stream)
            return None
        return stream

    async def flow_view(self, path: str, owner: str | None) -> StreamView | None:
        """A flow's stream at ``path`` (its stream id), if this owner may read it."""
        if "/" in path:
            return None
        try:
            record = await self.manager.info(validate_stream_id(path))
        except (StreamNotFoundError, InvalidArgumentError):
            return None
        if record.flow == DS_FLOW or record.owner != owner:
            return None
        return StreamView(
            self.manager, path, "application/json", flow=True, max_read_bytes=self.max_read_bytes
        )

    def view(self, stream: DsStream) -> StreamView:
        """How to read a stream created through the protocol."""
        return StreamView(
            self.manager,
            stream.stream_id,
            stream.settings.content_type,
            max_read_bytes=self.max_read_bytes,
        )

    async def drop(self, stream: DsStream) -> None:
        """Delete (or soft-delete) ``stream``; end the chunks of what is gone."""
        for gone in self.catalog.remove(stream):
            if not gone.writer.closed:
                try:
                    await gone.writer.cancelled("stream deleted")
                except Exception:
                    logger.exception("could not end the chunks of %s", gone.path)

    async def _sweep_loop(self) -> None:
        while True:
            await anyio.sleep(self.sweep_interval)
            for stream in self.catalog.expired(self.manager.clock()):
                await self.drop(stream)


def _stream_path(raw: str) -> str:
    """The stream's name: the request path under the mount, without its slashes."""
    path = raw.strip("/")
    if not path or len(path) > 1024 or any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise ProtocolError(400, "malformed stream path")
    segments = path.split("/")
    if segments[0] == "__ds" or any(s in ("", ".", "..") for s in segments):
        raise ProtocolError(404, "no such stream")
    return path
