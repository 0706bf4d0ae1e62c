"""Exact wire frames of the two stream protocols (golden fixtures pin them).

Genkit protocol (``POST <flow url>``): every frame ends in ``\\n\\n``; Genkit's client
drops the first six characters of a frame and parses the rest as JSON, so nothing else
may appear between frames::

    data: {"message":<chunk>}
    data: {"result":<output>}
    error: {"error":{"status":...,"message":...,"details":...}}

SSE protocol (``GET <flow url>/streams/<id>``), for ``EventSource``::

    id: <offset>            event: result            event: error
    event: chunk            data: <output>           data: {"status":...,"message":...}
    data: <chunk>

plus ``: keep-alive`` comments. The terminal events carry no ``id``. The stream of a
durable execution may also retract chunks (a step attempt that failed or was lost)::

    id: <offset of the reset entry>
    event: reset
    data: {"offset":<first retracted offset>}

A reader drops what it showed from that offset on; later chunks continue after the
reset's own ``id``. The Genkit protocol cannot say this: its frames leave resets out
(a reconnect replays only the live view, so only a reader connected while a
retraction happened can have seen retracted chunks).

A compacted stream's chunks are entries that each stand for several offsets (see
`stream_gateway.streams.compaction`): an entry carries the *last* offset it stands
for as its ``id`` (and as ``offset`` in the Genkit frames for our clients), so that a
resume after it (``Last-Event-ID`` + 1) lands on the next entry's start. A resume
inside an entry is answered ``410 Gone``: the client replays from offset 0.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._json import error_json
from ..streams.base import ChunkEvent, ErrorEvent, ResetEvent, ResultEvent, StreamEvent

__all__ = ["KEEP_ALIVE", "error_body", "genkit_frames", "genkit_frames_with_offsets", "sse_frames"]

KEEP_ALIVE = b": keep-alive\n\n"


def error_body(event: ErrorEvent) -> bytes:
    """``{"status", "message"}`` plus ``"details"`` when there are any, as JSON."""
    return error_json(event.status, event.message, event.details)


def genkit_frames(events: Iterable[StreamEvent]) -> bytes:
    """Encode events as Genkit-protocol frames, ready to send as one write."""
    parts: list[bytes] = []
    for event in events:
        if isinstance(event, ChunkEvent):
            parts += (b'data: {"message":', event.raw, b"}\n\n")
        elif isinstance(event, ResultEvent):
            parts += (b'data: {"result":', event.raw, b"}\n\n")
        elif isinstance(event, ResetEvent):
            continue  # not expressible here; see the module docstring
        else:
            parts += (b'error: {"error":', error_body(event), b"}\n\n")
    return b"".join(parts)


def genkit_frames_with_offsets(events: Iterable[StreamEvent]) -> bytes:
    """Genkit-protocol frames for our clients (request header ``x-stream-resets``):
    chunks carry their offset and resets are sent, so a reader can drop retracted
    chunks and resume exactly::

        data: {"message":<chunk>,"offset":<offset>}
        data: {"reset":<first retracted offset>,"offset":<offset of the reset entry>}
    """
    parts: list[bytes] = []
    for event in events:
        if isinstance(event, ChunkEvent):
            last = event.offset + event.span - 1
            parts += (b'data: {"message":', event.raw, b',"offset":', str(last).encode())
            parts.append(b"}\n\n")
        elif isinstance(event, ResetEvent):
            parts += (b'data: {"reset":', str(event.void_from).encode(), b',"offset":')
            parts += (str(event.offset).encode(), b"}\n\n")
        else:
            parts.append(genkit_frames([event]))
    return b"".join(parts)


def sse_frames(events: Iterable[StreamEvent]) -> bytes:
    """Encode events as standard Server-Sent Events, ready to send as one write."""
    parts: list[bytes] = []
    for event in events:
        if isinstance(event, ChunkEvent):
            last = event.offset + event.span - 1
            parts += (b"id: ", str(last).encode(), b"\nevent: chunk\ndata: ", event.raw)
        elif isinstance(event, ResultEvent):
            parts += (b"event: result\ndata: ", event.raw)
        elif isinstance(event, ResetEvent):
            parts += (
                b"id: ",
                str(event.offset).encode(),
                b'\nevent: reset\ndata: {"offset":',
                str(event.void_from).encode(),
                b"}",
            )
        else:
            parts += (b"event: error\ndata: ", error_body(event))
        parts.append(b"\n\n")
    return b"".join(parts)
