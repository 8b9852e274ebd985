"""The language-model section of a model's page: tokens, time to first token and cost over time,
and the slowest and most expensive recent calls with their trace ids.

Shown for a model whose calls carry GenAI fields (captured by the sidecar from an
OpenAI-compatible API, or received as OpenTelemetry GenAI spans; ``storage/migrations/0006``);
for other models :func:`section` returns ``""``. Self-contained: its own queries (scoped to
the caller's token like every query of the API, aggregated in ClickHouse) and its own
template (``templates/llm_section.html``); charts from ``detectors.api.charts``.

The range is the page's ``window`` when given, else the 7 days up to the model's latest call,
in at most :data:`MAX_POINTS` buckets of a whole number of minutes. :func:`figures` gives the
same figures as JSON (``GET /api/v1/models/{model}/llm``, ``detectors.api.llm_schemas``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from clickhouse_connect.driver.client import Client

from driftwarden.auth import Principal
from driftwarden.detectors.api import charts
from driftwarden.detectors.api.pages import _table, _template, e, fmt, iso
from driftwarden.detectors.api.queries import scope
from driftwarden.detectors.window import Window, micros

MAX_POINTS = 60
RECENT_CALLS = 10
DEFAULT_SPAN = dt.timedelta(days=7)
_LLM_CALL = "(operation_name != '' OR prompt_tokens > 0 OR completion_tokens > 0)"


def _range(client: Client, principal: Principal, model: str, within: Window | None) -> Window | None:
    if within is not None:
        return within
    where, params = scope(principal)
    (latest,) = client.query(
        f"SELECT max(ts) FROM inferences WHERE model = {{m:String}} AND {where} AND {_LLM_CALL} AND NOT is_replay",
        parameters={**params, "m": model},
    ).result_rows[0]
    if latest is None or latest.year < 1971:
        return None
    latest = latest.replace(tzinfo=dt.UTC) if latest.tzinfo is None else latest
    return Window(latest - DEFAULT_SPAN, latest + dt.timedelta(microseconds=1))


def _rows(client: Client, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=params)
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def summary_and_series(client: Client, principal: Principal, model: str, window: Window) -> tuple[dict, list[dict]]:
    """Totals over the window and one row per time bucket (calls, errors, tokens, cost, TTFT quantiles)."""
    where, params = scope(principal)
    bucket_s = max(60, -(-int(window.seconds) // MAX_POINTS) // 60 * 60)
    params = {
        **params,
        "m": model,
        "start": micros(window.start),
        "end": micros(window.end),
        "bucket": bucket_s,
    }
    base = (
        f"FROM inferences FINAL WHERE model = {{m:String}} AND {where} AND {_LLM_CALL} AND NOT is_replay "
        "AND ts >= fromUnixTimestamp64Micro({start:Int64}, 'UTC') AND ts < fromUnixTimestamp64Micro({end:Int64}, 'UTC')"
    )
    measures = (
        "count() AS calls, countIf(error_class != '') AS errors, sum(prompt_tokens) AS input_tokens, "
        "sum(completion_tokens) AS output_tokens, sum(cost) AS spend, "
        "quantileIf(0.5)(ttft_ms, ttft_ms IS NOT NULL) AS ttft_p50_ms, "
        "quantileIf(0.95)(ttft_ms, ttft_ms IS NOT NULL) AS ttft_p95_ms, "
        "quantileIf(0.5)((latency_ms - ttft_ms) / (completion_tokens - 1), "
        "ttft_ms IS NOT NULL AND completion_tokens > 1) AS tpot_p50_ms, "
        "quantile(0.5)(latency_ms) AS latency_p50_ms, quantile(0.95)(latency_ms) AS latency_p95_ms"
    )
    (totals,) = _rows(client, f"SELECT {measures} {base}", params)
    series = _rows(
        client,
        f"SELECT toStartOfInterval(ts, toIntervalSecond({{bucket:UInt32}}), 'UTC') AS t, {measures} {base} "
        "GROUP BY t ORDER BY t",
        params,
    )
    for row in series:
        row["t"] = row["t"].replace(tzinfo=dt.UTC) if row["t"].tzinfo is None else row["t"]
        row["input_per_s"] = row["input_tokens"] / bucket_s
        row["output_per_s"] = row["output_tokens"] / bucket_s
    totals["bucket_s"] = bucket_s
    return totals, series


def recent_calls(client: Client, principal: Principal, model: str, window: Window, order: str) -> list[dict]:
    """The :data:`RECENT_CALLS` calls with the largest ``order`` (``latency_ms`` or ``cost``) in the window."""
    assert order in ("latency_ms", "cost")
    where, params = scope(principal)
    return _rows(
        client,
        f"""
        SELECT ts, request_model, response_model, operation_name, latency_ms, ttft_ms, prompt_tokens,
               completion_tokens, cost, error_class, finish_reason, trace_id, span_id, service_name,
               payload_sampled, output_text
        FROM inferences FINAL
        WHERE model = {{m:String}} AND {where} AND {_LLM_CALL} AND NOT is_replay
          AND ts >= fromUnixTimestamp64Micro({{start:Int64}}, 'UTC')
          AND ts < fromUnixTimestamp64Micro({{end:Int64}}, 'UTC')
        ORDER BY {order} DESC, ts DESC
        LIMIT {RECENT_CALLS}
        """,
        {**params, "m": model, "start": micros(window.start), "end": micros(window.end)},
    )


def finish_reasons(client: Client, principal: Principal, model: str, window: Window) -> list[dict]:
    """Calls per finish reason in the window, most frequent first (``''`` for calls that report none)."""
    where, params = scope(principal)
    return _rows(
        client,
        f"""
        SELECT finish_reason, count() AS calls
        FROM inferences FINAL
        WHERE model = {{m:String}} AND {where} AND {_LLM_CALL} AND NOT is_replay
          AND ts >= fromUnixTimestamp64Micro({{start:Int64}}, 'UTC')
          AND ts < fromUnixTimestamp64Micro({{end:Int64}}, 'UTC')
        GROUP BY finish_reason ORDER BY calls DESC, finish_reason
        """,
        {**params, "m": model, "start": micros(window.start), "end": micros(window.end)},
    )


# DateTime64 holds 1900-01-01 .. 2299-12-31: a window beyond is read as the part of it that can hold calls.
_EARLIEST = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(2299, 12, 31, tzinfo=dt.UTC)


def figures(client: Client, principal: Principal, model: str, within: Window | None = None) -> dict | None:
    """The section's figures as data (``detectors.api.llm_schemas.LLMFigures``); None when no call is in range.

    Without ``within``: the 7 days up to the model's latest call (None when it has none). With it:
    that range (clamped to what the store's timestamps can hold), even when it holds no call.
    """
    if within is not None:
        start, end = max(within.start, _EARLIEST), min(within.end, _LATEST)
        if end <= start:
            start, end = _EARLIEST, _EARLIEST + dt.timedelta(microseconds=1)
        within = Window(start, end)
    window = _range(client, principal, model, within)
    if window is None:
        return None
    totals, series = summary_and_series(client, principal, model, window)
    expensive = [c for c in recent_calls(client, principal, model, window, "cost") if c["cost"] > 0]
    return {
        "model": model,
        "start": window.start,
        "end": window.end,
        "bucket_seconds": totals.pop("bucket_s"),
        "summary": _numbers(totals),
        "series": [_numbers(row) for row in series],
        "finish_reasons": finish_reasons(client, principal, model, window),
        "slowest": [_call(c) for c in recent_calls(client, principal, model, window, "latency_ms")],
        "most_expensive": [_call(c) for c in expensive],
    }


def _numbers(row: dict) -> dict:
    """A row with NaN (a quantile of no value) as None, which JSON can carry."""
    return {k: None if isinstance(v, float) and v != v else v for k, v in row.items()}


def _call(row: dict) -> dict:
    return {
        "ts": row["ts"].replace(tzinfo=dt.UTC) if row["ts"].tzinfo is None else row["ts"],
        "trace_id": row["trace_id"],
        "span_id": row["span_id"],
        "request_model": row["request_model"],
        "response_model": row["response_model"],
        "operation_name": row["operation_name"],
        "service_name": row["service_name"],
        "latency_ms": row["latency_ms"],
        "ttft_ms": row["ttft_ms"],
        "input_tokens": row["prompt_tokens"],
        "output_tokens": row["completion_tokens"],
        "cost": row["cost"],
        "error_type": row["error_class"],
        "finish_reason": row["finish_reason"],
        "output_text": row["output_text"] if row["payload_sampled"] else "",
    }


def section(client: Client, principal: Principal, model: str, within: Window | None = None) -> str:
    """The section's HTML, or ``""`` when the model has no language-model calls in range."""
    window = _range(client, principal, model, within)
    if window is None:
        return ""
    totals, series = summary_and_series(client, principal, model, window)
    if not totals["calls"]:
        return ""
    slowest = recent_calls(client, principal, model, window, "latency_ms")
    expensive = [c for c in recent_calls(client, principal, model, window, "cost") if c["cost"] > 0]
    return _template("llm_section.html").substitute(
        scope=e(f"{iso(window.start)}..{iso(window.end)}, in buckets of {totals['bucket_s'] // 60} min"),
        summary=_summary(totals),
        charts=_charts(series),
        slowest=_calls(slowest),
        expensive=_calls(expensive) if expensive else '<p class="notice">No call has a price (genai.prices).</p>',
    )


def _summary(t: dict) -> str:
    ratio = t["errors"] / t["calls"] if t["calls"] else 0.0
    cells = [
        ("calls", f"{t['calls']:,}"),
        ("errors", f"{t['errors']:,} ({ratio * 100:.2f}%)"),
        ("input tokens", f"{t['input_tokens']:,}"),
        ("output tokens", f"{t['output_tokens']:,}"),
        ("cost", fmt(t["spend"])),
        ("TTFT p50 / p95", f"{_ms(t['ttft_p50_ms'])} / {_ms(t['ttft_p95_ms'])}"),
        ("time per output token p50", _ms(t["tpot_p50_ms"])),
    ]
    return _table(
        [name for name, _ in cells], ["<tr>" + "".join(f'<td class="num">{e(v)}</td>' for _, v in cells) + "</tr>"]
    )


def _ms(value: Any) -> str:
    return "—" if value is None or value != value else f"{value:,.0f} ms"


def _charts(series: list[dict]) -> str:
    def line(name: str, key: str) -> charts.Series:
        return charts.Series(name, [(r["t"], r[key]) for r in series])

    tokens = charts.line_chart(
        [line("input tokens/s", "input_per_s"), line("output tokens/s", "output_per_s")],
        title="Tokens per second",
        y_min=0,
    )
    ttft = charts.line_chart(
        [line("TTFT p50 (ms)", "ttft_p50_ms"), line("TTFT p95 (ms)", "ttft_p95_ms")],
        title="Time to first token",
        subtitle="streamed calls",
        y_min=0,
    )
    cost = charts.line_chart([line("cost per bucket", "spend")], title="Cost", subtitle="from genai.prices", y_min=0)
    return tokens + ttft + cost


def _calls(rows: list[dict]) -> str:
    if not rows:
        return '<p class="notice">No calls in this range.</p>'
    body = []
    for r in rows:
        content = ""
        if r["payload_sampled"] and r["output_text"]:
            text = r["output_text"]
            content = e(text[:160] + ("…" if len(text) > 160 else ""))
        outcome = r["error_class"] or r["finish_reason"] or ""
        body.append(
            f"<tr><td>{e(fmt(r['ts']))}</td><td>{e(r['request_model'] or r['response_model'])}</td>"
            f"<td>{e(r['operation_name'])}</td>"
            f'<td class="num">{_ms(r["latency_ms"])}</td><td class="num">{_ms(r["ttft_ms"])}</td>'
            f'<td class="num">{r["prompt_tokens"]:,} / {r["completion_tokens"]:,}</td>'
            f'<td class="num">{e(fmt(r["cost"]))}</td><td>{e(outcome)}</td>'
            f'<td class="mono">{e(r["trace_id"])}</td><td>{e(r["service_name"])}</td><td>{content}</td></tr>'
        )
    return _table(
        [
            "start",
            "model",
            "operation",
            "duration",
            "TTFT",
            "tokens in / out",
            "cost",
            "outcome",
            "trace id",
            "service",
            "output",
        ],
        body,
    )
