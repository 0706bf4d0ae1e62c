"""`FlowRunner`: runs streaming flows detached from the requests that started them."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup

from .. import _telemetry
from .._errors import GatewayError, ResourceExhaustedError, UnavailableError
from .._limits import check_chunk
from ..flow import Flow, FlowContext, RequestContext
from ..streams.writer import StreamWriter

__all__ = ["FlowRunner"]

logger = logging.getLogger("stream_gateway.runner")

_Outcome = tuple[bytes | None, BaseException | None]
#: The recorded end of a flow that the drain grace did not let finish.
SHUTDOWN_MESSAGE = "server shut down before the flow finished"
#: The recorded end of a flow asked to stop that did not return within its grace.
STOP_EXPIRED_MESSAGE = "flow did not stop within its grace period"


class _Run:
    __slots__ = ("admission", "scope", "shutdown", "stopping")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.shutdown = False
        self.stopping = False  # a stop was requested: cancelled only past its grace
        self.admission: Admission | None = None


class Admission:
    """One admitted run: it counts against the runner's limits until released.

    Taken before anything is written (so a refused start costs no storage), released
    once when the run ends; releasing again is a no-op.
    """

    __slots__ = ("_principal", "_released", "_runner")

    def __init__(self, runner: FlowRunner, principal: str | None) -> None:
        self._runner = runner
        self._principal = principal
        self._released = False

    def release(self) -> None:
        """Give the slot back (idempotent)."""
        if not self._released:
            self._released = True
            self._runner._release(self._principal)


class FlowRunner:
    """A task group for flows that outlive their request.

    A run ends only when its flow returns or raises, when cancellation of its stream
    is requested (from any process), when its stream's writer gives up (the backend
    is down for longer than the manager's ``write_retry_for``), or at shutdown. The
    *drain* starts with `begin_drain` (the gateway calls it on SIGTERM/SIGINT) or at
    the latest on exit: the runner stops taking new runs, waits up to ``grace``
    seconds for running flows, logging its progress, then cancels the rest and ends
    their streams with ``UNAVAILABLE`` / "server shut down before the flow
    finished". Whatever a flow does, its stream gets a terminal entry and no other
    run is disturbed.
    At most ``max_running`` flows run at once, detached or not (runs inside their
    request count too, see `attached`), and at most ``max_running_per_principal``
    (when set) for one principal; more are refused with ``RESOURCE_EXHAUSTED``.
    Runs whose request names no principal count against ``max_running`` only.
    """

    def __init__(
        self,
        *,
        grace: float = 10.0,
        max_running: int = 1000,
        max_running_per_principal: int | None = None,
        stop_grace: float = 10.0,
    ) -> None:
        """``stop_grace``: seconds a flow asked to stop (`StreamManager.stop`) has to
        return its partial result before it is cancelled."""
        if max_running < 1 or (max_running_per_principal or 1) < 1:
            raise ValueError("max_running and max_running_per_principal must be >= 1")
        if stop_grace < 0:
            raise ValueError("stop_grace must be >= 0")
        self.grace = grace
        self.stop_grace = stop_grace
        self.max_running = max_running
        self.max_running_per_principal = max_running_per_principal
        self._admitted = 0
        self._by_principal: Counter[str] = Counter()
        self._tg: TaskGroup | None = None
        self._runs: dict[str, _Run] = {}
        self._idle = anyio.Event()
        self._idle.set()
        self._closing = False
        self._drained = anyio.Event()

    @property
    def running(self) -> int:
        """How many runs are admitted: detached, inside their request, or starting."""
        return self._admitted

    async def __aenter__(self) -> Self:
        self._closing = False
        self._drained = anyio.Event()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.begin_drain()
        with anyio.CancelScope(shield=True):
            await self._drained.wait()
        tg, self._tg = self._tg, None
        if tg is not None:
            await tg.__aexit__(exc_type, exc, tb)

    def begin_drain(self) -> None:
        """Stop accepting runs and start draining the running ones now; idempotent.

        Call it from the event loop's thread (a signal handler should go through
        ``loop.call_soon_threadsafe``). `__aexit__` waits for the drain to finish.
        """
        if self._closing or self._tg is None:
            return
        self._closing = True
        self._tg.start_soon(self._drain)

    async def _drain(self) -> None:
        # Shielded and bounded: even when the host is being cancelled, running flows
        # get their grace and every stream its terminal entry.
        with anyio.CancelScope(shield=True):
            logger.info("draining %d running flows (grace %.1fs)", len(self._runs), self.grace)
            deadline = anyio.current_time() + self.grace
            while self._runs:
                left = deadline - anyio.current_time()
                if left <= 0:
                    break
                with anyio.move_on_after(min(left, 1.0)):
                    await self._idle.wait()
                if self._runs and deadline > anyio.current_time():
                    logger.info(
                        "draining: %d flows still running, %.1fs of grace left",
                        len(self._runs), deadline - anyio.current_time(),
                    )  # fmt: skip
            if self._runs:
                logger.warning(
                    "drain grace over: stopping %d flows; their streams end with UNAVAILABLE",
                    len(self._runs),
                )
                for run in self._runs.values():
                    run.shutdown = True
                    run.scope.cancel()
                await self._idle.wait()  # bounded: recording an end is time-bounded
            logger.info("drain finished")
        self._drained.set()

    def check_accepting(self, principal: str | None = None) -> None:
        """Raise `UnavailableError` unless new runs are accepted now, and
        `ResourceExhaustedError` when ``max_running`` runs are admitted already, or
        ``max_running_per_principal`` for ``principal``."""
        if self._tg is None:
            raise UnavailableError(
                "gateway is not started: serve it with its lifespan "
                "(Starlette(..., lifespan=gateway.lifespan))"
            )
        if self._closing:
            raise UnavailableError("server is shutting down")
        if self._admitted >= self.max_running:
            raise ResourceExhaustedError(
                "too many flows are running; try again later",
                details={"limit": self.max_running},
            )
        per_principal = self.max_running_per_principal
        if (
            per_principal is not None
            and principal is not None
            and self._by_principal[principal] >= per_principal
        ):
            raise ResourceExhaustedError(
                f"too many of your flows are running (limit {per_principal}); "
                "wait for one to finish or cancel one",
                details={"limitPerPrincipal": per_principal},
            )

    def admit(self, principal: str | None = None) -> Admission:
        """Count a new run against the limits, or raise as `check_accepting` does.

        Take it before writing anything for the run; `release` it if the run never
        starts (`start` releases it when a started run ends).
        """
        self.check_accepting(principal)
        self._admitted += 1
        if principal is not None:
            self._by_principal[principal] += 1
        return Admission(self, principal)

    def _release(self, principal: str | None) -> None:
        self._admitted -= 1
        if principal is not None:
            self._by_principal[principal] -= 1
            if not self._by_principal[principal]:
                del self._by_principal[principal]

    @asynccontextmanager
    async def attached(self, principal: str | None = None) -> AsyncIterator[None]:
        """Count a run that lives inside its request (non-streaming, or streaming
        without a stream manager) for as long as the block runs."""
        admission = self.admit(principal)
        try:
            yield
        finally:
            admission.release()

    def start(
        self,
        flow: Flow[Any, Any, Any],
        input: Any,
        writer: StreamWriter,
        request: RequestContext,
        *,
        max_chunk_bytes: int,
        max_stream_chunks: int,
        admission: Admission | None = None,
    ) -> None:
        """Start ``flow`` writing to ``writer``, within the given limits; returns at once.

        ``admission``: the slot `admit` gave this run before its stream was opened
        (taken here when not given). Raises as `check_accepting` does; the caller
        then still owns the admission and the writer.
        """
        if admission is None:
            admission = self.admit(request.principal)
        elif self._tg is None or self._closing:
            self.check_accepting()
        assert self._tg is not None
        run = self._runs[writer.stream_id] = _Run()
        run.admission = admission
        self._idle = anyio.Event()

        async def sink(raw: bytes) -> None:
            check_chunk(raw, writer.length, max_chunk_bytes, max_stream_chunks)
            await writer.write_raw(raw)

        ctx = FlowContext(flow, sink=sink, request=request, stream_id=writer.stream_id)
        self._tg.start_soon(self._run, flow, input, ctx, writer, run)

    async def _run(
        self,
        flow: Flow[Any, Any, Any],
        input: Any,
        ctx: FlowContext[Any],
        writer: StreamWriter,
        run: _Run,
    ) -> None:
        writer.on_cancel_requested(run.scope.cancel)
        writer.on_failure(run.scope.cancel)  # its stream cannot be written: stop it

        def stop() -> None:
            # The flow sees it and returns what it has; past the grace, it is cancelled.
            run.stopping = True
            ctx.stop_requested.set()
            deadline = anyio.current_time() + self.stop_grace
            run.scope.deadline = min(run.scope.deadline, deadline)

        writer.on_stop_requested(stop)
        outcome: _Outcome | None = None  # None: cancelled by request or shutdown
        try:
            with run.scope:
                outcome = await self._call(flow, input, ctx)
        except anyio.get_cancelled_exc_class():
            if anyio.current_effective_deadline() == -math.inf:
                # The runner itself is being cancelled: end the stream, let it through.
                run.shutdown = True
                with anyio.CancelScope(shield=True):
                    await self._finish(writer, run, None)
                raise
            # A cancellation that is not ours escaped the flow (it awaited a task
            # someone else cancelled): the flow failed, the runner carries on.
            logger.error(
                "flow %r (stream %s) raised a stray cancellation", flow.name, ctx.stream_id
            )
            outcome = (None, UnavailableError("flow was cancelled unexpectedly"))
        except BaseException:  # KeyboardInterrupt, SystemExit: end the stream, pass it on
            outcome = (None, UnavailableError("flow ended abnormally"))
            raise
        finally:
            if outcome is not None or not writer.closed:
                with anyio.CancelScope(shield=True):
                    await self._finish(writer, run, outcome)
            del self._runs[writer.stream_id]
            if run.admission is not None:
                run.admission.release()
            if not self._runs:
                self._idle.set()

    @staticmethod
    async def _call(flow: Flow[Any, Any, Any], input: Any, ctx: FlowContext[Any]) -> _Outcome:
        try:
            with _telemetry.span("flow.run", flow=flow.name, stream_id=ctx.stream_id):
                output = await flow.fn(input, ctx)
            return flow.encode_output(output), None
        except GatewayError as exc:
            return None, exc
        except Exception as exc:
            logger.exception("flow %r failed (stream %s)", flow.name, ctx.stream_id)
            return None, exc

    @staticmethod
    async def _finish(writer: StreamWriter, run: _Run, outcome: _Outcome | None) -> None:
        if writer.closed:
            return
        try:
            if outcome is None:  # the flow was cancelled
                if writer.failure is not None:
                    await writer.error(writer.failure)
                elif run.shutdown:
                    await writer.error(UnavailableError(SHUTDOWN_MESSAGE))
                elif run.stopping and not writer.cancel_requested:
                    await writer.cancelled(STOP_EXPIRED_MESSAGE)
                else:
                    await writer.cancelled()
            elif outcome[0] is not None:
                await writer.done_raw(outcome[0])
            else:
                await writer.error(outcome[1] or UnavailableError("flow ended abnormally"))
        except Exception:
            # The backend refused the terminal entry; subscribers will see the
            # stream abandoned once its lease lapses, never a silent end.
            logger.exception("could not record the end of stream %s", writer.stream_id)
