"""The replay driver: the one caller of flow code.

`replay` runs a claimed execution's flow function over its journal and records how
the run ended: completed, failed, or parked until a timer, signal or child. Whatever
the flow raises (an error, an exception group, a stray cancellation, ``SystemExit``)
ends that execution only; a transient store failure or a lost lease ends the run
and leaves the execution to replay later. `probe` replays without running or
writing anything, to read an interrupt's schema.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import anyio

from .. import _telemetry
from .._errors import GatewayError, InternalError
from .._json import loads
from .._logs import owner_tag
from ._compensation import fail_with_rollback
from ._replay import STREAMED, Abandon, Cursor, ProbeFound, Run, Suspend, classify
from ._steps import check_size
from ._stream import RunStream
from ._time import MAX_TS
from .context import DurableContext
from .errors import (
    DurableStoreError,
    DurableUsageError,
    LeaseLostError,
    RollbackError,
    error_to_record,
    public_error,
)
from .records import ExecutionRecord, ExecutionStatus, JournalEntry, Lease

__all__ = ["RETRY_LATER", "probe", "replay"]

logger = logging.getLogger("stream_gateway.durable")

#: Seconds before a run stopped by a store failure is tried again.
RETRY_LATER = 1.0


async def replay(
    engine: Any,
    record: ExecutionRecord,
    lease: Lease,
    cancelled: Callable[[], bool],
    attach: Callable[[Run], None] | None = None,
) -> float | None:
    """Replay one claimed execution until it finishes or must wait.

    Returns when it is due again (a timer), if it was parked on one. ``cancelled``
    tells whether a cancellation that reaches the flow is the worker's own (it then
    propagates) rather than something the flow raised itself. ``attach`` gets the
    `Run` before the flow starts (the worker evicts through it).

    Traced (with an observer installed) as a ``durable.run`` span whose parent is
    the trace that scheduled the execution (kept in its first audit line).
    """
    if not _telemetry.observers:
        return await _replay(engine, record, lease, cancelled, attach)
    parent = await _trace_parent(engine.store, record.id)
    with _telemetry.span(
        "durable.run", parent, flow=record.flow, execution_id=record.id, worker=lease.worker
    ):
        return await _replay(engine, record, lease, cancelled, attach)


async def _trace_parent(store: Any, execution_id: str) -> dict[str, str] | None:
    """The trace context saved when the execution was created, if any."""
    try:
        first = await store.audit(execution_id=execution_id, after=0, limit=1)
    except DurableStoreError:
        return None
    trace = first[0].data.get("trace") if first else None
    return trace if isinstance(trace, dict) else None


async def _replay(
    engine: Any,
    record: ExecutionRecord,
    lease: Lease,
    cancelled: Callable[[], bool],
    attach: Callable[[Run], None] | None,
) -> float | None:
    store = engine.store
    try:
        flow = engine.flow(record.flow)
        history = await store.history(record.id)
    except DurableStoreError:
        await _hand_back(store, lease, time.time() + RETRY_LATER)
        return None
    run = Run(engine, record, lease, history)
    try:
        run.stream = await RunStream.attach(engine, record.id, flow, history)
    except GatewayError as exc:
        logger.warning("flow %s: its stream is unavailable (%s); it will replay", record.id, exc)
        await _hand_back(store, lease, time.time() + RETRY_LATER)
        return None
    run.log("status", status="running", worker=lease.worker)
    if attach is not None:
        attach(run)
    root = Cursor(run, "", None)
    ctx = DurableContext(run, root)
    caught: BaseException | None = None
    output: Any = None
    try:
        try:
            output = await flow.fn(flow.parse_input(loads(record.input)), ctx)
        except anyio.get_cancelled_exc_class() as exc:
            if cancelled():
                raise
            caught = exc
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except BaseException as exc:
            caught = exc
        run.closed = True
        await run.settle()
    finally:
        run.closed = True
        run.interrupt()
    try:
        return await _conclude(run, root, flow, caught, output)
    except LeaseLostError:
        logger.warning("flow %s: lease lost before its end was recorded", record.id)
        for observer in _telemetry.observers:
            observer.lease_expired("execution")
    except DurableStoreError:
        await _hand_back(store, lease, time.time() + RETRY_LATER, _parked(run))
    finally:
        await run.stream.detach()
    return None


async def _conclude(
    run: Run, root: Cursor, flow: Any, caught: BaseException | None, output: Any
) -> float | None:
    record, lease, store = run.record, run.lease, run.store
    assert lease is not None
    forgotten = run.forgotten()
    if run.abandoned is not None:
        logger.warning("flow %s stopped: %s; it will replay", record.id, run.abandoned)
        await _hand_back(store, lease, time.time() + RETRY_LATER, _parked(run))
        return None
    error: BaseException | None = run.fatal
    suspend: Suspend | None = None
    if error is None and root.sealed is not None:
        suspend = root.sealed
    elif error is None and caught is not None:
        suspends, controls, errors = classify(caught)
        if any(isinstance(c, Abandon) for c in controls):
            await _hand_back(store, lease, time.time() + RETRY_LATER, _parked(run))
            return None
        if errors:
            error = errors[0]
        elif suspends:
            suspend = Suspend.merge(suspends)
        else:
            error = InternalError("the flow ended by a control-flow exception it caught")
    if isinstance(error, RollbackError):
        try:
            error, rolling = await fail_with_rollback(run, error)
        except Abandon:
            logger.warning("flow %s stopped: %s; it will replay", record.id, run.abandoned)
            await _hand_back(store, lease, time.time() + RETRY_LATER, _parked(run))
            return None
        if rolling is not None:
            suspend = rolling
    if error is None and suspend is None and forgotten:
        error = DurableUsageError(
            f"{forgotten[0]} was never awaited: add `await` (a durable call that is not "
            "awaited never runs)"
        )
    await run.flush()
    if suspend is not None:
        wake_at = min(suspend.wake_at, MAX_TS) if suspend.wake_at is not None else None
        run.log("status", status=suspend.status, blocked_on=suspend.blocked_on, wake_at=wake_at)
        if run.stream.unvouched():
            # Chunks of the flow's own code since its latest durable write: a pending
            # entry records the stream's length, so the next run keeps them.
            now = time.time()
            try:
                await run.write(JournalEntry(-1, "stream", STREAMED, "pending", started_at=now))
            except Abandon:
                logger.warning("flow %s stopped: %s; it will replay", record.id, run.abandoned)
                await _hand_back(store, lease, time.time() + RETRY_LATER, _parked(run))
                return None
        await run.stream.detach()
        await store.suspend(
            lease,
            status=suspend.status,
            blocked_on=suspend.blocked_on,
            wake_at=wake_at,
            now=time.time(),
            wait_for=suspend.wait_for,
            signals=suspend.signals,
            audit=run.audit,
        )
        logger.info(
            "execution %s (flow %r, owner %s): %s on %r",
            record.id, record.flow, owner_tag(record.owner), suspend.status, suspend.blocked_on,
        )  # fmt: skip
        return wake_at
    if error is None:
        try:
            root.check_consumed()
            raw = flow.encode_output(output)
            check_size(root, "<output>", raw)
        except GatewayError as exc:
            error = exc
        else:
            run.log("status", status="completed")
            await run.stream.done(raw)
            await store.finish(
                lease,
                status="completed",
                result=raw,
                error=None,
                now=time.time(),
                audit=run.audit,
            )
            logger.info(
                "execution %s (flow %r, owner %s): completed",
                record.id, record.flow, owner_tag(record.owner),
            )  # fmt: skip
            return None
    if isinstance(error, GatewayError):
        logger.warning(
            "execution %s (flow %r, owner %s): failed: %s",
            record.id, record.flow, owner_tag(record.owner), error.message,
        )  # fmt: skip
    else:
        logger.error(
            "execution %s (flow %r, owner %s): failed",
            record.id, record.flow, owner_tag(record.owner), exc_info=error,
        )  # fmt: skip
    stored = error_to_record(public_error(error))
    run.log("status", status="failed", error=stored)
    await run.stream.error(public_error(error))
    await store.finish(
        lease, status="failed", result=None, error=stored, now=time.time(), audit=run.audit
    )
    return None


def _parked(run: Run) -> ExecutionStatus:
    """How a run handed back is parked: a rollback in progress stays ``rolling_back``."""
    return "rolling_back" if run.record.status == "rolling_back" else "pending"


async def _hand_back(
    store: Any, lease: Lease, when: float, status: ExecutionStatus = "pending"
) -> None:
    """Release the execution to be replayed at ``when`` (best effort: if the store is
    down, the lease lapses and any worker takes it then)."""
    try:
        with anyio.CancelScope(shield=True):
            await store.suspend(
                lease, status=status, blocked_on=None, wake_at=when, now=time.time()
            )
    except (LeaseLostError, DurableStoreError):
        pass


async def probe(engine: Any, record: ExecutionRecord, path: str) -> Any:
    """Replay without side effects up to the interrupt ``path``; its schema adapter.

    Raises ``LookupError`` if the replay cannot reach it."""
    flow = engine.flow(record.flow)
    history = await engine.store.history(record.id)
    run = Run(engine, record, None, history, probe=path)
    ctx = DurableContext(run, Cursor(run, "", None))
    try:
        await flow.fn(flow.parse_input(loads(record.input)), ctx)
    except anyio.get_cancelled_exc_class():
        raise
    except BaseException as exc:
        _, controls, _ = classify(exc)
        found = [c for c in controls if isinstance(c, ProbeFound)]
        if found:
            return found[0].adapter
    finally:
        run.closed = True
        run.interrupt()
        run.forgotten()
    raise LookupError(path)
