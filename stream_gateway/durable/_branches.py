"""`join`, `race` and `loop`: durable calls that open child branches.

A branch of the join (or race) keyed ``k`` in branch ``b`` is the branch
``b/k:name`` (``k:name`` under the root); loop iteration ``i`` is ``b/k@i``. Each has
its own `Cursor` (keys, positions, seal), so branches finish in any order and
replay identically. A join branch that ended records how under the key ``$end`` in
its own branch and is not run again.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from .._errors import InvalidArgumentError
from .._json import dumps, loads
from ._replay import END, Cursor, ProbeFound, Suspend, classify
from ._steps import outcome
from .errors import JoinError, RaceError, error_to_record, public_error
from .records import JournalEntry

if TYPE_CHECKING:
    from .context import Branch, DurableContext, Loop

__all__ = ["check_names", "join", "loop", "race"]


def check_names(branches: Mapping[str, Any]) -> None:
    if not branches:
        raise InvalidArgumentError("join and race need at least one branch")
    for name in branches:
        if not isinstance(name, str) or not name or any(c in name for c in "/:@$"):
            raise InvalidArgumentError(
                f"branch names must be non-empty strings without '/', ':', '@' or '$': {name!r}"
            )


def _encode(value: Any) -> str:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return dumps(value).decode()


class _Ended:
    """How one branch ended in this run (or before it)."""

    __slots__ = ("error", "raw", "suspend")

    def __init__(
        self,
        raw: str | None = None,
        error: dict[str, Any] | None = None,
        suspend: Suspend | None = None,
    ) -> None:
        self.raw = raw
        self.error = error
        self.suspend = suspend


async def _run_branch(
    ctx: DurableContext,
    parent: Cursor,
    branch: str,
    fn: Branch,
    record_end: bool,
) -> _Ended:
    """Run (or replay) one branch to its end or its suspension."""
    run = parent.run
    done = run.entries.get((branch, END))
    if done is not None and done.final:
        return _Ended(raw=done.result) if done.status == "completed" else _Ended(error=done.error)
    cursor = Cursor(run, branch, parent)
    run.stream.concurrent(branch)
    try:
        value = await fn(ctx._branch(cursor))
        cursor.check_consumed()
        if cursor.sealed is not None:
            return _Ended(suspend=cursor.sealed)
        raw = _encode(value)
    except anyio.get_cancelled_exc_class():
        raise
    except BaseException as exc:
        if run.fatal is not None:
            raise
        if cursor.sealed is not None:
            return _Ended(suspend=cursor.sealed)
        suspends, controls, errors = classify(exc)
        if (
            run.probe is not None
            and controls
            and not any(isinstance(c, ProbeFound) for c in controls)
        ):
            # A probe cannot see past this branch; its siblings may still find the
            # interrupt it looks for, so they must not be cancelled.
            return _Ended(suspend=Suspend("waiting", branch, None))
        if controls or not (suspends or errors):
            raise
        if not errors:
            return _Ended(suspend=Suspend.merge(suspends))
        error = error_to_record(public_error(errors[0]))
        if record_end:
            await _end(cursor, "failed", error=error)
        return _Ended(error=error)
    if record_end:
        await _end(cursor, "completed", raw=raw)
    return _Ended(raw=raw)


async def _end(cursor: Cursor, status: Any, *, raw: str | None = None, error: Any = None) -> None:
    now = time.time()
    await cursor.run.write(
        JournalEntry(
            -1,
            "branch",
            END,
            status,
            raw,
            error,
            started_at=now,
            finished_at=now,
            branch=cursor.branch,
        )
    )


def _public(errors: dict[str, Any]) -> dict[str, Any]:
    """Branch errors as clients may see them (operator detail stays in the journal)."""
    return {n: {k: v for k, v in e.items() if k != "operator"} for n, e in errors.items()}


def _operator(error: Any, errors: dict[str, Any]) -> None:
    kept = {n: e["operator"] for n, e in errors.items() if e.get("operator")}
    if kept:
        error.operator = {"branches": kept}


def _child_name(parent: Cursor, key: str, name: str) -> str:
    return parent.child(f"{key}:{name}").branch


async def join(
    ctx: DurableContext, pos: int, key: str, branches: Mapping[str, Branch]
) -> dict[str, Any]:
    parent = ctx._cursor
    run = parent.run
    entry = run.entries.get((parent.branch, key))
    if entry is not None and entry.final:
        return loads(outcome(entry) or "{}")  # type: ignore[no-any-return]
    ended: dict[str, _Ended] = {}

    async def one(name: str, fn: Branch) -> None:
        ended[name] = await _run_branch(ctx, parent, _child_name(parent, key, name), fn, True)

    async with anyio.create_task_group() as tg:
        for name, fn in branches.items():
            tg.start_soon(one, name, fn)
    suspends = [e.suspend for e in ended.values() if e.suspend is not None]
    if suspends:
        raise Suspend.merge(suspends)
    now = time.time()
    failed = {name: e.error for name, e in ended.items() if e.error is not None}
    if failed:
        error = JoinError(
            f"{len(failed)} of {len(branches)} branches of join {parent.path(key)!r} failed: "
            + ", ".join(sorted(failed)),
            details={"errors": _public(failed)},
        )
        _operator(error, failed)
        await run.write(
            JournalEntry(
                pos,
                "join",
                key,
                "failed",
                error=error_to_record(error),
                started_at=now,
                finished_at=now,
                branch=parent.branch,
            )
        )
        raise error
    results = {name: loads(e.raw or "null") for name, e in ended.items()}
    raw = dumps({name: results[name] for name in branches}).decode()
    await run.write(
        JournalEntry(
            pos,
            "join",
            key,
            "completed",
            raw,
            started_at=now,
            finished_at=now,
            branch=parent.branch,
        )
    )
    return loads(raw)  # type: ignore[no-any-return]


async def race(
    ctx: DurableContext, pos: int, key: str, branches: Mapping[str, Branch]
) -> tuple[str, Any]:
    parent = ctx._cursor
    run = parent.run
    entry = run.entries.get((parent.branch, key))
    if entry is not None and entry.final:
        won = loads(outcome(entry) or "{}")
        return won["winner"], won["value"]
    ended: dict[str, _Ended] = {}
    winner: list[tuple[str, str]] = []

    async def one(name: str, fn: Branch, tg: anyio.abc.TaskGroup) -> None:
        result = await _run_branch(ctx, parent, _child_name(parent, key, name), fn, False)
        ended[name] = result
        if result.raw is not None and not winner:
            winner.append((name, result.raw))
            now = time.time()
            raw = dumps({"winner": name, "value": loads(result.raw)}).decode()
            await run.write(
                JournalEntry(
                    pos,
                    "race",
                    key,
                    "completed",
                    raw,
                    started_at=now,
                    finished_at=now,
                    branch=parent.branch,
                )
            )
            tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        for name, fn in branches.items():
            tg.start_soon(one, name, fn, tg)
    if winner:
        name, raw = winner[0]
        return name, loads(raw)
    suspends = [e.suspend for e in ended.values() if e.suspend is not None]
    if suspends:
        raise Suspend.merge(suspends)
    failed = {name: e.error for name, e in ended.items() if e.error is not None}
    error = RaceError(
        f"every branch of race {parent.path(key)!r} failed", details={"errors": _public(failed)}
    )
    _operator(error, failed)
    now = time.time()
    await run.write(
        JournalEntry(
            pos,
            "race",
            key,
            "failed",
            error=error_to_record(error),
            started_at=now,
            finished_at=now,
            branch=parent.branch,
        )
    )
    raise error


async def loop(
    ctx: DurableContext,
    pos: int,
    key: str,
    body: Callable[[DurableContext, Any], Awaitable[Loop]],
    state: Any,
    commit_interval: int,
    history_keep: int,
) -> Any:
    from .context import Loop

    parent = ctx._cursor
    run = parent.run
    entry = run.entries.get((parent.branch, key))
    if entry is not None and entry.final:
        return loads(outcome(entry) or "null")
    base = parent.child(key).branch
    if entry is not None:
        mark = loads(entry.result or "{}")
        i, state, kept = int(mark["i"]), mark["state"], int(mark["kept"])
    else:
        i, state, kept = 0, loads(_encode(state)), 0
    started = entry.started_at if entry is not None else time.time()
    since = 0
    while True:
        cursor = Cursor(run, f"{base}@{i}", parent)
        step = await body(ctx._branch(cursor), state)
        if cursor.sealed is not None:
            raise cursor.sealed
        cursor.check_consumed()
        if not isinstance(step, Loop):
            raise InvalidArgumentError(
                f"the body of loop {parent.path(key)!r} must return Loop.next(state) or "
                f"Loop.done(value), not {type(step).__name__}"
            )
        now = time.time()
        if step.finished:
            raw = _encode(step.value)
            await run.write(
                JournalEntry(
                    pos,
                    "loop",
                    key,
                    "completed",
                    raw,
                    started_at=started,
                    finished_at=now,
                    branch=parent.branch,
                )
            )
            await run.prune([f"{base}@{j}" for j in range(kept, max(kept, i + 1 - history_keep))])
            return loads(raw)
        state = loads(_encode(step.state))
        i += 1
        since += 1
        if since >= commit_interval:
            since = 0
            forget = [f"{base}@{j}" for j in range(kept, max(kept, i - history_keep))]
            kept = max(kept, i - history_keep)
            mark_raw = dumps({"i": i, "state": state, "kept": kept}).decode()
            await run.write(
                JournalEntry(
                    pos,
                    "loop",
                    key,
                    "pending",
                    mark_raw,
                    started_at=started,
                    branch=parent.branch,
                )
            )
            await run.prune(forget)
