"""`DurableStore`: the contract every durable state backend honours.

A store keeps executions, their journals (entries addressed by ``(branch, key)``), the
signals sent to them (a FIFO queue per execution, consumed exactly once) and "who
waits for whom". It knows nothing of flows or steps: the engine above decides
what to write; the store makes each write atomic and fenced.

Fencing: a worker acts on an execution only under a `Lease` got from `claim`. Every
write made under a lease (`append`, `suspend`, `finish`, `set_status`, `prune`)
succeeds only while that exact lease is current (same worker, same token, status
``running`` or ``rolling_back``); otherwise it raises `LeaseLostError` and changes
nothing. So a worker whose lease lapsed (it
stalled, or was presumed dead) can never overwrite what its successor did.

Audit timeline: the fenced writes (`append`, `suspend`, `finish`) take ``audit``
entries (`AuditEntry`) and store them in the same transaction as the write they
describe, so a step's audit line exists exactly when its journal entry does.
So do `create`, `send_signal`, `recover` and `cancel` (stored only when the change
is made). `add_audit` stores lines on their own; `audit` reads them back, per
execution or as a feed of all.

Times are POSIX seconds given by the caller, so tests and callers agree on "now".
Missing ids raise `ExecutionNotFoundError` unless a method says otherwise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from types import TracebackType
from typing import Any, Self

from .records import (
    AuditEntry,
    ExecutionRecord,
    ExecutionStatus,
    History,
    JournalEntry,
    Lease,
    Schedule,
)

__all__ = ["DurableStore"]


class DurableStore(ABC):
    """Executions, journals, timers and resume payloads; see the module docstring."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections, create tables. Idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. The data stays (for a persistent store)."""

    async def watch_due(self, flows: Collection[str], wake: Callable[[float], None]) -> None:
        """Call ``wake(at)`` whenever an execution of ``flows`` (or a schedule) may be
        due at ``at`` (POSIX seconds; a time already past means now), whichever process
        made it so, until cancelled (optional hook).

        What wakes: an execution created, a signal sent, a wake, a recovery, an
        execution parked with a timer, a waited-on execution finishing, a schedule
        created or changed. A store may call with a future ``at`` (the worker then
        looks at that time) or call again once that time comes; ``wake`` is a plain
        callable that must not block, and extra calls are harmless (the worker just
        claims). A store that cannot notify returns at once (this default: workers
        then find work by polling alone, as with memory and SQLite, where the engine's
        in-process `Notifier` covers what one process does). A store that can
        (Postgres LISTEN/NOTIFY, Firestore snapshot listeners) calls ``wake`` once it
        is listening (work made due before that may have been missed), and raises
        `DurableStoreError` when its connection is lost: the worker calls it again
        after a pause, polling meanwhile.
        """
        del flows, wake

    @abstractmethod
    async def create(
        self, record: ExecutionRecord, *, audit: Sequence[AuditEntry] = ()
    ) -> tuple[ExecutionRecord, bool]:
        """Insert ``record`` unless its id exists; atomically (``audit`` is stored
        only if it was created now).

        Returns the stored record and whether it was created now. An existing id is
        returned unchanged (that is how idempotency keys work: derived ids). The store
        assigns ``seq`` (strictly increasing creation order).
        """

    @abstractmethod
    async def get(self, execution_id: str) -> ExecutionRecord:
        """The execution's record."""

    @abstractmethod
    async def get_many(self, execution_ids: Collection[str]) -> dict[str, ExecutionRecord]:
        """Records of the ids that exist (missing ids are simply absent)."""

    @abstractmethod
    async def list_executions(
        self,
        *,
        status: ExecutionStatus | None = None,
        flow: str | None = None,
        owner: str | None = None,
        any_owner: bool = True,
        parent: str | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> list[ExecutionRecord]:
        """Executions newest first (by ``seq``), filtered; ``after`` is the ``seq`` of the
        last item of the previous page. ``any_owner=False`` keeps only ``owner``'s
        (``owner=None`` then meaning "no owner"); ``parent`` keeps the children of
        that execution."""

    @abstractmethod
    async def history(self, execution_id: str) -> History:
        """The journal in the order entries were first written, and the signals not
        consumed yet in the order they were sent."""

    @abstractmethod
    async def claim(
        self,
        worker: str,
        *,
        now: float,
        lease_until: float,
        limit: int,
        flows: Collection[str],
        reclaim_own: bool = False,
    ) -> list[ExecutionRecord]:
        """Atomically take up to ``limit`` due executions of ``flows``, earliest due first.

        Due: pending/sleeping/waiting/rolling_back with ``due_at <= now``, or
        running/rolling_back with a lapsed lease (``due_at <= now``); with
        ``reclaim_own`` also running/rolling_back ones leased to ``worker`` (a
        restarted worker taking back its own). Each claimed record comes back
        ``running`` (``rolling_back`` stays ``rolling_back``: a compensation in
        progress) with ``lease_owner=worker``, a fresh ``lease_token``,
        ``due_at=lease_until`` and ``evict_requested`` cleared. Two concurrent claims
        never return the same execution.
        """

    @abstractmethod
    async def renew(self, worker: str, leases: Collection[Lease], lease_until: float) -> set[str]:
        """Extend these leases; returns the ids whose lease is still held."""

    @abstractmethod
    async def append(
        self,
        lease: Lease,
        entry: JournalEntry,
        now: float,
        *,
        consume: Collection[int] = (),
        audit: Sequence[AuditEntry] = (),
        preceding: Sequence[JournalEntry] = (),
    ) -> None:
        """Write the ``preceding`` entries, in order, then ``entry``, each at its
        address ``(branch, key)`` (fenced), and mark the signals ``consume`` (ids)
        consumed; atomically (all or nothing).

        A new address is added; a non-final entry (``retrying``, ``pending``) is
        replaced by its successor; a final entry is never changed, and a signal is
        consumed once (either raises `ValueError`: a bug in the caller, nothing written).
        ``preceding`` carries the entries of ephemeral steps, written with the next
        durable write rather than on their own.
        """

    @abstractmethod
    async def set_status(
        self,
        lease: Lease,
        status: ExecutionStatus,
        now: float,
        *,
        audit: Sequence[AuditEntry] = (),
    ) -> None:
        """Switch a leased execution between ``running`` and ``rolling_back`` (fenced,
        the lease kept), with ``audit``; atomically. Any other status is a
        `ValueError` (nothing written)."""

    @abstractmethod
    async def prune(self, lease: Lease, branches: Collection[str], now: float) -> None:
        """Delete the entries of ``branches`` and of the branches nested in them
        (``b/...``), fenced: what a loop forgets of its old iterations."""

    @abstractmethod
    async def suspend(
        self,
        lease: Lease,
        *,
        status: ExecutionStatus,
        blocked_on: str | None,
        wake_at: float | None,
        now: float,
        wait_for: Collection[str] = (),
        signals: Collection[str] = (),
        audit: Sequence[AuditEntry] = (),
    ) -> None:
        """Release the lease and park the execution (fenced) as ``status`` until
        ``wake_at`` (``None``: until a signal, resume or wake), ``evict_requested``
        cleared. A ``rolling_back`` execution parked this way (a rollback
        handler's retry backoff) is claimed again as ``rolling_back``.

        With ``wait_for``, the execution is woken when any of those executions
        finishes; if one already has (or does not exist), it is due at once. With
        ``signals`` (names), it is due at once if a signal of one of those names is
        waiting unconsumed (one sent while it ran is never missed).
        """

    @abstractmethod
    async def finish(
        self,
        lease: Lease,
        *,
        status: ExecutionStatus,
        result: str | None,
        error: dict[str, Any] | None,
        now: float,
        audit: Sequence[AuditEntry] = (),
    ) -> None:
        """End the execution (fenced) as completed/failed (``evict_requested``
        cleared), and wake every execution waiting for it."""

    @abstractmethod
    async def send_signal(
        self,
        execution_id: str,
        name: str,
        payload: str,
        now: float,
        *,
        unique: bool = False,
        audit: Sequence[AuditEntry] = (),
    ) -> bool:
        """Queue a signal for the execution; atomically. A sleeping or waiting
        execution becomes due now. False (nothing stored) if the execution is
        finished, or with ``unique`` if a signal of that name was ever sent to it.
        ``audit`` is stored with the signal (not if it is refused)."""

    @abstractmethod
    async def request_evict(
        self, execution_id: str, now: float, *, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        """Ask the worker running the execution to park it now: set
        ``evict_requested`` on a ``running`` or ``rolling_back`` execution, with
        ``audit``; atomically. False (nothing written) in any other status. The
        flag changes nothing else (the lease stays valid): the worker holding it
        reads it back (`get_many`) with its lease renewals and parks the run."""

    @abstractmethod
    async def recover(
        self, execution_id: str, now: float, *, audit: Sequence[AuditEntry] = ()
    ) -> bool:
        """Make a *failed* execution pending and due now, with its failed journal
        entries deleted (those steps run again, their attempts counted afresh).
        False if it is not failed (then ``audit`` is not stored either)."""

    @abstractmethod
    async def wake(self, execution_id: str, now: float) -> bool:
        """Make a pending, sleeping or waiting execution due now. False otherwise."""

    @abstractmethod
    async def cancel(
        self,
        execution_id: str,
        error: dict[str, Any],
        now: float,
        *,
        audit: Sequence[AuditEntry] = (),
    ) -> bool:
        """End an unfinished execution as ``cancelled`` with ``error``; atomically.

        Its timers are dropped (``due_at=None``), its lease revoked (the worker's next
        fenced write fails), ``evict_requested`` cleared, its waiters woken. False if
        it was already finished.
        """

    @abstractmethod
    async def delete(self, execution_id: str) -> bool:
        """Remove a *finished* execution with its journal, payloads and audit timeline.

        False if it is not finished (nothing removed).
        """

    # -- audit timeline ----------------------------------------------------------------

    @abstractmethod
    async def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        """Store ``entries`` (not fenced), atomically, in their order.

        Each gets the next ``seq`` of the store (strictly increasing across all
        executions, never reused; the ``seq`` given is ignored). Whether the
        execution exists is not checked. The fenced writes' ``audit`` argument
        follows the same rules, inside their own transaction (and stores nothing
        if the write is refused).
        """

    @abstractmethod
    async def audit(
        self, *, execution_id: str | None = None, after: int = 0, limit: int = 1000
    ) -> list[AuditEntry]:
        """Audit entries with ``seq > after``, oldest first, at most ``limit``: one
        execution's timeline, or (``execution_id=None``) every execution's, which
        is how feeds follow the store (pass the last ``seq`` seen as ``after``).
        An unknown execution simply has none."""

    # -- recurring schedules -----------------------------------------------------------

    @abstractmethod
    async def create_schedule(self, schedule: Schedule) -> tuple[Schedule, bool]:
        """Insert ``schedule`` unless its id exists; atomically. Returns the stored
        schedule and whether it was created now (an existing one is unchanged)."""

    @abstractmethod
    async def put_schedule(self, schedule: Schedule) -> bool:
        """Replace the stored schedule of that id with ``schedule``, every field;
        atomically. False (nothing written) if no schedule has that id."""

    @abstractmethod
    async def get_schedule(self, schedule_id: str) -> Schedule:
        """The schedule; `ScheduleNotFoundError` for an unknown id."""

    @abstractmethod
    async def list_schedules(
        self,
        *,
        owner: str | None = None,
        any_owner: bool = True,
        after: str | None = None,
        limit: int = 50,
    ) -> list[Schedule]:
        """Schedules ordered by id, those with ``id > after``; ``any_owner=False``
        keeps only ``owner``'s (``None``: no owner)."""

    @abstractmethod
    async def delete_schedule(self, schedule_id: str) -> bool:
        """Remove the schedule (its executions stay). False if there was none."""

    @abstractmethod
    async def due_schedules(self, now: float, limit: int) -> list[Schedule]:
        """Up to ``limit`` schedules not paused with ``next_at <= now``, earliest first."""

    @abstractmethod
    async def fire_schedule(
        self,
        schedule_id: str,
        *,
        tick: float,
        next_at: float | None,
        execution: ExecutionRecord | None,
        now: float,
        audit: Sequence[AuditEntry] = (),
    ) -> bool:
        """Fire the tick ``tick`` of a schedule, once; atomically.

        Only if the schedule exists, is not paused and its ``next_at`` is exactly
        ``tick``: sets ``next_at``, ``last_tick=tick``, and with ``execution`` creates
        it (insert-or-get by id, as `create`) and sets ``last_execution`` to its id;
        stores ``audit``. Returns whether it fired: of several workers firing one
        tick concurrently exactly one gets True; the others change nothing.
        """
