"""The collector's Prometheus metrics, prefixed ``driftwarden_collector_``.

Defined once here and shared by the proxy, the writer and the spool; served on
the admin port at ``/metrics``. prometheus-client metrics are thread-safe.
Latency buckets span 100 µs to 60 s: a local model answers in well under a
millisecond, a large language model in tens of seconds.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000)

REGISTRY = CollectorRegistry(auto_describe=True)

requests = Counter(
    "driftwarden_collector_requests",
    "Requests proxied, by model, version and HTTP status returned to the client",
    ["model", "model_version", "status"],
    registry=REGISTRY,
)
request_duration = Histogram(
    "driftwarden_collector_request_duration_seconds",
    "Time from receiving a request to the end of its response, as the client sees it",
    ["model", "model_version"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
upstream_duration = Histogram(
    "driftwarden_collector_upstream_duration_seconds",
    "Time the model server took to answer",
    ["model", "model_version"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
events_captured = Counter(
    "driftwarden_collector_events_captured",
    "Events accepted by the writer (counted as the flusher takes their batch: at most flush_interval_ms late)",
    ["model"],
    registry=REGISTRY,
)
events_written = Counter(
    "driftwarden_collector_events_written",
    "Events written to the sink (directly or replayed from the spool)",
    ["model"],
    registry=REGISTRY,
)
events_dropped = Counter(
    "driftwarden_collector_events_dropped",
    "Events lost, by reason (spool_full, memory_full, encode_error, ...)",
    ["model", "reason"],
    registry=REGISTRY,
)
events_set_aside = Counter(
    "driftwarden_collector_events_set_aside",
    "Events of spooled batches the store or hub refused for what they hold, set aside in <spool>/set-aside (tried "
    "again while running, and at the next start)",
    ["model"],
    registry=REGISTRY,
)
set_aside_bytes = Gauge(
    "driftwarden_collector_set_aside_bytes",
    "Bytes of batches set aside in <spool>/set-aside (tried again while running, and at the next start)",
    ["model"],
    registry=REGISTRY,
)
spool_bytes = Gauge(
    "driftwarden_collector_spool_bytes",
    "Bytes of batches waiting in the on-disk spool",
    ["model"],
    registry=REGISTRY,
)
capture_backlog_bytes = Gauge(
    "driftwarden_collector_capture_backlog_bytes",
    "Engine nginx: bytes of the capture log that nginx wrote and the collector has not read yet",
    ["model"],
    registry=REGISTRY,
)
spool_segments = Gauge(
    "driftwarden_collector_spool_segments",
    "Segment files in the on-disk spool",
    ["model"],
    registry=REGISTRY,
)
sink_write_duration = Histogram(
    "driftwarden_collector_sink_write_duration_seconds",
    "Time to write one batch to the sink",
    ["model", "sink"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
sink_errors = Counter(
    "driftwarden_collector_sink_errors",
    "Failed batch writes to the sink (the batch goes to the spool)",
    ["model", "sink"],
    registry=REGISTRY,
)
batch_size = Histogram(
    "driftwarden_collector_batch_size",
    "Events per batch written",
    ["model"],
    buckets=BATCH_BUCKETS,
    registry=REGISTRY,
)
redactions = Counter(
    "driftwarden_collector_redactions",
    "Values redacted before leaving the process, by rule",
    ["model", "rule"],
    registry=REGISTRY,
)
malformed_requests = Counter(
    "driftwarden_collector_malformed_requests",
    "Requests that were not valid HTTP, answered 400 by the collector itself (never sent upstream)",
    ["model"],
    registry=REGISTRY,
)


class ExchangeMetrics:
    """What a data plane records of each answered exchange (the Python proxy; the nginx engine's capture):
    the request counter by status, the duration and the upstream's part of it."""

    def __init__(self, model: str, version: str) -> None:
        self._model, self._version = model, version
        self._duration = request_duration.labels(model, version)
        self._upstream = upstream_duration.labels(model, version)
        self._requests: dict[int, Any] = {}

    def observe(self, ex: Any) -> None:
        """Count the exchange ``ex`` (a ``collector.exchange.Exchange``)."""
        child = self._requests.get(ex.status)
        if child is None:
            child = self._requests[ex.status] = requests.labels(self._model, self._version, str(ex.status))
        child.inc()
        self._duration.observe(ex.t_end - ex.t_start)
        if ex.t_upstream_end and ex.t_upstream_start:
            self._upstream.observe(ex.t_upstream_end - ex.t_upstream_start)
