"""``PUT`` (create or fork), ``POST`` (append, close) and ``DELETE``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ..._errors import GatewayError
from ...streams.manager import KEEP_AS_WRITTEN
from .catalog import DsStream, Producer, Settings
from .forks import (
    FORK_SUB_OFFSET,
    FORKED_FROM,
    copy_prefix,
    fork_source,
    sub_offset_of,
)
from .payload import encode_bytes, json_messages
from .wire import (
    CLOSED,
    DS_FLOW,
    EXPIRES_AT,
    NEXT_OFFSET,
    PRODUCER_EPOCH,
    PRODUCER_ID,
    PRODUCER_SEQ,
    SEQ,
    TTL,
    ProtocolError,
    base_type,
    format_offset,
    is_json,
    parse_count,
    parse_expires_at,
    parse_ttl,
    protocol_response,
    wants_close,
)

if TYPE_CHECKING:
    from .app import DurableStreamsApp

__all__ = ["append", "create", "delete"]

_DRAIN_BYTES = 64 * 1024 * 1024


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, or 413 past ``limit`` bytes.

    A body that is too large is still read (and dropped) up to ``_DRAIN_BYTES``, so
    that the client, still sending, gets the 413 instead of a reset connection.
    """
    body = bytearray()
    received = 0
    try:
        async for part in request.stream():
            received += len(part)
            if received <= limit:
                body += part
            elif received > _DRAIN_BYTES:
                break
    except ClientDisconnect:
        raise ProtocolError(400, "request body was cut off") from None
    if received > limit:
        raise ProtocolError(413, f"body exceeds {limit} bytes")
    return bytes(body)


def state_headers(stream: DsStream) -> dict[str, str]:
    """``Stream-Next-Offset`` and, once closed, ``Stream-Closed``."""
    headers = {NEXT_OFFSET: format_offset(stream.length)}
    if stream.closed:
        headers[CLOSED] = "true"
    return headers


def _chunks(content_type: str, body: bytes, *, creating: bool) -> list[bytes]:
    if is_json(content_type):
        return json_messages(body, allow_empty=creating) if body else []
    return encode_bytes(body)


async def create(
    app: DurableStreamsApp, request: Request, path: str, owner: str | None
) -> Response:
    """``PUT``: create the stream, or confirm one with the same settings (200)."""
    headers = request.headers
    ttl = parse_ttl(headers.get(TTL))
    expires_text = headers.get(EXPIRES_AT)
    expires_at = parse_expires_at(expires_text)
    if ttl is not None and expires_at is not None:
        raise ProtocolError(400, "give Stream-TTL or Stream-Expires-At, not both")
    content_type = headers.get("content-type") or ""
    if content_type and "/" not in base_type(content_type):
        raise ProtocolError(400, "malformed Content-Type")
    close = wants_close(headers.get(CLOSED))
    body = await read_body(request, app.max_body_bytes)
    async with app.create_lock:
        fork_of = headers.get(FORKED_FROM)
        source = None
        fork_offset: int | None = None
        sub_offset = sub_offset_of(headers.get(FORK_SUB_OFFSET), fork_of)
        if fork_of is not None:
            source, fork_offset, content_type = await fork_source(
                app, request, fork_of, owner, content_type
            )
            if source.settings.ttl is not None and ttl is None and expires_at is None:
                ttl = source.settings.ttl
            elif source.settings.expires_at is not None and ttl is None and expires_at is None:
                expires_text, expires_at = (
                    source.settings.expires_at_text,
                    source.settings.expires_at,
                )
        settings = Settings(
            content_type or "application/octet-stream",
            ttl,
            expires_text,
            expires_at,
            fork_of=None if source is None else source.path,
            fork_offset=fork_offset,
            fork_sub_offset=sub_offset,
        )
        existing = app.catalog.peek(path)
        if existing is not None and existing.owner == owner:
            if existing.soft_deleted:
                raise ProtocolError(409, "a deleted stream still in use by forks has this path")
            existing = await app.lookup(path, owner)
        if existing is not None:
            if existing.settings.matches(settings) and existing.closed == close:
                return _created(existing, 200, request)
            raise ProtocolError(409, "a stream with other settings exists at this path")
        if app.catalog.peek(path) is not None or await app.flow_view(path, owner) is not None:
            raise ProtocolError(409, "this path is taken")
        chunks = _chunks(settings.content_type, body, creating=True)
        # Never compacted: messages are not text deltas, and forks refer to offsets.
        writer = await app.manager.open(flow=DS_FLOW, owner=owner, extra={KEEP_AS_WRITTEN: True})
        now = app.manager.clock()
        stream = DsStream(path, writer, settings, owner, now, source=source)
        try:
            if source is not None:
                assert fork_offset is not None
                await copy_prefix(app, source, stream, fork_offset, sub_offset)
            await stream.append_chunks(app.manager, chunks)
            if close:
                stream.closed = True
                await writer.done(None)
        except BaseException:
            if not writer.closed:
                # Shielded: a create cancelled mid-way (a shutdown) must still end
                # its chunks, or their writer would renew its lease forever.
                with anyio.CancelScope(shield=True):
                    await writer.cancelled("stream creation failed")
            raise
        app.catalog.add(stream)
    return _created(stream, 201, request)


