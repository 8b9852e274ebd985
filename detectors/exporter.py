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
driftwarden_estimated_performance (_lower/_upper_threshold,     model, model_version, metric
  _alert): performance estimated without labels (CBPE, DLE)
driftwarden_latency_seconds                                     model, model_version, quantile (0.5 ... 0.99)
driftwarden_error_ratio / driftwarden_requests_per_second       model, model_version
driftwarden_slo_burn_rate                                       model, model_version, window (1h, 6h, 24h, 30d)
driftwarden_slo_attainment                                      model, model_version
driftwarden_reproducibility_rate                                model, model_version, kind (consistency, replay)
driftwarden_multivariate_drift (_alert, _lower_threshold,       model, model_version, method
  _upper_threshold): PCA reconstruction error (pca_reconstruction), domain-classifier ROC AUC (domain_classifier)
driftwarden_data_quality_value / _failed                        model, model_version, check, feature
driftwarden_segment_degradation / _flagged                      model, model_version, dimension, segment, signal,
  (at most max_segments per dimension, the rest in "other")     metric
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
        self.estimated_performance = Gauge(
            "driftwarden_estimated_performance",
            "Model quality estimated without labels (CBPE for classifiers, DLE for regressors)",
            [*VERSION, "metric"],
            registry=r,
        )
        self.estimated_lower = Gauge(
            "driftwarden_estimated_performance_lower_threshold",
            "Lower alert threshold of the estimate, from reference chunks",
            [*VERSION, "metric"],
            registry=r,
        )
        self.estimated_upper = Gauge(
            "driftwarden_estimated_performance_upper_threshold",
            "Upper alert threshold of the estimate, from reference chunks",
            [*VERSION, "metric"],
            registry=r,
        )
        self.estimated_alert = Gauge(
            "driftwarden_estimated_performance_alert",
            "1 when the estimate left its thresholds",
            [*VERSION, "metric"],
            registry=r,
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
        multivariate = [*VERSION, "method"]
        self.multivariate_drift = Gauge(
            "driftwarden_multivariate_drift",
            "Multivariate drift: PCA reconstruction error or domain-classifier ROC AUC",
            multivariate,
            registry=r,
        )
        self.multivariate_alert = Gauge(
            "driftwarden_multivariate_drift_alert", "1 when the value left its thresholds", multivariate, registry=r
        )
        self.multivariate_lower = Gauge(
            "driftwarden_multivariate_drift_lower_threshold", "Lower alert threshold", multivariate, registry=r
        )
        self.multivariate_upper = Gauge(
            "driftwarden_multivariate_drift_upper_threshold", "Upper alert threshold", multivariate, registry=r
        )
        quality = [*VERSION, "check", "feature"]
        self.quality_value = Gauge(
            "driftwarden_data_quality_value",
            "Data-quality check value of the latest window (a share of rows, or a count)",
            quality,
            registry=r,
        )
        self.quality_failed = Gauge(
            "driftwarden_data_quality_failed", "1 when the check is above its threshold", quality, registry=r
        )
        segment = [*VERSION, "dimension", "segment", "signal", "metric"]
        self.segment_degradation = Gauge(
            "driftwarden_segment_degradation",
            "Degradation of a segment against its own reference (worse > 0); at most max_segments + 'other'",
            segment,
            registry=r,
        )
        self.segment_flagged = Gauge(
            "driftwarden_segment_flagged", "1 when the segment's degradation passed its threshold", segment, registry=r
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

    def observe_estimates(self, results: Iterable[Any]) -> None:
        """Gauges of estimated performance (``EstimateResult``s); a window without an estimate sets nothing."""
        for r in results:
            if r.estimated is None:
                continue
            v = (r.model, r.model_version, r.metric)
            self.estimated_performance.labels(*v).set(r.estimated)
            self.estimated_lower.labels(*v).set(_finite(r.lower_threshold))
            self.estimated_upper.labels(*v).set(_finite(r.upper_threshold))
            self.estimated_alert.labels(*v).set(int(r.alert))

    def observe_reproducibility(self, results: Sequence[ReproducibilityResult]) -> None:
        # Several digests of one version: the worst rate is the one to see.
        worst: dict[tuple[str, str, str], float] = {}
        for r in results:
            key = (r.model, r.model_version, r.kind)
            worst[key] = min(worst.get(key, 1.0), r.rate)
        for (model, version, kind), rate in worst.items():
            self.reproducibility_rate.labels(model, version, kind).set(rate)

    def observe_multivariate(self, results: Sequence[Any]) -> None:
        """Set the multivariate gauges from ``MultivariateResult`` rows (NaN without a value)."""
        for r in results:
            labels = (r.model, r.model_version, r.method)
            self.multivariate_drift.labels(*labels).set(_finite(r.value))
            self.multivariate_alert.labels(*labels).set(int(r.alert))
            self.multivariate_lower.labels(*labels).set(_finite(r.lower_threshold))
            self.multivariate_upper.labels(*labels).set(_finite(r.upper_threshold))

    def observe_quality(self, results: Sequence[Any]) -> None:
        """Set the data-quality gauges from ``QualityResult`` rows (feature '' for checks of whole rows)."""
        for r in results:
            labels = (r.model, r.model_version, r.check_name, r.feature)
            self.quality_value.labels(*labels).set(r.value)
            self.quality_failed.labels(*labels).set(int(r.failed))

    def observe_segments(self, results: Sequence[Any]) -> None:
        """Set the segment gauges from ``SegmentResult`` rows (NaN without a value)."""
        for r in results:
            labels = (r.model, r.model_version, r.dimension, r.segment, r.signal, r.metric)
            self.segment_degradation.labels(*labels).set(_finite(r.degradation))
            self.segment_flagged.labels(*labels).set(int(r.flagged))

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
        # argMax skips NULL values; wrapped in a tuple, a NULL of the latest window is kept (NaN, as observed live)
        latest = "argMax(tuple({x}), (current_end, computed_at)).1"
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
        for m, v, metric, value, lower, upper, alert in q(
            f"SELECT model, model_version, metric, {latest.format(x='estimated')}, "
            f"{latest.format(x='lower_threshold')}, {latest.format(x='upper_threshold')}, {latest.format(x='alert')} "
            "FROM estimated_performance_results WHERE model IN {models:Array(String)} AND estimated IS NOT NULL "
            "GROUP BY model, model_version, metric",
            parameters=p,
        ).result_rows:
            self.estimated_performance.labels(m, v, metric).set(value)
            self.estimated_lower.labels(m, v, metric).set(_finite(lower))
            self.estimated_upper.labels(m, v, metric).set(_finite(upper))
            self.estimated_alert.labels(m, v, metric).set(int(alert))
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
        for m, v, method, value, alert, lower, upper in q(
            f"SELECT model, model_version, method, {latest.format(x='value')}, {latest.format(x='alert')}, "
            f"{latest.format(x='lower_threshold')}, {latest.format(x='upper_threshold')} FROM multivariate_results "
            "WHERE model IN {models:Array(String)} GROUP BY model, model_version, method",
            parameters=p,
        ).result_rows:
            self.multivariate_drift.labels(m, v, method).set(_finite(value))
            self.multivariate_alert.labels(m, v, method).set(int(alert))
            self.multivariate_lower.labels(m, v, method).set(_finite(lower))
            self.multivariate_upper.labels(m, v, method).set(_finite(upper))
        for m, v, check, feature, value, failed in q(
            f"SELECT model, model_version, check_name, feature, {latest.format(x='value')}, "
            f"{latest.format(x='failed')} FROM quality_results WHERE model IN {{models:Array(String)}} "
            "GROUP BY model, model_version, check_name, feature",
            parameters=p,
        ).result_rows:
            self.quality_value.labels(m, v, check, feature).set(value)
            self.quality_failed.labels(m, v, check, feature).set(int(failed))
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
