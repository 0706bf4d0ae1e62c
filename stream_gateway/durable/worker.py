"""`Worker`: claims due executions from the store and runs them, replaying journals.

Run one inside an app's lifespan (``async with engine.worker(): ...``) or as its own
process (`stream_gateway.durable.cli`). Any number of workers, in any number of
processes, may share a store: an execution is only run under a lease got by an
atomic claim and renewed while it runs, and every write is fenced by that lease.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from types import TracebackType
from typing import Self

import anyio
from anyio.abc import TaskGroup

from .._cancel import foreign_cancellation
from .._errors import GatewayError
from .._logs import owner_tag
from ._driver import replay
from ._ids import new_flow_id
from ._replay import Run
from ._schedules import fire_due_quietly
from .engine import DurableEngine
from .errors import DurableStoreError, LeaseLostError
from .records import ExecutionRecord, Lease

__all__ = ["Worker"]

logger = logging.getLogger("stream_gateway.durable")


class _Run:
    __slots__ = ("done", "evicting", "expires", "lease", "margin", "replay", "scope", "worker")

    def __init__(self, lease: Lease, expires: float, duration: float) -> None:
        #: When the lease lapses unless renewed: the run must be stopped before then.
        self.expires = expires
        #: No step starts with less than this left of the lease (a third of it: a
        #: renewal, every third, is then late by more than one period).
        self.margin = duration / 3
        self.lease = lease
        self.scope = anyio.CancelScope()
        self.replay: Run | None = None
        self.evicting = False
        self.worker = lease.worker
        self.done = anyio.Event()

    def attach(self, replay: Run) -> None:
        self.replay = replay
        replay.lease_left = lambda: self.expires - time.time()
        replay.lease_margin = self.margin
        if self.evicting:
            replay.evict(self.worker)

    def evict(self) -> None:
        self.evicting = True
        if self.replay is not None:
            self.replay.evict(self.worker)


class Worker:
    """Runs durable executions of ``engine``'s flows.

    - claims up to ``concurrency`` due executions at a time (only flows it knows),
      with a lease of ``lease`` seconds renewed every ``lease / 3``;
    - fires timers within ``poll_interval`` seconds (at once for its own timers and
      for executions scheduled through the same engine; at once for everything with
      a store that notifies, see `DurableStore.watch_due`);
    - parks an execution evicted (`DurableEngine.evict`) at once if the engine
      that evicts it is this worker's, else when a lease renewal reads the flag;
    - on entry runs `recover`: executions whose lease lapsed, and those still leased
      to this ``worker_id`` (a restarted worker with a stable id takes its own back
      at once; never give two live workers the same id);
    - on exit stops claiming, lets running executions go on for ``grace`` seconds,
      then interrupts them and releases them for another worker. A step interrupted
      so runs again (at-least-once).
    """

    def __init__(
        self,
        engine: DurableEngine,
        *,
        worker_id: str | None = None,
        concurrency: int = 16,
        poll_interval: float = 0.5,
        lease: float = 30.0,
        grace: float = 10.0,
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{new_flow_id()[:8]}"
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.lease = lease
        self.grace = grace
        self._runs: dict[str, _Run] = {}
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self._closing = False
        self._tg: TaskGroup | None = None
        self._next_local: float | None = None

    @property
    def running(self) -> int:
        """How many executions this worker is running now."""
        return len(self._runs)

    def wake(self) -> None:
        """Look for due executions now rather than at the next poll."""
        self._wake.set()

    def cancel_local(self, execution_id: str) -> None:
        """Interrupt the execution if it runs here (it was cancelled)."""
        run = self._runs.get(execution_id)
        if run is not None:
            run.scope.cancel()

    def evict_local(self, execution_id: str) -> None:
        """Park the execution if it runs here (it was evicted)."""
        run = self._runs.get(execution_id)
        if run is not None:
            run.evict()

    async def __aenter__(self) -> Self:
        self._closing = False
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self.engine.notifier.subscribe(self)
        try:
            await self.recover()
        except DurableStoreError:  # the store is down: the claim loop keeps trying
            logger.warning("durable worker %s: store unavailable at start", self.worker_id)
        except anyio.get_cancelled_exc_class():
            if not await self._foreign("recovery at start"):
                await self.__aexit__(None, None, None)
                raise
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        self._tg.start_soon(self._claim_loop)
        self._tg.start_soon(self._renew_loop)
        self._tg.start_soon(self._watch_loop)
        logger.info("durable worker %s started", self.worker_id)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        self._wake.set()
        if self._runs:
            logger.info("draining %d durable executions (grace %.1fs)", len(self._runs), self.grace)
            with anyio.move_on_after(self.grace, shield=True):
                await self._idle.wait()
        for run in self._runs.values():
            run.scope.cancel()
        tg, self._tg = self._tg, None
        assert tg is not None
        tg.cancel_scope.cancel()
        await tg.__aexit__(exc_type, exc, tb)
        self.engine.notifier.unsubscribe(self)
        logger.info("durable worker %s stopped", self.worker_id)

    async def recover(self) -> int:
        """Claim lapsed executions and those leased to this worker id; returns how many."""
        return await self._claim(reclaim_own=True)

    async def _claim(self, reclaim_own: bool = False) -> int:
        free = self.concurrency - len(self._runs)
        if free <= 0 or self._closing or not self.engine.flows or self._tg is None:
            return 0
        now = time.time()
        claimed = await self.store.claim(
            self.worker_id,
            now=now,
            lease_until=now + self.lease,
            limit=free,
            reclaim_own=reclaim_own,
            flows=list(self.engine.flows),
        )
        for record in claimed:
            lease = Lease(record.id, self.worker_id, record.lease_token)
            tg = self._current_group()
            if tg is None:  # stopped while claiming: hand it back
                await _release(self.engine, lease)
                continue
            # Still running here under the lease it let lapse (this process stalled
            # past it): that run stops, and this one starts once it has.
            previous = self._runs.get(record.id)
            if previous is not None:
                previous.scope.cancel()
            run = self._runs[record.id] = _Run(lease, now + self.lease, self.lease)
            self._idle = anyio.Event()
            logger.info(
                "execution %s (flow %r, owner %s): claimed by worker %s",
                record.id, record.flow, owner_tag(record.owner), self.worker_id,
            )  # fmt: skip
            tg.start_soon(self._run, record, run, previous)
        return len(claimed)

    def _current_group(self) -> TaskGroup | None:
        return None if self._closing else self._tg

    async def _foreign(self, what: str) -> bool:
        """In an ``except CancelledError`` block: whether that CancelledError is
        foreign (`foreign_cancellation`), so that the caller treats it as a failed
        call rather than let it end the task (the worker's task group would then
        cancel every run and loop). While the worker stops, nothing is foreign."""
        if self._closing or not await foreign_cancellation():
            return False
        logger.warning(
            "durable worker %s: %s was interrupted by a CancelledError no cancel scope"
            " sent (the store's client gave the call up); carrying on",
            self.worker_id,
            what,
        )
        return True

    async def _claim_loop(self) -> None:
        while not self._closing:
            self._wake = anyio.Event()
            try:
                await fire_due_quietly(self.engine)
                claimed = await self._claim()
            except Exception:  # the store is down: keep polling, never die
                logger.exception("durable worker %s could not claim", self.worker_id)
                claimed = 0
            except anyio.get_cancelled_exc_class():
                if not await self._foreign("a claim"):
                    raise
                claimed = 0
            if claimed and len(self._runs) < self.concurrency:
                continue  # more may be due
            timeout = self.poll_interval
            if self._next_local is not None:
                timeout = max(0.0, min(timeout, self._next_local - time.time()))
                self._next_local = None
            with anyio.move_on_after(timeout):
                await self._wake.wait()

    async def _watch_loop(self) -> None:
        """Let the store wake the claim loop with the times work is due (other
        processes' work: `DurableStore.watch_due`); a store that does not notify
        returns at once, and polling stays the fallback while notifications are down."""
        backoff = max(self.poll_interval, 0.1)
        while not self._closing:
            try:
                await self.store.watch_due(list(self.engine.flows), self._due_hint)
                return  # the store does not notify: polling alone
            except Exception as exc:
                logger.warning(
                    "durable worker %s: store notifications down (%s); polling meanwhile",
                    self.worker_id,
                    exc,
                )
            except anyio.get_cancelled_exc_class():
                if not await self._foreign("the store's notifications"):
                    raise
            self.wake()
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def _due_hint(self, due_at: float) -> None:
        if self._next_local is None or due_at < self._next_local:
            self._next_local = due_at
        self._wake.set()

    async def _renew_loop(self) -> None:
        while True:
            await anyio.sleep(self.lease / 3)
            runs = list(self._runs.values())
            if not runs:
                continue
            leases = [run.lease for run in runs]
            asked = time.time()
            held: set[str] | None = None
            # A run must never outlive its lease (another worker may claim it then): a
            # renewal that does not answer before the soonest lease nears its end is
            # given up, and the runs about to lapse are stopped below.
            patience = min(run.expires for run in runs) - asked - self.lease / 6
            with anyio.move_on_after(max(0.0, patience)):
                try:
                    held = await self.store.renew(self.worker_id, leases, asked + self.lease)
                except Exception:
                    logger.exception("durable worker %s could not renew its leases", self.worker_id)
                except anyio.get_cancelled_exc_class():
                    # Also our own deadline, which the store's client may have
                    # re-raised as a CancelledError of its own: `_foreign` raises
                    # the deadline's cancellation again, for the scope to catch.
                    if not await self._foreign("a lease renewal"):
                        raise
            if held is None:
                now = time.time()
                for run in runs:
                    if (
                        run.expires - now < self.lease / 3
                        and self._runs.get(run.lease.execution_id) is run
                    ):
                        logger.warning(
                            "could not renew the lease on flow %s in time; stopping it",
                            run.lease.execution_id,
                        )
                        run.scope.cancel()
                continue
            for run in runs:
                if run.lease.execution_id in held:
                    run.expires = asked + self.lease
            for lease in leases:
                current = self._runs.get(lease.execution_id)
                if (
                    lease.execution_id not in held
                    and current is not None
                    and current.lease == lease
                ):
                    logger.warning("lost the lease on flow %s; stopping it", lease.execution_id)
                    current.scope.cancel()
            await self._read_evictions(held)

    async def _read_evictions(self, held: set[str]) -> None:
        """Park the runs whose execution was evicted from another process."""
        waiting = [i for i in held if i in self._runs and not self._runs[i].evicting]
        if not waiting:
            return
        try:
            records = await self.store.get_many(waiting)
        except Exception:
            logger.exception("durable worker %s could not read evictions", self.worker_id)
            return
        except anyio.get_cancelled_exc_class():
            if not await self._foreign("reading evictions"):
                raise
            return
        for execution_id, record in records.items():
            run = self._runs.get(execution_id)
            if record.evict_requested and run is not None and record.lease_token == run.lease.token:
                logger.info("flow %s evicted; parking it", execution_id)
                run.evict()

    async def _run(self, record: ExecutionRecord, run: _Run, previous: _Run | None) -> None:
        try:
            with run.scope:
                if previous is not None:
                    await previous.done.wait()
                wake_at = await replay(
                    self.engine,
                    record,
                    run.lease,
                    lambda: run.scope.cancel_called or self._closing,
                    run.attach,
                )
                if wake_at is not None and (self._next_local is None or wake_at < self._next_local):
                    self._next_local = wake_at
        except anyio.get_cancelled_exc_class():
            if not await self._foreign(f"flow {record.id}"):
                raise
            # The run ends as after a store failure: its lease lapses (or is renewed
            # and it is claimed again) and it replays.
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except BaseException:
            logger.exception("durable worker %s failed running flow %s", self.worker_id, record.id)
        finally:
            # Cancelled by `cancel` or a lost lease, the store already says who owns it;
            # interrupted by shutdown, it is handed back.
            if run.scope.cancel_called and self._closing:
                with anyio.CancelScope(shield=True):
                    await _release(self.engine, run.lease)
            # A run handed back due now may be claimed again (a new `_Run`) before
            # this one gets here: only remove our own.
            run.done.set()
            if self._runs.get(record.id) is run:
                del self._runs[record.id]
            if not self._runs:
                self._idle.set()
            self.engine.notify(record.id)
            self._wake.set()


async def _release(engine: DurableEngine, lease: Lease) -> None:
    """Hand an interrupted execution back (due now) for any worker to take."""
    try:
        await engine.store.suspend(
            lease, status="pending", blocked_on=None, wake_at=time.time(), now=time.time()
        )
    except (LeaseLostError, GatewayError):
        pass
