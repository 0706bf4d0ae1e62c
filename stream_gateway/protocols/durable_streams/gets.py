"""``HEAD`` and ``GET``: metadata, catch-up reads, long-poll and SSE."""

from __future__ import annotations

import base64
from contextlib import aclosing
from typing import TYPE_CHECKING

import anyio
from starlette.requests import Request
from starlette.responses import Response

from ..._errors import StreamCompactedError
from ..._json import dumps
from ...asgi._http import FrameResponse, Write
from .reads import Page, StreamView
from .wire import (
    CLOSED,
    CURSOR,
    EXPIRES_AT,
    NEXT_OFFSET,
    SECURITY_HEADERS,
    TTL,
    UP_TO_DATE,
    ProtocolError,
    format_offset,
    is_text,
    next_cursor,
    parse_offset,
    protocol_response,
)

if TYPE_CHECKING:
    from .app import DurableStreamsApp
    from .catalog import DsStream

__all__ = ["head", "read"]

_CACHEABLE = "private, max-age=60, stale-while-revalidate=300"
_KEEP_ALIVE = b": keep-alive\n\n"


async def _resolve(
    app: DurableStreamsApp, path: str, owner: str | None
) -> tuple[StreamView, DsStream | None]:
    stream = await app.lookup(path, owner)
    if stream is not None:
        return app.view(stream), stream
    view = await app.flow_view(path, owner)
    if view is None:
        raise ProtocolError(404, "no such stream")
    return view, None


async def head(app: DurableStreamsApp, path: str, owner: str | None) -> Response:
    """``HEAD``: content type, tail offset, TTL or expiry, and closure."""
    view, stream = await _resolve(app, path, owner)
    tail = await view.tail()
    headers = {
        "Content-Type": view.content_type,
        NEXT_OFFSET: format_offset(tail.offset),
        "Cache-Control": "no-store",
    }
    if tail.closed:
        headers[CLOSED] = "true"
    if stream is not None and stream.settings.ttl is not None:
        headers[TTL] = str(stream.settings.ttl)
    if stream is not None and stream.settings.expires_at_text is not None:
        headers[EXPIRES_AT] = stream.settings.expires_at_text
    return protocol_response(b"", 200, headers, None)


async def read(app: DurableStreamsApp, request: Request, path: str, owner: str | None) -> Response:
    """``GET``: a catch-up page, or a long-poll, or an SSE response."""
    offsets = request.query_params.getlist("offset")
    if len(offsets) > 1:
        raise ProtocolError(400, "give one offset")
    offset = parse_offset(offsets[0] if offsets else None)
    live = request.query_params.get("live")
    if live not in (None, "long-poll", "sse"):
        raise ProtocolError(400, "live must be long-poll or sse")
    if live is not None and not offsets:
        raise ProtocolError(400, "a live read needs an offset")
    view, stream = await _resolve(app, path, owner)
    if stream is not None:
        stream.last_access = app.manager.clock()  # a read resets a sliding TTL
    tail = await view.tail()
    if offset is not None and offset > tail.offset:
        raise ProtocolError(400, "offset is past the stream's tail")
    if offset is not None and view.flow:
        await view.check_resume(offset)  # 410 inside a compacted range
    cursor = next_cursor(request.query_params.get("cursor"))
    if live == "sse":
        return _sse(app, view, tail.offset if offset is None else offset, cursor)
    if offset is None:
        headers = {NEXT_OFFSET: format_offset(tail.offset), UP_TO_DATE: "true"}
        headers["Cache-Control"] = "no-store"
        if tail.closed:
            headers[CLOSED] = "true"
        elif live is not None:
            headers[CURSOR] = cursor
        if live is None or tail.closed:
            body = b"[]" if view.json else b""
            return protocol_response(body, 200 if live is None else 204, headers, view.content_type)
        offset = tail.offset
    if live == "long-poll" and offset >= tail.offset and not tail.closed:
        page = await _wait(app, view, offset)
        if page is None:
            headers = {NEXT_OFFSET: format_offset(offset), UP_TO_DATE: "true", CURSOR: cursor}
            return protocol_response(b"", 204, headers, None)
    else:
        page = await view.read(offset)
    if live == "long-poll" and page.empty:
        return protocol_response(b"", 204, _page_headers(page, cursor), None)
    headers = _page_headers(page, cursor if live is not None or not page.closed else None)
    etag = f'"{view.stream_id}:{page.start}:{page.next_offset}{":c" if page.closed else ""}"'
    headers["ETag"] = etag
    headers["Cache-Control"] = _CACHEABLE
    if request.headers.get("if-none-match") == etag:
        return protocol_response(b"", 304, headers, None)
    return protocol_response(page.body, 200, headers, view.content_type)


def _page_headers(page: Page, cursor: str | None) -> dict[str, str]:
    headers = {NEXT_OFFSET: format_offset(page.next_offset)}
    if page.up_to_date:
        headers[UP_TO_DATE] = "true"
    if page.closed:
        headers[CLOSED] = "true"
    elif cursor is not None:
        headers[CURSOR] = cursor
    return headers


async def _wait(app: DurableStreamsApp, view: StreamView, offset: int) -> Page | None:
    """The first page past ``offset`` within the long-poll timeout, or ``None``."""
    with anyio.move_on_after(app.long_poll_timeout):
        async with aclosing(view.follow(offset)) as pages:
            async for page in pages:
                if not page.empty or page.closed:
                    return page
    return None


def _sse(app: DurableStreamsApp, view: StreamView, offset: int, cursor: str) -> Response:
    text = is_text(view.content_type)

    async def produce(write: Write) -> None:
        with anyio.move_on_after(app.sse_duration):
            tail = await view.tail()
            if offset >= tail.offset:
                await write(_control(tail.offset, cursor, True, tail.closed))
                if tail.closed:
                    return
            try:
                async with aclosing(view.follow(offset)) as following:
                    async for page in following:
                        frames = b""
                        if not page.empty:
                            frames = _data_event(page.body, text)
                        frames += _control(page.next_offset, cursor, page.up_to_date, page.closed)
                        await write(frames)
                        if page.closed:
                            return
            except StreamCompactedError:
                # Compacted while we replayed it: end here; the client comes back from
                # its last offset and gets 410, and replays from the start.
                return

    headers = {
        **SECURITY_HEADERS,
        # Set here, or Starlette would add "; charset=utf-8", which strict clients refuse.
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    }
    if not text:
        headers["Stream-SSE-Data-Encoding"] = "base64"
    return FrameResponse(
        produce,
        media_type="text/event-stream",
        headers=headers,
        keep_alive=_KEEP_ALIVE,
        keep_alive_interval=app.keep_alive_interval,
    )


def _data_event(body: bytes, text: bool) -> bytes:
    payload = body if text else base64.b64encode(body)
    lines = payload.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    # "data:" then the line; a line that starts with a space gets one more, which
    # the client's parser strips.
    return (
        b"event: data\n"
        + b"".join(
            b"data: " + line + b"\n" if line[:1] == b" " else b"data:" + line + b"\n"
            for line in lines
        )
        + b"\n"
    )


def _control(offset: int, cursor: str, up_to_date: bool, closed: bool) -> bytes:
    control: dict[str, object] = {"streamNextOffset": format_offset(offset)}
    if closed:
        control["streamClosed"] = True
        control["upToDate"] = True
    else:
        control["streamCursor"] = cursor
        if up_to_date:
            control["upToDate"] = True
    return b"event: control\ndata:" + dumps(control) + b"\n\n"
