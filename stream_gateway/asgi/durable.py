"""HTTP routes for durable flows, with the stream endpoints' auth model and errors.

```
GET    /                      the durable flows with their JSON Schemas
GET    /{flow}/shape          the flow's static shape (`DurableEngine.describe`)
POST   /{flow}                schedule: {"data", "delay"?, "at"?, "idempotencyKey"?}
GET    /ops                   list the caller's: ?status=&flow=&cursor=&limit=
GET    /ops/{id}              the operation
GET    /ops/{id}/detail       the operation, its steps and its audit timeline
POST   /ops/{id}/resume       {"step", "payload"}: answer an interrupt
POST   /ops/{id}/signals/{name}  {"payload"}: send a signal (buffered, FIFO per name)
DELETE /ops/{id}              cancel (also POST /ops/{id}/cancel)
POST   /ops/{id}/evict        park a running execution now (it resumes on any worker)
POST   /ops/{id}/cleanup      delete a finished execution's state
GET    /schedules             the caller's recurring schedules: ?after=&limit=
PUT    /schedules/{id}        ensure {"flow", "data"?, "cron" | "interval", "timezone"?,
                              "overlap"?}
GET    /schedules/{id}        the schedule, with its next tick
PATCH  /schedules/{id}        update {"data"?, "cron"?, "interval"?, "timezone"?, "overlap"?}
POST   /schedules/{id}/pause  (and /resume)
DELETE /schedules/{id}        remove
```

The context provider runs on every request. An execution is owned by the hash of the
principal that scheduled it; to anyone else it does not exist (NOT_FOUND). Flow ids
are validated (length, alphabet) before they reach the store. Errors are
``{"error": {status, message, details?}}`` with the status's HTTP code; an error
that is not a user error (a bug, the store's own failure) is answered without its
text (`stream_gateway._errors.client_error`, through the one request guard `_http.guarded`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from .._errors import InvalidArgumentError, NotFoundError
from .._ids import owner_key
from ..durable._ids import validate_flow_id
from ..durable.engine import DurableEngine
from ..durable.errors import ExecutionNotFoundError, ScheduleNotFoundError
from ..durable.records import ExecutionRecord, Schedule
from ..flow import ContextProvider, RequestContext
from ._http import Handler, error_response, guarded, read_json_body

__all__ = ["durable_routes"]

logger = logging.getLogger("stream_gateway.http")


async def _anonymous(request: Request) -> RequestContext:
    return RequestContext()


def _object(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidArgumentError("request body must be a JSON object")
    return body


def _when(body: dict[str, Any]) -> dict[str, Any]:
    """``delay``/``at`` as the engine takes them (it checks their range)."""
    delay, at = body.get("delay"), body.get("at")
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise InvalidArgumentError("delay must be a non-negative number of seconds")
        return {"delay": delay}
    if at is not None:
        if isinstance(at, int | float) and not isinstance(at, bool):
            return {"at": at}
        if not isinstance(at, str):
            raise InvalidArgumentError("at must be an ISO 8601 time or POSIX seconds")
        try:
            when = datetime.fromisoformat(at.replace("Z", "+00:00"))
        except (ValueError, OverflowError):
            raise InvalidArgumentError("at must be an ISO 8601 time or POSIX seconds") from None
        if when.tzinfo is None:
            raise InvalidArgumentError("at must carry a timezone (e.g. 'Z')")
        return {"at": when}
    return {}


def _timing(body: dict[str, Any]) -> dict[str, Any]:
    """``cron``/``interval``/``timezone``/``overlap`` as the engine takes them (it
    validates their values)."""
    options: dict[str, Any] = {}
    for name, kinds in (("cron", str), ("timezone", str), ("overlap", str)):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, kinds):
                raise InvalidArgumentError(f"{name} must be a string")
            options[name] = value
    interval = body.get("interval")
    if interval is not None:
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise InvalidArgumentError("interval must be a number of seconds")
        options["interval"] = interval
    return options


class _DurableEndpoints:
    def __init__(
        self, engine: DurableEngine, context_provider: ContextProvider | None, max_body_bytes: int
    ) -> None:
        self.engine = engine
        self.authenticate = context_provider or _anonymous
        self.max_body_bytes = max_body_bytes

    def guarded(self, handler: Callable[[Request, str | None], Awaitable[Response]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            context = await self.authenticate(request)
            return await handler(request, owner_key(context.principal))

        return guarded(endpoint, "durable endpoint")

    async def owned(self, request: Request, owner: str | None) -> ExecutionRecord:
        record = await self.engine.store.get(validate_flow_id(request.path_params["id"]))
        if record.owner != owner:
            raise ExecutionNotFoundError("flow not found")
        return record

    async def describe(self, request: Request, owner: str | None) -> Response:
        flows = [
            {"name": f.name, "description": f.description, "schemas": f.schemas()}
            for f in self.engine.flows.values()
        ]
        return JSONResponse({"flows": flows})

    async def shape(self, request: Request, owner: str | None) -> Response:
        return JSONResponse(await self.engine.describe(request.path_params["flow"]))

    async def schedule(self, request: Request, owner: str | None) -> Response:
        flow = self.engine.flow(request.path_params["flow"])
        body = _object(await read_json_body(request, self.max_body_bytes))
        key = body.get("idempotencyKey", request.headers.get("idempotency-key"))
        if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 256):
            raise InvalidArgumentError("idempotencyKey must be a string of 1-256 characters")
        op = await self.engine.schedule(
            flow, body.get("data"), idempotency_key=key, owner=owner, **_when(body)
        )
        return JSONResponse(op.to_json())

    async def list(self, request: Request, owner: str | None) -> Response:
        query = request.query_params
        raw_limit = query.get("limit", "50")
        if not (raw_limit.isascii() and raw_limit.isdigit()) or len(raw_limit) > 6:
            raise InvalidArgumentError("limit must be a positive integer")
        page = await self.engine.list(
            status=query.get("status") or None,
            flow=query.get("flow") or None,
            owner=owner,
            any_owner=False,
            cursor=query.get("cursor") or None,
            limit=int(raw_limit),
        )
        return JSONResponse(
            {"operations": [op.to_json() for op in page.items], "nextCursor": page.cursor}
        )

    async def get(self, request: Request, owner: str | None) -> Response:
        record = await self.owned(request, owner)
        return JSONResponse((await self.engine.get_state(record.id)).to_json())

    async def detail(self, request: Request, owner: str | None) -> Response:
        record = await self.owned(request, owner)
        detail = await self.engine.detail(record.id)
        return JSONResponse(detail.to_json(operator=False))

    async def owned_schedule(self, request: Request, owner: str | None) -> Schedule:
        schedule = await self.engine.get_schedule(request.path_params["id"])
        if schedule.owner != owner:
            raise ScheduleNotFoundError("schedule not found")
        return schedule

    async def list_schedules(self, request: Request, owner: str | None) -> Response:
        raw_limit = request.query_params.get("limit", "50")
        if not (raw_limit.isascii() and raw_limit.isdigit()) or len(raw_limit) > 6:
            raise InvalidArgumentError("limit must be a positive integer")
        schedules = await self.engine.list_schedules(
            owner=owner,
            any_owner=False,
            after=request.query_params.get("after") or None,
            limit=int(raw_limit),
        )
        return JSONResponse({"schedules": [s.to_json() for s in schedules]})

    async def ensure_schedule(self, request: Request, owner: str | None) -> Response:
        body = _object(await read_json_body(request, self.max_body_bytes))
        flow = body.get("flow")
        if not isinstance(flow, str):
            raise InvalidArgumentError('body must name the flow: {"flow", "data", "cron"}')
        schedule = await self.engine.ensure_schedule(
            flow,
            body.get("data"),
            id=request.path_params["id"],
            owner=owner,
            **_timing(body),
        )
        return JSONResponse(schedule.to_json())

    async def get_schedule(self, request: Request, owner: str | None) -> Response:
        return JSONResponse((await self.owned_schedule(request, owner)).to_json())

    async def update_schedule(self, request: Request, owner: str | None) -> Response:
        schedule = await self.owned_schedule(request, owner)
        body = _object(await read_json_body(request, self.max_body_bytes))
        options = _timing(body)
        if "data" in body:
            options["input"] = body["data"]
        updated = await self.engine.update_schedule(schedule.id, **options)
        return JSONResponse(updated.to_json())

    async def pause_schedule(self, request: Request, owner: str | None) -> Response:
        schedule = await self.owned_schedule(request, owner)
        return JSONResponse((await self.engine.pause_schedule(schedule.id)).to_json())

    async def resume_schedule(self, request: Request, owner: str | None) -> Response:
        schedule = await self.owned_schedule(request, owner)
        return JSONResponse((await self.engine.resume_schedule(schedule.id)).to_json())

    async def remove_schedule(self, request: Request, owner: str | None) -> Response:
        schedule = await self.owned_schedule(request, owner)
        await self.engine.remove_schedule(schedule.id)
        return JSONResponse({"id": schedule.id, "deleted": True})

    async def resume(self, request: Request, owner: str | None) -> Response:
        record = await self.owned(request, owner)
        body = _object(await read_json_body(request, self.max_body_bytes))
        step = body.get("step")
        if not isinstance(step, str) or not step:
            raise InvalidArgumentError('body must name the step: {"step", "payload"}')
        op = await self.engine.resume(record.id, step, body.get("payload"))
        return JSONResponse(op.to_json())

    async def signal(self, request: Request, owner: str | None) -> Response:
        record = await self.owned(request, owner)
        body = _object(await read_json_body(request, self.max_body_bytes))
        op = await self.engine.signal(record.id, request.path_params["name"], body.get("payload"))
        return JSONResponse(op.to_json())

    async def cancel(self, request: Request, owner: str | None) -> Response:
        record = await self.owned(request, owner)
        return JSONResponse((await self.engine.cancel(record.id)).to_json())

    async def evict(self, request: Request, owner: str | None) -> Response:
        record = await self.owned(request, owner)
        return JSONResponse((await self.engine.evict(record.id)).to_json())

    async def cleanup(self, request: Request, owner: str | None) -> Response:
        record = await self.owned(request, owner)
        await self.engine.cleanup(record.id)
        return JSONResponse({"name": record.id, "deleted": True})


def durable_routes(
    engine: DurableEngine,
    *,
    context_provider: ContextProvider | None = None,
    max_body_bytes: int = 1024 * 1024,
) -> Router:
    """A Starlette `Router` serving ``engine``'s flows; mount it anywhere.

    It does not run a worker: run ``engine.worker()`` in the host app's lifespan (or
    a ``stream-gateway-worker`` process on the same store).
    """
    e = _DurableEndpoints(engine, context_provider, max_body_bytes)

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(NotFoundError("no such route"))(scope, receive, send)

    return Router(
        default=not_found,
        routes=[
            Route("/", e.guarded(e.describe), methods=["GET"]),
            Route("/ops", e.guarded(e.list), methods=["GET"]),
            Route("/ops/{id}", e.guarded(e.get), methods=["GET"]),
            Route("/ops/{id}", e.guarded(e.cancel), methods=["DELETE"]),
            Route("/ops/{id}/detail", e.guarded(e.detail), methods=["GET"]),
            Route("/ops/{id}/cancel", e.guarded(e.cancel), methods=["POST"]),
            Route("/ops/{id}/evict", e.guarded(e.evict), methods=["POST"]),
            Route("/ops/{id}/resume", e.guarded(e.resume), methods=["POST"]),
            Route("/ops/{id}/signals/{name}", e.guarded(e.signal), methods=["POST"]),
            Route("/ops/{id}/cleanup", e.guarded(e.cleanup), methods=["POST"]),
            Route("/schedules", e.guarded(e.list_schedules), methods=["GET"]),
            Route("/schedules/{id}", e.guarded(e.ensure_schedule), methods=["PUT"]),
            Route("/schedules/{id}", e.guarded(e.get_schedule), methods=["GET"]),
            Route("/schedules/{id}", e.guarded(e.update_schedule), methods=["PATCH"]),
            Route("/schedules/{id}", e.guarded(e.remove_schedule), methods=["DELETE"]),
            Route("/schedules/{id}/pause", e.guarded(e.pause_schedule), methods=["POST"]),
            Route("/schedules/{id}/resume", e.guarded(e.resume_schedule), methods=["POST"]),
            Route("/{flow}", e.guarded(e.schedule), methods=["POST"]),
            Route("/{flow}/shape", e.guarded(e.shape), methods=["GET"]),
        ],
    )
