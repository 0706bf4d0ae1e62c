"""`FlowRunner`: runs streaming flows detached from the requests that started them."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup

from .._errors import GatewayError, UnavailableError
from ..flow import Flow, FlowContext, RequestContext
from ..streams.writer import StreamWriter

__all__ = ["FlowRunner"]

logger = logging.getLogger("stream_gateway.runner")


class _Run:
    __slots__ = ("scope", "shutdown")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.shutdown = False


class FlowRunner:
    """A task group for flows that outlive their request.

    A run ends only when its flow returns or raises, when cancellation of its stream
    is requested (from any process), or at shutdown: on exit the runner stops taking
    new runs, waits up to ``grace`` seconds for running flows, then cancels the rest
    and ends their streams with ``UNAVAILABLE`` / "server shutting down".
    """

    def __init__(self, *, grace: float = 10.0) -> None:
        self.grace = grace
        self._tg: TaskGroup | None = None
        self._runs: dict[str, _Run] = {}
        self._idle = anyio.Event()
        self._idle.set()
        self._closing = False

    @property
    def running(self) -> int:
        """How many flows are running."""
        return len(self._runs)

    async def __aenter__(self) -> Self:
        self._closing = False
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        if self._runs:
            logger.info("draining %d running flows (grace %.1fs)", len(self._runs), self.grace)
            with anyio.move_on_after(self.grace):
                await self._idle.wait()
        for run in self._runs.values():
            run.shutdown = True
            run.scope.cancel()
        tg, self._tg = self._tg, None
        if tg is not None:
            await tg.__aexit__(exc_type, exc, tb)

    def check_accepting(self) -> None:
        """Raise `UnavailableError` unless new runs are accepted now."""
        if self._tg is None:
            raise UnavailableError(
                "gateway is not started: serve it with its lifespan "
                "(Starlette(..., lifespan=gateway.lifespan))"
            )
        if self._closing:
            raise UnavailableError("server is shutting down")

    def start(
        self,
        flow: Flow[Any, Any, Any],
        input: Any,
        writer: StreamWriter,
        request: RequestContext,
    ) -> None:
        """Start ``flow`` writing to ``writer``; returns at once."""
        self.check_accepting()
        assert self._tg is not None
        run = self._runs[writer.stream_id] = _Run()
        self._idle = anyio.Event()
        self._tg.start_soon(self._run, flow, input, writer, request, run)

    async def _run(
        self,
        flow: Flow[Any, Any, Any],
        input: Any,
        writer: StreamWriter,
        request: RequestContext,
        run: _Run,
    ) -> None:
        ctx = FlowContext(flow, sink=writer.write_raw, request=request, stream_id=writer.stream_id)
        outcome: tuple[bytes | None, BaseException | None] | None = None
        try:
            async with anyio.create_task_group() as watcher:
                watcher.start_soon(self._cancel_on_request, writer, run.scope)
                with run.scope:
                    outcome = await self._call(flow, input, ctx)
                watcher.cancel_scope.cancel()
            with anyio.CancelScope(shield=True):
                await self._finish(writer, run, outcome)
        finally:
            del self._runs[writer.stream_id]
            if not self._runs:
                self._idle.set()

    @staticmethod
    async def _call(
        flow: Flow[Any, Any, Any], input: Any, ctx: FlowContext[Any]
    ) -> tuple[bytes | None, BaseException | None]:
        try:
            return flow.encode_output(await flow.fn(input, ctx)), None
        except GatewayError as exc:
            return None, exc
        except Exception as exc:
            logger.exception("flow %r failed (stream %s)", flow.name, ctx.stream_id)
            return None, exc

    @staticmethod
    async def _cancel_on_request(writer: StreamWriter, scope: anyio.CancelScope) -> None:
        await writer.wait_cancel_requested()
        scope.cancel()

    @staticmethod
    async def _finish(
        writer: StreamWriter,
        run: _Run,
        outcome: tuple[bytes | None, BaseException | None] | None,
    ) -> None:
        try:
            if outcome is None:  # the flow was cancelled
                if run.shutdown:
                    await writer.error(UnavailableError("server shutting down"))
                else:
                    await writer.cancelled()
            elif outcome[1] is not None:
                await writer.error(outcome[1])
            else:
                assert outcome[0] is not None
                await writer.done_raw(outcome[0])
        except Exception:
            # The backend refused the terminal entry; subscribers will see the
            # stream abandoned once its lease lapses, never a silent end.
            logger.exception("could not record the end of stream %s", writer.stream_id)
