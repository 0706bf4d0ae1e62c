"""`DurableContext`: the steps a durable flow is made of, memoized in its journal.

Replay: every time an execution wakes up, its flow function runs again from the top
with a fresh context over the stored journal. Each primitive takes the next journal
position and a key (its name; a repeated name gets ``name-1``, ``name-2``...). When
the position holds a final entry of the same kind and key, the stored outcome is
returned (or raised) without running anything; a different kind or key there means
the code changed under a live execution: `HistoryDivergedError`. Past the end of the
journal the primitive runs for real and appends its entry before returning.

A primitive that must wait (sleep, retry backoff, interrupt, other flows) unwinds the
flow function with `Suspend`, a ``BaseException`` that ``except Exception`` in flow
code cannot swallow; the worker parks the execution until its timer or event.
"""

from __future__ import annotations

import inspect
import random
import time
import uuid
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel, TypeAdapter

from .._errors import InvalidArgumentError
from .._json import dumps, loads
from ..flow import Flow, FlowContext
from ._ids import derive_flow_id, validate_flow_id
from ._steps import StepRunner, Suspend
from .definition import NO_RETRY, DurableFlow, RetryPolicy
from .errors import ExecutionNotFoundError, error_to_record, rebuild_error
from .records import ExecutionRecord, History, JournalEntry, Lease, Operation

if TYPE_CHECKING:
    from .engine import DurableEngine

__all__ = ["DurableContext"]

T = TypeVar("T")

