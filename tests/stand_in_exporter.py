"""Values for the collector's and the detectors' real Prometheus metrics, for checking dashboard PromQL.

The metric definitions (names, labels, types) are the real ones: ``collector.metrics`` and
``detectors.exporter.Exporter``. Only the values are set here, by hand, because the test has no
traffic and no detector runs; a dashboard query that names a metric or a label these modules
do not define finds no series.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.registry import Collector

from driftwarden.collector import metrics as collector_metrics
from driftwarden.detectors.exporter import Exporter

MODEL = "bikeshare"
VERSIONS = ("v1", "v2")
DETECTORS = ("drift", "latency", "performance", "consistency", "replay")


class _Both(Collector):
    """Expose several registries on one endpoint."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self.registries = registries

    def collect(self):
        for registry in self.registries:
            yield from registry.collect()


def _collector_metrics() -> CollectorRegistry:
    m = collector_metrics
    for version in VERSIONS:
        for status, count in (("200", 50), ("500", 1)):
            m.requests.labels(MODEL, version, status).inc(count)
        for seconds in (0.002, 0.004, 0.02, 0.3):
            m.request_duration.labels(MODEL, version).observe(seconds)
            m.upstream_duration.labels(MODEL, version).observe(seconds * 0.8)
    m.events_captured.labels(MODEL).inc(100)
    m.events_written.labels(MODEL).inc(98)
    m.events_dropped.labels(MODEL, "spool_full").inc(2)
    m.spool_bytes.labels(MODEL).set(4096)
    m.spool_segments.labels(MODEL).set(1)
    m.sink_write_duration.labels(MODEL, "clickhouse").observe(0.03)
    m.sink_errors.labels(MODEL, "clickhouse").inc()
    m.batch_size.labels(MODEL).observe(100)
    _genai_metrics()
    return m.REGISTRY


def _genai_metrics() -> None:
    """Language-model calls of MODEL (as gen_ai_request_model), one failed; OTLP span counts."""
    from driftwarden.collector.event import Event
    from driftwarden.collector.genai_config import GenAIConfig, ModelPrice
    from driftwarden.collector.genai_metrics import GenAIRecorder
    from driftwarden.collector.receivers import otlp

    recorder = GenAIRecorder(
        GenAIConfig(prices={MODEL: ModelPrice(input=0.5, output=1.5)}, currency="EUR", daily_budget=100)
    )
    call = {"model": MODEL, "operation_name": "chat", "provider_name": "vllm", "request_model": MODEL}
    recorder.observe(
        [
            Event(**call, prompt_tokens=120, completion_tokens=60, latency_ms=900, ttft_ms=150, finish_reason="stop"),
            Event(**call, prompt_tokens=80, completion_tokens=256, latency_ms=2500, ttft_ms=90, finish_reason="length"),
            Event(**call, prompt_tokens=40, completion_tokens=0, latency_ms=30000, error_class="timeout"),
            Event(**{**call, "request_model": "unpriced-llm"}, prompt_tokens=10, completion_tokens=5, latency_ms=100),
        ]
    )
    for outcome, count in (("stored", 3), ("not_genai", 2), ("rejected", 1)):
        otlp.spans_received.labels(outcome).inc(count)


def _detector_metrics() -> CollectorRegistry:
    e = Exporter()
    for v in VERSIONS:
        e.feature_drift_score.labels(MODEL, v, "temp", "ks").set(0.01)
        e.feature_drifted.labels(MODEL, v, "temp", "ks").set(1)
        e.feature_drift_persistent.labels(MODEL, v, "temp", "ks").set(1)
        e.dataset_drift_share.labels(MODEL, v).set(0.4)
        e.dataset_drifted.labels(MODEL, v).set(0)
        e.prediction_drift_score.labels(MODEL, v, "ks").set(0.2)
        e.prediction_drifted.labels(MODEL, v, "ks").set(0)
        e.performance.labels(MODEL, v, "mae").set(31.0)
        e.latency_seconds.labels(MODEL, v, "0.95").set(0.02)
        e.error_ratio.labels(MODEL, v).set(0.01)
        e.requests_per_second.labels(MODEL, v).set(12.0)
        for window in ("1h", "6h", "24h", "30d"):
            e.slo_burn_rate.labels(MODEL, v, window).set(1.5)
        e.slo_attainment.labels(MODEL, v).set(0.995)
        for kind in ("consistency", "replay"):
            e.reproducibility_rate.labels(MODEL, v, kind).set(0.99)
    for detector in DETECTORS:
        e.last_success.labels(detector, MODEL).set(time.time() - 60)
        e.run_duration.labels(detector, MODEL).set(1.2)
        e.errors.labels(detector, MODEL).inc(0)
        e.runs.labels(detector, MODEL, "ok").inc(3)
    e.events_last_timestamp.labels(MODEL).set(time.time())
    return e.registry


def serve() -> tuple[int, object]:
    """Serve both sets of metrics on 127.0.0.1 at a free port; return (port, server)."""
    registry = CollectorRegistry()
    registry.register(_Both(_collector_metrics(), _detector_metrics()))
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    return server.server_port, server
