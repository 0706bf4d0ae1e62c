"""`DurableContext`: the durable calls a flow is made of, memoized in its journal.

Replay: every time an execution wakes up, its flow function runs again from the top
with a fresh context over the stored journal. Each durable call gets a key in its
branch when it is made (its name; a repeated name gets ``name-1``, ``name-2``...);
when the journal holds a final entry under that key, the stored outcome is returned
(or raised) without running anything. Otherwise the call runs for real and its entry
is written before it returns.

A call that must wait (sleep, retry backoff, interrupt, signal, other flows) unwinds
the flow function with an internal ``BaseException`` that ``except Exception``
cannot swallow, and *seals* its branch: every later durable call there re-raises it
without running. The worker parks the execution until its timer, signal or child.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import ValidationError

from .._codec import Codec
from .._errors import InvalidArgumentError
from .._json import JsonValue, dumps, loads
from ..flow import Flow, FlowContext
from . import _branches, _compensation, _decisions
from ._decisions import Case
from ._ids import validate_flow_id
from ._replay import Cursor, ProbeFound, Run, Suspend, in_step
from ._steps import attempt, child, guarded, outcome, poll
from ._time import epoch, seconds
from .definition import DurableFlow, RetryPolicy
from .errors import (
    DurableUsageError,
    ExecutionNotFoundError,
    RollbackError,
    SignalTimeoutError,
    error_to_record,
)
from .records import JournalEntry, Operation

if TYPE_CHECKING:
    from .engine import DurableEngine

__all__ = ["DEFAULT_RETRY", "DurableContext", "Loop", "Message"]

T = TypeVar("T")

Step = Callable[[], Any]
"""A step's body: a function of no arguments. An ``async def`` runs on the event
loop; anything else runs on a worker thread (an awaitable it returns is awaited)."""

Branch = Callable[["DurableContext"], Awaitable[Any]]
"""A `join`/`race` branch: ``async def branch(ctx)`` with its own context."""

#: The retry policy of `DurableContext.run` when none is given: 3 attempts.
DEFAULT_RETRY = RetryPolicy()


def _encoder(codec: Codec) -> Callable[[Any], str]:
    def encode(value: Any) -> str:
        return codec.encode(value).decode()

    return encode


def _decode(raw: str | None, codec: Codec | None) -> Any:
    return (codec or _ANY).decode(raw)


_ANY = Codec()


@dataclass(frozen=True, slots=True)
class Message:
    """A signal taken by `DurableContext.messages`: its name and JSON payload."""

    name: str
    payload: JsonValue


@dataclass(frozen=True, slots=True)
class Loop:
    """What a `DurableContext.loop` body returns: `Loop.next` or `Loop.done`."""

    finished: bool
    state: Any = None
    value: Any = None

    @classmethod
    def next(cls, state: Any) -> Loop:
        """Run another iteration with ``state`` (JSON)."""
        return cls(False, state=state)

    @classmethod
    def done(cls, value: Any = None) -> Loop:
        """End the loop; `DurableContext.loop` returns ``value`` (JSON)."""
        return cls(True, value=value)


class DurableContext:
    """What a running durable flow uses for everything that must happen once.

    Side effects belong inside steps (`run`, `run_action`, `poll`); code between
    steps runs again on every replay and must be deterministic (use `now`, `random`
    and `uuid` here, not the ``time``/``random`` modules). Every durable call must be
    awaited; a call never awaited fails the execution (`DurableUsageError`).
    """

    def __init__(self, run: Run, cursor: Cursor) -> None:
        self._run = run
        self._cursor = cursor
        self.engine: DurableEngine = run.engine
        self.store = run.store
        self.flow_id = run.record.id
        self.flow_name = run.record.flow
        self.owner = run.record.owner
        self._chunk_codec: Codec | None = None  # the flow's, once a chunk was sent

    @property
    def stop_requested(self) -> bool:
        """True once a stop was requested (`DurableEngine.stop`, ``POST
        .../streams/{id}/stop``) and a durable call of this flow has seen it: finish
        now and return the partial result (the stream then ends with it). Replays see
        it at the same call. A flow parked in a wait sees it when the wait ends."""
        return self._run.stopped

    @property
    def branch(self) -> str:
        """This context's branch: ``""`` for the flow's own code."""
        return self._cursor.branch

    @property
    def evicted(self) -> bool:
        """Whether `DurableEngine.evict` asked this run to park. Steps running then
        are cancelled, and the next durable call parks the execution (due again at
        once, on any worker); a long step body that cannot be cancelled (sync code
        on a thread) can check this and return or raise early: an attempt that
        raises once evicted is not counted (a `CriticalError` still fails the
        step)."""
        return self._run.evicted

    def _call(
        self, kind: str, name: str, body: Callable[[int, str], Awaitable[T]]
    ) -> Coroutine[Any, Any, T]:
        if not isinstance(name, str) or not name or "/" in name:
            raise InvalidArgumentError(
                f"a step name must be a non-empty string without '/': {name!r}"
            )
        cursor = self._cursor
        pos, key = cursor.slot(kind, name)

        async def call() -> T:
            entry = self._run.entries.get((cursor.branch, key))
            await self._run.observe_stop(cursor.path(key), entry is not None and entry.final)
            return await guarded(cursor, lambda: body(pos, key))

        return self._run.made(call(), f"ctx.{kind}({name!r})")

    # -- steps ---------------------------------------------------------------------

    @overload
    def run(
        self,
        name: str,
        fn: Step,
        *,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        timeout: float | None = None,
        output: type[T],
        rollback: Callable[[Any], Any] | None = None,
        ephemeral: bool = False,
    ) -> Coroutine[Any, Any, T]: ...

    @overload
    def run(
        self,
        name: str,
        fn: Step,
        *,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        timeout: float | None = None,
        output: None = None,
        rollback: Callable[[Any], Any] | None = None,
        ephemeral: bool = False,
    ) -> Coroutine[Any, Any, Any]: ...

    def run(
        self,
        name: str,
        fn: Step,
        *,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        timeout: float | None = None,
        output: Any = None,
        rollback: Callable[[Any], Any] | None = None,
        ephemeral: bool = False,
    ) -> Coroutine[Any, Any, Any]:
        """Run ``fn`` once, as the step ``name``, and memoize its result.

        An ``async def`` runs on the event loop; a plain function runs on a worker
        thread, so a blocking SDK call stalls nothing. ``timeout`` (or
        ``retry.timeout``) bounds each attempt: the attempt fails with
        `DeadlineExceededError` (a thread cannot be killed: a timed-out sync body runs
        on to its end in the background and its result is dropped).

        The result must be JSON (or a pydantic model); the flow gets it back decoded
        from JSON, the same on the first run and on replay, or validated as
        ``output``. A result that fails that fails the step at once
        (`StepOutputError`): its side effect is not repeated. Failures are retried
        per ``retry`` (default `DEFAULT_RETRY`: 3 attempts; ``None``: one attempt);
        a `CriticalError` is not retried; the last failure raises `StepExhaustedError`.
        Once completed, never run again; if the process dies while ``fn`` runs, it
        runs again (at-least-once).

        ``rollback=undo`` registers ``undo(result)`` (sync or async) as the step's
        compensation once it completed: see `rollback_checkpoint`. Raising
        `RollbackError` in ``fn`` rolls the execution back and fails it.

        ``ephemeral=True`` saves a store write: the step's result is written with
        the execution's next durable write (the next step, sleep, wait, or its end)
        instead of on its own. Until then a crash loses it and the step runs again;
        once written it is memoized like any step. For cheap, repeatable work only;
        not with ``rollback=`` (`InvalidArgumentError`).
        """
        if ephemeral and rollback is not None:
            raise InvalidArgumentError(
                f"step {name!r}: an ephemeral step cannot have rollback=: a crash may run "
                "it again while its compensation would run once; drop ephemeral=True"
            )
        codec = Codec(output)
        limit = seconds(timeout, "timeout") if timeout is not None else None

        async def body(pos: int, key: str) -> Any:
            cursor = self._cursor
            try:
                raw = await attempt(
                    cursor, pos, "step", key, fn, _encoder(codec), retry, limit, ephemeral=ephemeral
                )
            except RollbackError as exc:
                self._run.fatal = self._run.fatal or exc
                raise
            value = _decode(raw, codec)
            if rollback is not None:
                _compensation.register(cursor, key, rollback, value, retry)
            return value

        return self._call("step", name, body)

    def run_action(
        self,
        action: Flow[Any, Any, Any] | DurableFlow[Any, Any],
        input: Any = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Run a flow as a step named after it, with its input and output schemas.

        A `Flow` runs in-process (non-streaming) like `run`. A `DurableFlow` starts as
        a child execution (same owner, an id derived from this execution and the step,
        so replays never start it twice; cancelling this execution cancels it); this
        flow waits for it and returns its output or raises its error. ``retry``
        (default: one attempt) retries a failed child as a new child execution.
        Output comes back as JSON.
        """
        if isinstance(action, DurableFlow):
            flow = action

            async def start(pos: int, key: str) -> Any:
                return _decode(await child(self._cursor, pos, key, flow, input, retry), None)

            return self._call("action", flow.name, start)
        parsed = action.parse_input(input)

        async def call() -> Any:
            return await action.fn(parsed, FlowContext(action))

        def encode(value: Any) -> str:
            return action.encode_output(value).decode()

        async def body(pos: int, key: str) -> Any:
            raw = await attempt(self._cursor, pos, "action", key, call, encode, retry, None)
            return _decode(raw, None)

        return self._call("action", action.name, body)

    @overload
    def poll(
        self,
        name: str,
        fn: Step,
        *,
        period: float | timedelta,
        timeout: float | timedelta,
        output: type[T],
    ) -> Coroutine[Any, Any, T]: ...

    @overload
    def poll(
        self,
        name: str,
        fn: Step,
        *,
        period: float | timedelta,
        timeout: float | timedelta,
        output: None = None,
    ) -> Coroutine[Any, Any, Any]: ...

    def poll(
        self,
        name: str,
        fn: Step,
        *,
        period: float | timedelta,
        timeout: float | timedelta,
        output: Any = None,
    ) -> Coroutine[Any, Any, Any]:
        """Call ``fn`` every ``period`` until it returns a truthy value, and return it.

        Between checks the execution sleeps on a durable timer; after ``timeout``
        (from the first check) the step fails with `DeadlineExceededError`. A check
        that raises counts as "not yet" (a `CriticalError` fails the step).
        """
        codec = Codec(output)
        every, limit = seconds(period, "period"), seconds(timeout, "timeout")

        async def body(pos: int, key: str) -> Any:
            raw = await poll(self._cursor, pos, key, fn, _encoder(codec), every, limit)
            return _decode(raw, codec)

        return self._call("poll", name, body)

    # -- waits ---------------------------------------------------------------------

    def sleep(self, name: str, duration: float | timedelta) -> Coroutine[Any, Any, None]:
        """Sleep ``duration`` on a durable timer: survives restarts, costs no process.

        `InvalidArgumentError` for a negative or non-finite duration."""
        length = seconds(duration, "a sleep's duration")
        return self._sleep(name, lambda: time.time() + length)

    def sleep_until(self, name: str, when: float | datetime) -> Coroutine[Any, Any, None]:
        """Sleep until ``when`` (an aware datetime or POSIX seconds), durably.

        `InvalidArgumentError` for a naive datetime or a time outside 1970-9999."""
        at = epoch(when, "sleep_until's time")
        return self._sleep(name, lambda: at)

    def _sleep(self, name: str, until: Callable[[], float]) -> Coroutine[Any, Any, None]:
        async def body(pos: int, key: str) -> None:
            run, cursor = self._run, self._cursor
            entry = run.entries.get((cursor.branch, key))
            if entry is None:
                now = time.time()
                entry = JournalEntry(
                    pos,
                    "sleep",
                    key,
                    "completed",
                    dumps({"until": until()}).decode(),
                    started_at=now,
                    finished_at=now,
                    branch=cursor.branch,
                )
                run.log("sleep", cursor.path(key), until=loads(entry.result or "{}")["until"])
                await run.write(entry)
            wake = float(loads(entry.result or "{}")["until"])
            if run.probe is None and time.time() < wake:
                raise Suspend("sleeping", cursor.path(key), wake)

        return self._call("sleep", name, body)

    def interrupt(self, name: str, schema: Any = None) -> Coroutine[Any, Any, Any]:
        """Wait for a human (or any caller): the execution waits, status ``waiting``,
        until `DurableEngine.resume` delivers a payload for this step (its path, as in
        ``blocked_on_step``), validated against ``schema`` (a type pydantic
        validates; ``None``: any JSON). Returns the validated payload.

        A resume sent before the flow reaches the interrupt is kept and used when it
        does; if it then fails ``schema``, the step fails with `InvalidArgumentError`.
        """
        codec = Codec(schema)

        async def body(pos: int, key: str) -> Any:
            run, cursor = self._run, self._cursor
            path = cursor.path(key)
            entry = run.entries.get((cursor.branch, key))
            if entry is not None and entry.final:
                return _decode(outcome(entry), codec)
            if run.probe == path:
                raise ProbeFound(codec)
            signal_name = f"$resume:{path}"
            taken = run.take_signals([signal_name], 1)
            if not taken:
                raise Suspend("waiting", path, None, signals=[signal_name])
            now = time.time()
            entry = JournalEntry(
                pos,
                "interrupt",
                key,
                "completed",
                taken[0].payload,
                started_at=now,
                finished_at=now,
                branch=cursor.branch,
            )
            try:
                value = _decode(taken[0].payload, codec)
            except ValidationError as exc:
                error = InvalidArgumentError(
                    f"invalid payload for step {path!r}",
                    details=exc.errors(
                        include_url=False, include_context=False, include_input=False
                    ),
                )
                entry.status, entry.result, entry.error = "failed", None, error_to_record(error)
                await run.write(entry, consume=[taken[0].id])
                raise error from None
            run.log("resume", path)
            await run.write(entry, consume=[taken[0].id])
            return value

        return self._call("interrupt", name, body)

    def wait_for_signal(
        self,
        name: str,
        signal: str,
        *,
        schema: Any = None,
        timeout: float | timedelta | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Wait for the next signal ``signal`` (`DurableEngine.signal`) and return its
        payload, validated against ``schema``.

        Signals are buffered: one sent before this call (even before the execution
        started) is taken at once; each is consumed once, oldest first per name.
        After ``timeout`` without one, raises `SignalTimeoutError`
        (DEADLINE_EXCEEDED). A payload that fails ``schema`` is consumed and fails the
        step with `InvalidArgumentError`.
        """
        codec = Codec(schema)
        limit = seconds(timeout, "timeout") if timeout is not None else None

        async def body(pos: int, key: str) -> Any:
            raw = await self._take(pos, "signal", key, [signal], 1, limit)
            if raw is None:
                raise SignalTimeoutError(
                    f"no signal {signal!r} within {limit}s", details={"signal": signal}
                )
            payload = loads(raw)[0]["payload"]
            return codec.validate(payload, f"payload for signal {signal!r}")

        return self._call("signal", name, body)

    def messages(
        self,
        name: str,
        names: Collection[str],
        *,
        count: int = 1,
        timeout: float | timedelta | None = None,
    ) -> Coroutine[Any, Any, list[Message]]:
        """Wait for signals of any of ``names`` and take up to ``count`` of them
        (oldest first) as `Message` s; ``[]`` if none came within ``timeout``."""
        wanted = sorted(set(names))
        if not wanted or count < 1:
            raise InvalidArgumentError("messages needs at least one name and count >= 1")
        limit = seconds(timeout, "timeout") if timeout is not None else None

        async def body(pos: int, key: str) -> list[Message]:
            raw = await self._take(pos, "messages", key, wanted, count, limit)
            return [Message(m["name"], m["payload"]) for m in loads(raw or "[]")]

        return self._call("messages", name, body)

    async def _take(
        self,
        pos: int,
        kind: str,
        key: str,
        names: list[str],
        count: int,
        limit: float | None,
    ) -> str | None:
        """The signal-consuming state machine: the taken signals as JSON text, or
        ``None`` on timeout (``kind`` decides whether that is an error)."""
        run, cursor = self._run, self._cursor
        path = cursor.path(key)
        entry = run.entries.get((cursor.branch, key))
        if entry is not None and entry.final:
            if entry.status == "failed":
                return None
            return entry.result
        now = time.time()
        taken = run.take_signals(names, count)
        if taken:
            raw = dumps([{"name": s.name, "payload": loads(s.payload)} for s in taken]).decode()
            run.log("signal_consumed", path, signals=[s.name for s in taken])
            await run.write(
                JournalEntry(
                    pos,
                    kind,
                    key,
                    "completed",
                    raw,
                    started_at=now,
                    finished_at=now,
                    branch=cursor.branch,
                ),
                consume=[s.id for s in taken],
            )
            return raw
        deadline = entry.wake_at if entry is not None else None
        if limit is not None and deadline is None:
            deadline = now + limit
            await run.write(
                JournalEntry(
                    pos,
                    kind,
                    key,
                    "pending",
                    started_at=now,
                    wake_at=deadline,
                    branch=cursor.branch,
                )
            )
        if deadline is not None and now >= deadline:
            if run.probe is not None:
                raise Suspend("waiting", path, deadline, signals=names)
            if kind == "signal":
                error = SignalTimeoutError(f"no signal {names[0]!r} in time")
                await run.write(
                    JournalEntry(
                        pos,
                        kind,
                        key,
                        "failed",
                        error=error_to_record(error),
                        started_at=now,
                        finished_at=now,
                        branch=cursor.branch,
                    )
                )
                return None
            await run.write(
                JournalEntry(
                    pos,
                    kind,
                    key,
                    "completed",
                    "[]",
                    started_at=now,
                    finished_at=now,
                    branch=cursor.branch,
                )
            )
            return "[]"
        raise Suspend("waiting", path, deadline, signals=names)

    def wait_for(
        self, name: str, flow_ids: Collection[str]
    ) -> Coroutine[Any, Any, list[Operation]]:
        """Wait until every execution in ``flow_ids`` has finished; return their
        operations in the order given. An unknown id, or one owned by another owner,
        fails the step (NOT_FOUND)."""
        ids = [validate_flow_id(i) for i in flow_ids]

        async def body(pos: int, key: str) -> list[Operation]:
            run, cursor = self._run, self._cursor
            entry = run.entries.get((cursor.branch, key))
            if entry is None or not entry.final:
                records = await run.store.get_many(ids)
                visible = {i: r for i, r in records.items() if r.owner == run.record.owner}
                pending = [i for i in ids if i in visible and not visible[i].done]
                if pending:
                    raise Suspend("waiting", cursor.path(key), None, wait_for=pending)
                now = time.time()
                entry = JournalEntry(
                    pos,
                    "wait_for",
                    key,
                    "completed",
                    started_at=now,
                    finished_at=now,
                    branch=cursor.branch,
                )
                missing = [i for i in ids if i not in visible]
                if missing:
                    error = ExecutionNotFoundError(f"no flow {missing[0]!r} to wait for")
                    entry.status, entry.error = "failed", error_to_record(error)
                else:
                    operations = [Operation.from_record(visible[i]).to_json() for i in ids]
                    entry.result = dumps(operations).decode()
                await run.write(entry)
            return [Operation.from_json(b) for b in loads(outcome(entry) or "[]")]

        return self._call("wait_for", name, body)

    # -- branches ------------------------------------------------------------------

    def join(
        self, name: str, branches: Mapping[str, Branch]
    ) -> Coroutine[Any, Any, dict[str, Any]]:
        """Run ``branches`` (``{"a": async def fn(ctx)}``) concurrently, each with its
        own context and key scope, and return ``{branch: result}`` (JSON) once all
        have ended. Branches may use any durable call; a branch that waits does not
        hold up the others. If some fail, raises `JoinError` (``.errors`` by branch)
        after all have ended. A finished branch is never run again on replay.
        """
        _branches.check_names(branches)
        return self._call("join", name, lambda pos, key: _branches.join(self, pos, key, branches))

    def race(
        self, name: str, branches: Mapping[str, Branch]
    ) -> Coroutine[Any, Any, tuple[str, Any]]:
        """Run ``branches`` concurrently; the first to finish wins: returns
        ``(winner, result)``. The others are cancelled (a running step interrupted,
        their timers and waits dropped). If every branch fails, raises `RaceError`.
        The winner is recorded: replays return it without running any branch.
        """
        _branches.check_names(branches)
        return self._call("race", name, lambda pos, key: _branches.race(self, pos, key, branches))

    def loop(
        self,
        name: str,
        body: Callable[[DurableContext, Any], Awaitable[Loop]],
        *,
        state: Any = None,
        commit_interval: int = 1,
        history_keep: int = 10,
    ) -> Coroutine[Any, Any, Any]:
        """Run ``body(ctx, state)`` until it returns `Loop.done` (whose value is
        returned); `Loop.next(state)` runs another iteration with that state (JSON).

        Each iteration is a branch of its own. Every ``commit_interval`` iterations
        the state is committed: a wake-up replays from the last committed iteration,
        not from the first, and only the last ``history_keep`` iterations stay in the
        journal. Long agent loops cost the same per turn at turn 1,000 as at turn 1.
        """
        if commit_interval < 1 or history_keep < 0:
            raise InvalidArgumentError("commit_interval must be >= 1 and history_keep >= 0")
        return self._call(
            "loop",
            name,
            lambda pos, key: _branches.loop(
                self, pos, key, body, state, commit_interval, history_keep
            ),
        )

    # -- streaming -------------------------------------------------------------------

    async def send_chunk(self, chunk: Any) -> None:
        """Stream ``chunk`` (validated as the flow's ``chunk`` type) to the
        execution's stream; call it anywhere in the flow, also inside async steps.

        The stream is the execution's logical output: on replay, chunks sent before
        the journal's end are not sent again, a completed step never streams again,
        and what a failed, timed-out or lost step attempt streamed is retracted (a
        reset entry). Inside `join`/`race` branches, call it from inside a step:
        its chunks are streamed when the step completes. A flow declared without
        ``chunk=`` raises `DurableUsageError`.
        """
        codec = self._chunk_codec
        if codec is None:
            flow = self.engine.flow(self.flow_name)
            if not flow.streaming:
                raise DurableUsageError(
                    f"flow {self.flow_name!r} sends chunks but declares no chunk type: "
                    "use @durable_flow(chunk=...) (typing.Any for any JSON)"
                )
            codec = self._chunk_codec = flow.chunk_codec
        try:
            raw = codec.encode(chunk)
        except (ValidationError, InvalidArgumentError) as exc:
            raise InvalidArgumentError(
                f"invalid chunk for flow {self.flow_name!r}: {type(exc).__name__}"
            ) from None
        await self._run.stream.send(self._cursor.branch, in_step.get(), raw)

    # -- decisions, notes, migrations -------------------------------------------------

    def switch(
        self,
        name: str,
        value: Any,
        cases: Sequence[Case],
        default: Callable[[Any], Any] | None = None,
        *,
        retry: RetryPolicy | None = DEFAULT_RETRY,
    ) -> Coroutine[Any, Any, tuple[str, Any]]:
        """Run the first `Case` whose ``match`` accepts ``value`` (else ``default``,
        recorded as ``"default"``) as the step ``name``; returns ``(case id, result)``.

        The case's id and result are recorded: a replay returns them without calling
        any matcher or body again. A case body is a step body (``run(value)``, sync
        on a worker thread or ``async``; retried per ``retry``; no durable calls
        inside: branch on the returned id for that). No match and no default fails
        the step with `NoMatchingCaseError` (not retried).
        """
        _decisions.check_cases(cases)
        chosen = list(cases)
        return self._call(
            "switch",
            name,
            lambda pos, key: _decisions.switch(
                self._cursor, pos, key, value, chosen, default, retry
            ),
        )

    def note(self, message: str, **meta: JsonValue) -> Coroutine[Any, Any, None]:
        """Add ``message`` (with JSON ``meta``) to the execution's audit timeline,
        once: replays do not add it again. It takes a journal position like any
        durable call (name ``"note"``)."""
        if not isinstance(message, str):
            raise InvalidArgumentError("a note's message is a string")
        try:
            dumps(meta)
        except (TypeError, ValueError, InvalidArgumentError):
            raise InvalidArgumentError("a note's meta values must be JSON") from None
        return self._call(
            "note", "note", lambda pos, key: _decisions.note(self._cursor, pos, key, message, meta)
        )

    def removed(self, name: str, *, kind: str = "step") -> Coroutine[Any, Any, None]:
        """The placeholder of a durable call deleted from the code: put it where the
        call was, with the call's name and ``kind`` (the journal's ``kind``:
        ``"step"``, ``"sleep"``, ``"signal"``...). An execution journaled by the old
        code replays past the old entry; a new execution records a placeholder.
        Returns ``None`` either way."""
        if not isinstance(kind, str) or not kind:
            raise InvalidArgumentError("kind names the removed call's journal kind")
        return self._call(
            kind, name, lambda pos, key: _decisions.placeholder(self._cursor, pos, kind, key)
        )

    # -- compensation ----------------------------------------------------------------

    def rollback_checkpoint(self, name: str) -> Coroutine[Any, Any, None]:
        """Start the compensable region: a later rollback runs the ``rollback=``
        handlers of the steps completed after this point (the last checkpoint
        reached counts), newest first. Without one, a rollback fails the execution
        with `RollbackCheckpointError`."""

        async def body(pos: int, key: str) -> None:
            run, cursor = self._run, self._cursor
            if (cursor.branch, key) not in run.entries:
                now = time.time()
                await run.write(
                    JournalEntry(
                        pos,
                        "checkpoint",
                        key,
                        "completed",
                        "null",
                        started_at=now,
                        finished_at=now,
                        branch=cursor.branch,
                    )
                )
            _compensation.checkpoint(run)

        return self._call("checkpoint", name, body)

    def rollback(self) -> Coroutine[Any, Any, None]:
        """Roll back now: status ``rolling_back`` while the handlers registered since
        the last checkpoint run, newest first, each exactly once across crashes
        (one in flight at a crash runs again; failures are retried with its step's
        policy); then the status is ``running`` again and the flow decides how the
        execution ends. A handler that exhausts its retries fails the execution
        with `RollbackFailedError`. Recorded: a replay does not roll back again."""
        return self._call(
            "rollback", "rollback", lambda pos, key: _compensation.manual(self._cursor, pos, key)
        )

    def _branch(self, cursor: Cursor) -> DurableContext:
        return DurableContext(self._run, cursor)

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

    def _value(self, kind: str, make: Callable[[], Any]) -> Coroutine[Any, Any, Any]:
        async def body(pos: int, key: str) -> Any:
            run, cursor = self._run, self._cursor
            entry = run.entries.get((cursor.branch, key))
            if entry is None:
                now = time.time()
                entry = JournalEntry(
                    pos,
                    kind,
                    key,
                    "completed",
                    dumps(make()).decode(),
                    started_at=now,
                    finished_at=now,
                    branch=cursor.branch,
                )
                await run.write(entry)
            return loads(entry.result or "null")

        return self._call(kind, kind, body)
