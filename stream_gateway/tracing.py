"""OpenTelemetry spans for flow runs, durable steps and storage calls (the ``otel`` extra).

>>> tracing = OpenTelemetryTracing().install()   # the global tracer provider, or pass one

Spans (attributes ``stream_gateway.flow``, ``.stream_id``, ``.execution_id``,
``.step``, ``.kind``, ``.attempt``, ``.worker`` where they apply):

- ``flow.run``: a run of a plain flow, a child of the current span where it starts
  (the request's, when the app is wrapped in OpenTelemetry's ASGI middleware, which
  reads the incoming W3C ``traceparent``). A streaming run outlives its request and
  keeps that parent.
- ``durable.run``: one replay of a durable execution by a worker. Its parent is the
  span current when the execution was scheduled (the request that started it), kept
  with the execution in its first audit line as W3C headers, so the trace continues
  in whichever process or machine runs it, at every wake-up.
- ``durable.step``: each attempt of a durable step, inside its run.
- ``stream.storage.create`` / ``append`` / ``finish`` / ``read`` and
  ``durable.storage.append``: the storage calls that write and read chunks and
  journal entries.

Importing `stream_gateway` never imports OpenTelemetry; until `install` no span is
made and each place that would make one costs one check of an empty tuple.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Any, Self

try:
    from opentelemetry import propagate, trace
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "stream_gateway.tracing needs OpenTelemetry: pip install 'stream-gateway[otel]'"
    ) from exc

from . import _telemetry

__all__ = ["OpenTelemetryTracing"]


class OpenTelemetryTracing(_telemetry.Observer):
    """Makes the library's spans with ``tracer_provider`` (default: the global one)
    and carries trace context with the global propagator (W3C ``traceparent`` by
    default)."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("stream_gateway", tracer_provider=tracer_provider)

    def install(self) -> Self:
        """Start making spans (idempotent); returns self."""
        _telemetry.install(self)
        return self

    def uninstall(self) -> None:
        """Stop making spans (idempotent)."""
        _telemetry.uninstall(self)

    def __enter__(self) -> Self:
        return self.install()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()

    def span(
        self, name: str, attributes: dict[str, Any], parent: dict[str, str] | None
    ) -> contextlib.AbstractContextManager[Any]:
        context = propagate.extract(parent) if parent else None
        values = {f"stream_gateway.{k}": v for k, v in attributes.items() if v is not None}
        return self.tracer.start_as_current_span(name, context=context, attributes=values)

    def carrier(self) -> dict[str, str]:
        found: dict[str, str] = {}
        propagate.inject(found)
        return found
