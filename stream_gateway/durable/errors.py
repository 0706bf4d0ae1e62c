"""Errors of durable flows, under the core's one root (`GatewayError`).

```
GatewayError
├── InvalidArgumentError
├── NotFoundError
│   └── ExecutionNotFoundError        NOT_FOUND            no such flow id
├── FailedPreconditionError
│   ├── HistoryDivergedError          FAILED_PRECONDITION  code no longer matches journal
│   ├── NotWaitingError               FAILED_PRECONDITION  resume of a step not waited on
│   ├── NotFinishedError              FAILED_PRECONDITION  cleanup of a live execution
│   ├── CriticalError                 FAILED_PRECONDITION  a step failure never retried
│   └── LeaseLostError                FAILED_PRECONDITION  another worker owns it now
├── ResourceExhaustedError
│   └── StepResultTooLargeError       RESOURCE_EXHAUSTED   result over the size limit
└── InternalError
    ├── StepExhaustedError            INTERNAL             last retry failed; has cause
    └── DurableStoreError             INTERNAL             the store itself failed
```

Errors raised by steps are stored in the journal in their wire form and rebuilt on
replay with `rebuild_error`, so a flow sees the same exception class (for the classes
named here and the core's statuses) before and after a restart.
"""

from __future__ import annotations

from typing import Any

from .._errors import (
    FailedPreconditionError,
    GatewayError,
    InternalError,
    NotFoundError,
    ResourceExhaustedError,
    error_from_status,
)

__all__ = [
    "CriticalError",
    "DurableStoreError",
    "ExecutionNotFoundError",
    "HistoryDivergedError",
    "LeaseLostError",
    "NotFinishedError",
    "NotWaitingError",
    "StepExhaustedError",
    "StepResultTooLargeError",
    "error_to_record",
    "rebuild_error",
]


class ExecutionNotFoundError(NotFoundError):
    """No durable execution with this id (or not visible to the caller)."""


class HistoryDivergedError(FailedPreconditionError):
    """The flow's code no longer issues the steps its journal recorded.

    Raised when the step at a journal position has another kind or key than the code
    asks for, or when the code finishes while the journal holds steps it never
    reached. The execution fails; it is never "repaired" silently.
    """


class NotWaitingError(FailedPreconditionError):
    """`resume` named a step the execution is not blocked on (or it is finished)."""


class NotFinishedError(FailedPreconditionError):
    """`cleanup` of an execution that has not completed, failed or been cancelled."""


class CriticalError(FailedPreconditionError):
    """Raise inside a step to fail it at once: no further attempts are made."""


class LeaseLostError(FailedPreconditionError):
    """The worker's lease on an execution lapsed or was revoked (cancel, recovery).

    The worker stops running that execution; whoever holds it now carries on.
    """


class StepResultTooLargeError(ResourceExhaustedError):
    """A step's result, encoded as JSON, is over the engine's ``max_result_bytes``."""


class StepExhaustedError(InternalError):
    """A step failed on its last allowed attempt.

    ``details`` holds ``{"step", "attempts", "cause": {status, message}}``; in the
    process that ran the last attempt the original exception is also ``__cause__``.
    """


class DurableStoreError(InternalError):
    """The durable store failed (I/O, corruption); the operation may be retried."""


_CLASSES: dict[str, type[GatewayError]] = {
    cls.__name__: cls
    for cls in (
        CriticalError,
        ExecutionNotFoundError,
        HistoryDivergedError,
        NotFinishedError,
        NotWaitingError,
        StepExhaustedError,
        StepResultTooLargeError,
    )
}


def error_to_record(exc: GatewayError) -> dict[str, Any]:
    """The stored form of an error: its wire form plus the class name to rebuild."""
    return {**exc.to_json(), "type": type(exc).__name__}


def public_error(exc: BaseException) -> GatewayError:
    """``exc`` itself when user-facing, else ``INTERNAL`` / ``"Internal Error"``."""
    if isinstance(exc, GatewayError):
        return exc
    return InternalError("Internal Error")


def rebuild_error(record: dict[str, Any]) -> GatewayError:
    """Rebuild a stored error: the same class for known ones, else by status."""
    cls = _CLASSES.get(str(record.get("type")))
    message = str(record.get("message", ""))
    details = record.get("details")
    if cls is not None:
        return cls(message, details=details)
    return error_from_status(str(record.get("status")), message, details)
