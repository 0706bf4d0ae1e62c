"""The flow endpoints of a streaming durable flow (``chunk=``): the same two wire
protocols as a plain flow, over the execution's stream.

``POST <flow url>`` schedules an execution and follows its stream (Genkit frames);
its stream id is the execution id (``x-genkit-stream-id`` and ``x-execution-id`` both
carry it); ``Idempotency-Key`` makes a repeated start follow the first execution.
Reconnect, ``GET .../streams/{id}`` (SSE, with ``event: reset``) and the rest work as
for plain flows; ``DELETE`` cancels the execution; ``POST .../stop`` asks it to
finish now (`DurableEngine.stop`: the flow sees ``ctx.stop_requested`` at its next
durable call, and the stream ends with the result it returns).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .._errors import InvalidArgumentError, error_from_status
from .._ids import owner_key, validate_stream_id
from ..durable.definition import DurableFlow
from ..durable.engine import DurableEngine
from ..streams.base import ResultEvent
from ._http import error_response, read_json_body
from ._idempotency import IDEMPOTENCY_HEADER
from .conversations import CONVERSATION_HEADER
from .endpoints import STREAM_ID_HEADER, FlowEndpoints, GatewaySettings, _wants_stream

__all__ = ["EXECUTION_ID_HEADER", "DurableFlowEndpoints"]

logger = logging.getLogger("stream_gateway.http")

#: The response header of ``POST <flow url>`` naming the execution (its id is the stream's).
EXECUTION_ID_HEADER = "x-execution-id"


class DurableFlowEndpoints(FlowEndpoints):
    """Serves one streaming durable flow; see the module docstring."""

    def __init__(
        self, flow: DurableFlow[Any, Any], settings: GatewaySettings, engine: DurableEngine
    ) -> None:
        super().__init__(flow, settings)  # type: ignore[arg-type]
        self.durable_flow = flow
        self.engine = engine

    async def _post(self, request: Request) -> Response:
        context = await self._authenticate(request)
        stream_id = request.headers.get(STREAM_ID_HEADER)
        if stream_id is not None:
            return await self._reconnect(request, context, stream_id)
        body = await read_json_body(request, self.settings.max_body_bytes)
        if request.headers.get(CONVERSATION_HEADER) or (
            isinstance(body, dict) and "conversation" in body
        ):
            raise InvalidArgumentError(
                "conversations are for plain flows: a durable flow's execution is its own thread"
            )
        data = self._input_of(body)
        owner = owner_key(context.principal)
        op = await self.engine.schedule(
            self.durable_flow,
            data,
            owner=owner,
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
        )
        logger.info("flow %r: execution %s started", self.flow.name, op.name)
        if _wants_stream(request):
            response = self._genkit_response(op.name, 0, request)
            response.headers[EXECUTION_ID_HEADER] = op.name
            return response
        return await self._result(op.name)

    async def _result(self, stream_id: str) -> Response:
        """A non-streaming start: the result once the execution ends (``runFlow``)."""
        manager = self.settings.stream_manager
        assert manager is not None
        event = await manager.end_of(stream_id)
        if isinstance(event, ResultEvent):
            return Response(
                b'{"result":' + event.raw + b"}",
                media_type="application/json",
                headers={EXECUTION_ID_HEADER: stream_id},
            )
        error = error_from_status(event.status, event.message, event.details)
        return error_response(error, headers={EXECUTION_ID_HEADER: stream_id})

    async def _cancel(self, request: Request) -> Response:
        context = await self._authenticate(request)
        stream_id = validate_stream_id(request.path_params["stream_id"])
        record = await self._owned_record(stream_id, context)
        op = await self.engine.cancel(stream_id)
        cancelled = record.status == "open" and op.status == "cancelled"
        return JSONResponse({"streamId": stream_id, "cancelled": cancelled})

    async def _stop(self, request: Request) -> Response:
        context = await self._authenticate(request)
        stream_id = validate_stream_id(request.path_params["stream_id"])
        await self._owned_record(stream_id, context)
        stopped = await self.engine.stop(stream_id)
        return JSONResponse({"streamId": stream_id, "stopped": stopped})

    def description(self) -> dict[str, Any]:
        return {**super().description(), "durable": True}
