"""`DurableEngine`: schedule, inspect, resume, cancel and clean up durable executions.

The engine is the client side: it writes executions to the store and reads them
back. `Worker` runs them (in the same process, or in others sharing the store).
Every method is safe to call from any process on the same store.
"""

from __future__ import annotations

import builtins
import logging
import os
import time
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

import anyio

from .. import _telemetry
from .._errors import (
    AlreadyExistsError,
    CancelledError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    StreamClosedError,
    StreamExistsError,
    StreamNotFoundError,
)
from .._ids import validate_stream_id
from .._json import JsonValue, dumps
from .._logs import owner_tag
from ..streams.manager import DURABLE, StreamManager
from ._ids import derive_flow_id, new_flow_id, validate_flow_id
from ._replay import STOP, WAKE
from ._schedules import check_spec, next_tick
from ._time import due_time
from ._timeline import ExecutionDetail, audit_line, follow
from .definition import DurableFlow
from .errors import NotFinishedError, NotWaitingError, ScheduleNotFoundError, error_to_record
from .records import (
    STATUSES,
    AuditEntry,
    ExecutionRecord,
    ExecutionStatus,
    JournalEntry,
    Operation,
    Overlap,
    Page,
    Schedule,
)
from .store import DurableStore

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["DEFAULT_DB_PATH", "DurableEngine", "Notifier"]

logger = logging.getLogger("stream_gateway.durable")

#: Where the default SQLite store lives (override with ``STREAM_GATEWAY_DURABLE_DB``).
DEFAULT_DB_PATH = ".data/durable.sqlite3"
_MAX_LIMIT = 1000


def _default_store() -> DurableStore:
    from .sqlite import SqliteDurableStore

    return SqliteDurableStore(os.environ.get("STREAM_GATEWAY_DURABLE_DB", DEFAULT_DB_PATH))


class _Listener(Protocol):
    def wake(self) -> None: ...

    def cancel_local(self, execution_id: str) -> None: ...

    def evict_local(self, execution_id: str) -> None: ...


