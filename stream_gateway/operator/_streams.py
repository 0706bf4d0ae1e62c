"""The operator API over a `StreamManager`: every owner's streams, live.

```
GET  /streams                     ?status=&flow=&owner=&principal=&cursor=&limit=
GET  /streams/{id}                the stream's record (no chunks)
GET  /streams/{id}/tail           ?offset=N: Server-Sent Events as on the gateway's SSE
                                  endpoint (chunks from N, live ones, the end)
POST /streams/{id}/cancel         cancel its flow
POST /streams/{id}/stop           ask its flow to finish now with its partial result
```
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._errors import InvalidArgumentError, UnavailableError
from .._ids import owner_key, validate_stream_id
from ..asgi._http import FrameResponse, ResponseCut, Write, client_safe
from ..asgi.frames import KEEP_ALIVE, sse_frames
from ..durable.records import _iso
from ..streams.base import ErrorEvent, StreamRecord
from ..streams.manager import StreamManager
from ._common import limit_param

__all__ = ["StreamEndpoints", "stream_json"]

_STATUSES = ("open", "done", "error", "cancelled")


def stream_json(record: StreamRecord, abandoned: bool) -> dict[str, Any]:
    """A stream's record as the operator sees it."""
    body: dict[str, Any] = {
        "id": record.stream_id,
        "flow": record.flow,
        "status": record.status,
        "length": record.length,
        "owner": record.owner,
        "abandoned": abandoned,
        "createdAt": _iso(record.created_at),
        "updatedAt": _iso(record.updated_at),
        "expiresAt": _iso(record.expires_at),
        "leaseUntil": _iso(record.lease_until),
        "cancelRequested": record.cancel_requested,
        "stopRequested": record.stop_requested,
    }
    return body


class StreamEndpoints:
    """Handlers for the streams part of the operator API (see the module)."""

    def __init__(self, manager: StreamManager, keep_alive_interval: float) -> None:
        self.manager = manager
        self.keep_alive_interval = keep_alive_interval

    async def streams(self, request: Request) -> Response:
        query = request.query_params
        status = query.get("status") or None
        if status is not None and status not in _STATUSES:
            raise InvalidArgumentError(f"unknown status; expected one of {list(_STATUSES)}")
        owner = query.get("owner") or None
        principal = query.get("principal") or None
        if owner is not None and principal is not None:
            raise InvalidArgumentError("filter by owner (its hash) or principal, not both")
        if principal is not None:
            owner = owner_key(principal)
        page = await self.manager.list_streams(
            status=status,  # type: ignore[arg-type]
            flow=query.get("flow") or None,
            owner=owner,
            cursor=query.get("cursor") or None,
            limit=limit_param(request, 1000),
        )
        streams = [stream_json(r, self.manager.is_abandoned(r)) for r in page.records]
        return JSONResponse({"streams": streams, "nextCursor": page.next_cursor})

    async def info(self, request: Request) -> Response:
        record = await self.manager.info(request.path_params["id"])
        return JSONResponse(stream_json(record, self.manager.is_abandoned(record)))

    async def cancel(self, request: Request) -> Response:
        stream_id = request.path_params["id"]
        requested = await self.manager.cancel(stream_id)
        return JSONResponse({"id": stream_id, "requested": requested})

    async def stop(self, request: Request) -> Response:
        stream_id = request.path_params["id"]
        requested = await self.manager.stop(stream_id)
        return JSONResponse({"id": stream_id, "requested": requested})

    async def tail(self, request: Request) -> Response:
        stream_id = validate_stream_id(request.path_params["id"])
        raw = request.query_params.get("offset", "0")
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
            raise InvalidArgumentError("offset must be a non-negative integer")
        offset = int(raw)
        await self.manager.info(stream_id)  # NOT_FOUND now, as JSON, not as a frame

        async def produce(write: Write) -> None:
            try:
                async with aclosing(self.manager.subscribe_batches(stream_id, offset)) as batches:
                    async for events in batches:
                        await write(sse_frames(events))
            except UnavailableError as exc:
                raise ResponseCut from exc  # this process stopped following: reconnect
            except Exception as exc:
                error = client_safe(exc, "operator tail")
                await write(sse_frames([ErrorEvent(error.status, error.message, error.details)]))

        return FrameResponse(
            produce,
            media_type="text/event-stream; charset=utf-8",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            keep_alive=KEEP_ALIVE,
            keep_alive_interval=self.keep_alive_interval,
            cut="close",
        )
