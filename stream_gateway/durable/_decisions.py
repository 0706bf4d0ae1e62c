"""Replay-safe decisions and markers: `switch` (which case ran, recorded), `note` (an
audit note recorded once) and `removed` (the placeholder of a step deleted from the
code, for executions journaled by older code)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._errors import InvalidArgumentError
from .._json import dumps, loads
from ._replay import Cursor
from ._steps import attempt, call_body
from .definition import RetryPolicy
from .errors import NoMatchingCaseError
from .records import JournalEntry

__all__ = ["DEFAULT_CASE", "Case", "note", "placeholder", "switch"]

#: The id recorded when `DurableContext.switch` runs its ``default``.
DEFAULT_CASE = "default"


@dataclass(frozen=True, slots=True)
class Case:
    """One case of `DurableContext.switch`: ``id`` (recorded when it runs), ``match``
    (a predicate of the value, or a value compared with ``==``) and ``run`` (the body:
    a function of the value, sync on a worker thread or ``async``, run as a step)."""

    id: str
    match: Any
    run: Callable[[Any], Any]


def check_cases(cases: Sequence[Case]) -> None:
    ids = [c.id for c in cases]
    if not all(isinstance(c, Case) for c in cases):
        raise InvalidArgumentError("switch cases are Case(id, match, run) objects")
    if any(not isinstance(i, str) or not i for i in ids) or len(set(ids)) != len(ids):
        raise InvalidArgumentError(f"switch case ids must be distinct non-empty strings: {ids}")
    if DEFAULT_CASE in ids:
        raise InvalidArgumentError(f"{DEFAULT_CASE!r} is the default's id; name the case else")


def _matches(case: Case, value: Any) -> bool:
    return bool(case.match(value)) if callable(case.match) else bool(case.match == value)


async def switch(
    cursor: Cursor,
    pos: int,
    key: str,
    value: Any,
    cases: Sequence[Case],
    default: Callable[[Any], Any] | None,
    retry: RetryPolicy | None,
) -> tuple[str, Any]:
    """Replay or decide and run a switch; returns ``(case id, result)``."""
    run = cursor.run
    path = cursor.path(key)

    async def decide_and_run() -> dict[str, Any]:
        chosen = next((c for c in cases if _matches(c, value)), None)
        if chosen is None and default is None:
            raise NoMatchingCaseError(
                f"switch {path!r}: no case matched and there is no default; add "
                "default= or a case for this value",
                details={"step": path, "cases": [c.id for c in cases]},
            )
        case_id, body = (chosen.id, chosen.run) if chosen is not None else (DEFAULT_CASE, default)
        assert body is not None
        run.log("switch", path, case=case_id)
        return {"case": case_id, "result": await call_body(lambda: body(value))}

    def encode(decision: Any) -> str:
        return dumps(decision).decode()

    raw = await attempt(cursor, pos, "switch", key, decide_and_run, encode, retry, None)
    decision = loads(raw or "{}")
    return str(decision["case"]), decision["result"]


async def note(cursor: Cursor, pos: int, key: str, message: str, meta: dict[str, Any]) -> None:
    """Record the note once (journal and timeline); replays do nothing."""
    run = cursor.run
    if (cursor.branch, key) in run.entries:
        return
    now = time.time()
    raw = dumps({"message": message, "meta": meta}).decode()
    run.log("note", cursor.path(key), message=message, meta=meta)
    await run.write(
        JournalEntry(
            pos,
            "note",
            key,
            "completed",
            raw,
            started_at=now,
            finished_at=now,
            branch=cursor.branch,
        )
    )


async def placeholder(cursor: Cursor, pos: int, kind: str, key: str) -> None:
    """Stand in for a deleted call: an entry already there (older code ran it) is
    passed over; otherwise a completed placeholder is recorded in its place."""
    run = cursor.run
    entry = run.entries.get((cursor.branch, key))
    if entry is not None and entry.final:
        return
    now = time.time()
    await run.write(
        JournalEntry(
            pos,
            kind,
            key,
            "completed",
            dumps({"removed": True}).decode(),
            started_at=now,
            finished_at=now,
            branch=cursor.branch,
        )
    )
