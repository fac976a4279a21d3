"""The server's Prometheus metrics, in a registry of its own (``GET /metrics`` in the text format).

- ``geep_requests_total{status}``: /predict requests by HTTP status (499: the client went away);
- ``geep_rows_total{status}``: rows by outcome (ok, failed, timeout, disconnected, rejected);
- ``geep_request_latency_seconds``: /predict latency, arrival to answer, of requests the worker took;
- ``geep_queue_rows``: rows in flight (admitted, not yet answered or dropped);
- ``geep_batch_size{layer}``: rows per step, by the exit the step runs to;
- ``geep_rows_exited_total{layer}``: rows answered at each exit;
- ``geep_rejections_total{reason}``: requests refused before the worker (queue_full, too_many_texts,
  text_too_long, invalid, unauthorized, unavailable: shutting down).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The metrics of one server (thread safe: the worker thread and the event loop both write them)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("geep_requests", "/predict requests by HTTP status", ["status"], registry=r)
        self.rows = Counter("geep_rows", "rows by outcome", ["status"], registry=r)
        self.latency = Histogram("geep_request_latency_seconds", "/predict latency, arrival to answer",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.queue = Gauge("geep_queue_rows", "rows in flight", registry=r)
        self.batch = Histogram("geep_batch_size", "rows per step, by the exit it runs to", ["layer"],
                               buckets=BATCH_BUCKETS, registry=r)
        self.exited = Counter("geep_rows_exited", "rows answered at each exit", ["layer"], registry=r)
        self.rejections = Counter("geep_rejections", "requests refused before the worker", ["reason"], registry=r)

    def step(self, layer: int, size: int) -> None:
        self.batch.labels(layer=str(layer)).observe(size)

    def exits(self, layer: int, count: int) -> None:
        self.exited.labels(layer=str(layer)).inc(count)

    def request(self, status: int) -> None:
        self.requests.labels(status=str(status)).inc()

    def reject(self, reason: str, rows: int = 0) -> None:
        self.rejections.labels(reason=reason).inc()
        if rows:
            self.rows.labels(status="rejected").inc(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)
