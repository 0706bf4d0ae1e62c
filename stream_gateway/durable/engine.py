"""`DurableEngine`: schedule, inspect, resume, cancel and clean up durable executions.

The engine is the client side: it writes executions to the store and reads them
back. `Worker` runs them (in the same process, or in others sharing the store).
Every method is safe to call from any process on the same store.
"""

from __future__ import annotations

import builtins
import os
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
from pydantic import ValidationError

from .._errors import CancelledError, InvalidArgumentError, NotFoundError
from .._json import JsonValue, dumps, loads
from ._ids import derive_flow_id, new_flow_id, validate_flow_id
from .definition import DurableFlow
from .errors import NotFinishedError, NotWaitingError, error_to_record
from .records import STATUSES, ExecutionRecord, ExecutionStatus, JournalEntry, Operation, Page
from .store import DurableStore

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["DEFAULT_DB_PATH", "DurableEngine"]

#: Where the default SQLite store lives (override with ``STREAM_GATEWAY_DURABLE_DB``).
DEFAULT_DB_PATH = ".data/durable.sqlite3"
_MAX_LIMIT = 1000


def _default_store() -> DurableStore:
    from .sqlite import SqliteDurableStore

    return SqliteDurableStore(os.environ.get("STREAM_GATEWAY_DURABLE_DB", DEFAULT_DB_PATH))


class DurableEngine:
    """Durable flows over one `DurableStore` (SQLite at `DEFAULT_DB_PATH` by default).

    Use it as an async context manager (opens and closes the store). ``owner``
    arguments are stored verbatim: the HTTP layer passes a hash of the principal.
    ``max_result_bytes`` bounds each step's (and each flow's) JSON result.
    """

    def __init__(
        self,
        flows: Iterable[DurableFlow[Any, Any]] = (),
        *,
        store: DurableStore | None = None,
        max_result_bytes: int = 1024 * 1024,
        poll_interval: float = 0.5,
    ) -> None:
        self.store = store if store is not None else _default_store()
        self.max_result_bytes = max_result_bytes
        self.poll_interval = poll_interval
        self.flows: dict[str, DurableFlow[Any, Any]] = {}
        for flow in flows:
            self.register(flow)
        self._workers: builtins.list[Worker] = []  # `list` is also a method here
        self._changed: dict[str, anyio.Event] = {}

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
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
        idempotency_key: str | None = None,
        owner: str | None = None,
    ) -> Operation:
        """Start an execution now, after ``delay`` or at ``at``; returns at once.

        The operation returned is never done: the run happens in a worker. With an
        ``idempotency_key``, a second call (same flow and owner) returns the existing
        execution instead of starting another. Raises `InvalidArgumentError` for bad
        input (validated now) and `NotFoundError` for an unregistered flow.
        """
        definition = self.flow(flow)
        if delay is not None and at is not None:
            raise InvalidArgumentError("give delay or at, not both")
        now = time.time()
        due = now
        if delay is not None:
            due = now + (delay.total_seconds() if isinstance(delay, timedelta) else float(delay))
        elif at is not None:
            due = at.timestamp() if isinstance(at, datetime) else float(at)
        flow_id = (
            derive_flow_id("idem", definition.name, owner, idempotency_key)
            if idempotency_key is not None
            else new_flow_id()
        )
        record = ExecutionRecord(
            id=flow_id,
            flow=definition.name,
            input=definition.dump_input(input),
            owner=owner,
            created_at=now,
            updated_at=now,
            due_at=due,
        )
        stored, _ = await self.store.create(record)
        self._nudge()
        return Operation.from_record(stored)

    async def start_child(
        self, flow: DurableFlow[Any, Any], input: Any, flow_id: str, *, owner: str | None
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
        )
        stored, created = await self.store.create(record)
        if created:
            self._nudge()
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
            event = self._changed.setdefault(flow_id, anyio.Event())
            op = await self.get_state(flow_id)
            if op.done:
                self._changed.pop(flow_id, None)
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
        if cursor is not None and not (cursor.isdigit() and len(cursor) <= 18):
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
        """The execution's journal entries (`JournalEntry`), in order: what ran, how."""
        return list((await self.store.history(validate_flow_id(flow_id))).entries)

    # -- acting ----------------------------------------------------------------------

    async def resume(self, flow_id: str, step: str, payload: JsonValue) -> Operation:
        """Deliver ``payload`` to the interrupt ``step`` the execution waits on.

        The payload is validated against the interrupt's schema (`InvalidArgumentError`
        with pydantic's errors). An execution that is not waiting on ``step`` (another
        step, running, finished, already resumed) raises `NotWaitingError`
        (FAILED_PRECONDITION).
        """
        record = await self.store.get(validate_flow_id(flow_id))
        if record.status != "waiting" or record.blocked_on != step:
            raise NotWaitingError(f"flow is not waiting on step {step!r}")
        adapter = await self._interrupt_schema(record, step)
        if adapter is not None:
            try:
                payload = adapter.dump_python(adapter.validate_python(payload), mode="json")
            except ValidationError as exc:
                raise InvalidArgumentError(
                    f"invalid payload for step {step!r}",
                    details=exc.errors(
                        include_url=False, include_context=False, include_input=False
                    ),
                ) from None
        if not await self.store.deliver(record.id, step, dumps(payload).decode(), time.time()):
            raise NotWaitingError(f"flow is not waiting on step {step!r}")
        self._nudge()
        return await self.get_state(record.id)

    async def _interrupt_schema(self, record: ExecutionRecord, step: str) -> Any:
        """Replay the flow without side effects up to the interrupt ``step`` to learn
        its schema (the schema lives in code, at the call site)."""
        from ._steps import ProbeMiss, Suspend
        from .context import DurableContext, ProbeFound

        definition = self.flow(record.flow)
        history = await self.store.history(record.id)
        ctx = DurableContext(self, record, None, history, probe=step)
        try:
            await definition.fn(definition.parse_input(loads(record.input)), ctx)
        except ProbeFound as found:
            return found.adapter
        except (ProbeMiss, Suspend, Exception):
            pass
        raise NotWaitingError(f"flow is not waiting on step {step!r} (its code changed?)")

    async def cancel(self, flow_id: str) -> Operation:
        """End an unfinished execution as ``cancelled`` (CANCELLED): its timers never
        fire and a step running now is interrupted. A finished one is left as it is."""
        flow_id = validate_flow_id(flow_id)
        error = error_to_record(CancelledError("flow cancelled"))
        if await self.store.cancel(flow_id, error, time.time()):
            for worker in self._workers:
                worker.cancel_local(flow_id)
            self.notify(flow_id)
        return await self.get_state(flow_id)

    async def cleanup(self, flow_id: str) -> None:
        """Delete a finished execution's state (record, journal, payloads).

        `NotFinishedError` (FAILED_PRECONDITION) while it is not finished.
        """
        if not await self.store.delete(validate_flow_id(flow_id)):
            raise NotFinishedError("flow has not finished; cancel it first")

    # -- in-process signalling ---------------------------------------------------------

    def _nudge(self) -> None:
        for worker in self._workers:
            worker.wake()

    def notify(self, flow_id: str) -> None:
        """Wake local `wait` callers of ``flow_id`` (workers call this)."""
        event = self._changed.pop(flow_id, None)
        if event is not None:
            event.set()
