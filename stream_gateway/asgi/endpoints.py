"""The HTTP endpoints of one flow: Genkit protocol, SSE resume, cancel, describe."""

from __future__ import annotations

import logging
import math
import re
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import _telemetry
from .._errors import (
    AlreadyExistsError,
    CancelledError,
    GatewayError,
    InvalidArgumentError,
    StreamCompactedError,
    StreamExistsError,
    StreamNotFoundError,
    UnavailableError,
)
from .._ids import owner_key, validate_stream_id
from .._limits import check_chunk
from .._logs import owner_tag
from ..flow import ContextProvider, Flow, FlowContext, RequestContext
from ..streams.base import ErrorEvent, StreamRecord
from ..streams.manager import StreamManager
from ._http import (
    ClientGone,
    FrameResponse,
    Handler,
    ResponseCut,
    Write,
    client_safe,
    error_response,
    guarded,
    read_json_body,
    while_connected,
)
from ._idempotency import (
    CHOSEN_ID_FIELD,
    CHOSEN_ID_HEADER,
    IDEMPOTENCY_HEADER,
    IdempotentStart,
)
from .conversations import CONVERSATION_HEADER, Conversation, validate_conversation_id
from .frames import KEEP_ALIVE, genkit_frames, genkit_frames_with_offsets, sse_frames
from .runner import SHUTDOWN_MESSAGE, FlowRunner

__all__ = ["FlowEndpoints", "GatewaySettings"]

logger = logging.getLogger("stream_gateway.http")

STREAM_ID_HEADER = "x-genkit-stream-id"
#: A start may ask for its stream to stay readable this many seconds after it ends
#: (within the manager's ``max_ttl``); the flow's ``stream_ttl`` otherwise.
STREAM_TTL_HEADER = "x-stream-ttl"
OFFSET_HEADER = "x-genkit-stream-offset"
#: Our clients' request header (value ``1``): Genkit frames with offsets and resets
#: (`genkit_frames_with_offsets`); Genkit's own client does not send it.
RESETS_HEADER = "x-stream-resets"
_GENKIT_MEDIA_TYPE = "text/plain; charset=utf-8"
_SSE_MEDIA_TYPE = "text/event-stream; charset=utf-8"
_STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
# Only for a flow that runs inside its response (no stream manager): nothing to resume.
_SHUTTING_DOWN = ErrorEvent("UNAVAILABLE", SHUTDOWN_MESSAGE)
# Fields a Genkit client may send next to "data" (``init`` when the input is undefined).
_PROTOCOL_FIELDS = frozenset({"data", "init", "conversation", CHOSEN_ID_FIELD})
# Starts that may find their turn taken, in a row, before one gives up.
_MAX_TURN_RACES = 100


async def _anonymous(request: Request) -> RequestContext:
    return RequestContext()


@dataclass
class GatewaySettings:
    """What every flow endpoint of a gateway shares."""

    stream_manager: StreamManager | None
    context_provider: ContextProvider | None
    runner: FlowRunner
    max_body_bytes: int
    max_chunk_bytes: int
    max_stream_chunks: int
    keep_alive_interval: float


