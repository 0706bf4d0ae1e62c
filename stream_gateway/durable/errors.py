"""Errors of durable flows, under the core's one root (`GatewayError`).

```
GatewayError
├── InvalidArgumentError
├── NotFoundError
│   ├── ExecutionNotFoundError        NOT_FOUND            no such flow id
│   └── ScheduleNotFoundError         NOT_FOUND            no such schedule id
├── FailedPreconditionError
│   ├── HistoryDivergedError          FAILED_PRECONDITION  code no longer matches journal
│   ├── DurableUsageError             FAILED_PRECONDITION  a primitive used where it cannot work
│   ├── NotWaitingError               FAILED_PRECONDITION  resume of a step not waited on
│   ├── NotFinishedError              FAILED_PRECONDITION  cleanup of a live execution
│   ├── CriticalError                 FAILED_PRECONDITION  a step failure never retried
│   │   ├── NoMatchingCaseError       FAILED_PRECONDITION  a switch with no case for its value
│   │   └── RollbackError             FAILED_PRECONDITION  raised by a step: compensate and fail
│   ├── RollbackCheckpointError       FAILED_PRECONDITION  a rollback with no checkpoint before it
│   ├── StepOutputError               FAILED_PRECONDITION  a step's result fails encoding/`output`
│   └── LeaseLostError                FAILED_PRECONDITION  another worker owns it now
├── ResourceExhaustedError
│   ├── StepResultTooLargeError       RESOURCE_EXHAUSTED   result over the size limit
│   └── JournalTooLargeError          RESOURCE_EXHAUSTED   journal over `max_journal_bytes`
├── DeadlineExceededError
│   └── SignalTimeoutError            DEADLINE_EXCEEDED    no signal before the timeout
├── InternalError
│   ├── StepExhaustedError            INTERNAL             last retry failed; has cause
│   ├── JoinError                     INTERNAL             some join branches failed
│   ├── RaceError                     INTERNAL             every race branch failed
│   └── RollbackFailedError           INTERNAL             a rollback handler exhausted its retries
└── UnavailableError
    └── DurableStoreError             UNAVAILABLE          the store failed; try again later
```

Stored errors (journal entries, failed executions) are keyed by a stable ``code``
(``"step_exhausted"``, ``"deadline_exceeded"``...), never by a Python class name, and
are rebuilt on replay with `rebuild_error`, so a flow sees the same exception class
before and after a restart. An exception that is not a `GatewayError` (a bug, a
``ValueError`` from an SDK) is stored as ``INTERNAL`` / ``"Internal Error"`` for
clients, with its type and message kept under ``"operator"`` for operators
(`DurableEngine.history`); only the owner-facing HTTP layer hides them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._errors import (
    AlreadyExistsError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    GatewayError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
    client_error,
    error_from_status,
    exception_type,
)

__all__ = [
    "CriticalError",
    "DurableStoreError",
    "DurableUsageError",
    "ExecutionNotFoundError",
    "HistoryDivergedError",
    "JoinError",
    "JournalTooLargeError",
    "LeaseLostError",
    "NoMatchingCaseError",
    "NotFinishedError",
    "NotWaitingError",
    "RaceError",
    "RollbackCheckpointError",
    "RollbackError",
    "RollbackFailedError",
    "ScheduleNotFoundError",
    "SignalTimeoutError",
    "StepExhaustedError",
    "StepOutputError",
    "StepResultTooLargeError",
    "client_error",
    "error_code",
    "error_to_record",
    "rebuild_error",
]


class ExecutionNotFoundError(NotFoundError):
    """No durable execution with this id (or not visible to the caller)."""

    code: ClassVar[str] = "execution_not_found"


class ScheduleNotFoundError(NotFoundError):
    """No recurring schedule with this id (or not visible to the caller)."""

    code: ClassVar[str] = "schedule_not_found"


class HistoryDivergedError(FailedPreconditionError):
    """The flow's code no longer issues the steps its journal recorded.

    Raised when the step recorded under a key has another kind than the code asks
    for, when sequential code asks for a new key where the journal recorded another
    one, or when a branch finishes while the journal holds steps it never reached.
    The execution fails; it is never "repaired" silently.
    """

    code: ClassVar[str] = "history_diverged"


class DurableUsageError(FailedPreconditionError):
    """A durable primitive was used where it cannot work deterministically.

    The message names what to do instead: a forgotten ``await``, a wait called inside
    a step's body, concurrent tasks repeating one step name (use `DurableContext.join`).
    """

    code: ClassVar[str] = "durable_usage"


class NotWaitingError(FailedPreconditionError):
    """`resume` named a step that already got its payload, or the flow is finished."""

    code: ClassVar[str] = "not_waiting"


class NotFinishedError(FailedPreconditionError):
    """`cleanup` of an execution that has not completed, failed or been cancelled."""

    code: ClassVar[str] = "not_finished"


class CriticalError(FailedPreconditionError):
    """Raise inside a step to fail it at once: no further attempts are made."""

    code: ClassVar[str] = "critical"


class NoMatchingCaseError(CriticalError):
    """`DurableContext.switch` found no case for its value and has no default."""

    code: ClassVar[str] = "no_matching_case"


class RollbackError(CriticalError):
    """Raise inside a step (`DurableContext.run`) to roll the execution back: the
    rollback handlers registered since the last `DurableContext.rollback_checkpoint`
    run in reverse order (status ``rolling_back``), then the execution fails with
    this error, even if the flow catches it."""

    code: ClassVar[str] = "rollback"


class RollbackCheckpointError(FailedPreconditionError):
    """A rollback was asked for (`RollbackError`, `DurableContext.rollback`) but the
    flow never reached a `DurableContext.rollback_checkpoint`."""

    code: ClassVar[str] = "rollback_checkpoint"


class StepOutputError(FailedPreconditionError):
    """A step's result is not JSON or fails its ``output`` type: the step fails at
    once (its side effect already happened; it is not run again)."""

    code: ClassVar[str] = "step_output"


class LeaseLostError(FailedPreconditionError):
    """The worker's lease on an execution lapsed or was revoked (cancel, recovery).

    The worker stops running that execution; whoever holds it now carries on.
    """

    code: ClassVar[str] = "lease_lost"


class StepResultTooLargeError(ResourceExhaustedError):
    """A step's result, encoded as JSON, is over the engine's ``max_result_bytes``."""

    code: ClassVar[str] = "step_result_too_large"


class JournalTooLargeError(ResourceExhaustedError):
    """An execution's journal would grow over the engine's ``max_journal_bytes``.

    Long-running work should use `DurableContext.loop` with ``history_keep``.
    """

    code: ClassVar[str] = "journal_too_large"


class SignalTimeoutError(DeadlineExceededError):
    """`DurableContext.wait_for_signal` got no signal before its timeout."""

    code: ClassVar[str] = "signal_timeout"


class StepExhaustedError(InternalError):
    """A step failed on its last allowed attempt.

    ``details`` holds ``{"step", "attempts", "cause": {status, message}}``; in the
    process that ran the last attempt the original exception is also ``__cause__``.
    """

    code: ClassVar[str] = "step_exhausted"


class JoinError(InternalError):
    """Some branches of `DurableContext.join` failed; ``errors`` maps each failed
    branch to its error (every branch ran to its end first)."""

    code: ClassVar[str] = "join_failed"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.errors: dict[str, GatewayError] = {
            name: rebuild_error(record)
            for name, record in ((details or {}).get("errors") or {}).items()
        }


class RaceError(InternalError):
    """Every branch of `DurableContext.race` failed; ``errors`` by branch."""

    code: ClassVar[str] = "race_failed"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.errors: dict[str, GatewayError] = {
            name: rebuild_error(record)
            for name, record in ((details or {}).get("errors") or {}).items()
        }


class RollbackFailedError(InternalError):
    """A rollback handler failed on its last attempt: the compensation stopped there.

    ``details`` holds ``{"reason": why the rollback started (or null for a
    `DurableContext.rollback`), "handler": the handler's error}``.
    """

    code: ClassVar[str] = "rollback_failed"


class DurableStoreError(UnavailableError):
    """The durable store failed (busy, I/O); trying again later may work.

    Its message never carries the backend's text (that stays in ``__cause__`` and
    the log). ``transient`` is false for failures a retry cannot fix (a corrupt file).
    """

    code: ClassVar[str] = "store_unavailable"

    def __init__(self, message: str, *, details: Any = None, transient: bool = True) -> None:
        super().__init__(message, details=details)
        self.transient = transient

    def for_client(self) -> GatewayError:
        return UnavailableError("the durable store is unavailable; try again later")


_CODED: tuple[type[GatewayError], ...] = (
    CriticalError,
    DurableUsageError,
    DurableStoreError,
    ExecutionNotFoundError,
    HistoryDivergedError,
    JoinError,
    JournalTooLargeError,
    LeaseLostError,
    NoMatchingCaseError,
    NotFinishedError,
    NotWaitingError,
    RaceError,
    RollbackCheckpointError,
    RollbackError,
    RollbackFailedError,
    ScheduleNotFoundError,
    SignalTimeoutError,
    StepExhaustedError,
    StepOutputError,
    StepResultTooLargeError,
)
_BY_CODE: dict[str, type[GatewayError]] = {cls.code: cls for cls in _CODED}  # type: ignore[attr-defined]
# The core's own classes, by status: code is the status in lower case.
for _cls in (
    AlreadyExistsError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
):
    _BY_CODE.setdefault(_cls.status.lower(), _cls)


def error_code(exc: GatewayError) -> str:
    """The stable code an error is stored under (its class's ``code``, else its status)."""
    code = getattr(type(exc), "code", None)
    return code if isinstance(code, str) else exc.status.lower()


def error_to_record(exc: BaseException) -> dict[str, Any]:
    """The stored form of an error: ``{code, status, message, details?}``, plus
    ``operator: {type, message}`` for an exception that is not a `GatewayError`
    (clients see it as ``INTERNAL`` / ``"Internal Error"``)."""
    if isinstance(exc, GatewayError):
        record = {**exc.to_json(), "code": error_code(exc)}
        operator = getattr(exc, "operator", None)
        if operator is not None:
            record["operator"] = operator
        return record
    return {
        "code": "internal",
        "status": "INTERNAL",
        "message": "Internal Error",
        "operator": {"type": exception_type(exc), "message": str(exc)[:2000]},
    }


def public_error(exc: BaseException) -> GatewayError:
    """``exc`` itself when user-facing, else ``INTERNAL`` / ``"Internal Error"`` that
    remembers the original's type and message for operators (see `client_error`)."""
    return exc if isinstance(exc, GatewayError) else client_error(exc)


def rebuild_error(record: dict[str, Any]) -> GatewayError:
    """Rebuild a stored error: the same class for known codes, else by status.

    Operator information (``operator``) is kept on the error as ``.operator``.
    """
    cls = _BY_CODE.get(str(record.get("code")))
    message = str(record.get("message", ""))
    details = record.get("details")
    error = (
        cls(message, details=details)
        if cls is not None
        else error_from_status(str(record.get("status")), message, details)
    )
    if record.get("operator") is not None:
        error.operator = record["operator"]  # type: ignore[attr-defined]
    return error
