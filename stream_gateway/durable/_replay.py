"""The replay core: one run of an execution (`Run`) and its branches (`Cursor`).

A `Run` holds what one replay knows: the journal by address ``(branch, key)``, the
signals not consumed yet, the lease every write is fenced by, and whether the run
must end (divergence, misuse, a lost lease, a store failure). A `Cursor` is one
branch of it: the flow's own code (branch ``""``) or a `join`/`race` branch or a
`loop` iteration, each with its own key scope, position counter and seal.

Keys are given when a durable call is *made* (the coroutine created), in program
order. A call made from a task the branch did not start (``asyncio.gather`` of
helpers, a task group) may not repeat a name already used in the branch: its
suffix would depend on timing. Sequential code is also checked by position, so a
renamed step is caught before anything runs.

Sealing: once a durable call of a branch suspends, every later call of that branch
(and of branches nested in it) re-raises the suspension without running or writing.

Ephemeral steps: their entries are *deferred* (indexed at once, written with the
next fenced write, or by `Run.flush` before the run parks or ends). Eviction: once
`Run.evict` was called, steps running now are interrupted and every durable call
raises the run's eviction, a suspension that parks the execution due now.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import time
from collections.abc import Callable, Collection, Coroutine
from typing import TYPE_CHECKING, Any

import anyio

from .. import _telemetry
from .._cancel import foreign_cancellation
from .._errors import GatewayError
from .._json import dumps, loads
from ._stream import RunStream
from .errors import (
    DurableStoreError,
    DurableUsageError,
    HistoryDivergedError,
    JournalTooLargeError,
    LeaseLostError,
)
from .records import (
    AuditEntry,
    ExecutionRecord,
    ExecutionStatus,
    History,
    JournalEntry,
    Lease,
    Signal,
)

if TYPE_CHECKING:
    from .engine import DurableEngine

__all__ = [
    "Abandon",
    "Closed",
    "Cursor",
    "ProbeFound",
    "ProbeMiss",
    "Run",
    "Suspend",
    "STOP",
    "STREAMED",
    "WAKE",
    "classify",
    "in_step",
]

logger = logging.getLogger("stream_gateway.durable")

#: The path of the step whose body runs in this context (durable calls there are errors).
in_step: contextvars.ContextVar[str | None] = contextvars.ContextVar("in_step", default=None)

END = "$end"
"""The key under which a join/race branch records how it ended."""

WAKE = "$wake"
"""The signal `DurableEngine.wake` sends: the next run skips poll and retry delays."""

STREAMED = "$streamed"
"""The root key of the pending journal entry written when a run parks with chunks of
the flow's own code that no entry vouches for yet (its ``stream_at`` does): the next
run neither retracts nor repeats them."""

STOP = "$stop"
"""The signal `DurableEngine.stop` sends, and the root key of the journal entry that
records which durable call first saw it (`Run.observe_stop`)."""


class Suspend(BaseException):  # control flow, not an error
    """Unwinds a flow function that must wait; the worker parks the execution."""

    def __init__(
        self,
        status: ExecutionStatus,
        blocked_on: str | None,
        wake_at: float | None,
        *,
        wait_for: Collection[str] = (),
        signals: Collection[str] = (),
    ) -> None:
        super().__init__(f"{status} on {blocked_on!r}")
        self.status: ExecutionStatus = status
        self.blocked_on = blocked_on
        self.wake_at = wake_at
        self.wait_for = list(wait_for)
        self.signals = list(signals)

    @classmethod
    def merge(cls, suspends: Collection[Suspend]) -> Suspend:
        """One suspension for several: the earliest wake-up wins, every wait is kept."""
        ordered = sorted(suspends, key=lambda s: (s.wake_at is None, s.wake_at or 0.0))
        first = ordered[0]
        if len(ordered) == 1:
            return first
        wait_for = [i for s in ordered for i in s.wait_for]
        signals = [n for s in ordered for n in s.signals]
        return cls(
            first.status,
            first.blocked_on,
            first.wake_at,
            wait_for=dict.fromkeys(wait_for),
            signals=dict.fromkeys(signals),
        )


class Abandon(BaseException):  # control flow, not an error
    """Unwinds a run that must stop now and replay later: its lease was lost, or
    the store failed (a transient error never fails an execution)."""


class Closed(BaseException):  # control flow, not an error
    """Raised by durable calls made after the flow function ended (leftover tasks)."""


class ProbeMiss(BaseException):  # control flow, not an error
    """A probe replay reached a step that has not run: it cannot see further."""


class ProbeFound(BaseException):  # control flow, not an error
    """Unwinds a probe replay at the interrupt it looked for, with that step's schema."""

    def __init__(self, adapter: Any) -> None:
        super().__init__("probe found its interrupt")
        self.adapter = adapter