def _created(stream: DsStream, status: int, request: Request) -> Response:
    headers = {
        **state_headers(stream),
        "Content-Type": stream.settings.content_type,
    }
    if status == 201:
        headers["Location"] = str(request.url)
    return protocol_response(b"", status, headers, None)


async def append(
    app: DurableStreamsApp, request: Request, path: str, owner: str | None
) -> Response:
    """``POST``: append (and maybe close), deduplicating idempotent producers."""
    headers = request.headers
    close = wants_close(headers.get(CLOSED))
    producer = _producer(request)
    seq = headers.get(SEQ)
    body = await read_body(request, app.max_body_bytes)
    stream = await app.lookup(path, owner)
    if stream is None:
        if await app.flow_view(path, owner) is not None:
            raise ProtocolError(405, "a flow's stream is read-only")
        raise ProtocolError(404, "no such stream")
    if not body and not close:
        raise ProtocolError(400, "an append needs a body")
    async with stream.lock:
        if stream.closed:
            if body and producer is not None and producer == stream.closed_by:
                return _appended(stream, 204, producer)
            if not body:
                return _appended(stream, 204, None)
            raise ProtocolError(409, "the stream is closed", state_headers(stream))
        chunks: list[bytes] = []
        if body:
            content_type = headers.get("content-type")
            if not content_type:
                raise ProtocolError(400, "an append with a body needs a Content-Type")
            if base_type(content_type) != base_type(stream.settings.content_type):
                raise ProtocolError(409, "Content-Type differs from the stream's")
            chunks = _chunks(stream.settings.content_type, body, creating=False)
        if producer is not None:
            producer_id, epoch, producer_seq = producer
            if stream.check_producer(producer_id, epoch, producer_seq) == "dup":
                state = stream.producers[producer_id]
                return _appended(stream, 204, (producer_id, state.epoch, state.seq))
        if seq is not None and stream.last_seq is not None and seq <= stream.last_seq:
            raise ProtocolError(409, "Stream-Seq must increase")
        await stream.append_chunks(app.manager, chunks)
        if close:
            stream.closed = True
            stream.closed_by = producer
            try:
                await stream.writer.done(None)
            except GatewayError as exc:
                raise ProtocolError(500, exc.message) from None
        if producer is not None:
            stream.producers[producer[0]] = Producer(producer[1], producer[2])
        if seq is not None:
            stream.last_seq = seq
        stream.last_access = app.manager.clock()
    return _appended(stream, 200 if producer is not None and chunks else 204, producer)


def _producer(request: Request) -> tuple[str, int, int] | None:
    values = [request.headers.get(h) for h in (PRODUCER_ID, PRODUCER_EPOCH, PRODUCER_SEQ)]
    if all(v is None for v in values):
        return None
    producer_id, epoch, seq = values
    if producer_id is None or epoch is None or seq is None:
        raise ProtocolError(400, "Producer-Id, Producer-Epoch and Producer-Seq go together")
    if not producer_id:
        raise ProtocolError(400, "Producer-Id must not be empty")
    return producer_id, parse_count(epoch, PRODUCER_EPOCH), parse_count(seq, PRODUCER_SEQ)


def _appended(stream: DsStream, status: int, producer: tuple[str, int, int] | None) -> Response:
    headers = state_headers(stream)
    if producer is not None:
        headers[PRODUCER_EPOCH] = str(producer[1])
        headers[PRODUCER_SEQ] = str(producer[2])
    return protocol_response(b"", status, headers, None)


async def delete(app: DurableStreamsApp, path: str, owner: str | None) -> Response:
    """``DELETE``: remove the stream (soft-delete it while forks read from it)."""
    stream = await app.lookup(path, owner)
    if stream is None:
        if await app.flow_view(path, owner) is not None:
            raise ProtocolError(405, "a flow's stream is read-only: cancel it through its flow")
        raise ProtocolError(404, "no such stream")
    async with stream.lock:  # not in the middle of an append
        await app.drop(stream)
    return protocol_response(b"", 204, {}, None)
