"""What every durable call goes through (`guarded`), and the state machines of step
attempts with retries (`attempt`), polls (`poll`) and child executions (`child`)."""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from .. import _telemetry
from .._errors import DeadlineExceededError, GatewayError
from ._ids import derive_flow_id
from ._replay import Closed, Cursor, ProbeMiss, Suspend, in_step
from .definition import DurableFlow, RetryPolicy
from .errors import (
    CriticalError,
    DurableStoreError,
    DurableUsageError,
    HistoryDivergedError,
    JournalTooLargeError,
    StepExhaustedError,
    StepOutputError,
    StepResultTooLargeError,
    error_to_record,
    public_error,
    rebuild_error,
)
from .records import JournalEntry

__all__ = ["attempt", "call_body", "check_size", "child", "guarded", "outcome", "poll"]

logger = logging.getLogger("stream_gateway.durable")

T = TypeVar("T")

_NOT_RETRIED = (
    CriticalError,
    DurableUsageError,
    HistoryDivergedError,
    JournalTooLargeError,
    StepOutputError,
    StepResultTooLargeError,
)


async def guarded(cursor: Cursor, body: Callable[[], Awaitable[T]]) -> T:
    """Run one durable call of ``cursor``'s branch: sealed branches re-raise their
    suspension, a suspension seals the branch, store failures abandon the run, and a
    run that stops interrupts the call (an evicted run parks instead)."""
    cursor.check()
    run = cursor.run
    scope = anyio.CancelScope()
    run.enter(scope)
    try:
        if run.evicted:
            raise run.eviction()
        with scope:
            return await body()
        raise run.eviction() if run.evicted else Closed()  # interrupted
    except Suspend as suspend:
        cursor.seal(suspend)
        raise
    except DurableStoreError as exc:
        raise run.abandon(f"the store failed ({exc.message})") from None
    finally:
        run.leave(scope)


def _is_async(fn: Callable[..., Any]) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    )


async def call_body(fn: Callable[[], Any]) -> Any:
    """Call a step body: an async function on the loop; anything else on a worker
    thread (so a blocking SDK call stalls nothing), awaiting what it returns."""
    if _is_async(fn):
        return await fn()
    value = await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
    if inspect.isawaitable(value):
        value = await value
    return value


def check_size(cursor: Cursor, key: str, raw: str) -> None:
    """Raise `StepResultTooLargeError` if ``raw`` is over the result size limit."""
    limit = cursor.run.engine.max_result_bytes
    size = len(raw.encode())
    if size > limit:
        raise StepResultTooLargeError(
            f"result of step {cursor.path(key)!r} is {size} bytes, over the limit of {limit}",
            details={"step": cursor.path(key), "size": size, "limit": limit},
        )


def outcome(entry: JournalEntry) -> str | None:
    """A final entry's result, or its error raised."""
    if entry.status == "failed":
        raise rebuild_error(entry.error or {})
    return entry.result


def _entry(cursor: Cursor, pos: int, kind: str, key: str, **fields: Any) -> JournalEntry:
    return JournalEntry(pos, kind, key, branch=cursor.branch, **fields)


