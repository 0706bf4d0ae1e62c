"""`UIMessageStreamApp`: a flow as an AI SDK ``useChat`` endpoint, resumable and stoppable."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from ..._errors import GatewayError, InvalidArgumentError, StreamCompactedError, UnavailableError
from ..._ids import owner_key
from ..._json import dumps
from ...asgi._http import (
    FrameResponse,
    Handler,
    ResponseCut,
    Write,
    guarded,
    read_json_body,
)
from ...asgi.runner import FlowRunner
from ...flow import ContextProvider, Flow, RequestContext
from ...streams.base import ChunkEvent, ResetEvent, ResultEvent
from ...streams.manager import StreamManager
from ...streams.writer import StreamWriter
from .parts import UIChunk, UIMessageEncoder

__all__ = ["UIMessageStreamApp"]

logger = logging.getLogger("stream_gateway.ai_sdk")

_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
    "x-vercel-ai-ui-message-stream": "v1",
}
_DONE = b"data: [DONE]\n\n"
_KEEP_ALIVE = b": keep-alive\n\n"
_MAX_CHAT_ID = 256


async def _anonymous(request: Request) -> RequestContext:
    return RequestContext()


class UIMessageStreamApp:
    """Serves ``flow`` to the AI SDK's ``useChat`` (``DefaultChatTransport``).

    - ``POST /``: the AI SDK's body (``{"id", "messages", "trigger", ...}``) becomes the
      flow's input; the flow runs detached, its chunks stored by ``stream_manager``,
      and the answer streams back as the UI-message stream (SSE,
      ``x-vercel-ai-ui-message-stream: v1``). See `UIMessageEncoder` for what the
      flow's chunks become.
    - ``GET /{chatId}/stream``: re-attach to the chat's running answer, from its
      start (``?offset=N`` skips the first N UI chunks, for a client that kept
      them); ``204`` when the chat has no running answer, so ``useChat({resume:
      true})`` never shows a finished answer twice.
    - ``DELETE /{chatId}/stream``: stop the running answer (the flow is cancelled);
      the AI SDK's ``stop()`` only closes the connection, so call this too.

    Mount it with `routes` (``Starlette(routes=[*chat.routes("/api/chat")])``) and run
    its `lifespan` from the host's. Which answer runs for which chat is known to this
    process: run one process, or route a chat's requests to the same one.
    """

    def __init__(
        self,
        flow: Flow[Any, Any, Any],
        *,
        stream_manager: StreamManager,
        context_provider: ContextProvider | None = None,
        max_body_bytes: int = 1024 * 1024,
        keep_alive_interval: float = 15.0,
        drain_grace: float = 10.0,
        max_running_flows: int = 1000,
    ) -> None:
        """Options as in `Gateway`."""
        self.flow = flow
        self.manager = stream_manager
        self.runner = FlowRunner(grace=drain_grace, max_running=max_running_flows)
        self.max_body_bytes = max_body_bytes
        self.keep_alive_interval = keep_alive_interval
        self._authenticate = context_provider or _anonymous
        # (owner, chat id) -> the writer of its latest answer
        self._answers: dict[tuple[str | None, str], StreamWriter] = {}
        self.post = self._guarded(self._chat)
        self.app = Starlette(
            routes=[
                Route("/", self.post, methods=["POST"]),
                Route("/{chat_id}/stream", self._guarded(self._resume), methods=["GET"]),
                Route("/{chat_id}/stream", self._guarded(self._stop), methods=["DELETE"]),
            ],
            lifespan=self._app_lifespan,
        )

    def routes(self, path: str) -> list[BaseRoute]:
        """Routes that serve this app at ``path`` (say ``"/api/chat"``), that exact URL
        included: a plain ``Mount`` would answer ``POST /api/chat`` with a redirect to
        ``/api/chat/``, and the AI SDK posts to the URL without the slash."""
        path = "/" + path.strip("/")
        return [Route(path, self.post, methods=["POST"]), Mount(path, app=self)]

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Start the stream manager and the flow runner; drain them on exit."""
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.manager)
            await stack.enter_async_context(self.runner)
            yield

    @asynccontextmanager
    async def _app_lifespan(self, app: object) -> AsyncIterator[None]:
        async with self.lifespan(app):
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    # -- endpoints -----------------------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        context = await self._authenticate(request)
        body = await read_json_body(request, self.max_body_bytes)
        if not isinstance(body, dict):
            raise InvalidArgumentError("the body must be the AI SDK's {id, messages, ...}")
        chat_id = _chat_id(body.get("id"))
        if not isinstance(body.get("messages"), list):
            raise InvalidArgumentError("'messages' must be a list of UI messages")
        input = self.flow.parse_input(body)
        self.runner.check_accepting()
        owner = owner_key(context.principal)
        writer = await self.manager.open(flow=self.flow.name, owner=owner)
        try:
            self.runner.start(
                self.flow,
                input,
                writer,
                context,
                max_chunk_bytes=self.manager.max_chunk_bytes,
                max_stream_chunks=self.manager.max_stream_chunks,
            )
        except GatewayError as exc:
            await writer.error(exc)
            raise
        self._prune()
        self._answers[(owner, chat_id)] = writer
        return self._respond(writer.stream_id, 0)

    async def _resume(self, request: Request) -> Response:
        context = await self._authenticate(request)
        stream_id = await self._running(request, context)
        if stream_id is None:
            return Response(status_code=204)
        raw = request.query_params.get("offset", "0")
        if not (raw.isascii() and raw.isdigit() and len(raw) < 16):
            raise InvalidArgumentError("offset must be a non-negative integer")
        return self._respond(stream_id, int(raw))

    async def _stop(self, request: Request) -> Response:
        context = await self._authenticate(request)
        stream_id = await self._running(request, context)
        stopped = stream_id is not None and await self.manager.cancel(stream_id)
        return JSONResponse({"stopped": stopped})

    async def _running(self, request: Request, context: RequestContext) -> str | None:
        """The chat's answer if it is still running (for this principal)."""
        key = (owner_key(context.principal), _chat_id(request.path_params["chat_id"]))
        writer = self._answers.get(key)
        if writer is None:
            return None
        if writer.closed:
            del self._answers[key]
            return None
        return writer.stream_id

    # -- the UI-message stream -----------------------------------------------------------------

    def _respond(self, stream_id: str, skip: int) -> Response:
        async def produce(write: Write) -> None:
            sent = 0

            async def emit(chunks: list[UIChunk]) -> None:
                nonlocal sent
                frames = []
                for chunk in chunks:
                    if sent >= skip:
                        frames.append(b"data: " + dumps(chunk) + b"\n\n")
                    sent += 1
                if frames:
                    await write(b"".join(frames))

            try:
                await self._relay(stream_id, emit)
            except UnavailableError as exc:
                # This process stopped following (shutting down) or cannot read the
                # backend: end with the last words below; the page may resume.
                raise ResponseCut from exc
            await write(_DONE)

        return FrameResponse(
            produce,
            media_type="text/event-stream",
            headers=_HEADERS,
            keep_alive=_KEEP_ALIVE,
            keep_alive_interval=self.keep_alive_interval,
            cut=b'data: {"type":"error","errorText":"server shutting down"}\n\n' + _DONE,
        )

    async def _relay(self, stream_id: str, emit: Any) -> None:
        encoder = UIMessageEncoder(stream_id)
        await emit(encoder.start())
        try:
            await self._relay_events(stream_id, encoder, emit)
        except StreamCompactedError:
            # Compacted (by policy, once it ended) while this reader was replaying it.
            await emit(encoder.error("the answer was compacted while it was sent: load it again"))

    async def _relay_events(self, stream_id: str, encoder: UIMessageEncoder, emit: Any) -> None:
        async with aclosing(self.manager.subscribe_batches(stream_id, 0)) as batches:
            async for events in batches:
                out: list[UIChunk] = []
                for event in events:
                    if isinstance(event, ChunkEvent):
                        try:
                            out += encoder.chunk(event.data)
                        except InvalidArgumentError as exc:
                            await emit([*out, *encoder.error(exc.message)])
                            await self.manager.cancel(stream_id)
                            return
                    elif isinstance(event, ResultEvent):
                        out += encoder.finish(event.result)
                    elif isinstance(event, ResetEvent):
                        continue  # only durable executions' streams hold resets
                    elif event.status == "CANCELLED":
                        out.append({"type": "abort"})  # stopped from the UI
                    else:
                        out += encoder.error(event.message)
                await emit(out)

    def _prune(self) -> None:
        """Forget finished answers once there are many (the map stays bounded by the
        running answers)."""
        if len(self._answers) > 1000:
            for key, writer in list(self._answers.items()):
                if writer.closed:
                    del self._answers[key]

    def _guarded(self, handler: Handler) -> Handler:
        return guarded(handler, f"chat endpoint of flow {self.flow.name!r}")


def _chat_id(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_CHAT_ID:
        raise InvalidArgumentError(f"the chat id must be a string of 1-{_MAX_CHAT_ID} characters")
    return value
