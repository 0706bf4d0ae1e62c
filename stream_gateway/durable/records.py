"""What the durable stores keep: executions, journal entries, leases, and the
`Operation` view callers get."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from .._errors import GatewayError
from .._json import JsonValue, loads
from .errors import rebuild_error

__all__ = [
    "FINISHED",
    "AuditEntry",
    "ExecutionRecord",
    "ExecutionStatus",
    "JournalEntry",
    "Lease",
    "Operation",
    "Page",
    "Schedule",
    "Signal",
]

ExecutionStatus = Literal[
    "pending", "running", "sleeping", "waiting", "rolling_back", "completed", "failed", "cancelled"
]
STATUSES: frozenset[str] = frozenset(get_args(ExecutionStatus))
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

EntryStatus = Literal["completed", "failed", "retrying", "pending"]
"""``completed``/``failed`` entries are final; ``retrying`` (a step between attempts)
and ``pending`` (a poll between checks) may be replaced by their next state."""


@dataclass(slots=True)
class ExecutionRecord:
    """One execution of a durable flow, as stored.

    ``due_at`` is when a worker should next act on it: the wake-up time of a pending,
    sleeping or waiting execution (``None``: only a resume or another flow's end
    wakes it), the lease expiry of a running one, ``None`` once finished. Claiming
    is "take what is due". ``seq`` orders executions by creation (pagination).
    ``evict_requested`` is set by `DurableStore.request_evict` while it runs and
    cleared when it is next claimed, parked or ended.
    """

    id: str
    flow: str
    input: str
    status: ExecutionStatus = "pending"
    owner: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    due_at: float | None = None
    lease_owner: str | None = None
    lease_token: int = 0
    blocked_on: str | None = None
    result: str | None = None
    error: dict[str, Any] | None = None
    seq: int = 0
    parent: str | None = None
    evict_requested: bool = False

    @property
    def done(self) -> bool:
        return self.status in FINISHED


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's claim on one execution; every write under it is fenced by ``token``."""

    execution_id: str
    worker: str
    token: int


@dataclass(slots=True)
class JournalEntry:
    """One durable call of an execution: what ran, and how it ended.

    An entry is addressed by ``(branch, key)``: ``branch`` is ``""`` for the flow's
    own code and a path such as ``"fetch:a"`` or ``"turns@3"`` inside `join`, `race`
    and `loop`; ``key`` is the step name (``name-1``... when repeated in a branch).
    ``seq`` is the position in its branch when it was first reached (ordering and
    early divergence checks; lookups go by key). ``result`` is JSON text; ``error``
    a stored error (`error_to_record`). ``wake_at`` is the next attempt
    (``retrying``), check or deadline (``pending``). ``stream_at`` (streaming flows
    only, else ``None``) is the length of the execution's stream when the entry was
    written: every stream entry before it was committed with this one.
    """

    seq: int
    kind: str
    key: str
    status: EntryStatus
    result: str | None = None
    error: dict[str, Any] | None = None
    attempts: int = 1
    started_at: float = 0.0
    finished_at: float | None = None
    wake_at: float | None = None
    branch: str = ""
    stream_at: int | None = None

    @property
    def final(self) -> bool:
        return self.status in ("completed", "failed")

    @property
    def path(self) -> str:
        """``key`` within the root branch, ``branch/key`` inside a child branch."""
        return f"{self.branch}/{self.key}" if self.branch else self.key


@dataclass(frozen=True, slots=True)
class Signal:
    """A signal (or resume payload) sent to an execution and not yet consumed.

    ``id`` orders signals (FIFO per name); ``payload`` is JSON text.
    """

    id: int
    name: str
    payload: str


@dataclass(slots=True)
class History:
    """An execution's journal (in the order entries were first written) and the
    signals sent to it that no step has consumed yet (in sending order)."""

    entries: list[JournalEntry] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)


@dataclass(slots=True)
class AuditEntry:
    """One line of an execution's audit timeline: what happened, when.

    ``kind`` says what (``status``, ``step``, ``retry_wait``, ``sleep``,
    ``signal_sent``, ``signal_consumed``, ``resume``, ``note``, ``switch``,
    ``rollback``, ``schedule_tick``...), ``step`` the journal path it is about (if
    any), ``data`` the details (JSON). ``seq`` is assigned by the store: strictly
    increasing across every execution of the store, so it is a feed cursor.
    Errors in ``data`` are stored errors (`error_to_record`), operator part included.
    """

    execution_id: str
    kind: str
    at: float
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    seq: int = 0

    def to_json(self, *, operator: bool = True) -> dict[str, Any]:
        """``{seq, kind, at, step?, data}``; ``operator=False`` drops what only
        operators may see (the original type and message of non-user errors)."""
        data = self.data if operator else _redact(self.data)
        body: dict[str, Any] = {"seq": self.seq, "kind": self.kind, "at": _iso(self.at)}
        if self.step is not None:
            body["step"] = self.step
        body["data"] = data
        return body


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redact(v) for k, v in value.items() if k != "operator"}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


