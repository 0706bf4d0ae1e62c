"""Request parsing and responses shared by the endpoints."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal, TypeVar

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .._errors import (
    GatewayError,
    InvalidArgumentError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    client_error,
)
from .._json import JsonValue, error_json, loads

__all__ = [
    "ClientGone",
    "FrameResponse",
    "Handler",
    "Producer",
    "ResponseCut",
    "Write",
    "client_safe",
    "error_response",
    "guarded",
    "read_json_body",
    "while_connected",
]

logger = logging.getLogger("stream_gateway.http")
T = TypeVar("T")
_JSON = "application/json"


Handler = Callable[[Request], Awaitable[Response]]


def client_safe(exc: BaseException, what: str) -> GatewayError:
    """``exc`` as a client may see it (`client_error`); when that hides something,
    the original is logged with its traceback as the failure of ``what``."""
    error = client_error(exc)
    if error is not exc:
        logger.error("%s failed", what, exc_info=exc)
    return error


def guarded(handler: Handler, what: str) -> Handler:
    """The one request guard: ``handler``, with any exception it raises answered as
    an error response made safe by `client_safe`."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            return error_response(client_safe(exc, what))

    return endpoint


def error_response(exc: GatewayError, headers: Mapping[str, str] | None = None) -> Response:
    """``{"error": {status, message, details?}}`` with the error's HTTP status."""
    body = b'{"error":' + error_json(exc.status, exc.message, exc.details) + b"}"
    return Response(body, status_code=exc.http_status, headers=headers, media_type=_JSON)


async def read_json_body(request: Request, max_bytes: int) -> JsonValue:
    """The request's JSON body (``None`` when empty), within ``max_bytes``.

    Raises `PayloadTooLargeError` (413), `UnsupportedMediaTypeError` (415) or
    `InvalidArgumentError` (400) for malformed JSON.
    """
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    body = bytearray()
    try:
        async for part in request.stream():
            body += part
            if len(body) > max_bytes:
                raise _too_large(max_bytes)
    except ClientDisconnect:
        raise InvalidArgumentError("request body was cut off") from None
    # Checked even for an empty body: a JSON content type cannot come from a plain
    # cross-site form, so no other page can start a flow with the user's cookies.
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaTypeError(
            "request body must be JSON (Content-Type: application/json)"
        )
    if not body.strip():
        return None
    return loads(bytes(body))


class ClientGone(Exception):
    """The client disconnected before the call it was waiting for finished."""


async def while_connected(receive: Receive, call: Callable[[], Awaitable[T]]) -> T:
    """``await call()``, cancelled if the client disconnects first (`ClientGone`).

    For a request whose body was read already: its next ASGI message is the
    disconnect. ``call`` runs in the caller's task; its exceptions pass unchanged.
    """
    gone = False

    async def watch(scope: anyio.CancelScope) -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        scope.cancel()

    error: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch, tg.cancel_scope)
        try:
            result = await call()
        except Exception as exc:  # raised below, outside the task group's ExceptionGroup
            error = exc
        finally:
            tg.cancel_scope.cancel()
    if error is not None:
        raise error
    if gone:
        raise ClientGone("client disconnected")
    return result


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"request body exceeds the limit of {limit} bytes", details={"limit": limit}
    )


class ResponseCut(Exception):
    """Raised by a producer to end its response without a terminal frame, so that
    the client reconnects: the stream may still finish, here or elsewhere."""


Write = Callable[[bytes], Awaitable[None]]
Producer = Callable[[Write], Awaitable[None]]


class FrameResponse(Response):
    """A streaming response fed by a producer that is handed a ``write`` function.

    Each ``write`` is one ASGI body message. The producer is cancelled as soon as the
    client disconnects. With ``keep_alive`` set, that payload is written after each
    ``keep_alive_interval`` seconds of silence.

    How a response ends when it must stop early (the producer raised `ResponseCut`,
    or the server cancelled it at its graceful-shutdown timeout) is ``cut``:
    ``"close"`` ends the body cleanly (an ``EventSource`` reconnects by itself);
    ``"abort"`` leaves it incomplete so the connection breaks (Genkit's client
    loops forever on a clean end without a terminal frame, but throws on a broken
    connection; our clients resume on both); bytes are sent as a last frame (for a
    flow that lives inside the response and cannot be resumed).
    """

    def __init__(
        self,
        producer: Producer,
        *,
        media_type: str,
        headers: Mapping[str, str] | None = None,
        keep_alive: bytes | None = None,
        keep_alive_interval: float = 15.0,
        cut: Literal["close", "abort"] | bytes = "close",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        # Like StreamingResponse: no body attribute, so no Content-Length header.
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)
        self._producer = producer
        self._keep_alive = keep_alive
        self._keep_alive_interval = keep_alive_interval
        self._cut = cut
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._respond(scope, receive, send)
        finally:
            if self._on_close is not None:
                self._on_close()

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "HEAD":
            # Headers only, at once: a live stream must not hold the connection.
            await send(
                {"type": "http.response.start", "status": self.status_code,
                 "headers": self.raw_headers}
            )  # fmt: skip
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        lock = anyio.Lock(fast_acquire=True)
        last_write = anyio.current_time()
        finished = disconnected = aborted = False

        async def write(body: bytes, more: bool = True) -> None:
            nonlocal last_write
            async with lock:
                await send({"type": "http.response.body", "body": body, "more_body": more})
                last_write = anyio.current_time()

        async def produce() -> None:
            nonlocal finished, aborted
            try:
                await self._producer(write)
            except ResponseCut:
                if self._cut == "abort":
                    aborted = finished = True
                    tg.cancel_scope.cancel()
                    return
                if self._cut != "close":
                    await write(self._cut)
            await write(b"", more=False)
            finished = True
            tg.cancel_scope.cancel()

        async def keep_alive(payload: bytes, interval: float) -> None:
            while True:
                await anyio.sleep(max(0.0, last_write + interval - anyio.current_time()))
                if anyio.current_time() - last_write >= interval:
                    await write(payload)

        async def watch_disconnect() -> None:
            nonlocal disconnected
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    disconnected = True
                    tg.cancel_scope.cancel()
                    return

        start: Message = {
            "type": "http.response.start",
            "status": self.status_code,
            "headers": self.raw_headers,
        }
        try:
            await send(start)
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_disconnect)
                if self._keep_alive is not None:
                    tg.start_soon(keep_alive, self._keep_alive, self._keep_alive_interval)
                tg.start_soon(produce)
        except* OSError:
            disconnected = True
            logger.debug("client went away while streaming")
        finally:
            if not (finished or disconnected) and self._cut != "abort":
                # Cancelled from outside (the server's graceful-shutdown timeout): end
                # the body the way this protocol's clients read as "reconnect".
                last = b"" if self._cut == "close" else self._cut
                with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                    try:
                        await send({"type": "http.response.body", "body": last, "more_body": False})
                    except Exception:
                        logger.debug("could not send the last frame", exc_info=True)
        if aborted:
            # Returning with the body incomplete makes the server drop the connection
            # (uvicorn logs "ASGI callable returned without completing response").
            logger.debug("response cut without a terminal frame")
