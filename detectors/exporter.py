"""The detectors' Prometheus metrics, prefixed ``driftwarden_``, in a registry of their own.

Gauges hold the latest computed window of each detector, per model and
version; counters count runs and failures. Dashboards and alert rules are
written against these exact names: renaming one is a breaking change.

=============================================================  =============================================
metric                                                          labels
=============================================================  =============================================
driftwarden_feature_drift_score / _drifted / _persistent        model, model_version, feature, method
driftwarden_dataset_drift_share / driftwarden_dataset_drifted   model, model_version
driftwarden_prediction_drift_score / _drifted                   model, model_version, method
driftwarden_performance                                         model, model_version, metric
driftwarden_latency_seconds                                     model, model_version, quantile (0.5 ... 0.99)
driftwarden_error_ratio / driftwarden_requests_per_second       model, model_version
driftwarden_slo_burn_rate                                       model, model_version, window (1h, 6h, 24h, 30d)
driftwarden_slo_attainment                                      model, model_version
driftwarden_reproducibility_rate                                model, model_version, kind (consistency, replay)
driftwarden_detector_last_success_timestamp_seconds             detector, model
driftwarden_detector_run_duration_seconds                       detector, model
driftwarden_detector_errors_total (counter)                     detector, model
driftwarden_detector_runs_total (counter)                       detector, model, status
driftwarden_model_events_total                                  model, model_version (non-replay events stored)
driftwarden_events_last_timestamp_seconds                       model (newest non-replay event)
=============================================================  =============================================

A drift score is the number the method compares with its threshold: the
p-value of a test (drift when below), the distance otherwise (drift when at
or above). prometheus-client metrics are thread-safe; the HTTP server runs in
a daemon thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from driftwarden.detectors.latency import LatencyResult
from driftwarden.detectors.performance import PerformanceResult
from driftwarden.detectors.reproducibility.consistency import ReproducibilityResult
from driftwarden.detectors.runs import Run

FEATURE = ["model", "model_version", "feature", "method"]
VERSION = ["model", "model_version"]
DETECTOR = ["detector", "model"]


class Exporter:
    """Every ``driftwarden_`` gauge and counter, and the methods that set them from results."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.feature_drift_score = Gauge(
            "driftwarden_feature_drift_score", "Drift score of a feature (p-value or distance)", FEATURE, registry=r
        )
        self.feature_drifted = Gauge("driftwarden_feature_drifted", "1 when the feature drifted", FEATURE, registry=r)
        self.feature_drift_persistent = Gauge(
            "driftwarden_feature_drift_persistent",
            "1 when the feature drifted in the configured number of consecutive windows",
            FEATURE,
            registry=r,
        )
        self.dataset_drift_share = Gauge(
            "driftwarden_dataset_drift_share", "Share of analysed features that drifted", VERSION, registry=r
        )
        self.dataset_drifted = Gauge(
            "driftwarden_dataset_drifted", "1 when the drifted share reached the dataset threshold", VERSION, registry=r
        )
        self.prediction_drift_score = Gauge(
            "driftwarden_prediction_drift_score",
            "Drift score of the model output",
            [*VERSION, "method"],
            registry=r,
        )
        self.prediction_drifted = Gauge(
            "driftwarden_prediction_drifted", "1 when the model output drifted", [*VERSION, "method"], registry=r
        )
        self.performance = Gauge(
            "driftwarden_performance", "Model quality on labelled predictions", [*VERSION, "metric"], registry=r
        )
        self.latency_seconds = Gauge(
            "driftwarden_latency_seconds",
            "Request latency quantile over the window",
            [*VERSION, "quantile"],
            registry=r,
        )
        self.error_ratio = Gauge(
            "driftwarden_error_ratio", "Share of requests that failed (upstream 5xx or collector)", VERSION, registry=r
        )
        self.requests_per_second = Gauge(
            "driftwarden_requests_per_second", "Requests per second over the window", VERSION, registry=r
        )
        self.slo_burn_rate = Gauge(
            "driftwarden_slo_burn_rate",
            "Error budget burn rate over a lookback ending at the window end",
            [*VERSION, "window"],
            registry=r,
        )
        self.slo_attainment = Gauge(
            "driftwarden_slo_attainment", "Share of requests under the latency objective", VERSION, registry=r
        )
        self.reproducibility_rate = Gauge(
            "driftwarden_reproducibility_rate",
            "Share of checked requests reproduced",
            [*VERSION, "kind"],
            registry=r,
        )
        self.last_success = Gauge(
            "driftwarden_detector_last_success_timestamp_seconds",
            "When the detector last finished a pass without error, up to date with its windows (Unix time)",
            DETECTOR,
            registry=r,
        )
        self.run_duration = Gauge(
            "driftwarden_detector_run_duration_seconds", "Duration of the detector's last run", DETECTOR, registry=r
        )
        self.errors = Counter("driftwarden_detector_errors", "Failed detector runs", DETECTOR, registry=r)
        self.runs = Counter("driftwarden_detector_runs", "Detector runs by status", [*DETECTOR, "status"], registry=r)
        self.model_events = Gauge(
            "driftwarden_model_events_total", "Non-replay events stored for the model", VERSION, registry=r
        )
        self.events_last_timestamp = Gauge(
            "driftwarden_events_last_timestamp_seconds",
            "Timestamp of the newest non-replay event of the model (Unix time)",
            ["model"],
            registry=r,
        )
        self._server: Any = None

    # -- results -> gauges ----------------------------------------------------------------------

    def observe_drift(self, report: Any, model_version: str) -> None:
        """Set the feature or prediction gauges from a ``DriftReport``."""
        if report.target == "prediction":
            # prediction (numeric) after prediction_label: on a shared method label the score wins
            for f in sorted(report.features, key=lambda f: f.feature != "prediction_label"):
                self.prediction_drift_score.labels(report.model, model_version, f.method).set(_finite(f.score))
                self.prediction_drifted.labels(report.model, model_version, f.method).set(int(f.drifted))
            return
        for f in report.features:
            labels = (report.model, model_version, f.feature, f.method)
            self.feature_drift_score.labels(*labels).set(_finite(f.score))
            self.feature_drifted.labels(*labels).set(int(f.drifted))
            self.feature_drift_persistent.labels(*labels).set(int(f.persistent))
        self.dataset_drift_share.labels(report.model, model_version).set(report.dataset_drift_share)
        self.dataset_drifted.labels(report.model, model_version).set(int(report.dataset_drifted))

    def observe_latency(self, results: Iterable[LatencyResult]) -> None:
        for r in results:
            v = (r.model, r.model_version)
            for q, value in (
                ("0.5", r.latency_p50_ms),
                ("0.9", r.latency_p90_ms),
                ("0.95", r.latency_p95_ms),
                ("0.99", r.latency_p99_ms),
            ):
                self.latency_seconds.labels(*v, q).set(value / 1000.0)
            self.error_ratio.labels(*v).set(r.error_ratio)
            self.requests_per_second.labels(*v).set(r.throughput_rps)
            self.slo_attainment.labels(*v).set(r.slo_attainment)
            for window, rate in r.burn_rates.items():
                self.slo_burn_rate.labels(*v, window).set(rate)

    def observe_performance(self, results: Iterable[PerformanceResult]) -> None:
        for r in results:
            self.performance.labels(r.model, r.model_version, r.metric).set(r.value)

    def observe_reproducibility(self, results: Sequence[ReproducibilityResult]) -> None:
        # Several digests of one version: the worst rate is the one to see.
        worst: dict[tuple[str, str, str], float] = {}
        for r in results:
            key = (r.model, r.model_version, r.kind)
            worst[key] = min(worst.get(key, 1.0), r.rate)
        for (model, version, kind), rate in worst.items():
            self.reproducibility_rate.labels(model, version, kind).set(rate)

    def observe_run(self, run: Run) -> None:
        self.runs.labels(run.detector, run.model, run.status).inc()
        self.run_duration.labels(run.detector, run.model).set(run.duration_seconds)
        if run.status == "error":
            self.errors.labels(run.detector, run.model).inc()

    def touch(self, detector: str, model: str) -> None:
        """Create a detector's counters at zero, so that rate() and absent() work before its first run."""
        self.errors.labels(detector, model)
        for status in ("ok", "error"):
            self.runs.labels(detector, model, status)

    def observe_events(self, client: Client, models: Sequence[str]) -> None:
        """Event counts and the newest event time per model, read from the store (cheap aggregates)."""
        if not models:
            return
        rows = client.query(
            "SELECT model, model_version, count(), toUnixTimestamp64Micro(max(ts)) FROM inferences "
            "WHERE model IN {models:Array(String)} AND NOT is_replay GROUP BY model, model_version",
            parameters={"models": list(models)},
        ).result_rows
        newest: dict[str, int] = {}
        for model, version, count, last_us in rows:
            self.model_events.labels(model, version).set(count)
            newest[model] = max(newest.get(model, 0), int(last_us))
        for model, last_us in newest.items():
            self.events_last_timestamp.labels(model).set(last_us / 1e6)

    def restore(self, client: Client, models: Sequence[str]) -> None:
        """Set the gauges from the latest stored window of each result, so a restart does not blank them."""
        if not models:
            return
        p = {"models": list(models)}
        latest = "argMax({x}, (current_end, computed_at))"
        q = client.query
        for m, v, feature, method, score, drifted, persistent in q(
            f"SELECT model, model_version, feature, method, {latest.format(x='coalesce(p_value, statistic)')}, "
            f"{latest.format(x='drifted')}, {latest.format(x='persistent')} FROM drift_results "
            "WHERE model IN {models:Array(String)} AND target = 'feature' "
            "GROUP BY model, model_version, feature, method",
            parameters=p,
        ).result_rows:
            self.feature_drift_score.labels(m, v, feature, method).set(score)
            self.feature_drifted.labels(m, v, feature, method).set(int(drifted))
            self.feature_drift_persistent.labels(m, v, feature, method).set(int(persistent))
        for m, v, share, drifted in q(
            f"SELECT model, model_version, {latest.format(x='statistic')}, {latest.format(x='drifted')} "
            "FROM drift_results WHERE model IN {models:Array(String)} AND target = 'dataset' AND feature = '' "
            "GROUP BY model, model_version",
            parameters=p,
        ).result_rows:
            self.dataset_drift_share.labels(m, v).set(share)
            self.dataset_drifted.labels(m, v).set(int(drifted))
        for m, v, method, score, drifted in q(
            f"SELECT model, model_version, method, {latest.format(x='coalesce(p_value, statistic)')}, "
            f"{latest.format(x='drifted')} FROM drift_results WHERE model IN {{models:Array(String)}} "
            "AND target = 'prediction' GROUP BY model, model_version, method",
            parameters=p,
        ).result_rows:
            self.prediction_drift_score.labels(m, v, method).set(score)
            self.prediction_drifted.labels(m, v, method).set(int(drifted))
        for m, v, metric, value in q(
            f"SELECT model, model_version, metric, {latest.format(x='value')} FROM performance_results "
            "WHERE model IN {models:Array(String)} GROUP BY model, model_version, metric",
            parameters=p,
        ).result_rows:
            self.performance.labels(m, v, metric).set(value)
        columns = [f.name for f in dataclasses.fields(LatencyResult)]
        wanted = [c for c in columns if c not in ("run_id", "computed_at")]
        for row in q(
            f"SELECT {', '.join(latest.format(x=c) if c not in ('model', 'model_version') else c for c in wanted)} "
            "FROM latency_results WHERE model IN {models:Array(String)} GROUP BY model, model_version",
            parameters=p,
        ).result_rows:
            self.observe_latency([LatencyResult(**dict(zip(wanted, row, strict=True)))])
        for m, v, kind, rate in q(
            "SELECT model, model_version, kind, min(rate) FROM reproducibility_results "
            "WHERE model IN {models:Array(String)} AND (model, model_version, kind, current_end) IN "
            "(SELECT model, model_version, kind, max(current_end) FROM reproducibility_results "
            " WHERE model IN {models:Array(String)} GROUP BY model, model_version, kind) "
            "GROUP BY model, model_version, kind",
            parameters=p,
        ).result_rows:
            self.reproducibility_rate.labels(m, v, kind).set(rate)
        for detector, m, finished in q(
            "SELECT detector, model, toUnixTimestamp64Milli(max(finished_at)) FROM detector_runs "
            "WHERE model IN {models:Array(String)} AND status = 'ok' GROUP BY detector, model",
            parameters=p,
        ).result_rows:
            self.last_success.labels(detector, m).set(finished / 1000.0)

    # -- HTTP -------------------------------------------------------------------------------------

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0 = any free port) in a daemon thread; return the port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _finite(value: float | None) -> float:
    return float("nan") if value is None else float(value)