class Notifier:
    """In-process signalling between the engine and the workers sharing it: "work is
    due" (workers look now), "this execution was cancelled" (a worker running it
    stops), "this execution was evicted" (a worker running it parks it), and "this
    execution changed" (`DurableEngine.wait` looks again). Other processes find out
    from the store (polling, lease renewals)."""

    def __init__(self) -> None:
        self._listeners: list[_Listener] = []
        self._changed: dict[str, anyio.Event] = {}
        self._audit: anyio.Event | None = None

    def subscribe(self, listener: _Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: _Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def due(self) -> None:
        for listener in self._listeners:
            listener.wake()
        self.audited()

    def cancelled(self, execution_id: str) -> None:
        for listener in self._listeners:
            listener.cancel_local(execution_id)
        self.changed(execution_id)

    def evicted(self, execution_id: str) -> None:
        for listener in self._listeners:
            listener.evict_local(execution_id)

    def changed(self, execution_id: str) -> None:
        event = self._changed.pop(execution_id, None)
        if event is not None:
            event.set()
        self.audited()

    def audited(self) -> None:
        """Audit lines were stored here: wake the local audit feeds."""
        event, self._audit = self._audit, None
        if event is not None:
            event.set()

    def audit_event(self) -> anyio.Event:
        if self._audit is None:
            self._audit = anyio.Event()
        return self._audit

    def event(self, execution_id: str) -> anyio.Event:
        return self._changed.setdefault(execution_id, anyio.Event())


class DurableEngine:
    """Durable flows over one `DurableStore` (SQLite at `DEFAULT_DB_PATH` by default).

    Use it as an async context manager (opens and closes the store). ``owner``
    arguments are stored verbatim: the HTTP layer passes a hash of the principal.
    ``max_result_bytes`` bounds each step's (and each flow's) JSON result;
    ``max_journal_bytes`` an execution's whole journal (`JournalTooLargeError`).
    ``streams``: the `StreamManager` on which executions of streaming flows get
    their stream, under the execution's id (the engine enters it with itself).
    """

    def __init__(
        self,
        flows: Iterable[DurableFlow[Any, Any]] = (),
        *,
        store: DurableStore | None = None,
        max_result_bytes: int = 1024 * 1024,
        max_journal_bytes: int = 64 * 1024 * 1024,
        poll_interval: float = 0.5,
        streams: StreamManager | None = None,
    ) -> None:
        self.store = store if store is not None else _default_store()
        #: Where streaming flows (``chunk=``) stream; a `Gateway` sets its own manager.
        self.streams = streams
        self.max_result_bytes = max_result_bytes
        self.max_journal_bytes = max_journal_bytes
        self.poll_interval = poll_interval
        self.notifier = Notifier()
        self.flows: dict[str, DurableFlow[Any, Any]] = {}
        for flow in flows:
            self.register(flow)

    def register(self, flow: DurableFlow[Any, Any]) -> DurableFlow[Any, Any]:
        """Add a flow; names are unique."""
        if self.flows.get(flow.name, flow) is not flow:
            raise ValueError(f"two durable flows are named {flow.name!r}")
        self.flows[flow.name] = flow
        return flow

    def flow(self, name: str | DurableFlow[Any, Any]) -> DurableFlow[Any, Any]:
        """The registered flow of that name (`NotFoundError` if none)."""
        key = name.name if isinstance(name, DurableFlow) else name
        found = self.flows.get(key)
        if found is None:
            raise NotFoundError(f"no durable flow named {key!r}")
        return found

    async def __aenter__(self) -> Self:
        await self.store.start()
        if self.streams is not None:
            try:
                await self.streams.__aenter__()  # counted: a Gateway may share it
            except BaseException:
                await self.store.close()
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.streams is not None:
                await self.streams.__aexit__(exc_type, exc, tb)
        finally:
            await self.store.close()

    def worker(self, **options: Any) -> Worker:
        """A `Worker` for this engine (an async context manager); see its options."""
        from .worker import Worker

        return Worker(self, **options)

    # -- starting ------------------------------------------------------------------

    async def schedule(
        self,
        flow: str | DurableFlow[Any, Any],
        input: Any = None,
        *,
        delay: float | timedelta | None = None,
        at: float | datetime | None = None,
        id: str | None = None,
        idempotency_key: str | None = None,
        owner: str | None = None,
    ) -> Operation:
        """Start an execution now, after ``delay`` or at ``at``; returns at once.

        The operation returned is never done: the run happens in a worker. ``id``
        chooses the execution's id (1-128 characters of ``[A-Za-z0-9_-]``); calling
        again with the same id, flow and owner returns the existing execution, while
        an id taken by another flow or owner raises `AlreadyExistsError`. With an
        ``idempotency_key``, a second call (same flow and owner) returns the existing
        execution too. Raises `InvalidArgumentError` for bad input or times (validated
        now, before anything is stored) and `NotFoundError` for an unregistered flow.
        """
        definition = self.flow(flow)
        now = time.time()
        due = due_time(delay, at, now)
        if id is not None and idempotency_key is not None:
            raise InvalidArgumentError("give id or idempotency_key, not both")
        if id is not None:
            flow_id = validate_flow_id(id)
        elif idempotency_key is not None:
            flow_id = derive_flow_id("idem", definition.name, owner, idempotency_key)
        else:
            flow_id = new_flow_id()
        record = ExecutionRecord(
            id=flow_id,
            flow=definition.name,
            input=definition.dump_input(input),
            owner=owner,
            created_at=now,
            updated_at=now,
            due_at=due,
        )
        line = audit_line(flow_id, "status", status="pending", due_at=due, **_trace())
        if definition.streaming and self.streams is not None:
            await self._open_stream(definition, flow_id, owner)
        stored, created = await self.store.create(record, audit=[line])
        if not created and (stored.flow != definition.name or stored.owner != owner):
            raise AlreadyExistsError(f"flow id {flow_id!r} is taken")
        if created:
            _entered("pending")
        self.notifier.due()
        if created:
            _log_change(stored, "pending (scheduled)")
        return Operation.from_record(stored)

    async def _open_stream(
        self, flow: DurableFlow[Any, Any], flow_id: str, owner: str | None
    ) -> None:
        """Create the execution's stream before the execution (its id is the
        execution's); one that exists already (the same start again) is kept."""
        assert self.streams is not None
        try:
            validate_stream_id(flow_id)
        except InvalidArgumentError:
            raise InvalidArgumentError(
                "a streaming flow's execution id is its stream id: 16-128 characters of "
                "A-Z, a-z, 0-9, '_' or '-' (leave id unset for a fresh one)"
            ) from None
        try:
            writer = await self.streams.open(
                flow_id, flow=flow.name, owner=owner, extra={DURABLE: flow_id}
            )
        except StreamExistsError:
            return
        await writer.detach()

    async def start_child(
        self,
        flow: DurableFlow[Any, Any],
        input: Any,
        flow_id: str,
        *,
        owner: str | None,
        parent: str | None = None,
    ) -> ExecutionRecord:
        """Create (or find) the child execution ``flow_id``: used by `run_action`."""
        now = time.time()
        record = ExecutionRecord(
            id=flow_id,
            flow=self.flow(flow).name,
            input=flow.dump_input(input),
            owner=owner,
            created_at=now,
            updated_at=now,
            due_at=now,
            parent=parent,
        )
        line = audit_line(flow_id, "status", status="pending", parent=parent, **_trace())
        stored, created = await self.store.create(record, audit=[line])
        if created:
            _entered("pending")
            self.notifier.due()
        return stored

    async def run(
        self, flow: str | DurableFlow[Any, Any], input: Any = None, *, owner: str | None = None
    ) -> Any:
        """Schedule now and wait for the end: the flow's output, or its error raised.

        Needs a worker running somewhere on this store; bound it with
        ``anyio.fail_after``.
        """
        definition = self.flow(flow)
        op = await self.wait((await self.schedule(definition, input, owner=owner)).name)
        if op.error is not None:
            raise op.error
        return definition.decode_output(dumps(op.response).decode())

    async def wait(self, flow_id: str) -> Operation:
        """Wait until the execution is done (bound it with ``anyio.fail_after``)."""
        delay = 0.005
        while True:
            event = self.notifier.event(flow_id)
            op = await self.get_state(flow_id)
            if op.done:
                self.notifier.changed(flow_id)
                return op
            with anyio.move_on_after(delay):
                await event.wait()
            delay = min(delay * 2, self.poll_interval)

    # -- reading -------------------------------------------------------------------

    async def get_state(self, flow_id: str) -> Operation:
        """The execution's operation; `ExecutionNotFoundError` for an unknown id."""
        return Operation.from_record(await self.store.get(validate_flow_id(flow_id)))

    async def status(self, flow_id: str) -> ExecutionStatus:
        """Just the status."""
        return (await self.get_state(flow_id)).status

    async def list(
        self,
        *,
        status: str | None = None,
        flow: str | None = None,
        owner: str | None = None,
        any_owner: bool = True,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page:
        """Executions newest first, filtered; pass `Page.cursor` back for the next page.

        ``any_owner=False`` lists only ``owner``'s. Raises `InvalidArgumentError` for an
        unknown status, a malformed cursor or a limit outside 1-1000.
        """
        if status is not None and status not in STATUSES:
            raise InvalidArgumentError(f"unknown status; expected one of {sorted(STATUSES)}")
        if not 1 <= limit <= _MAX_LIMIT:
            raise InvalidArgumentError(f"limit must be within 1-{_MAX_LIMIT}")
        if cursor is not None and not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 18):
            raise InvalidArgumentError("malformed cursor")
        records = await self.store.list_executions(
            status=status,  # type: ignore[arg-type]
            flow=flow,
            owner=owner,
            any_owner=any_owner,
            after=int(cursor) if cursor is not None else None,
            limit=limit,
        )
        next_cursor = str(records[-1].seq) if len(records) == limit else None
        return Page([Operation.from_record(r) for r in records], next_cursor)

    async def history(self, flow_id: str) -> builtins.list[JournalEntry]:
        """The execution's journal entries (`JournalEntry`), in the order first written:
        what ran, how, and (for operators) errors' original type and message."""
        return list((await self.store.history(validate_flow_id(flow_id))).entries)

    # -- acting ----------------------------------------------------------------------

    async def signal(self, flow_id: str, name: str, payload: JsonValue = None) -> Operation:
        """Send the signal ``name`` with a JSON ``payload`` to an execution, durably.

        It is buffered: a `DurableContext.wait_for_signal` or `messages` on that name
        takes it now or later, FIFO per name, exactly once. `NotWaitingError`
        (FAILED_PRECONDITION) if the execution has finished; `InvalidArgumentError`
        for a name that is empty, over 256 characters or starts with ``$``.
        """
        if not isinstance(name, str) or not 0 < len(name) <= 256 or name.startswith("$"):
            raise InvalidArgumentError("a signal name is 1-256 characters, not starting with '$'")
        flow_id = validate_flow_id(flow_id)
        line = audit_line(flow_id, "signal_sent", signal=name)
        if not await self.store.send_signal(
            flow_id, name, _json(payload), time.time(), audit=[line]
        ):
            raise NotWaitingError("flow has finished: it takes no more signals")
        self.notifier.due()
        return await self._changed(flow_id, f"signal {name!r} sent")

    async def resume(self, flow_id: str, step: str, payload: JsonValue) -> Operation:
        """Deliver ``payload`` to the interrupt ``step`` (its path, as in
        ``blocked_on_step``).

        If the flow has reached the interrupt (a side-effect-free replay finds it),
        the payload is validated against its schema now (`InvalidArgumentError` with
        pydantic's errors). A resume that arrives before the flow reaches the
        interrupt, or to an engine that does not define the flow (one that only
        operates the store), is kept for it and validated then. A step that
        already got its payload, or a finished execution, raises `NotWaitingError`
        (FAILED_PRECONDITION).
        """
        record = await self.store.get(validate_flow_id(flow_id))
        if not isinstance(step, str) or not 0 < len(step) <= 1024:
            raise InvalidArgumentError("step must name the interrupt")
        if record.done:
            raise NotWaitingError(f"flow has finished; it does not wait on step {step!r}")
        payload = await self._validated(record, step, payload)
        line = audit_line(record.id, "resume_sent", step)
        if not await self.store.send_signal(
            record.id, f"$resume:{step}", _json(payload), time.time(), unique=True, audit=[line]
        ):
            raise NotWaitingError(f"step {step!r} was already resumed (or the flow finished)")
        self.notifier.due()
        return await self._changed(record.id, f"resume of step {step!r} sent")

    async def _validated(self, record: ExecutionRecord, step: str, payload: Any) -> Any:
        from ._driver import probe

        if record.flow not in self.flows:
            # An engine that only operates the store (the command line) does not know
            # the flow: the worker that runs it validates the payload when it is taken.
            return payload
        try:
            codec = await probe(self, record, step)
        except LookupError:
            return payload  # validated when the interrupt takes it
        codec.validate(payload, f"payload for step {step!r}")
        return codec.to_json(payload)

    async def cancel(self, flow_id: str) -> Operation:
        """End an unfinished execution as ``cancelled`` (CANCELLED): its timers never
        fire, a step running now is interrupted, and its child executions
        (`DurableContext.run_action`) are cancelled too. A finished one is left as
        it is."""
        flow_id = validate_flow_id(flow_id)
        await self._cancel(flow_id, depth=0)
        return await self._changed(flow_id, "cancel requested")

    async def _cancel(self, flow_id: str, depth: int) -> None:
        error = error_to_record(CancelledError("flow cancelled"))
        line = audit_line(flow_id, "status", status="cancelled")
        if await self.store.cancel(flow_id, error, time.time(), audit=[line]):
            _entered("cancelled")
            self.notifier.cancelled(flow_id)
            await self._cancel_stream(flow_id)
        if depth > 32:
            return
        while True:
            children = await self.store.list_executions(parent=flow_id, limit=_MAX_LIMIT)
            live = [c for c in children if not c.done]
            for child in live:
                await self._cancel(child.id, depth + 1)
            if len(children) < _MAX_LIMIT or not live:
                return

    async def _cancel_stream(self, flow_id: str) -> None:
        """End a cancelled execution's stream as cancelled, if it has an open one."""
        if self.streams is None:
            return
        try:
            writer = await self.streams.attach(flow_id)
        except (StreamNotFoundError, StreamClosedError, InvalidArgumentError):
            return
        await writer.cancelled()

    async def recover(self, flow_id: str) -> Operation:
        """Run a *failed* execution again: its failed steps run again with their
        attempts counted afresh; completed steps keep their results.
        `FailedPreconditionError` if it has not failed."""
        flow_id = validate_flow_id(flow_id)
        line = audit_line(flow_id, "status", status="pending", recovered=True)
        if not await self.store.recover(flow_id, time.time(), audit=[line]):
            raise FailedPreconditionError("only a failed flow can be recovered")
        _entered("pending")
        self.notifier.due()
        return await self._changed(flow_id, "recovered")

    async def wake(self, flow_id: str) -> Operation:
        """Replay a pending, sleeping or waiting execution now: a poll checks at once
        and a step waiting out its retry backoff tries again at once; unfinished
        sleeps and waits park it again. `FailedPreconditionError` for a
        running or finished one."""
        flow_id = validate_flow_id(flow_id)
        now = time.time()
        if not await self.store.wake(flow_id, now):
            raise FailedPreconditionError("only a pending, sleeping or waiting flow can be woken")
        await self.store.send_signal(
            flow_id, WAKE, "null", now, audit=[audit_line(flow_id, "wake")]
        )
        self.notifier.due()
        return await self._changed(flow_id, "woken")

    async def _changed(self, flow_id: str, what: str) -> Operation:
        """Log an operator's change to an execution (one INFO line); its operation."""
        record = await self.store.get(flow_id)
        _log_change(record, f"{what}; now {record.status}")
        return Operation.from_record(record)

    async def evict(self, flow_id: str) -> Operation:
        """Ask a running execution to park now, wherever it runs: the worker holding
        it (in this process at once, in another at its next lease renewal, within
        a third of its lease) cancels the steps running (their attempt is not
        counted; `DurableContext.evicted` turns true), parks it due now, and any
        worker resumes it by replay. An execution that is not running (pending,
        sleeping, waiting) is already parked: returned as it is.
        `FailedPreconditionError` for a finished one, `ExecutionNotFoundError`
        for an unknown id.
        """
        flow_id = validate_flow_id(flow_id)
        line = audit_line(flow_id, "evict")
        if await self.store.request_evict(flow_id, time.time(), audit=[line]):
            self.notifier.evicted(flow_id)
            self.notifier.audited()
            return await self.get_state(flow_id)
        record = await self.store.get(flow_id)
        if record.done:
            raise FailedPreconditionError(f"flow has {record.status}: there is nothing to evict")
        return Operation.from_record(record)

    async def stop(self, flow_id: str) -> bool:
        """Ask an unfinished execution to finish now with what it has: its flow sees
        `DurableContext.stop_requested` at its next durable call (a run going on hears
        it through its stream, so streaming flows only; others at their next run). A
        sleeping or waiting execution is woken for it. False if it has finished (or was
        asked already)."""
        flow_id = validate_flow_id(flow_id)
        sent = await self.store.send_signal(
            flow_id, STOP, "null", time.time(), unique=True, audit=[audit_line(flow_id, "stop")]
        )
        if sent:
            self.notifier.due()
            if self.streams is not None:
                # A run going on hears it through its stream's writer, wherever it runs.
                try:
                    await self.streams.stop(flow_id)
                except (StreamNotFoundError, FailedPreconditionError, InvalidArgumentError):
                    pass  # no stream, or one this store cannot carry a stop through
        return sent

    async def cleanup(self, flow_id: str) -> None:
        """Delete a finished execution's state (record, journal, signals).

        `NotFinishedError` (FAILED_PRECONDITION) while it is not finished.
        """
        if not await self.store.delete(validate_flow_id(flow_id)):
            raise NotFinishedError("flow has not finished; cancel it first")

    # -- audit timeline --------------------------------------------------------------

    async def detail(self, flow_id: str) -> ExecutionDetail:
        """The execution, its journal entries and its audit timeline (`ExecutionDetail`):
        every status change, step attempt (with its error), retry wait, sleep, signal
        sent and consumed, resume, note, switch decision and rollback handler, with
        its time. `ExecutionNotFoundError` for an unknown id."""
        flow_id = validate_flow_id(flow_id)
        record = await self.store.get(flow_id)
        history = await self.store.history(flow_id)
        timeline: builtins.list[AuditEntry] = []
        while True:
            after = timeline[-1].seq if timeline else 0
            batch = await self.store.audit(execution_id=flow_id, after=after, limit=_MAX_LIMIT)
            timeline.extend(batch)
            if len(batch) < _MAX_LIMIT:
                break
        return ExecutionDetail(Operation.from_record(record), list(history.entries), timeline)

    def audit_feed(
        self, flow_id: str | None = None, *, after: int = 0
    ) -> AsyncIterator[AuditEntry]:
        """Audit entries as they are stored (one execution's, or every execution's
        with ``flow_id=None``), oldest first, starting after the ``seq`` ``after``:
        ``async for entry in engine.audit_feed(): ...``. It never ends by itself
        (break out, or cancel it). It follows the store, so it sees what workers in
        other processes record (within ``poll_interval``); keep the last ``seq`` to
        pick up where a feed left off, e.g. for notifications."""
        if flow_id is not None:
            flow_id = validate_flow_id(flow_id)
        return follow(self, execution_id=flow_id, after=after, poll_interval=self.poll_interval)

    async def _audit(self, flow_id: str, kind: str, step: str | None = None, **data: Any) -> None:
        await self.store.add_audit([audit_line(flow_id, kind, step, **data)])
        self.notifier.audited()

    async def describe(
        self, flow: str | DurableFlow[Any, Any], sample_input: Any = None
    ) -> dict[str, Any]:
        """The static shape of a flow, JSON: ``{flow, description, input, output,
        nodes, complete}``. Nodes (``type``: step, action, poll, sleep, interrupt and
        signal with their schemas, messages, wait_for, join/race with their branches,
        loop with one iteration's body, switch with its cases, note, removed, checkpoint,
        rollback, value) are recorded by running the flow against a recording context:
        no step body runs and nothing is stored. Durable calls return a placeholder
        that is truthy, so the shape follows the path where every check passes;
        each `switch` case and `race` winner is explored (``cases``/``winners``:
        ``{id, nodes}`` with the nodes on that path only; the nodes all paths
        share follow the decision). ``complete`` is false if the flow failed on a
        placeholder, made over 500 calls or has over 64 paths. ``sample_input``
        (validated) replaces the placeholder input."""
        from ._describe import describe_flow

        return await describe_flow(self.flow(flow), sample_input)

    # -- recurring schedules -----------------------------------------------------------

    async def ensure_schedule(
        self,
        flow: str | DurableFlow[Any, Any],
        input: Any = None,
        *,
        id: str,
        cron: str | None = None,
        interval: float | timedelta | None = None,
        timezone: str = "UTC",
        overlap: Overlap = "skip",
        owner: str | None = None,
    ) -> Schedule:
        """Make sure the recurring schedule ``id`` exists with this definition: ``flow``
        started with ``input`` at every tick of ``cron`` (5 fields, wall-clock time
        in ``timezone``, an IANA name) or every ``interval``.

        Idempotent: calling it again (every app start) with the same definition
        changes nothing; with another definition it updates the schedule (as
        `update_schedule`); a paused schedule stays paused. An id taken by another
        owner raises `AlreadyExistsError`. Every worker fires due ticks; each tick
        starts exactly one execution (its id derived from the schedule id and the
        tick). ``overlap="skip"`` skips a tick while the previous execution is
        unfinished; ``"allow"`` starts it anyway. `InvalidArgumentError` for a bad
        cron expression, interval, timezone, overlap or input.
        """
        definition = self.flow(flow)
        schedule_id = validate_flow_id(id)
        cron_text, seconds = check_spec(cron, interval, timezone, overlap)
        now = time.time()
        wanted = Schedule(
            id=schedule_id,
            flow=definition.name,
            input=definition.dump_input(input),
            owner=owner,
            cron=cron_text,
            interval=seconds,
            timezone=timezone,
            overlap=overlap,
            created_at=now,
            updated_at=now,
        )
        wanted.next_at = next_tick(wanted, now)
        stored, created = await self.store.create_schedule(wanted)
        if created:
            self.notifier.due()
            return stored
        if stored.owner != owner:
            raise AlreadyExistsError(f"schedule id {schedule_id!r} is taken")
        same = (stored.flow, stored.input, stored.cron, stored.interval, stored.timezone) == (
            wanted.flow,
            wanted.input,
            wanted.cron,
            wanted.interval,
            wanted.timezone,
        )
        if same and stored.overlap == overlap:
            return stored
        stored.flow, stored.input, stored.overlap = wanted.flow, wanted.input, overlap
        if not same:
            stored.cron, stored.interval, stored.timezone = cron_text, seconds, timezone
            stored.next_at = next_tick(stored, now)
        return await self._put_schedule(stored, now)

    async def update_schedule(
        self,
        schedule_id: str,
        *,
        input: Any = ...,
        cron: str | None = None,
        interval: float | timedelta | None = None,
        timezone: str | None = None,
        overlap: Overlap | None = None,
    ) -> Schedule:
        """Change what is given: ``input``, the timing (``cron`` or ``interval``, and
        ``timezone``) or ``overlap``. A new timing takes effect at once: the next
        tick is recomputed from now. `ScheduleNotFoundError` for an unknown id."""
        stored = await self.get_schedule(schedule_id)
        now = time.time()
        if input is not ...:
            stored.input = self.flow(stored.flow).dump_input(input)
        if cron is not None or interval is not None or timezone is not None:
            if cron is None and interval is None:
                cron, interval = stored.cron, stored.interval
            zone_name = timezone or stored.timezone
            stored.cron, stored.interval = check_spec(
                cron, interval, zone_name, overlap or stored.overlap
            )
            stored.timezone = zone_name
            stored.next_at = next_tick(stored, now)
        if overlap is not None:
            check_spec(stored.cron, stored.interval, stored.timezone, overlap)
            stored.overlap = overlap
        return await self._put_schedule(stored, now)

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        """Stop firing ticks (executions already started go on). Idempotent."""
        stored = await self.get_schedule(schedule_id)
        stored.paused = True
        return await self._put_schedule(stored, time.time())

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        """Fire ticks again, from the first one after now (ticks that fell while it
        was paused do not fire). Idempotent."""
        stored = await self.get_schedule(schedule_id)
        if not stored.paused:
            return stored
        now = time.time()
        stored.paused = False
        stored.next_at = next_tick(stored, now)
        return await self._put_schedule(stored, now)

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """The schedule, with its next tick (``next_at``) and its last one;
        `ScheduleNotFoundError` for an unknown id."""
        return await self.store.get_schedule(validate_flow_id(schedule_id))

    async def list_schedules(
        self,
        *,
        owner: str | None = None,
        any_owner: bool = True,
        after: str | None = None,
        limit: int = 50,
    ) -> builtins.list[Schedule]:
        """Schedules by id (those after the id ``after``); ``any_owner=False`` lists
        only ``owner``'s. `InvalidArgumentError` for a limit outside 1-1000."""
        if not 1 <= limit <= _MAX_LIMIT:
            raise InvalidArgumentError(f"limit must be within 1-{_MAX_LIMIT}")
        return await self.store.list_schedules(
            owner=owner, any_owner=any_owner, after=after, limit=limit
        )

    async def remove_schedule(self, schedule_id: str) -> None:
        """Delete the schedule for good (its executions stay);
        `ScheduleNotFoundError` if there is none."""
        if not await self.store.delete_schedule(validate_flow_id(schedule_id)):
            raise ScheduleNotFoundError("schedule not found")

    async def _put_schedule(self, schedule: Schedule, now: float) -> Schedule:
        schedule.updated_at = now
        if not await self.store.put_schedule(schedule):
            raise ScheduleNotFoundError("schedule not found")
        self.notifier.due()
        return schedule

    def notify(self, flow_id: str) -> None:
        """Wake local `wait` callers of ``flow_id`` (workers call this)."""
        self.notifier.changed(flow_id)


def _json(payload: Any) -> str:
    try:
        return dumps(payload).decode()
    except (TypeError, ValueError, InvalidArgumentError):
        raise InvalidArgumentError("the payload must be JSON") from None


def _trace() -> dict[str, Any]:
    """The current trace context, as audit data (``trace``) when there is one: the
    worker that runs the execution later continues that trace."""
    if not _telemetry.observers:
        return {}
    carrier = _telemetry.carrier()
    return {"trace": carrier} if carrier else {}


def _entered(status: str) -> None:
    for observer in _telemetry.observers:
        observer.execution_status(status)


def _log_change(record: ExecutionRecord, what: str) -> None:
    logger.info(
        "execution %s (flow %r, owner %s): %s",
        record.id, record.flow, owner_tag(record.owner), what,
    )  # fmt: skip
