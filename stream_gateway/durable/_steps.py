"""The journal walk under `DurableContext`: positions, keys, divergence, fenced
writes, and the attempt/retry and poll state machines."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection

import anyio

from .._errors import DeadlineExceededError, GatewayError
from .definition import RetryPolicy
from .errors import (
    CriticalError,
    HistoryDivergedError,
    LeaseLostError,
    StepExhaustedError,
    StepResultTooLargeError,
    error_to_record,
    public_error,
    rebuild_error,
)
from .records import ExecutionStatus, History, JournalEntry, Lease
from .store import DurableStore

__all__ = ["Abandon", "ProbeMiss", "StepRunner", "Suspend"]

logger = logging.getLogger("stream_gateway.durable")


class Suspend(BaseException):  # control flow, not an error
    """Unwinds a flow function that must wait; the worker parks the execution."""

    def __init__(
        self,
        status: ExecutionStatus,
        blocked_on: str,
        wake_at: float | None,
        *,
        wait_for: Collection[str] = (),
    ) -> None:
        super().__init__(f"{status} on {blocked_on!r}")
        self.status = status
        self.blocked_on = blocked_on
        self.wake_at = wake_at
        self.wait_for = list(wait_for)


class Abandon(BaseException):  # control flow, not an error
    """Unwinds a flow function whose lease was lost: someone else owns it now."""


class ProbeMiss(BaseException):  # control flow, not an error
    """A probe replay reached a step that has not run: it cannot see further."""


_NOT_RETRIED = (CriticalError, HistoryDivergedError, StepResultTooLargeError)


class StepRunner:
    """Walks an execution's journal; see `DurableContext` for the public primitives."""

    def __init__(
        self,
        store: DurableStore,
        lease: Lease | None,
        history: History,
        probe: str | None,
        max_result_bytes: int,
    ) -> None:
        self.store = store
        self._lease = lease
        self._history = history
        self._probe = probe
        self._max_result_bytes = max_result_bytes
        self._pos = 0
        self._keys: set[str] = set()
        self._counts: dict[str, int] = {}
        #: Set when the code no longer matches the journal; fails the execution even
        #: if flow code caught the error.
        self.diverged: HistoryDivergedError | None = None

    def _key(self, name: str) -> str:
        key = name
        if key in self._keys:
            n = self._counts.get(name, 0)
            while key in self._keys:
                n += 1
                key = f"{name}-{n}"
            self._counts[name] = n
        self._keys.add(key)
        return key

    def _next(self, kind: str, name: str) -> tuple[int, str, JournalEntry | None]:
        """Take the next position: its key and its entry (``None`` past the end)."""
        if self.diverged is not None:
            raise self.diverged
        key, pos = self._key(name), self._pos
        self._pos += 1
        entries = self._history.entries
        entry = entries[pos] if pos < len(entries) else None
        if entry is not None and (entry.kind != kind or entry.key != key):
            self.diverged = HistoryDivergedError(
                f"history diverged at step {pos}: the code asks for {kind} {key!r} "
                f"but the journal recorded {entry.kind} {entry.key!r}",
                details={
                    "position": pos,
                    "expected": {"kind": entry.kind, "key": entry.key},
                    "actual": {"kind": kind, "key": key},
                },
            )
            raise self.diverged
        if self._probe is not None and (entry is None or not entry.final):
            if not (kind == "interrupt" and key == self._probe):
                raise ProbeMiss(key)
        return pos, key, entry

    def check_consumed(self) -> None:
        """Raise `HistoryDivergedError` if the journal has steps the code never reached."""
        if self.diverged is not None:
            raise self.diverged
        entries = self._history.entries
        if self._pos < len(entries):
            extra = entries[self._pos]
            self.diverged = HistoryDivergedError(
                f"history diverged: the flow finished but the journal has {extra.kind} "
                f"{extra.key!r} at step {self._pos}",
                details={"position": self._pos, "expected": {"kind": extra.kind, "key": extra.key}},
            )
            raise self.diverged

    async def _write(self, entry: JournalEntry) -> None:
        if self._lease is None:
            raise ProbeMiss(entry.key)
        try:
            await self.store.append(self._lease, entry, time.time())
        except LeaseLostError:
            raise Abandon(entry.key) from None
        if entry.seq < len(self._history.entries):
            self._history.entries[entry.seq] = entry
        else:
            self._history.entries.append(entry)

    def check_size(self, key: str, raw: str) -> None:
        """Raise `StepResultTooLargeError` if ``raw`` is over the result size limit."""
        size = len(raw.encode())
        if size > self._max_result_bytes:
            raise StepResultTooLargeError(
                f"result of step {key!r} is {size} bytes, over the limit of "
                f"{self._max_result_bytes}",
                details={"step": key, "size": size, "limit": self._max_result_bytes},
            )

    async def _step(
        self, kind: str, name: str, call: Callable[[], Awaitable[str]], retry: RetryPolicy
    ) -> str | None:
        """Run one attempt of a step (or replay it); returns its result as JSON text."""
        pos, key, entry = self._next(kind, name)
        if entry is not None and entry.final:
            if entry.status == "failed":
                raise rebuild_error(entry.error or {})
            return entry.result
        if entry is not None and entry.wake_at is not None and entry.wake_at > time.time():
            raise Suspend("sleeping", key, entry.wake_at)
        attempt = entry.attempts + 1 if entry is not None else 1
        started = time.time()
        try:
            if retry.timeout is not None:
                with anyio.fail_after(retry.timeout):
                    raw = await call()
            else:
                raw = await call()
            self.check_size(key, raw)
        except _NOT_RETRIED as exc:
            await self._fail(pos, kind, key, attempt, started, exc)
            raise
        except Exception as exc:
            cause: BaseException = exc
            if isinstance(exc, TimeoutError):
                cause = DeadlineExceededError(f"step {key!r} timed out after {retry.timeout}s")
            if attempt >= retry.max_attempts:
                error = StepExhaustedError(
                    f"step {key!r} failed after {attempt} attempt(s)",
                    details={
                        "step": key,
                        "attempts": attempt,
                        "cause": public_error(cause).to_json(),
                    },
                )
                logger.warning(
                    "step %r of flow %s exhausted its attempts", key, self._where(), exc_info=exc
                )
                await self._fail(pos, kind, key, attempt, started, error)
                raise error from exc
            wake = time.time() + retry.backoff(attempt)
            logger.info(
                "step %r of flow %s failed (attempt %d/%d): %r; retrying in %.2fs",
                key,
                self._where(),
                attempt,
                retry.max_attempts,
                exc,
                wake - time.time(),
            )
            await self._write(
                JournalEntry(
                    pos,
                    kind,
                    key,
                    "retrying",
                    error=error_to_record(public_error(cause)),
                    attempts=attempt,
                    started_at=started,
                    wake_at=wake,
                )
            )
            raise Suspend("sleeping", key, wake) from None
        await self._write(
            JournalEntry(
                pos,
                kind,
                key,
                "completed",
                raw,
                attempts=attempt,
                started_at=started,
                finished_at=time.time(),
            )
        )
        logger.debug("step %r of flow %s completed", key, self._where())
        return raw

    async def _fail(
        self, pos: int, kind: str, key: str, attempt: int, started: float, exc: GatewayError
    ) -> None:
        await self._write(
            JournalEntry(
                pos,
                kind,
                key,
                "failed",
                error=error_to_record(exc),
                attempts=attempt,
                started_at=started,
                finished_at=time.time(),
            )
        )

    async def _poll(
        self,
        name: str,
        check: Callable[[], Awaitable[str | None]],
        period: float,
        timeout: float,  # noqa: ASYNC109 - a durable deadline, not a scope
    ) -> str | None:
        pos, key, entry = self._next("poll", name)
        if entry is not None and entry.final:
            if entry.status == "failed":
                raise rebuild_error(entry.error or {})
            return entry.result
        if entry is not None and entry.wake_at is not None and entry.wake_at > time.time():
            raise Suspend("sleeping", key, entry.wake_at)
        started = entry.started_at if entry is not None else time.time()
        checks = (entry.attempts if entry is not None else 0) + 1
        raw: str | None = None
        try:
            raw = await check()
        except CriticalError as exc:
            await self._fail(pos, "poll", key, checks, started, exc)
            raise
        except Exception as exc:
            logger.info("poll %r of flow %s: check raised %r", key, self._where(), exc)
        now = time.time()
        if raw is not None:
            self.check_size(key, raw)
            await self._write(
                JournalEntry(
                    pos,
                    "poll",
                    key,
                    "completed",
                    raw,
                    attempts=checks,
                    started_at=started,
                    finished_at=now,
                )
            )
            return raw
        if now - started >= timeout:
            error = DeadlineExceededError(f"poll {key!r} timed out after {timeout}s")
            await self._fail(pos, "poll", key, checks, started, error)
            raise error
        wake = min(now + period, started + timeout)
        await self._write(
            JournalEntry(
                pos, "poll", key, "pending", attempts=checks, started_at=started, wake_at=wake
            )
        )
        raise Suspend("sleeping", key, wake)

    def _where(self) -> str:
        return self._lease.execution_id if self._lease is not None else "?"
