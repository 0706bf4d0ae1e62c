"""The seam with Google's client: error translation and timestamps, in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from google.api_core import exceptions as gexc

from stream_gateway import PermissionDeniedError, UnavailableError

__all__ = ["from_timestamp", "to_timestamp", "translated"]

#: Failures that say "the backend cannot answer now": the manager retries these.
#: ``Cancelled`` here comes from the server or channel (our own cancellation is the
#: event loop's, never a Google error); the emulator sends it now and then on commits.
_TRANSIENT: tuple[type[BaseException], ...] = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.Aborted,
    gexc.Cancelled,
    gexc.RetryError,
    ConnectionError,
    TimeoutError,
)


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Re-raise Google API failures as gateway errors; let anything unexpected through.

    Unavailable, deadline, aborted and connection failures become `UnavailableError`
    (which `StreamManager` retries); permission failures become `PermissionDeniedError`.
    ``action`` names what failed, for the message; the original stays as ``__cause__``.
    """
    try:
        yield
    except _TRANSIENT as exc:
        raise UnavailableError(f"Firestore unavailable ({action}): {_brief(exc)}") from exc
    except gexc.PermissionDenied as exc:
        raise PermissionDeniedError(f"Firestore denied {action}: {_brief(exc)}") from exc


def _brief(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    first_line = str(message).splitlines()[0] if str(message) else type(exc).__name__
    return first_line[:200]


def to_timestamp(seconds: float) -> datetime:
    """Unix seconds as an aware UTC datetime (stored as a Firestore timestamp)."""
    return datetime.fromtimestamp(seconds, tz=UTC)


def from_timestamp(value: object) -> float:
    """A stored timestamp (or plain number) as Unix seconds."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    raise TypeError(f"expected a timestamp, got {type(value).__name__}")
