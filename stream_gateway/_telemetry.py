"""Where the library reports what it does, for metrics and traces to listen.

Nothing listens by default: each report is one check of an empty tuple, so an app
that installs neither `stream_gateway.metrics` nor `stream_gateway.tracing` pays
nothing more (and imports neither prometheus_client nor OpenTelemetry).
`Observer` is the listening side; ``install``/``uninstall`` add and remove one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["Observer", "carrier", "install", "observers", "span", "uninstall"]


class Observer:
    """Receives reports; every method does nothing unless overridden. Reports come
    from the event loop's thread and must not block or raise."""

    def stream_opened(self, flow: str) -> None:
        """A writer opened a stream in this process."""

    def stream_finished(self, flow: str, end: str) -> None:
        """A writer of this process ended its stream (``done``, ``error``, ...)."""

    def chunks_written(self, flow: str, count: int) -> None:
        """A batch of ``count`` chunks was committed."""

    def subscriber_added(self) -> None:
        """A reader started following a stream."""

    def subscriber_removed(self) -> None:
        """A reader stopped following a stream."""

    def chunks_read(self, count: int, lag: int) -> None:
        """A reader got ``count`` chunks and is ``lag`` chunks behind the newest
        one this process knows of."""

    def lease_expired(self, kind: str) -> None:
        """A lease lapsed: ``stream`` (its end recorded as abandoned) or
        ``execution`` (a worker lost a durable execution's lease)."""

    def execution_status(self, status: str) -> None:
        """A durable execution entered ``status``."""

    def step_finished(self, flow: str, kind: str, outcome: str, seconds: float) -> None:
        """An attempt of a durable step ended (``completed``, ``error`` when it will
        be retried, ``failed``) after ``seconds``."""

    def span(
        self, name: str, attributes: dict[str, Any], parent: dict[str, str] | None
    ) -> contextlib.AbstractContextManager[Any]:
        """A context manager around a unit of work (a trace span); none by default.
        ``parent``: a trace context saved by `carrier` elsewhere (another task or
        process) to continue, instead of the current one."""
        return contextlib.nullcontext()

    def carrier(self) -> dict[str, str]:
        """The current trace context as W3C headers (``traceparent``...), to store
        with work that runs later, elsewhere; ``{}`` for none."""
        return {}


#: The observers installed, in order. A tuple, replaced whole, so a report that
#: iterates it is never disturbed by an install.
observers: tuple[Observer, ...] = ()


def install(observer: Observer) -> None:
    """Start sending reports to ``observer`` (idempotent)."""
    global observers
    if observer not in observers:
        observers = (*observers, observer)


def uninstall(observer: Observer) -> None:
    """Stop sending reports to ``observer`` (idempotent)."""
    global observers
    observers = tuple(o for o in observers if o is not observer)


_NOTHING = contextlib.nullcontext()


def span(
    name: str, parent: dict[str, str] | None = None, **attributes: Any
) -> contextlib.AbstractContextManager[Any]:
    """Every observer's span around a block (nested in install order); with no
    observer, a shared no-op context manager."""
    if not observers:
        return _NOTHING
    return _spans(name, attributes, parent)


@contextlib.contextmanager
def _spans(name: str, attributes: dict[str, Any], parent: dict[str, str] | None) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for observer in observers:
            stack.enter_context(observer.span(name, attributes, parent))
        yield


def carrier() -> dict[str, str]:
    """The current trace context (`Observer.carrier`) of every observer, merged."""
    found: dict[str, str] = {}
    for observer in observers:
        found.update(observer.carrier())
    return found
