"""Prometheus metrics for streams and durable executions (the ``prometheus`` extra).

>>> metrics = PrometheusMetrics()   # its own registry; or registry=prometheus_client.REGISTRY
>>> metrics.install()               # start counting (metrics.uninstall() stops)
>>> # routes=[..., Mount("/metrics", app=metrics.app())]

What is measured is what this process does; a scrape of each process (and a sum in
PromQL) gives the whole deployment. Importing `stream_gateway` never imports
``prometheus_client``; until `PrometheusMetrics.install` nothing is counted and each
place that would report costs one check of an empty tuple. See docs/observability.md.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app
except ImportError as exc:  # pragma: no cover - exercised without the extra only
    raise ImportError(
        "stream_gateway.metrics needs prometheus_client: pip install 'stream-gateway[prometheus]'"
    ) from exc

from . import _telemetry

__all__ = ["PrometheusMetrics"]

_LAG_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000)
_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class PrometheusMetrics(_telemetry.Observer):
    """Counts what streams and durable executions do, in a Prometheus registry.

    Metrics (``namespace`` defaults to ``stream_gateway``):

    - ``streams_active{flow}`` (gauge): streams open with their writer in this process
    - ``streams_opened_total{flow}``, ``streams_finished_total{flow,end}`` (``end``:
      done, error, cancelled)
    - ``stream_subscribers`` (gauge): readers following a stream now
    - ``chunks_written_total{flow}``, ``chunks_read_total``
    - ``reader_lag_chunks`` (histogram): on each read, how many chunks the reader is
      behind the newest one this process knows of
    - ``lease_expiries_total{kind}``: ``stream`` (an abandoned stream's end
      recorded) or ``execution`` (a worker lost a durable execution's lease)
    - ``executions_total{status}``: durable executions that entered each status
      (pending, running, sleeping, waiting, rolling_back, completed, failed,
      cancelled)
    - ``step_duration_seconds{flow,kind,outcome}`` (histogram): each attempt of a
      durable step; ``outcome`` completed, error (to be retried) or failed
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "stream_gateway"
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        options: dict[str, Any] = {"namespace": namespace, "registry": self.registry}
        self.streams_active_metric = Gauge(
            "streams_active", "Streams open with their writer in this process", ["flow"], **options
        )
        self.streams_opened_metric = Counter(
            "streams_opened", "Streams opened by this process", ["flow"], **options
        )
        self.streams_finished_metric = Counter(
            "streams_finished", "Streams ended by this process", ["flow", "end"], **options
        )
        self.subscribers_metric = Gauge(
            "stream_subscribers", "Readers following a stream", **options
        )
        self.chunks_written_metric = Counter(
            "chunks_written", "Chunks committed by writers", ["flow"], **options
        )
        self.chunks_read_metric = Counter("chunks_read", "Chunks delivered to readers", **options)
        self.reader_lag_metric = Histogram(
            "reader_lag_chunks",
            "Chunks a reader is behind the newest known one, at each read",
            buckets=_LAG_BUCKETS,
            **options,
        )
        self.lease_expiries_metric = Counter(
            "lease_expiries", "Leases that lapsed (stream or execution)", ["kind"], **options
        )
        self.executions_metric = Counter(
            "executions", "Durable executions that entered each status", ["status"], **options
        )
        self.step_duration_metric = Histogram(
            "step_duration_seconds",
            "Duration of each attempt of a durable step",
            ["flow", "kind", "outcome"],
            buckets=_STEP_BUCKETS,
            **options,
        )

    def install(self) -> Self:
        """Start counting (idempotent); returns self."""
        _telemetry.install(self)
        return self

    def uninstall(self) -> None:
        """Stop counting (idempotent); the figures stay."""
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

    def app(self) -> Any:
        """An ASGI app serving this registry in Prometheus' text format: mount it
        (``Mount("/metrics", app=metrics.app())``) behind whatever guards it."""
        return make_asgi_app(self.registry)

    # -- reports (see `stream_gateway._telemetry.Observer`) ------------------------------

    def stream_opened(self, flow: str) -> None:
        self.streams_opened_metric.labels(flow).inc()
        self.streams_active_metric.labels(flow).inc()

    def stream_finished(self, flow: str, end: str) -> None:
        self.streams_finished_metric.labels(flow, end).inc()
        self.streams_active_metric.labels(flow).dec()

    def chunks_written(self, flow: str, count: int) -> None:
        self.chunks_written_metric.labels(flow).inc(count)

    def subscriber_added(self) -> None:
        self.subscribers_metric.inc()

    def subscriber_removed(self) -> None:
        self.subscribers_metric.dec()

    def chunks_read(self, count: int, lag: int) -> None:
        self.chunks_read_metric.inc(count)
        self.reader_lag_metric.observe(lag)

    def lease_expired(self, kind: str) -> None:
        self.lease_expiries_metric.labels(kind).inc()

    def execution_status(self, status: str) -> None:
        self.executions_metric.labels(status).inc()

    def step_finished(self, flow: str, kind: str, outcome: str, seconds: float) -> None:
        self.step_duration_metric.labels(flow, kind, outcome).observe(seconds)
