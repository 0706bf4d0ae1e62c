"""Forks: where a ``PUT`` with ``Stream-Forked-From`` starts, and the copy it makes.

A fork copies the source's chunks up to the fork point (copy-on-fork, which the
protocol allows), so its reads never consult the source and it can outlive it. A
``Stream-Fork-Sub-Offset`` counts messages (JSON) or bytes (otherwise) into the one
append that starts at the fork offset.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from .catalog import DsStream
from .payload import decode_bytes, encode_bytes
from .wire import ProtocolError, base_type, is_json, parse_offset

if TYPE_CHECKING:
    from .app import DurableStreamsApp

__all__ = [
    "FORKED_FROM",
    "FORK_OFFSET",
    "FORK_SUB_OFFSET",
    "copy_prefix",
    "fork_source",
    "sub_offset_of",
]

FORKED_FROM = "Stream-Forked-From"
FORK_OFFSET = "Stream-Fork-Offset"
FORK_SUB_OFFSET = "Stream-Fork-Sub-Offset"


async def fork_source(
    app: DurableStreamsApp, request: Request, fork_of: str, owner: str | None, content_type: str
) -> tuple[DsStream, int, str]:
    """The source stream, the fork offset and the fork's content type, or an error."""
    root = request.scope.get("root_path", "").strip("/")
    source_path = fork_of.strip("/")
    if root and source_path.startswith(root + "/"):
        source_path = source_path[len(root) + 1 :]
    source = app.catalog.peek(source_path)
    if source is not None and source.owner == owner and source.soft_deleted:
        raise ProtocolError(409, "the source stream was deleted")
    source = await app.lookup(source_path, owner)
    if source is None:
        raise ProtocolError(404, "the source stream does not exist")
    raw_offset = request.headers.get(FORK_OFFSET)
    offset = source.length if raw_offset is None else parse_offset(raw_offset)
    if offset is None or offset > source.length:
        raise ProtocolError(400, "the fork offset is past the source's tail")
    if content_type and base_type(content_type) != base_type(source.settings.content_type):
        raise ProtocolError(409, "a fork keeps its source's content type")
    return source, offset, source.settings.content_type


def sub_offset_of(value: str | None, fork_of: str | None) -> int:
    if value is None:
        return 0
    if fork_of is None:
        raise ProtocolError(400, "Stream-Fork-Sub-Offset needs Stream-Forked-From")
    if not (value == "0" or (value[:1] in "123456789" and value.isascii() and value.isdigit())):
        raise ProtocolError(400, "Stream-Fork-Sub-Offset must be a non-negative integer")
    return int(value)


async def _read(app: DurableStreamsApp, stream: DsStream, start: int, end: int) -> list[bytes]:
    chunks: list[bytes] = []
    while start + len(chunks) < end:
        position = start + len(chunks)
        batch = await app.manager.storage.read(
            stream.stream_id, position, min(app.manager.read_batch, end - position)
        )
        if not batch:
            raise ProtocolError(500, "the source stream's data is missing")
        chunks += batch
    return chunks


async def copy_prefix(
    app: DurableStreamsApp, source: DsStream, fork: DsStream, offset: int, sub_offset: int
) -> None:
    """Copy the source up to ``offset`` (plus ``sub_offset`` messages or bytes of the
    append there) into the fork: copy-on-fork, so that forks outlive sources."""
    position = 0
    while position < offset:
        end = min(source.append_end(position), offset)
        await fork.append_chunks(app.manager, await _read(app, source, position, end))
        position = end
    if sub_offset == 0:
        return
    if offset >= source.length:
        raise ProtocolError(400, "Stream-Fork-Sub-Offset points past the source's tail")
    end = source.append_end(offset)
    chunks = await _read(app, source, offset, end)
    if is_json(source.settings.content_type):
        if sub_offset > len(chunks):
            raise ProtocolError(400, "Stream-Fork-Sub-Offset is past the append's messages")
        await fork.append_chunks(app.manager, chunks[:sub_offset])
        return
    data = decode_bytes(chunks)
    if sub_offset > len(data):
        raise ProtocolError(400, "Stream-Fork-Sub-Offset is past the append's bytes")
    await fork.append_chunks(app.manager, encode_bytes(data[:sub_offset]))