Overlap = Literal["skip", "allow"]


@dataclass(slots=True)
class Schedule:
    """A recurring schedule: ``flow`` started with ``input`` (JSON text) at every tick
    of ``cron`` (in ``timezone``) or every ``interval`` seconds.

    ``next_at`` is the next tick (``None``: never again); ``last_tick`` and
    ``last_execution`` the last tick fired and the execution it started. With
    ``overlap="skip"`` a tick is skipped while the last execution is unfinished.
    A paused schedule fires nothing; resuming it starts from the next tick.
    """

    id: str
    flow: str
    input: str
    owner: str | None = None
    cron: str | None = None
    interval: float | None = None
    timezone: str = "UTC"
    overlap: Overlap = "skip"
    paused: bool = False
    next_at: float | None = None
    last_tick: float | None = None
    last_execution: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """``{id, flow, input, cron?, interval?, timezone, overlap, paused, nextAt,
        lastTick, lastExecution, createdAt, updatedAt}``."""
        body: dict[str, Any] = {"id": self.id, "flow": self.flow, "input": loads(self.input)}
        if self.cron is not None:
            body["cron"] = self.cron
        if self.interval is not None:
            body["interval"] = self.interval
        body.update(
            timezone=self.timezone,
            overlap=self.overlap,
            paused=self.paused,
            nextAt=_iso(self.next_at),
            lastTick=_iso(self.last_tick),
            lastExecution=self.last_execution,
            createdAt=_iso(self.created_at),
            updatedAt=_iso(self.updated_at),
        )
        return body


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``cursor`` fetches the next (``None``: no more)."""

    items: list[Operation]
    cursor: str | None


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Operation:
    """The state of an execution as callers see it (Genkit's operation).

    ``done`` is true once it completed, failed or was cancelled; ``response`` is the
    flow's output (JSON) when it completed, ``error`` what ended it otherwise.
    ``blocked_on_step`` is the step key a sleeping or waiting execution waits on.
    """

    name: str
    flow: str
    status: ExecutionStatus
    done: bool
    response: JsonValue = None
    error: GatewayError | None = None
    blocked_on_step: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    wake_at: float | None = None

    @classmethod
    def from_record(cls, record: ExecutionRecord) -> Operation:
        waiting = record.status in ("pending", "sleeping", "waiting")
        return cls(
            name=record.id,
            flow=record.flow,
            status=record.status,
            done=record.done,
            response=loads(record.result) if record.result is not None else None,
            error=rebuild_error(record.error) if record.error is not None else None,
            blocked_on_step=record.blocked_on,
            created_at=record.created_at,
            updated_at=record.updated_at,
            wake_at=record.due_at if waiting else None,
        )

    def to_json(self) -> dict[str, Any]:
        """``{name, flow, status, done, result?: {response} | {error}, blockedOnStep,
        createdAt, updatedAt, wakeAt?}``."""
        body: dict[str, Any] = {
            "name": self.name,
            "flow": self.flow,
            "status": self.status,
            "done": self.done,
        }
        if self.status == "completed":
            body["result"] = {"response": self.response}
        elif self.error is not None:
            body["result"] = {"error": self.error.to_json()}
        body["blockedOnStep"] = self.blocked_on_step
        body["createdAt"] = _iso(self.created_at)
        body["updatedAt"] = _iso(self.updated_at)
        if self.wake_at is not None:
            body["wakeAt"] = _iso(self.wake_at)
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Operation:
        """Rebuild from `to_json` (the journal stores `wait_for` results this way)."""
        result = body.get("result") or {}
        error = result.get("error")

        def ts(value: Any) -> float:
            if not value:
                return 0.0
            return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()

        return cls(
            name=body["name"],
            flow=body["flow"],
            status=body["status"],
            done=body["done"],
            response=result.get("response"),
            error=rebuild_error(error) if error else None,
            blocked_on_step=body.get("blockedOnStep"),
            created_at=ts(body.get("createdAt")),
            updated_at=ts(body.get("updatedAt")),
            wake_at=ts(body["wakeAt"]) if body.get("wakeAt") else None,
        )
