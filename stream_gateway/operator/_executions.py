"""The operator API over a `DurableEngine`: every owner's executions and schedules.

```
GET  /flows                       the durable flows with their JSON Schemas
GET  /flows/{flow}/shape          the flow's static shape (`DurableEngine.describe`)
GET  /executions                  ?status=&flow=&owner=&principal=&cursor=&limit=
GET  /executions/{id}             detail: operation, owner, steps, timeline (errors
                                  unredacted), and what it waits on (with a schema)
POST /executions/{id}/cancel      (also /recover, /wake)
POST /executions/{id}/resume      {"step", "payload"}
POST /executions/{id}/signals/{name}  {"payload"}
GET  /schedules                   ?after=&limit=
POST /schedules/{id}/pause        (and /resume)
```
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._errors import InvalidArgumentError
from .._ids import owner_key
from ..asgi._http import read_json_body
from ..durable._ids import validate_flow_id
from ..durable.engine import DurableEngine
from ..durable.records import STATUSES, ExecutionRecord, Operation
from ._common import limit_param, object_body

__all__ = ["ExecutionEndpoints"]

_MAX_LIMIT = 1000


def execution_json(record: ExecutionRecord) -> dict[str, Any]:
    """An execution as the operator sees it: the operation plus owner and parent."""
    body = Operation.from_record(record).to_json()
    body["owner"] = record.owner
    body["parent"] = record.parent
    if record.error is not None:
        body["error"] = record.error  # the stored error, operator part included
    return body


class ExecutionEndpoints:
    """Handlers for the durable part of the operator API (see the module)."""

    def __init__(self, engine: DurableEngine, max_body_bytes: int) -> None:
        self.engine = engine
        self.max_body_bytes = max_body_bytes

    async def flows(self, request: Request) -> Response:
        flows = [
            {"name": f.name, "description": f.description, "schemas": f.schemas()}
            for f in self.engine.flows.values()
        ]
        return JSONResponse({"flows": flows})

    async def shape(self, request: Request) -> Response:
        return JSONResponse(await self.engine.describe(request.path_params["flow"]))

    async def executions(self, request: Request) -> Response:
        query = request.query_params
        status = query.get("status") or None
        if status is not None and status not in STATUSES:
            raise InvalidArgumentError(f"unknown status; expected one of {sorted(STATUSES)}")
        owner = query.get("owner") or None
        principal = query.get("principal") or None
        if owner is not None and principal is not None:
            raise InvalidArgumentError("filter by owner (its hash) or principal, not both")
        if principal is not None:
            owner = owner_key(principal)
        cursor = query.get("cursor") or None
        if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
            raise InvalidArgumentError("malformed cursor")
        limit = limit_param(request, _MAX_LIMIT)
        records = await self.engine.store.list_executions(
            status=status,  # type: ignore[arg-type]
            flow=query.get("flow") or None,
            owner=owner,
            any_owner=owner is None,
            after=int(cursor) if cursor is not None else None,
            limit=limit,
        )
        next_cursor = str(records[-1].seq) if len(records) == limit else None
        return JSONResponse(
            {"executions": [execution_json(r) for r in records], "nextCursor": next_cursor}
        )

    async def detail(self, request: Request) -> Response:
        flow_id = validate_flow_id(request.path_params["id"])
        record = await self.engine.store.get(flow_id)
        detail = (await self.engine.detail(flow_id)).to_json(operator=True)
        detail["execution"] = execution_json(record)
        detail["waiting"] = await self._waiting(record)
        return JSONResponse(detail)

    async def _waiting(self, record: ExecutionRecord) -> dict[str, Any] | None:
        """What a waiting execution waits on, with the JSON Schema of its payload when
        the replay reaches it (an interrupt) or the flow's shape names it (a signal)."""
        step = record.blocked_on
        if record.status != "waiting" or step is None:
            return None
        from ..durable._driver import probe

        try:
            codec = await probe(self.engine, record, step)
        except LookupError:
            pass
        else:
            return {"step": step, "kind": "interrupt", "schema": codec.json_schema()}
        signals = await self._signals(record.flow)
        return {"step": step, "kind": "signal", "signals": signals}

    async def _signals(self, flow: str) -> list[dict[str, Any]]:
        """The signals the flow's shape waits for, with their schemas."""
        if flow not in self.engine.flows:
            return []
        found: list[dict[str, Any]] = []

        def walk(nodes: list[Any]) -> None:
            for node in nodes:
                if node.get("type") == "signal":
                    found.append({"signal": node["signal"], "schema": node.get("schema")})
                elif node.get("type") == "messages":
                    found.extend({"signal": s, "schema": None} for s in node["signals"])
                for key in ("body",):
                    if isinstance(node.get(key), list):
                        walk(node[key])
                for branch in (node.get("branches") or {}).values():
                    walk(branch)

        walk((await self.engine.describe(flow))["nodes"])
        unique: dict[str, dict[str, Any]] = {}
        for item in found:
            unique.setdefault(item["signal"], item)
        return list(unique.values())

    async def cancel(self, request: Request) -> Response:
        return await self._act(request, self.engine.cancel)

    async def recover(self, request: Request) -> Response:
        return await self._act(request, self.engine.recover)

    async def wake(self, request: Request) -> Response:
        return await self._act(request, self.engine.wake)

    async def _act(self, request: Request, action: Any) -> Response:
        flow_id = validate_flow_id(request.path_params["id"])
        await self.engine.store.get(flow_id)  # NOT_FOUND for an unknown id
        op: Operation = await action(flow_id)
        return JSONResponse(op.to_json())

    async def resume(self, request: Request) -> Response:
        body = object_body(await read_json_body(request, self.max_body_bytes))
        step = body.get("step")
        if not isinstance(step, str) or not step:
            raise InvalidArgumentError('body must name the step: {"step", "payload"}')
        op = await self.engine.resume(request.path_params["id"], step, body.get("payload"))
        return JSONResponse(op.to_json())

    async def signal(self, request: Request) -> Response:
        flow_id = validate_flow_id(request.path_params["id"])
        await self.engine.store.get(flow_id)
        body = object_body(await read_json_body(request, self.max_body_bytes))
        op = await self.engine.signal(flow_id, request.path_params["name"], body.get("payload"))
        return JSONResponse(op.to_json())

    async def schedules(self, request: Request) -> Response:
        schedules = await self.engine.list_schedules(
            any_owner=True,
            after=request.query_params.get("after") or None,
            limit=limit_param(request, _MAX_LIMIT),
        )
        return JSONResponse({"schedules": [{**s.to_json(), "owner": s.owner} for s in schedules]})

    async def pause_schedule(self, request: Request) -> Response:
        schedule = await self.engine.pause_schedule(request.path_params["id"])
        return JSONResponse({**schedule.to_json(), "owner": schedule.owner})

    async def resume_schedule(self, request: Request) -> Response:
        schedule = await self.engine.resume_schedule(request.path_params["id"])
        return JSONResponse({**schedule.to_json(), "owner": schedule.owner})
