"""Serving one ``text/event-stream`` response from a :class:`~.hub.Listener`'s queue."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from .hub import KEEP_ALIVE, Hub, Listener, Message

AsgiMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[AsgiMessage]]
Send = Callable[[AsgiMessage], Awaitable[None]]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"access-control-allow-origin", b"*"),
]
_MAX_BATCH = 256


class StreamDropped(Exception):
    """Raised to make the ASGI server abort a stream's connection (``/.standin/drop-streams``).

    The server closes the socket without ending the chunked body, as a dropped connection
    would; ``main()`` keeps this expected exception out of the server log.
    """


async def _wait_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


def _next_batch(listener: Listener, first: Message) -> tuple[bytes, Message | None]:
    """``first`` plus whatever else is already queued, up to the next ``final``/``drop``."""
    chunks = [first.data]
    ending = first if first.final or first.drop else None
    while ending is None and len(chunks) < _MAX_BATCH:
        try:
            message = listener.inbox.receive_nowait()
        except anyio.WouldBlock:
            break
        except anyio.EndOfStream:
            ending = Message(final=True)
            break
        chunks.append(message.data)
        if message.final or message.drop:
            ending = message
    return b"".join(chunks), ending


async def _pump(listener: Listener, send: Send, keepalive: float) -> bool:
    """Send queued events, and a keep-alive every ``keepalive`` seconds, until the stream ends.

    Returns ``True`` when the stream was dropped.
    """
    next_keepalive = anyio.current_time() + keepalive
    while True:
        first: Message | None = None
        with anyio.move_on_after(next_keepalive - anyio.current_time()):
            try:
                first = await listener.inbox.receive()
            except anyio.EndOfStream:
                first = Message(final=True)
        if first is None:
            next_keepalive = max(next_keepalive + keepalive, anyio.current_time())
            await send({"type": "http.response.body", "body": KEEP_ALIVE, "more_body": True})
            continue
        data, ending = _next_batch(listener, first)
        if ending is not None and ending.drop:
            return True
        await send({"type": "http.response.body", "body": data, "more_body": ending is None})
        if ending is not None:
            return False


async def serve_stream(
    listener: Listener, hub: Hub, receive: Receive, send: Send, keepalive: float
) -> None:
    """Stream ``listener``'s events until it is finished, dropped, or the client leaves."""
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    dropped = False
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_wait_disconnect, receive, group.cancel_scope)
            dropped = await _pump(listener, send, keepalive)
            group.cancel_scope.cancel()
    finally:
        hub.remove(listener)
        listener.inbox.close()
    if dropped:
        raise StreamDropped
