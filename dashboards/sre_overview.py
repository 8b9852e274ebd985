"""Inference SRE overview (Prometheus): traffic, latency, errors and SLO burn per model and
version, the collector's own health, and the detectors' freshness.

Latency quantiles are computed from the collector's histogram (``histogram_quantile`` over
``driftwarden_collector_request_duration_seconds_bucket``), so they aggregate correctly across
collector replicas; the detectors' ``driftwarden_latency_seconds`` gauges come from ClickHouse
and lag by one detector run.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.models.dashboard import (
    Dashboard,
    DashboardCursorSync,
    Threshold,
    ThresholdsMode,
)

from driftwarden.dashboards.datasources import PROMETHEUS
from driftwarden.dashboards.variables import (
    api_url,
    model_page_link,
    prometheus_model,
    prometheus_version,
    time_range_link,
)

UID = "driftwarden-sre-overview"

# Label matchers of the model and version pickers (multi-value: regex match).
SEL = 'model=~"$model", model_version=~"$version"'
MODEL_SEL = 'model=~"$model"'


def _query(expr: str, legend: str, ref_id: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).range()


def _thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def _series(title: str, description: str, unit: str, *targets: prometheus.Dataquery) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit(unit)
        .height(8)
        .span(12)
        .fill_opacity(10)
    )
    for target in targets:
        panel.with_target(target)
    return panel


def _latency_quantile(q: float, ref_id: str) -> prometheus.Dataquery:
    expr = (
        f"histogram_quantile({q}, sum by (le, model, model_version) "
        f"(rate(driftwarden_collector_request_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))"
    )
    return _query(expr, f"p{round(q * 100)} {{{{model}}}} {{{{model_version}}}}", ref_id)


def build() -> Dashboard:
    """The dashboard model."""
    requests = f"rate(driftwarden_collector_requests_total{{{SEL}}}[$__rate_interval])"
    errors = f'rate(driftwarden_collector_requests_total{{{SEL}, status=~"5.."}}[$__rate_interval])'
    board = (
        dash.Dashboard("driftwarden / Inference SRE overview")
        .uid(UID)
        .description("Traffic, latency, errors and SLO burn of every monitored model, and the collector's health.")
        .tags(["driftwarden", "sre"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .timezone("utc")
        .refresh("1m")
        .with_variable(prometheus_model())
        .with_variable(prometheus_version())
        .with_variable(api_url())
        .link(model_page_link())
        .with_row(dash.Row("Traffic and latency"))
        .with_panel(
            _series(
                "Request rate",
                "Requests per second through the collector, by model and version.",
                "reqps",
                _query(f"sum by (model, model_version) ({requests})", "{{model}} {{model_version}}"),
            )
        )
        .with_panel(
            _series(
                "Latency p50 / p95 / p99",
                "Client-side latency quantiles from the collector's histogram.",
                "s",
                _latency_quantile(0.5, "A"),
                _latency_quantile(0.95, "B"),
                _latency_quantile(0.99, "C"),
            )
        )
        .with_panel(
            _series(
                "Error ratio",
                "Share of requests answered with a 5xx status (the model server's, or the collector's 502/504 "
                "when the model server fails to answer); the same ratio as the ErrorRatio alert.",
                "percentunit",
                _query(
                    f"sum by (model, model_version) ({errors}) / sum by (model, model_version) ({requests})",
                    "{{model}} {{model_version}}",
                ),
            ).thresholds(_thresholds((None, "green"), (0.01, "red")))
        )
        .with_panel(
            _series(
                "Model server latency p95",
                "Time the model server itself took (upstream), without the collector's overhead.",
                "s",
                _query(
                    "histogram_quantile(0.95, sum by (le, model, model_version) "
                    f"(rate(driftwarden_collector_upstream_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                    "upstream p95 {{model}} {{model_version}}",
                ),
            )
        )
        .with_row(dash.Row("Service level objective"))
        .with_panel(
            _series(
                "SLO burn rate",
                "Error-budget burn rate per window; 14.4 on 1h and 6 on 6h page (multi-window, multi-burn-rate).",
                "none",
                _query(
                    f"driftwarden_slo_burn_rate{{{SEL}}}",
                    "{{model}} {{model_version}} {{window}}",
                ),
            )
            .thresholds(_thresholds((None, "green"), (6, "orange"), (14.4, "red")))
            .links([time_range_link()])
        )
        .with_panel(
            stat.Panel()
            .title("SLO attainment")
            .description("Share of requests that met the latency objective in the detectors' last window.")
            .datasource(PROMETHEUS)
            .unit("percentunit")
            .height(8)
            .span(12)
            .with_target(_query(f"driftwarden_slo_attainment{{{SEL}}}", "{{model}} {{model_version}}").instant())
            .thresholds(_thresholds((None, "red"), (0.99, "green")))
        )
        .with_row(dash.Row("Collector health"))
        .with_panel(
            _series(
                "Spool backlog",
                "Bytes of batches waiting on disk because the store did not accept them; should drain to 0.",
                "bytes",
                _query(f"sum by (model) (driftwarden_collector_spool_bytes{{{MODEL_SEL}}})", "{{model}}"),
            )
        )
        .with_panel(
            _series(
                "Dropped events",
                "Events lost by the collector, by reason; any value here is monitoring data that is gone.",
                "short",
                _query(
                    "sum by (model, reason) "
                    f"(increase(driftwarden_collector_events_dropped_total{{{MODEL_SEL}}}[$__rate_interval]))",
                    "{{model}} {{reason}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Sink errors",
                "Failed batch writes per second, by sink; failed batches go to the spool.",
                "short",
                _query(
                    "sum by (model, sink) "
                    f"(rate(driftwarden_collector_sink_errors_total{{{MODEL_SEL}}}[$__rate_interval]))",
                    "{{model}} {{sink}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Sink write latency p95",
                "Time to write one batch to the sink.",
                "s",
                _query(
                    "histogram_quantile(0.95, sum by (le, model, sink) "
                    f"(rate(driftwarden_collector_sink_write_duration_seconds_bucket{{{MODEL_SEL}}}"
                    "[$__rate_interval])))",
                    "{{model}} {{sink}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Events captured and written",
                "Events per second accepted by the writer and written to the sink; a lasting gap is a backlog.",
                "short",
                _query(
                    "sum by (model) "
                    f"(rate(driftwarden_collector_events_captured_total{{{MODEL_SEL}}}[$__rate_interval]))",
                    "captured {{model}}",
                    "A",
                ),
                _query(
                    "sum by (model) "
                    f"(rate(driftwarden_collector_events_written_total{{{MODEL_SEL}}}[$__rate_interval]))",
                    "written {{model}}",
                    "B",
                ),
            )
        )
        .with_panel(
            _series(
                "Spool segments",
                "Segment files waiting in the on-disk spool.",
                "short",
                _query(f"sum by (model) (driftwarden_collector_spool_segments{{{MODEL_SEL}}})", "{{model}}"),
            )
        )
        .with_row(dash.Row("Detectors"))
        .with_panel(
            _series(
                "Seconds since last successful detector run",
                "Age of each detector's last success; a detector that stops running hides drift.",
                "s",
                _query(
                    f"time() - driftwarden_detector_last_success_timestamp_seconds{{{MODEL_SEL}}}",
                    "{{detector}} {{model}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Detector errors",
                "Failed detector runs, by detector; a detector that fails leaves its results stale.",
                "short",
                _query(
                    "sum by (detector, model) "
                    f"(increase(driftwarden_detector_errors_total{{{MODEL_SEL}}}[$__rate_interval]))",
                    "{{detector}} {{model}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Detector run duration",
                "Duration of each detector's last run.",
                "s",
                _query(f"driftwarden_detector_run_duration_seconds{{{MODEL_SEL}}}", "{{detector}} {{model}}"),
            )
        )
        .with_panel(
            _series(
                "Dataset drift share",
                "Share of features that drifted in the detectors' last window.",
                "percentunit",
                _query(f"driftwarden_dataset_drift_share{{{SEL}}}", "{{model}} {{model_version}}"),
            )
            .min(0)
            .max(1)
            .links([time_range_link()])
        )
    )
    return board.build()