Step = Callable[[], Any]
"""A step's body: a function of no arguments, sync or async (its awaitable is awaited)."""


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _epoch(value: float | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidArgumentError("datetimes must be timezone-aware")
        return value.timestamp()
    return float(value)


def _encode(value: Any, adapter: TypeAdapter[Any] | None) -> str:
    if adapter is not None:
        value = adapter.dump_python(adapter.validate_python(value), mode="json")
    elif isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return dumps(value).decode()


def _decode(raw: str | None, adapter: TypeAdapter[Any] | None) -> Any:
    value = loads(raw) if raw is not None else None
    return adapter.validate_python(value) if adapter is not None else value


class DurableContext(StepRunner):
    """What a running durable flow uses for everything that must happen once.

    Side effects belong inside steps (`run`, `run_action`, `poll`); code between
    steps runs again on every replay and must be deterministic (use `now`, `random`
    and `uuid` here, not the ``time``/``random`` modules).
    """

    def __init__(
        self,
        engine: DurableEngine,
        record: ExecutionRecord,
        lease: Lease | None,
        history: History,
        *,
        probe: str | None = None,
    ) -> None:
        super().__init__(engine.store, lease, history, probe, engine.max_result_bytes)
        self.engine = engine
        self.flow_id = record.id
        self.flow_name = record.flow
        self.owner = record.owner

    # -- steps ---------------------------------------------------------------------

    @overload
    async def run(
        self, name: str, fn: Step, *, retry: RetryPolicy | None = None, output: type[T]
    ) -> T: ...

    @overload
    async def run(
        self, name: str, fn: Step, *, retry: RetryPolicy | None = None, output: None = None
    ) -> Any: ...

    async def run(
        self, name: str, fn: Step, *, retry: RetryPolicy | None = None, output: Any = None
    ) -> Any:
        """Run ``fn`` (sync or async) once, as the step ``name``, and memoize its result.

        The result must be JSON-serializable (or a pydantic model); the flow gets it
        back decoded from JSON, the same on the first run and on replay, or validated
        as ``output`` (a type pydantic validates) when given. Failures are retried per ``retry``
        (default `RetryPolicy()`: 3 attempts); a `CriticalError` is not retried; the
        last failure raises `StepExhaustedError`. Once completed, never run again; if
        the process dies while ``fn`` runs, it runs again (at-least-once).
        """
        adapter = TypeAdapter[Any](output) if output is not None else None

        async def call() -> str:
            value = fn()
            if inspect.isawaitable(value):
                value = await value
            return _encode(value, adapter)

        raw = await self._step("step", name, call, retry or RetryPolicy())
        return _decode(raw, adapter)

    async def run_action(
        self,
        action: Flow[Any, Any, Any] | DurableFlow[Any, Any],
        input: Any = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> Any:
        """Run a flow as a step named after it, with its input and output schemas.

        A `Flow` runs in-process (non-streaming) like `run` (default: no retries). A
        `DurableFlow` starts as a child execution (same owner, an id derived from this
        execution and the step key, so replays never start it twice); this flow waits
        for it and returns its output or raises its error. Output comes back as JSON.
        """
        if isinstance(action, DurableFlow):
            return await self._child(action, input)
        parsed = action.parse_input(input)

        async def call() -> str:
            value = await action.fn(parsed, FlowContext(action))
            return action.encode_output(value).decode()

        return _decode(await self._step("action", action.name, call, retry or NO_RETRY), None)

    async def _child(self, action: DurableFlow[Any, Any], input: Any) -> Any:
        pos, key, entry = self._next("action", action.name)
        if entry is not None and entry.final:
            return self._outcome(entry)
        child_id = derive_flow_id(self.flow_id, key)
        child = await self.engine.start_child(action, input, child_id, owner=self.owner)
        if not child.done:
            raise Suspend("waiting", key, None, wait_for=[child_id])
        now = time.time()
        entry = JournalEntry(pos, "action", key, "completed", started_at=now, finished_at=now)
        if child.status == "completed":
            entry.result = child.result
        else:
            entry.status, entry.error = "failed", child.error
        await self._write(entry)
        return self._outcome(entry)

    @staticmethod
    def _outcome(entry: JournalEntry) -> Any:
        if entry.status == "failed":
            raise rebuild_error(entry.error or {})
        return _decode(entry.result, None)

    @overload
    async def poll(
        self,
        name: str,
        fn: Step,
        *,
        period: float | timedelta,
        timeout: float | timedelta,  # noqa: ASYNC109
        output: type[T],
    ) -> T: ...

    @overload
    async def poll(
        self,
        name: str,
        fn: Step,
        *,
        period: float | timedelta,
        timeout: float | timedelta,  # noqa: ASYNC109
        output: None = None,
    ) -> Any: ...

    async def poll(
        self,
        name: str,
        fn: Step,
        *,
        period: float | timedelta,
        timeout: float | timedelta,  # noqa: ASYNC109 - a durable deadline, not a scope
        output: Any = None,
    ) -> Any:
        """Call ``fn`` every ``period`` until it returns a truthy value, and return it.

        Between checks the execution sleeps on a durable timer; after ``timeout``
        (from the first check) the step fails with `DeadlineExceededError`. A check
        that raises counts as "not yet" (a `CriticalError` fails the step).
        """
        adapter = TypeAdapter[Any](output) if output is not None else None

        async def check() -> str | None:
            value = fn()
            if inspect.isawaitable(value):
                value = await value
            return _encode(value, adapter) if value else None

        raw = await self._poll(name, check, _seconds(period), _seconds(timeout))
        return _decode(raw, adapter)

    # -- waits ---------------------------------------------------------------------

    async def sleep(self, name: str, duration: float | timedelta) -> None:
        """Sleep ``duration`` on a durable timer: survives restarts, costs no process."""
        await self._sleep(name, lambda: time.time() + _seconds(duration))

    async def sleep_until(self, name: str, when: float | datetime) -> None:
        """Sleep until ``when`` (an aware datetime or POSIX seconds), durably."""
        await self._sleep(name, lambda: _epoch(when))

    async def _sleep(self, name: str, until: Callable[[], float]) -> None:
        pos, key, entry = self._next("sleep", name)
        if entry is None:
            wake = until()
            now = time.time()
            entry = JournalEntry(
                pos,
                "sleep",
                key,
                "completed",
                dumps({"until": wake}).decode(),
                started_at=now,
                finished_at=now,
            )
            await self._write(entry)
        wake = float(loads(entry.result or "{}")["until"])
        if self._probe is None and time.time() < wake:
            raise Suspend("sleeping", key, wake)

    async def interrupt(self, name: str, schema: Any = None) -> Any:
        """Wait for a human (or any caller): the execution waits, status ``waiting``,
        until `DurableEngine.resume` delivers a payload for this step, validated
        against ``schema`` (a type pydantic validates; ``None``: any JSON). Returns
        the validated payload."""
        adapter = TypeAdapter[Any](schema) if schema is not None else None
        pos, key, entry = self._next("interrupt", name)
        if entry is not None and entry.final:
            return _decode(entry.result, adapter)
        if self._probe == key:
            raise ProbeFound(adapter)
        raw = self._history.signals.get(key)
        if raw is None:
            raise Suspend("waiting", key, None)
        value = _decode(raw, adapter)
        now = time.time()
        await self._write(
            JournalEntry(pos, "interrupt", key, "completed", raw, started_at=now, finished_at=now)
        )
        return value

    async def wait_for(self, name: str, flow_ids: Collection[str]) -> list[Operation]:
        """Wait until every execution in ``flow_ids`` has finished; return their
        operations in the order given. An unknown id fails the step (NOT_FOUND)."""
        ids = [validate_flow_id(i) for i in flow_ids]
        pos, key, entry = self._next("wait_for", name)
        if entry is None or not entry.final:
            records = await self.store.get_many(ids)
            pending = [i for i in ids if i in records and not records[i].done]
            if pending:
                raise Suspend("waiting", key, None, wait_for=pending)
            now = time.time()
            entry = JournalEntry(pos, "wait_for", key, "completed", started_at=now, finished_at=now)
            missing = [i for i in ids if i not in records]
            if missing:
                error = ExecutionNotFoundError(f"no flow {missing[0]!r} to wait for")
                entry.status, entry.error = "failed", error_to_record(error)
            else:
                operations = [Operation.from_record(records[i]).to_json() for i in ids]
                entry.result = dumps(operations).decode()
            await self._write(entry)
        if entry.status == "failed":
            raise rebuild_error(entry.error or {})
        return [Operation.from_json(body) for body in loads(entry.result or "[]")]

    # -- deterministic values --------------------------------------------------------

    async def now(self) -> datetime:
        """The current time (UTC), recorded: the same value on every replay."""
        return datetime.fromtimestamp(await self._value("now", time.time), UTC)

    async def random(self) -> float:
        """A random float in [0, 1), recorded: the same value on every replay."""
        return float(await self._value("random", random.random))

    async def uuid(self) -> uuid.UUID:
        """A random UUID (v4), recorded: the same value on every replay."""
        return uuid.UUID(str(await self._value("uuid", lambda: str(uuid.uuid4()))))

    async def _value(self, kind: str, make: Callable[[], Any]) -> Any:
        pos, key, entry = self._next(kind, kind)
        if entry is None:
            now = time.time()
            entry = JournalEntry(
                pos, kind, key, "completed", dumps(make()).decode(), started_at=now, finished_at=now
            )
            await self._write(entry)
        return loads(entry.result or "null")


class ProbeFound(BaseException):  # control flow, not an error
    """Unwinds a probe replay at the interrupt it looked for, with that step's schema."""

    def __init__(self, adapter: TypeAdapter[Any] | None) -> None:
        super().__init__("probe found its interrupt")
        self.adapter = adapter