async def attempt(
    cursor: Cursor,
    pos: int,
    kind: str,
    key: str,
    fn: Callable[[], Any],
    encode: Callable[[Any], str],
    retry: RetryPolicy | None,
    timeout: float | None,  # noqa: ASYNC109 - a per-attempt bound, applied here
    *,
    ephemeral: bool = False,
) -> str | None:
    """Replay or run one attempt of a step; returns its result as JSON text.

    An ``ephemeral`` step's completion is deferred to the run's next write; an
    attempt that fails once the run is evicted is not counted (the run parks)."""
    run = cursor.run
    path = cursor.path(key)
    entry = run.entries.get((cursor.branch, key))
    if entry is not None and entry.final:
        return outcome(entry)
    if entry is not None and not run.due(entry.wake_at):
        raise Suspend("sleeping", path, entry.wake_at)
    if run.probe is not None:
        raise ProbeMiss(path)
    policy = retry or RetryPolicy(max_attempts=1)
    limit = timeout if timeout is not None else policy.timeout
    number = entry.attempts + 1 if entry is not None else 1
    run.check_lease()
    started = time.time()
    token = in_step.set(path)
    mark = run.stream.mark(cursor.branch, path)
    try:
        with (
            _telemetry.span(
                "durable.step",
                flow=run.record.flow,
                execution_id=run.record.id,
                step=path,
                kind=kind,
                attempt=number,
            ),
            anyio.move_on_after(limit if limit is not None else float("inf")) as scope,
        ):
            value = await call_body(fn)
        if scope.cancelled_caught:
            raise DeadlineExceededError(f"step {path!r} timed out after {limit}s")
        try:
            raw = encode(value)
        except Exception as exc:
            logger.warning("step %r of flow %s returned an invalid result", path, run.record.id)
            raise StepOutputError(
                f"step {path!r} returned a result that is not JSON or fails its output "
                f"type: {type(exc).__name__}; it is not run again",
                details={"step": path},
            ) from exc
        check_size(cursor, key, raw)
    except _NOT_RETRIED as exc:
        _report(run.record.flow, kind, "failed", started)
        run.log(kind, path, attempt=number, outcome="failed", error=error_to_record(exc))
        await run.stream.retract(path, mark)
        await _fail(cursor, pos, kind, key, number, started, exc)
        raise
    except Exception as exc:
        if run.evicted:
            raise run.eviction() from None
        last = number >= policy.max_attempts
        _report(run.record.flow, kind, "failed" if last else "error", started)
        run.log(kind, path, attempt=number, outcome="error", error=error_to_record(exc))
        await run.stream.retract(path, mark)
        if last:
            error = StepExhaustedError(
                f"step {path!r} failed after {number} attempt(s)",
                details={"step": path, "attempts": number, "cause": public_error(exc).to_json()},
            )
            cause = error_to_record(exc).get("operator")
            if cause is not None:
                error.operator = {"cause": cause}  # type: ignore[attr-defined]
            logger.warning(
                "step %r of flow %s exhausted its attempts", path, run.record.id, exc_info=exc
            )
            run.log(kind, path, attempt=number, outcome="failed", error=error_to_record(error))
            await _fail(cursor, pos, kind, key, number, started, error)
            raise error from exc
        wake = time.time() + policy.backoff(number)
        run.log("retry_wait", path, attempt=number, until=wake)
        logger.info(
            "step %r of flow %s failed (attempt %d/%d): %r; retrying in %.2fs",
            path,
            run.record.id,
            number,
            policy.max_attempts,
            exc,
            wake - time.time(),
        )
        await run.write(
            _entry(
                cursor,
                pos,
                kind,
                key,
                status="retrying",
                error=error_to_record(exc),
                attempts=number,
                started_at=started,
                wake_at=wake,
            )
        )
        raise Suspend("sleeping", path, wake) from None
    finally:
        in_step.reset(token)
    _report(run.record.flow, kind, "completed", started)
    run.log(kind, path, attempt=number, outcome="completed")
    done = _entry(
        cursor,
        pos,
        kind,
        key,
        status="completed",
        result=raw,
        attempts=number,
        started_at=started,
        finished_at=time.time(),
    )
    if ephemeral:
        run.defer(done)
    else:
        await run.write(done)
    return raw


async def _fail(
    cursor: Cursor,
    pos: int,
    kind: str,
    key: str,
    number: int,
    started: float,
    exc: GatewayError,
) -> None:
    await cursor.run.write(
        _entry(
            cursor,
            pos,
            kind,
            key,
            status="failed",
            error=error_to_record(exc),
            attempts=number,
            started_at=started,
            finished_at=time.time(),
        )
    )


