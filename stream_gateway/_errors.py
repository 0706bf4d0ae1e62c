"""Errors: one root, a short tree, and the one table that maps statuses to HTTP.

```
GatewayError                      status (a canonical code), message, details
├── InvalidArgumentError          INVALID_ARGUMENT   400
│   ├── UnsupportedMediaTypeError INVALID_ARGUMENT   415
│   └── MethodNotAllowedError     INVALID_ARGUMENT   405
├── UnauthenticatedError          UNAUTHENTICATED    401
├── PermissionDeniedError         PERMISSION_DENIED  403
├── NotFoundError                 NOT_FOUND          404
│   └── StreamNotFoundError
├── AlreadyExistsError            ALREADY_EXISTS     409
│   └── StreamExistsError
├── FailedPreconditionError       FAILED_PRECONDITION 400
│   ├── StreamClosedError
│   └── StreamCompactedError      FAILED_PRECONDITION 410
├── ResourceExhaustedError        RESOURCE_EXHAUSTED 429
│   └── PayloadTooLargeError      RESOURCE_EXHAUSTED 413
├── CancelledError                CANCELLED          499
├── DeadlineExceededError         DEADLINE_EXCEEDED  504
├── UnavailableError              UNAVAILABLE        503
│   ├── StreamAbandonedError
│   └── StreamInterruptedError
└── InternalError                 INTERNAL           500
```

Every error is *user-facing*: its status, message and details may be sent to a
client. Any other exception escaping a flow is reported to the client as
``INTERNAL`` / ``"Internal Error"`` and logged with its traceback on the server.

``CancelledError`` here is the gateway's status for a cancelled flow, not
``asyncio.CancelledError``: it derives from ``Exception`` as all these do, while the
event loop's cancellation is a ``BaseException`` that ``except Exception`` never
swallows.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

__all__ = [
    "HTTP_STATUS",
    "AlreadyExistsError",
    "CancelledError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "GatewayError",
    "InternalError",
    "InvalidArgumentError",
    "MethodNotAllowedError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "Status",
    "StreamAbandonedError",
    "StreamClosedError",
    "StreamCompactedError",
    "StreamExistsError",
    "StreamInterruptedError",
    "StreamNotFoundError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
    "client_error",
    "error_from_status",
    "exception_type",
]

Status = Literal[
    "INVALID_ARGUMENT",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "FAILED_PRECONDITION",
    "RESOURCE_EXHAUSTED",
    "CANCELLED",
    "DEADLINE_EXCEEDED",
    "UNAVAILABLE",
    "INTERNAL",
]

#: The one mapping from a status to its HTTP status code (Google's canonical codes).
HTTP_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


class GatewayError(Exception):
    """Root of every error the library raises on purpose; safe to show to a client.

    ``status`` is a canonical code (see `Status`), ``message`` a human sentence and
    ``details`` any JSON value that helps the caller (validation errors, limits).
    """

    status: ClassVar[Status] = "INTERNAL"
    #: A narrower HTTP code than the table's, for the few errors HTTP names precisely.
    http_override: ClassVar[int | None] = None

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def http_status(self) -> int:
        """The HTTP status code this error is answered with."""
        return self.http_override or HTTP_STATUS[self.status]

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``{"status", "message"}`` plus ``"details"`` when set."""
        body: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body

    def for_client(self) -> GatewayError:
        """What a client may see of this error: the error itself, unless its class
        hides its text (a store failure names no backend detail)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


class InvalidArgumentError(GatewayError):
    """The request or input is malformed or fails validation."""

    status = "INVALID_ARGUMENT"


class UnsupportedMediaTypeError(InvalidArgumentError):
    """The request body is not of a content type the endpoint accepts."""

    http_override = 415


class MethodNotAllowedError(InvalidArgumentError):
    """The endpoint exists but not for this HTTP method."""

    http_override = 405


class UnauthenticatedError(GatewayError):
    """The request carries no valid credentials."""

    status = "UNAUTHENTICATED"


class PermissionDeniedError(GatewayError):
    """The caller is known but may not do this."""

    status = "PERMISSION_DENIED"


class NotFoundError(GatewayError):
    """The thing named does not exist (or is not visible to the caller)."""

    status = "NOT_FOUND"


class StreamNotFoundError(NotFoundError):
    """No stream with this id: never created, expired, purged or owned by another."""


class AlreadyExistsError(GatewayError):
    """Something with this id exists already; it is never silently overwritten."""

    status = "ALREADY_EXISTS"


class StreamExistsError(AlreadyExistsError):
    """`StreamManager.open` was given an id that is taken."""


class FailedPreconditionError(GatewayError):
    """The system is not in the state the operation needs."""

    status = "FAILED_PRECONDITION"


class StreamClosedError(FailedPreconditionError):
    """A write after the stream's terminal entry."""