CONTROL = (Suspend, Abandon, Closed, ProbeMiss, ProbeFound)


def _task_id() -> int:
    return anyio.get_current_task().id


def _size(entry: JournalEntry) -> int:
    return len(entry.result or "") + (len(str(entry.error)) if entry.error else 0) + 64


class Run:
    """One replay of one execution; see the module docstring."""

    def __init__(
        self,
        engine: DurableEngine,
        record: ExecutionRecord,
        lease: Lease | None,
        history: History,
        *,
        probe: str | None = None,
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.record = record
        self.lease = lease
        self.probe = probe
        self.entries: dict[tuple[str, str], JournalEntry] = {}
        self.by_position: dict[tuple[str, int], JournalEntry] = {}
        self.branch_keys: dict[str, set[str]] = {}
        self.journal_bytes = 0
        for entry in history.entries:
            self._index(entry)
        self.signals: list[Signal] = [s for s in history.signals if s.name not in (WAKE, STOP)]
        #: Stop requests not yet recorded, and whether the flow has seen one.
        self.stops = [s.id for s in history.signals if s.name == STOP]
        self.stopped = False
        #: Woken by an operator: poll periods and retry backoffs are over now.
        self.woken = [s.id for s in history.signals if s.name == WAKE]
        self.woken_consumed = False
        #: Set when the run must fail whatever the flow does (divergence, misuse).
        self.fatal: GatewayError | None = None
        self.closed = False
        self.abandoned: str | None = None
        #: Set by the worker running it: how long its lease has left (seconds, by
        #: its last renewal) and the least a step must have to start.
        self.lease_left: Callable[[], float] | None = None
        self.lease_margin = 0.0
        self.inflight = 0
        self._settled = anyio.Event()
        self._scopes: set[anyio.CancelScope] = set()
        self._made: list[tuple[Coroutine[Any, Any, Any], str]] = []
        #: Audit lines waiting for the next fenced write (stored in its transaction).
        self.audit: list[AuditEntry] = []
        #: Entries of ephemeral steps waiting for the next fenced write.
        self.deferred: list[JournalEntry] = []
        #: Asked to park now (`DurableEngine.evict`): see `evict`.
        self.evicted = False
        #: The execution's stream (streaming flows; otherwise it sends nothing).
        self.stream = RunStream()

    # -- journal -------------------------------------------------------------------

    def _index(self, entry: JournalEntry) -> None:
        old = self.entries.get((entry.branch, entry.key))
        if old is not None:
            self.journal_bytes -= _size(old)
        self.entries[(entry.branch, entry.key)] = entry
        if entry.seq >= 0:
            self.by_position[(entry.branch, entry.seq)] = entry
        self.branch_keys.setdefault(entry.branch, set()).add(entry.key)
        self.journal_bytes += _size(entry)

    def _check_growth(self, entry: JournalEntry) -> None:
        old = self.entries.get((entry.branch, entry.key))
        grown = self.journal_bytes + _size(entry) - (_size(old) if old is not None else 0)
        limit = self.engine.max_journal_bytes
        if grown > limit:
            error = JournalTooLargeError(
                f"the journal of flow {self.record.id} would grow to {grown} bytes, over the "
                f"limit of {limit}: bound long work with ctx.loop(..., history_keep=...)",
                details={"size": grown, "limit": limit},
            )
            self.fatal = self.fatal or error
            raise error

    async def write(self, entry: JournalEntry, *, consume: Collection[int] = ()) -> None:
        """Write ``entry`` (fenced), after the deferred entries of ephemeral steps, in
        one transaction; a lost lease or a store failure abandons the run."""
        if self.lease is None:
            raise ProbeMiss(entry.key)
        self._check_growth(entry)
        if self.woken:
            consume = [*consume, *self.woken]
        audit, self.audit = self.audit, []
        deferred, self.deferred = self.deferred, []
        try:
            with _telemetry.span("durable.storage.append", execution_id=self.record.id):
                async with self.stream.committing(entry, preceding=deferred):
                    if deferred:
                        await self.store.append(
                            self.lease,
                            entry,
                            time.time(),
                            consume=consume,
                            audit=audit,
                            preceding=deferred,
                        )
                    else:  # stores that predate `preceding` work until a step is ephemeral
                        await self.store.append(
                            self.lease, entry, time.time(), consume=consume, audit=audit
                        )
        except LeaseLostError:
            for observer in _telemetry.observers:
                observer.lease_expired("execution")
            raise self.abandon("its lease was lost") from None
        except DurableStoreError as exc:
            raise self.abandon(f"the store failed ({exc.message})") from None
        except anyio.get_cancelled_exc_class():
            # The store's client gave the write up with a CancelledError of its own
            # (gRPC's asyncio channel does): a store failure, not a cancellation.
            if not await foreign_cancellation():
                raise
            raise self.abandon("the store's client gave the write up") from None
        self.woken_consumed = True
        self.woken = []
        self._index(entry)

    def defer(self, entry: JournalEntry) -> None:
        """Keep an ephemeral step's final ``entry`` for the next write: this run sees
        it at once; a crash before that write loses it (the step runs again)."""
        if self.lease is None:
            raise ProbeMiss(entry.key)
        self._check_growth(entry)
        self.deferred.append(entry)
        self._index(entry)

    async def flush(self) -> None:
        """Write the deferred entries now, with the audit lines so far (before the
        run parks or ends). Store errors propagate (`LeaseLostError`,
        `DurableStoreError`)."""
        if not self.deferred or self.lease is None:
            return
        *earlier, last = self.deferred
        audit = self.audit  # the steps' own lines go with their entries
        async with self.stream.committing(last, preceding=earlier):
            if earlier:
                await self.store.append(
                    self.lease, last, time.time(), audit=audit, preceding=earlier
                )
            else:
                await self.store.append(self.lease, last, time.time(), audit=audit)
        self.deferred, self.audit = [], []

    async def observe_stop(self, path: str, replayed: bool) -> None:
        """Before the durable call at ``path``: a stop requested (`DurableEngine.stop`)
        becomes visible here, recorded once with the call that first saw it, so that a
        replay sees it at the same call. ``replayed``: the call has its final entry."""
        if self.stopped:
            return
        recorded = self.entries.get(("", STOP))
        if recorded is not None:
            self.stopped = loads(recorded.result or "{}").get("at") == path
            return
        if replayed or self.lease is None:
            return
        if not self.stops and self.stream.stop_flagged():
            # Asked while this run goes on: the stream's writer heard it (the stream
            # manager relays a stop to the process that writes); take the signal.
            try:
                history = await self.store.history(self.record.id)
            except DurableStoreError as exc:
                raise self.abandon(f"the store failed ({exc.message})") from None
            self.stops = [s.id for s in history.signals if s.name == STOP]
        if not self.stops:
            return
        now = time.time()
        self.log("stop", path)
        await self.write(
            JournalEntry(
                -1, "stop", STOP, "completed", dumps({"at": path}).decode(),
                started_at=now, finished_at=now,
            ),
            consume=self.stops,
        )  # fmt: skip
        self.stops = []
        self.stopped = True

    async def prune(self, branches: Collection[str]) -> None:
        """Forget the entries of ``branches`` (and nested ones)."""
        if self.lease is None or not branches:
            return
        # Not written yet, so never: written after the prune, they would come back.
        self.deferred = [e for e in self.deferred if not _within(e.branch, set(branches))]
        try:
            await self.store.prune(self.lease, branches, time.time())
        except LeaseLostError:
            raise self.abandon("its lease was lost") from None
        except DurableStoreError as exc:
            raise self.abandon(f"the store failed ({exc.message})") from None
        gone = set(branches)
        for address in [a for a in self.entries if _within(a[0], gone)]:
            entry = self.entries.pop(address)
            self.journal_bytes -= _size(entry)
            self.by_position.pop((entry.branch, entry.seq), None)
            keys = self.branch_keys.get(entry.branch)
            if keys is not None:
                keys.discard(entry.key)

    def log(self, kind: str, step: str | None = None, **data: Any) -> None:
        """Add an audit line; it is stored with the next fenced write of this run."""
        if self.lease is not None:
            self.audit.append(AuditEntry(self.record.id, kind, time.time(), step, data))
            if kind == "status":
                for observer in _telemetry.observers:
                    observer.execution_status(data["status"])

    def evict(self, worker: str) -> None:
        """Park the run now: steps running are interrupted (their attempt is not
        counted) and every durable call from here raises `eviction`."""
        if self.evicted:
            return
        self.evicted = True
        self.log("evicted", worker=worker)
        self.interrupt()

    def eviction(self) -> Suspend:
        """The suspension of an evicted run: parked due now, for any worker (a
        rollback in progress stays ``rolling_back``)."""
        status: ExecutionStatus = (
            "rolling_back" if self.record.status == "rolling_back" else "pending"
        )
        return Suspend(status, None, time.time())

    def check_lease(self) -> None:
        """Before a step's body starts: abandon the run when its worker's lease is
        about to lapse (its renewals are late). A body started then could still be
        running when another worker takes the execution over."""
        if self.lease_left is not None and self.lease_left() < self.lease_margin:
            raise self.abandon("its lease is about to lapse (late renewals)")

    def abandon(self, why: str) -> Abandon:
        """Mark the run abandoned (it replays later) and return the exception to raise."""
        self.abandoned = self.abandoned or why
        return Abandon(why)

    def due(self, wake_at: float | None) -> bool:
        """Whether a retry backoff or poll period ending at ``wake_at`` is over."""
        return wake_at is None or wake_at <= time.time() or bool(self.woken or self.woken_consumed)

    def take_signals(self, names: Collection[str], count: int) -> list[Signal]:
        """Take up to ``count`` unconsumed signals of ``names``, oldest first."""
        taken = [s for s in self.signals if s.name in names][:count]
        for signal in taken:
            self.signals.remove(signal)
        return taken

    # -- calls in flight -----------------------------------------------------------

    def made(self, coro: Coroutine[Any, Any, Any], what: str) -> Coroutine[Any, Any, Any]:
        """Remember a durable call's coroutine to detect a forgotten ``await``."""
        if len(self._made) > 256:
            self._made = [
                m for m in self._made if inspect.getcoroutinestate(m[0]) == inspect.CORO_CREATED
            ]
        self._made.append((coro, what))
        return coro

    def forgotten(self) -> list[str]:
        """Durable calls made but never awaited (they are closed: they never will be)."""
        found = []
        for coro, what in self._made:
            if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
                coro.close()
                found.append(what)
        self._made.clear()
        return found

    def enter(self, scope: anyio.CancelScope) -> None:
        self.inflight += 1
        self._scopes.add(scope)

    def leave(self, scope: anyio.CancelScope) -> None:
        self.inflight -= 1
        self._scopes.discard(scope)
        if self.inflight == 0:
            self._settled.set()

    async def settle(self) -> None:
        """Wait for steps still running in leftover tasks (their results are kept)."""
        while self.inflight > 0:
            self._settled = anyio.Event()
            await self._settled.wait()

    def interrupt(self) -> None:
        """Cancel every step still running (the run is stopping)."""
        for scope in list(self._scopes):
            scope.cancel()


def _within(branch: str, roots: set[str]) -> bool:
    while True:
        if branch in roots:
            return True
        if "/" not in branch:
            return False
        branch = branch.rsplit("/", 1)[0]


class Cursor:
    """One branch of a run: key scope, positions and seal."""

    def __init__(self, run: Run, branch: str, parent: Cursor | None) -> None:
        self.run = run
        self.branch = branch
        self.parent = parent
        self.owner = _task_id()
        self.position = 0
        self.keys: set[str] = set()
        self._counts: dict[str, int] = {}
        self.sealed: Suspend | None = None
        self.concurrent = False

    def path(self, key: str) -> str:
        return f"{self.branch}/{key}" if self.branch else key

    def child(self, branch: str) -> Cursor:
        """A branch nested in this one (call it from the task that will run it)."""
        return Cursor(self.run, f"{self.branch}/{branch}" if self.branch else branch, self)

    def slot(self, kind: str, name: str) -> tuple[int, str]:
        """Give a durable call made now its position and key, checking the journal."""
        run = self.run
        if run.fatal is not None:
            raise run.fatal
        step = in_step.get()
        if step is not None:
            error = DurableUsageError(
                f"ctx.{kind}({name!r}) was called inside the body of step {step!r}: durable "
                "calls go between steps (a step body is plain code; use ctx.join for "
                "parallel branches)"
            )
            run.fatal = error
            raise error
        foreign = _task_id() != self.owner
        key = name
        if key in self.keys:
            if foreign:
                error = DurableUsageError(
                    f"concurrent tasks both call ctx.{kind}({name!r}) in one branch: the "
                    "order would depend on timing. Give each call its own name, or run the "
                    "tasks as ctx.join branches"
                )
                run.fatal = error
                raise error
            n = self._counts.get(name, 0) + 1
            while f"{name}-{n}" in self.keys:
                n += 1
            self._counts[name] = n
            key = f"{name}-{n}"
        self.keys.add(key)
        if foreign:
            self.concurrent = True
            position = -1
        else:
            position = self.position
            self.position += 1
        entry = run.entries.get((self.branch, key))
        run.stream.passed(entry)
        if entry is not None and entry.kind != kind:
            self._diverged(
                f"history diverged at {self.path(key)!r}: the code asks for {kind} but the "
                f"journal recorded {entry.kind}",
                {"step": self.path(key), "expected": entry.kind, "actual": kind},
            )
        if entry is None and position >= 0 and not self.concurrent:
            there = run.by_position.get((self.branch, position))
            if there is not None and there.key not in self.keys and there.key != END:
                self._diverged(
                    f"history diverged at step {position} of branch {self.branch!r}: the "
                    f"code asks for {kind} {key!r} but the journal recorded {there.kind} "
                    f"{there.key!r}",
                    {
                        "branch": self.branch,
                        "position": position,
                        "expected": {"kind": there.kind, "key": there.key},
                        "actual": {"kind": kind, "key": key},
                    },
                )
        return position, key

    def _diverged(self, message: str, details: dict[str, Any]) -> None:
        error = HistoryDivergedError(message, details=details)
        self.run.fatal = self.run.fatal or error
        raise error

    def check(self) -> None:
        """Re-raise a seal (this branch's or an enclosing one's); refuse when closed."""
        if self.run.closed:
            raise Closed()
        cursor: Cursor | None = self
        while cursor is not None:
            if cursor.sealed is not None:
                raise cursor.sealed
            cursor = cursor.parent

    def seal(self, suspend: Suspend) -> None:
        self.sealed = suspend if self.sealed is None else Suspend.merge([self.sealed, suspend])

    def check_consumed(self) -> None:
        """At the end of the branch: every entry it recorded must have been reached."""
        run = self.run
        if run.fatal is not None:
            raise run.fatal
        left = sorted(run.branch_keys.get(self.branch, set()) - self.keys - {END, STOP, STREAMED})
        if left:
            entry = run.entries[(self.branch, left[0])]
            self._diverged(
                f"history diverged: branch {self.branch or '(root)'!r} finished but the "
                f"journal has {entry.kind} {entry.key!r} that the code never reached",
                {"branch": self.branch, "expected": {"kind": entry.kind, "key": entry.key}},
            )


def classify(exc: BaseException) -> tuple[list[Suspend], list[BaseException], list[BaseException]]:
    """Split what a flow (or a branch) raised, exception groups flattened:
    ``(suspensions, other control flow, errors)``. Cancellations that a task group
    raised alongside are dropped."""
    suspends: list[Suspend] = []
    controls: list[BaseException] = []
    errors: list[BaseException] = []
    stack = [exc]
    cancelled = anyio.get_cancelled_exc_class()
    while stack:
        item = stack.pop()
        if isinstance(item, BaseExceptionGroup):
            stack.extend(reversed(item.exceptions))
        elif isinstance(item, Suspend):
            suspends.append(item)
        elif isinstance(item, CONTROL):
            controls.append(item)
        elif isinstance(item, cancelled) and exc is not item:
            continue
        else:
            errors.append(item)
    return suspends, controls, errors
