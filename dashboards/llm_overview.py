"""LLM overview (Prometheus): calls, errors, tokens, time to first token, cost and finish reasons
of language-model calls, whether the sidecar captured them or applications exported them as
OpenTelemetry GenAI spans (``collector.genai_metrics``).

On Prometheus only, so it works with the embedded store too. Quantiles come from the GenAI
histograms (``histogram_quantile`` over ``_bucket``), so they aggregate across collectors and
hubs. Cost is what the configured price table gives (``genai.prices``); a model without a
price shows in "Calls without a price".
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.models.dashboard import (
    Dashboard,
    DashboardCursorSync,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
    VariableSort,
)

from driftwarden.dashboards.datasources import PROMETHEUS
from driftwarden.dashboards.variables import api_url, model_page_link

UID = "driftwarden-llm-overview"

SEL = 'gen_ai_request_model=~"$model"'
CALLS = f"gen_ai_client_operation_duration_seconds_count{{{SEL}}}"


def _model_variable() -> dash.QueryVariable:
    """``$model``: the requested model names of language-model calls (label ``gen_ai_request_model``)."""
    return (
        dash.QueryVariable("model")
        .label("Model")
        .datasource(PROMETHEUS)
        .query("label_values(gen_ai_client_operation_duration_seconds_count, gen_ai_request_model)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def _query(expr: str, legend: str, ref_id: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).range()


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


def _quantile(metric: str, q: float, ref_id: str) -> prometheus.Dataquery:
    expr = (
        f"histogram_quantile({q}, sum by (le, gen_ai_request_model) (rate({metric}_bucket{{{SEL}}}[$__rate_interval])))"
    )
    return _query(expr, f"p{round(q * 100)} {{{{gen_ai_request_model}}}}", ref_id)


def build() -> Dashboard:
    """The dashboard model."""
    calls = f"rate({CALLS}[$__rate_interval])"
    failed = f'rate(gen_ai_client_operation_duration_seconds_count{{{SEL}, error_type!=""}}[$__rate_interval])'
    board = (
        dash.Dashboard("driftwarden / LLM overview")
        .uid(UID)
        .description(
            "Language-model calls (sidecar capture and OpenTelemetry GenAI spans): traffic, errors, tokens, "
            "time to first token, cost and finish reasons."
        )
        .tags(["driftwarden", "llm", "genai"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-24h", "now")
        .timezone("utc")
        .refresh("1m")
        .with_variable(_model_variable())
        .with_variable(api_url())
        .link(model_page_link())
        .with_row(dash.Row("Calls and errors"))
        .with_panel(
            _series(
                "Calls per second",
                "Language-model calls per second, by model and operation (chat, text_completion, embeddings, ...).",
                "reqps",
                _query(
                    f"sum by (gen_ai_request_model, gen_ai_operation_name) ({calls})",
                    "{{gen_ai_request_model}} {{gen_ai_operation_name}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Errors per second by error.type",
                "Failed calls per second by error.type (span attribute, or the sidecar's error class).",
                "reqps",
                _query(
                    f"sum by (gen_ai_request_model, error_type) ({failed})",
                    "{{gen_ai_request_model}} {{error_type}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Error ratio",
                "Share of calls that failed; the same ratio as the LLMHighErrorRatio alert (5%).",
                "percentunit",
                _query(
                    f"sum by (gen_ai_request_model) ({failed}) / sum by (gen_ai_request_model) ({calls})",
                    "{{gen_ai_request_model}}",
                ),
            ).thresholds(
                dash.ThresholdsConfig()
                .mode(ThresholdsMode.ABSOLUTE)
                .steps([Threshold(value=None, color="green"), Threshold(value=0.05, color="red")])
            )
        )
        .with_panel(
            _series(
                "Call duration p50 / p95",
                "Duration of whole calls (gen_ai.client.operation.duration).",
                "s",
                _quantile("gen_ai_client_operation_duration_seconds", 0.5, "A"),
                _quantile("gen_ai_client_operation_duration_seconds", 0.95, "B"),
            )
        )
        .with_row(dash.Row("Tokens and latency of generation"))
        .with_panel(
            _series(
                "Tokens per second by type",
                "Input (prompt) and output (completion) tokens per second: each model's token throughput.",
                "short",
                _query(
                    "sum by (gen_ai_request_model, gen_ai_token_type) "
                    f"(rate(driftwarden_gen_ai_tokens_total{{{SEL}}}[$__rate_interval]))",
                    "{{gen_ai_request_model}} {{gen_ai_token_type}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Time to first token p50 / p95",
                "Time from the request to the first generated token of streamed calls; the LLMTimeToFirstTokenSLOBurn "
                "alert's objective is 99% within 1 s.",
                "s",
                _quantile("gen_ai_server_time_to_first_token_seconds", 0.5, "A"),
                _quantile("gen_ai_server_time_to_first_token_seconds", 0.95, "B"),
            )
        )
        .with_panel(
            _series(
                "Time per output token p50 / p95",
                "Time per generated token after the first, of streamed calls: the decoding speed users feel.",
                "s",
                _quantile("gen_ai_server_time_per_output_token_seconds", 0.5, "A"),
                _quantile("gen_ai_server_time_per_output_token_seconds", 0.95, "B"),
            )
        )
        .with_panel(
            _series(
                "Tokens per call p95",
                "95th percentile of input and output tokens per call (gen_ai.client.token.usage).",
                "short",
                _query(
                    "histogram_quantile(0.95, sum by (le, gen_ai_request_model, gen_ai_token_type) "
                    f"(rate(gen_ai_client_token_usage_bucket{{{SEL}}}[$__rate_interval])))",
                    "p95 {{gen_ai_request_model}} {{gen_ai_token_type}}",
                ),
            )
        )
        .with_row(dash.Row("Cost and outcomes"))
        .with_panel(
            _series(
                "Cost per day",
                "Spend of the last 24 hours at each point, from the configured price table, by model; "
                "the dashed budget is genai.daily_budget when set.",
                "short",
                _query(
                    f"sum by (gen_ai_request_model, currency) (increase(driftwarden_gen_ai_cost_total{{{SEL}}}[1d]))",
                    "{{gen_ai_request_model}} ({{currency}})",
                    "A",
                ),
                _query("sum by (currency) (driftwarden_gen_ai_daily_cost_budget)", "budget ({{currency}})", "B"),
            )
        )
        .with_panel(
            _series(
                "Finish reasons",
                "Why generation stopped, per interval: a growing share of `length` means answers are cut by "
                "max_tokens; `content_filter` means refused outputs.",
                "short",
                _query(
                    "sum by (gen_ai_request_model, finish_reason) "
                    f"(increase(driftwarden_gen_ai_finish_reasons_total{{{SEL}}}[$__rate_interval]))",
                    "{{gen_ai_request_model}} {{finish_reason}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Calls without a price",
                "Calls of models missing from genai.prices: their cost counts as 0.",
                "short",
                _query(
                    "sum by (gen_ai_request_model) "
                    f"(increase(driftwarden_gen_ai_unpriced_calls_total{{{SEL}}}[$__rate_interval]))",
                    "{{gen_ai_request_model}}",
                ),
            )
        )
        .with_panel(
            _series(
                "OTLP spans received",
                "Spans per second on POST /v1/traces: stored (GenAI), not_genai (counted only), rejected "
                "(reported to the exporter in partial_success).",
                "short",
                _query("sum by (outcome) (rate(driftwarden_otlp_spans_total[$__rate_interval]))", "{{outcome}}"),
            )
        )
    )
    return board.build()