class StreamCompactedError(FailedPreconditionError):
    """The stream was compacted and the offset asked for lies inside a compacted range
    (its chunks were joined into one entry): replay from offset 0.

    Answered with HTTP 410 Gone; ``details`` names the stream, the offset and
    ``"replayFrom": 0``. Our clients drop what they showed and replay from 0.
    """

    http_override = 410

    @classmethod
    def at(cls, stream_id: str, offset: int) -> StreamCompactedError:
        """The error for a reader of ``stream_id`` at ``offset``."""
        return cls(
            f"stream {stream_id} was compacted: offset {offset} is inside a compacted"
            " range; replay from offset 0",
            details={"streamId": stream_id, "offset": offset, "replayFrom": 0},
        )


class ResourceExhaustedError(GatewayError):
    """A configured limit was exceeded (chunk size, stream length, memory bound)."""

    status = "RESOURCE_EXHAUSTED"


class PayloadTooLargeError(ResourceExhaustedError):
    """The request body exceeds the configured limit."""

    http_override = 413


class CancelledError(GatewayError):
    """The flow was cancelled on request."""

    status = "CANCELLED"


class DeadlineExceededError(GatewayError):
    """An operation ran out of time."""

    status = "DEADLINE_EXCEEDED"


class UnavailableError(GatewayError):
    """A backend or the server is unavailable; trying again later may work."""

    status = "UNAVAILABLE"


class StreamAbandonedError(UnavailableError):
    """The stream's writer stopped renewing its lease (its process died)."""


class StreamInterruptedError(UnavailableError):
    """This process stopped following a stream that may still finish (it is shutting
    down, or cannot reach the backend): resume from the next offset, here or elsewhere.

    Not a terminal state of the stream: the gateway ends such a response without a
    terminal frame, which both clients treat as "reconnect".
    """


class InternalError(GatewayError):
    """An unexpected failure; details stay in the server log."""

    status = "INTERNAL"


_BY_STATUS: dict[str, type[GatewayError]] = {
    cls.status: cls
    for cls in (
        InvalidArgumentError,
        UnauthenticatedError,
        PermissionDeniedError,
        NotFoundError,
        AlreadyExistsError,
        FailedPreconditionError,
        ResourceExhaustedError,
        CancelledError,
        DeadlineExceededError,
        UnavailableError,
        InternalError,
    )
}


def error_from_status(status: str, message: str, details: Any = None) -> GatewayError:
    """Rebuild an error from its wire form; unknown statuses become `InternalError`."""
    return _BY_STATUS.get(status, InternalError)(message, details=details)


def client_error(exc: BaseException) -> GatewayError:
    """The one rule that makes an error safe to send to a client.

    A `GatewayError` as its `GatewayError.for_client` gives it; anything else becomes
    ``INTERNAL`` / ``"Internal Error"``, which keeps the original's type and message
    on ``.operator`` for logs and operators (never on the wire).
    """
    if isinstance(exc, GatewayError):
        return exc.for_client()
    error = InternalError("Internal Error")
    error.operator = {"type": exception_type(exc), "message": str(exc)[:2000]}  # type: ignore[attr-defined]
    return error


def exception_type(exc: BaseException) -> str:
    """``exc``'s class as operators read it: ``ValueError``, ``package.module.Error``."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