class FlowEndpoints:
    """Serves one flow. Every handler answers with a JSON error, never a traceback."""

    def __init__(self, flow: Flow[Any, Any, Any], settings: GatewaySettings) -> None:
        self.flow = flow
        self.settings = settings
        self._authenticate = settings.context_provider or _anonymous
        self._starting: dict[str, anyio.Event] = {}  # keyed starts under way, by stream id

    # -- POST <flow url>: the Genkit protocol -------------------------------------------

    async def post(self, request: Request) -> Response:
        """Run the flow (streaming or not), or reconnect to one of its streams."""
        return await self._guarded(self._post, request)

    async def _post(self, request: Request) -> Response:
        context = await self._authenticate(request)
        stream_id = request.headers.get(STREAM_ID_HEADER)
        if stream_id is not None:
            return await self._reconnect(request, context, stream_id)
        body = await read_json_body(request, self.settings.max_body_bytes)
        input = self._input_of(body)
        chosen_id = _chosen_id_of(request, body)
        if _wants_stream(request):
            if self.settings.stream_manager is None:
                if self._conversation_of(request, body) is not None:
                    raise InvalidArgumentError("conversations need a stream manager on the server")
                if chosen_id is not None:
                    raise InvalidArgumentError(
                        "a chosen stream id needs a stream manager on the server"
                    )
                return self._stream_attached(input, context)
            key = request.headers.get(IDEMPOTENCY_HEADER)
            conversation_id = self._conversation_of(request, body)
            start = None
            if chosen_id is not None:
                if key is not None:
                    raise InvalidArgumentError(
                        "send either an Idempotency-Key or a chosen stream id, not both"
                    )
                if conversation_id is not None:
                    raise InvalidArgumentError(
                        "a conversation's turns have stream ids of their own: send an"
                        " Idempotency-Key to make a start in a conversation safe to repeat"
                    )
                start = IdempotentStart.chosen_by_client(chosen_id, body)
            elif key is not None:
                owner = owner_key(context.principal)
                start = IdempotentStart.of(self.flow.name, owner, key, body)
            if conversation_id is not None:
                owner = owner_key(context.principal)
                conversation = Conversation(
                    self.settings.stream_manager, self.flow.name, owner, conversation_id
                )
                return await self._start_in_conversation(
                    input, context, start, conversation, self._ttl_of(request)
                )
            return await self._stream_detached(input, context, start, self._ttl_of(request))
        if self._conversation_of(request, body) is not None:
            raise InvalidArgumentError(
                "a conversation needs a streaming request (Accept: text/event-stream)"
            )
        if chosen_id is not None:
            raise InvalidArgumentError(
                "a chosen stream id needs a streaming request (Accept: text/event-stream)"
            )
        return await self._run_once(request, input, context)

    def _input_of(self, body: Any) -> Any:
        """The flow's validated input from a ``{"data": <input>}`` body."""
        if body is not None and not isinstance(body, dict):
            raise InvalidArgumentError('request body must be a JSON object: {"data": <input>}')
        if body and "data" not in body and not body.keys() <= _PROTOCOL_FIELDS:
            # Most likely the input itself, sent without its wrapper.
            raise InvalidArgumentError(
                'request body must be {"data": <input>}: it has no "data" field'
            )
        try:
            return self.flow.parse_input(body.get("data") if body else None)
        except InvalidArgumentError as exc:
            if body and "data" in body:
                raise
            raise InvalidArgumentError(
                f'{exc.message}: the request carried no input; send {{"data": <input>}}',
                details=exc.details,
            ) from None

    async def _reconnect(self, request: Request, context: RequestContext, raw_id: str) -> Response:
        stream_id = validate_stream_id(raw_id)
        wanted = _offset_or_now(request.headers.get(OFFSET_HEADER, "0"), OFFSET_HEADER)
        try:
            record = await self._owned_record(stream_id, context)
        except StreamNotFoundError:
            return Response(status_code=204)  # what Genkit's client reads as NOT_FOUND
        offset = record.length if wanted is None else wanted
        assert self.settings.stream_manager is not None
        await self.settings.stream_manager.check_resume(record, offset)  # 410 if compacted away
        logger.info(
            "stream %s (flow %r, owner %s): resumed at offset %d",
            stream_id, self.flow.name, owner_tag(record.owner), offset,
        )  # fmt: skip
        return self._genkit_response(stream_id, offset, request)

    def _ttl_of(self, request: Request) -> float | None:
        """The stream TTL a start asks for (`STREAM_TTL_HEADER`), else the flow's."""
        raw = request.headers.get(STREAM_TTL_HEADER)
        if raw is None:
            return self.flow.stream_ttl
        try:
            ttl = float(raw)
        except ValueError:
            ttl = math.nan
        if not math.isfinite(ttl) or ttl <= 0:
            raise InvalidArgumentError(f"{STREAM_TTL_HEADER} must be a positive number of seconds")
        return ttl

    async def _stream_detached(
        self,
        input: Any,
        context: RequestContext,
        start: IdempotentStart | None = None,
        ttl: float | None = None,
    ) -> Response:
        if start is None:
            return await self._open_and_run(input, context, None, None, ttl)
        # Identical starts in this process go one at a time, so that the repeats
        # find the first one's stream instead of meeting its admission slot (429).
        while (pending := self._starting.get(start.stream_id)) is not None:
            await pending.wait()
        self._starting[start.stream_id] = done = anyio.Event()
        try:
            # A repeat of a start that got through follows it, and counts nothing.
            replay = await self._replay(start, context)
            if replay is not None:
                return replay
            try:
                return await self._open_and_run(input, context, start.stream_id, start.extra, ttl)
            except StreamExistsError:
                # An identical start in another process won the race: its record is there.
                replay = await self._replay(start, context)
                if replay is not None:
                    return replay
                raise start.unusable() from None
        finally:
            del self._starting[start.stream_id]
            done.set()

    def _conversation_of(self, request: Request, body: Any) -> str | None:
        """The conversation the request names (header or ``conversation`` field), if any."""
        named = request.headers.get(CONVERSATION_HEADER)
        if named is None and isinstance(body, dict):
            named = body.get("conversation")
        return None if named is None else validate_conversation_id(named)

    async def _start_in_conversation(
        self,
        input: Any,
        context: RequestContext,
        start: IdempotentStart | None,
        conversation: Conversation,
        ttl: float | None = None,
    ) -> Response:
        """Start the conversation's next turn, as the flow's policy says."""
        manager = self.settings.stream_manager
        assert manager is not None
        start_key = None if start is None else start.stream_id
        for _ in range(_MAX_TURN_RACES):
            latest = await conversation.latest()
            if start is not None and latest is not None and conversation.started_by(latest, start):
                start.check(latest)  # a repeat of the start that began this turn
                return self._genkit_response(latest.stream_id, 0)
            if latest is not None and conversation.is_active(latest):
                policy = self.flow.conversation_policy
                if policy == "reject":
                    raise AlreadyExistsError(
                        "the conversation has an active run: follow it, or try again when it"
                        " has ended",
                        details={"streamId": latest.stream_id},
                    )
                if policy == "interrupt":
                    await manager.cancel(latest.stream_id)
                await conversation.wait_until_ended(latest)
            turn = 0 if latest is None else Conversation.turn_of(latest) + 1
            extra = {**conversation.extra(turn, start_key), **(start.extra if start else {})}
            try:
                return await self._open_and_run(
                    input, context, conversation.turn_id(turn), extra, ttl
                )
            except StreamExistsError:
                continue  # another start took this turn: look again
        raise UnavailableError("too many starts raced in this conversation; try again")

    async def _open_and_run(
        self,
        input: Any,
        context: RequestContext,
        stream_id: str | None,
        extra: dict[str, Any] | None,
        ttl: float | None = None,
    ) -> Response:
        """Admit, open ``stream_id`` (None: a fresh one) and start the flow on it. A
        taken id raises `StreamExistsError` and costs nothing."""
        manager = self.settings.stream_manager
        assert manager is not None
        # Admitted before the stream exists: a refused start writes nothing.
        admission = self.settings.runner.admit(context.principal)
        try:
            writer = await manager.open(
                stream_id,
                flow=self.flow.name,
                owner=owner_key(context.principal),
                extra=extra,
                ttl=ttl,
            )
        except BaseException:
            admission.release()
            raise
        try:
            self.settings.runner.start(
                self.flow,
                input,
                writer,
                context,
                max_chunk_bytes=self.settings.max_chunk_bytes,
                max_stream_chunks=self.settings.max_stream_chunks,
                admission=admission,
            )
        except GatewayError as exc:
            admission.release()
            await writer.error(exc)
            raise
        return self._genkit_response(writer.stream_id, 0)

    async def conversation(self, request: Request) -> Response:
        """The conversation's active stream as ``{"streamId", "conversation", "turn"}``,
        or 204 when no run is active (or the conversation is unknown)."""
        return await self._guarded(self._conversation, request)

    async def _conversation(self, request: Request) -> Response:
        context = await self._authenticate(request)
        conversation_id = request.path_params["conversation_id"]
        if self.settings.stream_manager is None:
            validate_conversation_id(conversation_id)
            return Response(status_code=204)
        conversation = Conversation(
            self.settings.stream_manager,
            self.flow.name,
            owner_key(context.principal),
            conversation_id,
        )
        active = await conversation.active()
        if active is None:
            return Response(status_code=204)
        return JSONResponse(
            {
                "streamId": active.stream_id,
                "conversation": conversation.id,
                "turn": Conversation.turn_of(active),
            }
        )

    async def _replay(self, start: IdempotentStart, context: RequestContext) -> Response | None:
        """The response to a repeated keyed start, or None if its stream does not exist."""
        try:
            record = await self._owned_record(start.stream_id, context)
        except StreamNotFoundError:
            return None
        start.check(record)
        logger.info(
            "stream %s (flow %r): start repeated with its key", record.stream_id, self.flow.name
        )
        return self._genkit_response(record.stream_id, 0)

    def _genkit_response(
        self, stream_id: str, offset: int, request: Request | None = None
    ) -> Response:
        encode = genkit_frames
        if request is not None and request.headers.get(RESETS_HEADER) == "1":
            encode = genkit_frames_with_offsets

        async def produce(write: Write) -> None:
            await self._relay(stream_id, offset, write, encode)

        return FrameResponse(
            produce,
            media_type=_GENKIT_MEDIA_TYPE,
            headers={**_STREAM_HEADERS, STREAM_ID_HEADER: stream_id},
            cut="abort",
        )

    def _stream_attached(self, input: Any, context: RequestContext) -> Response:
        """No stream manager: the flow runs inside the response and ends with it."""
        settings, flow = self.settings, self.flow
        admission = settings.runner.admit(context.principal)

        async def produce(write: Write) -> None:
            count = 0

            async def sink(raw: bytes) -> None:
                nonlocal count
                check_chunk(raw, count, settings.max_chunk_bytes, settings.max_stream_chunks)
                count += 1
                await write(b'data: {"message":' + raw + b"}\n\n")

            try:
                result = await flow.fn(input, FlowContext(flow, sink=sink, request=context))
                await write(b'data: {"result":' + flow.encode_output(result) + b"}\n\n")
            except Exception as exc:
                error = self._public(exc)
                await write(genkit_frames([ErrorEvent(error.status, error.message, error.details)]))

        return FrameResponse(
            produce,
            media_type=_GENKIT_MEDIA_TYPE,
            headers=_STREAM_HEADERS,
            cut=genkit_frames([_SHUTTING_DOWN]),
            on_close=admission.release,
        )

    async def _run_once(self, request: Request, input: Any, context: RequestContext) -> Response:
        """Run inside the request, counted against the limits, cancelled if the
        client leaves (nobody would get the result)."""
        async with self.settings.runner.attached(context.principal):
            try:
                with _telemetry.span("flow.run", flow=self.flow.name):
                    result = await while_connected(
                        request.receive,
                        lambda: self.flow.fn(input, FlowContext(self.flow, request=context)),
                    )
            except ClientGone:
                logger.debug("client left; flow %r cancelled", self.flow.name)
                return error_response(CancelledError("client disconnected"))
        body = b'{"result":' + self.flow.encode_output(result) + b"}"
        return Response(body, media_type="application/json")

    # -- GET / DELETE <flow url>/streams/<id>: standard SSE -------------------------------

    async def sse(self, request: Request) -> Response:
        """Follow a stream as Server-Sent Events, resuming after ``Last-Event-ID``."""
        return await self._guarded(self._sse, request)

    async def _sse(self, request: Request) -> Response:
        context = await self._authenticate(request)
        stream_id = validate_stream_id(request.path_params["stream_id"])
        last_id = request.headers.get("last-event-id")
        wanted: int | None
        if last_id is not None:
            wanted = _offset(last_id, "Last-Event-ID") + 1
        else:
            wanted = _offset_or_now(request.query_params.get("offset", "0"), "offset")
        record = await self._owned_record(stream_id, context)
        offset = record.length if wanted is None else wanted
        assert self.settings.stream_manager is not None
        await self.settings.stream_manager.check_resume(record, offset)  # 410 if compacted away
        if offset:
            logger.info(
                "stream %s (flow %r, owner %s): resumed at offset %d (SSE)",
                stream_id, self.flow.name, owner_tag(record.owner), offset,
            )  # fmt: skip

        async def produce(write: Write) -> None:
            await self._relay(stream_id, offset, write, sse_frames)

        return FrameResponse(
            produce,
            media_type=_SSE_MEDIA_TYPE,
            headers=_STREAM_HEADERS,
            keep_alive=KEEP_ALIVE,
            keep_alive_interval=self.settings.keep_alive_interval,
            cut="close",
        )

    async def cancel(self, request: Request) -> Response:
        """Ask the stream's flow to stop; subscribers then see ``CANCELLED``."""
        return await self._guarded(self._cancel, request)

    async def _cancel(self, request: Request) -> Response:
        context = await self._authenticate(request)
        stream_id = validate_stream_id(request.path_params["stream_id"])
        await self._owned_record(stream_id, context)
        assert self.settings.stream_manager is not None
        cancelled = await self.settings.stream_manager.cancel(stream_id)
        return JSONResponse({"streamId": stream_id, "cancelled": cancelled})

    async def stop(self, request: Request) -> Response:
        """Ask the stream's flow to finish now; the stream then ends ``done`` with the
        partial result the flow returns (cancelled if it does not within the grace)."""
        return await self._guarded(self._stop, request)

    async def _stop(self, request: Request) -> Response:
        context = await self._authenticate(request)
        stream_id = validate_stream_id(request.path_params["stream_id"])
        await self._owned_record(stream_id, context)
        assert self.settings.stream_manager is not None
        stopped = await self.settings.stream_manager.stop(stream_id)
        return JSONResponse({"streamId": stream_id, "stopped": stopped})

    async def describe(self, request: Request) -> Response:
        """The flow's name, description and JSON Schemas."""
        return await self._guarded(self._describe, request)

    async def _describe(self, request: Request) -> Response:
        await self._authenticate(request)
        return JSONResponse(self.description())

    def description(self) -> dict[str, Any]:
        """What `describe` answers."""
        return {
            "name": self.flow.name,
            "description": self.flow.description,
            "schemas": self.flow.schemas(),
            "durableStreams": self.settings.stream_manager is not None,
        }

    # -- shared ------------------------------------------------------------------------

    async def _owned_record(self, stream_id: str, context: RequestContext) -> StreamRecord:
        """The stream's record if it belongs to this flow and principal; else not found."""
        manager = self.settings.stream_manager
        if manager is None:
            raise StreamNotFoundError("stream not found")
        record = await manager.info(stream_id)
        if record.flow != self.flow.name or record.owner != owner_key(context.principal):
            raise StreamNotFoundError("stream not found")
        return record

    async def _relay(
        self,
        stream_id: str,
        offset: int,
        write: Write,
        encode: Any,
    ) -> None:
        manager = self.settings.stream_manager
        assert manager is not None
        writing = False
        try:
            async with aclosing(manager.subscribe_batches(stream_id, offset)) as batches:
                async for events in batches:
                    writing = True
                    if len(events) > 1 and isinstance(events[-1], ErrorEvent):
                        # Genkit's client drops chunks that arrive in the same read
                        # as an error frame: give the error a write of its own.
                        await write(encode(events[:-1]))
                        await anyio.lowlevel.checkpoint()
                        events = events[-1:]
                    await write(encode(events))
                    writing = False
        except StreamCompactedError as exc:
            if writing:
                raise
            logger.info("stream %s: compacted while replayed (%s)", stream_id, exc.message)
            if encode is genkit_frames:
                # Genkit's own client cannot resume from an offset: tell it plainly.
                await write(encode([ErrorEvent(exc.status, exc.message, exc.details)]))
                return
            # Our clients resume from their offset, get 410 and replay from 0.
            raise ResponseCut from exc
        except UnavailableError as exc:
            if writing:
                raise
            # This process stopped following the stream (shutting down) or cannot
            # reach the backend; the stream may still finish: the client resumes.
            logger.info("stream %s: following stopped (%s); the client will resume", stream_id, exc)
            raise ResponseCut from exc
        except Exception as exc:
            if writing:
                raise  # the client is gone; nobody to tell
            # Never end a stream without a terminal frame: Genkit's client would spin.
            error = self._public(exc)
            await write(encode([ErrorEvent(error.status, error.message, error.details)]))

    def _public(self, exc: BaseException) -> GatewayError:
        return client_safe(exc, f"flow {self.flow.name!r}")

    async def _guarded(self, handler: Handler, request: Request) -> Response:
        return await guarded(handler, f"flow {self.flow.name!r}")(request)


def _chosen_id_of(request: Request, body: Any) -> object | None:
    """The stream id the client chose for its start (header or ``streamId``), unchecked."""
    chosen: object | None = request.headers.get(CHOSEN_ID_HEADER)
    if chosen is None and isinstance(body, dict):
        chosen = body.get(CHOSEN_ID_FIELD)
    return chosen


def _wants_stream(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/event-stream" in accept or request.query_params.get("stream") == "true"


_DIGITS = re.compile(r"[0-9]{1,18}")


def _offset(value: str, name: str) -> int:
    if not _DIGITS.fullmatch(value):
        raise InvalidArgumentError(f"{name} must be a non-negative integer")
    return int(value)


def _offset_or_now(value: str, name: str) -> int | None:
    """An offset, or None for ``now``: the stream's committed length when asked (its
    live tail; a finished stream then gives only its terminal event)."""
    if value == "now":
        return None
    if not _DIGITS.fullmatch(value):
        raise InvalidArgumentError(f'{name} must be a non-negative integer or "now"')
    return int(value)