async def poll(
    cursor: Cursor,
    pos: int,
    key: str,
    check: Callable[[], Any],
    encode: Callable[[Any], str],
    period: float,
    timeout: float,  # noqa: ASYNC109 - a durable deadline, not a scope
) -> str | None:
    """Replay or run one check of a poll; suspends until the next one."""
    run = cursor.run
    path = cursor.path(key)
    entry = run.entries.get((cursor.branch, key))
    if entry is not None and entry.final:
        return outcome(entry)
    if entry is not None and not run.due(entry.wake_at):
        raise Suspend("sleeping", path, entry.wake_at)
    if run.probe is not None:
        raise ProbeMiss(path)
    started = entry.started_at if entry is not None else time.time()
    checks = (entry.attempts if entry is not None else 0) + 1
    raw: str | None = None
    token = in_step.set(path)
    try:
        value = await call_body(check)
        if value:
            try:
                raw = encode(value)
            except Exception as exc:
                raise StepOutputError(
                    f"poll {path!r} returned a result that is not JSON or fails its output type",
                    details={"step": path},
                ) from exc
            check_size(cursor, key, raw)
    except _NOT_RETRIED as exc:
        await _fail(cursor, pos, "poll", key, checks, started, exc)
        raise
    except Exception as exc:
        logger.info("poll %r of flow %s: check raised %r", path, run.record.id, exc)
    finally:
        in_step.reset(token)
    now = time.time()
    if raw is not None:
        await run.write(
            _entry(
                cursor,
                pos,
                "poll",
                key,
                status="completed",
                result=raw,
                attempts=checks,
                started_at=started,
                finished_at=now,
            )
        )
        return raw
    if now - started >= timeout:
        error = DeadlineExceededError(f"poll {path!r} timed out after {timeout}s")
        await _fail(cursor, pos, "poll", key, checks, started, error)
        raise error
    wake = min(now + period, started + timeout)
    await run.write(
        _entry(
            cursor,
            pos,
            "poll",
            key,
            status="pending",
            attempts=checks,
            started_at=started,
            wake_at=wake,
        )
    )
    raise Suspend("sleeping", path, wake)


async def child(
    cursor: Cursor,
    pos: int,
    key: str,
    flow: DurableFlow[Any, Any],
    input: Any,
    retry: RetryPolicy | None,
) -> str | None:
    """Start (or find) a child execution and wait for it; failed attempts are retried
    per ``retry`` as new child executions."""
    run = cursor.run
    path = cursor.path(key)
    entry = run.entries.get((cursor.branch, key))
    if entry is not None and entry.final:
        return outcome(entry)
    if entry is not None and entry.wake_at is not None and entry.wake_at > time.time():
        raise Suspend("sleeping", path, entry.wake_at)
    number = entry.attempts + 1 if entry is not None else 1
    parts = [run.record.id, path] + ([str(number)] if number > 1 else [])
    child_id = derive_flow_id(*parts)
    if run.probe is not None:
        raise ProbeMiss(path)
    engine = run.engine
    record = await engine.start_child(
        flow, input, child_id, owner=run.record.owner, parent=run.record.id
    )
    if not record.done:
        raise Suspend("waiting", path, None, wait_for=[child_id])
    now = time.time()
    if record.status == "completed":
        await run.write(
            _entry(
                cursor,
                pos,
                "action",
                key,
                status="completed",
                result=record.result,
                attempts=number,
                started_at=now,
                finished_at=now,
            )
        )
        return record.result
    policy = retry or RetryPolicy(max_attempts=1)
    error = record.error or {}
    if number < policy.max_attempts:
        wake = now + policy.backoff(number)
        await run.write(
            _entry(
                cursor,
                pos,
                "action",
                key,
                status="retrying",
                error=error,
                attempts=number,
                started_at=now,
                wake_at=wake,
            )
        )
        raise Suspend("sleeping", path, wake)
    if number > 1:
        error = error_to_record(
            StepExhaustedError(
                f"child flow {path!r} failed after {number} attempt(s)",
                details={"step": path, "attempts": number, "cause": rebuild_error(error).to_json()},
            )
        )
    await run.write(
        _entry(
            cursor,
            pos,
            "action",
            key,
            status="failed",
            error=error,
            attempts=number,
            started_at=now,
            finished_at=now,
        )
    )
    raise rebuild_error(error)


def _report(flow: str, kind: str, outcome: str, started: float) -> None:
    """Tell observers how an attempt of a step ended, and how long it took."""
    if _telemetry.observers:
        seconds = max(0.0, time.time() - started)
        for observer in _telemetry.observers:
            observer.step_finished(flow, kind, outcome, seconds)
