"""The "performance without labels" section of a model's page: estimated against realized, over time.

For each metric the estimation detector wrote (``estimated_performance_results``, migration 0008):
the latest window's estimate with its sampling error, the reference value, the ratio to it, the
thresholds and a verdict; then one chart per metric of the estimate (dashed, alerts marked) and
the realized value once labels arrived (solid), over the band in which no alert fires
(``detectors.api.charts``, server-side SVG). For a model without estimates :func:`section` returns
``""``. Its query is scoped to the caller's token like every query of the API.
"""

from __future__ import annotations

import math
from typing import Any

from clickhouse_connect.driver.client import Client

from driftwarden.auth import Principal
from driftwarden.detectors.api import charts
from driftwarden.detectors.api.pages import _table, badge, e, fmt, iso
from driftwarden.detectors.api.queries import _model_filter, _normalise, _rows
from driftwarden.detectors.window import Window

MAX_WINDOWS = 200
LABELS = {
    "roc_auc": "ROC AUC",
    "f1": "F1",
    "precision": "precision",
    "recall": "recall",
    "accuracy": "accuracy",
    "mae": "MAE",
    "rmse": "RMSE",
}


def estimates(client: Client, principal: Principal, model: str, within: Window | None = None) -> list[dict[str, Any]]:
    """The latest estimates per window and metric (all versions), oldest first, at most MAX_WINDOWS windows."""
    where, params = _model_filter(principal, model, within)
    return _normalise(
        _rows(
            client,
            f"""
            SELECT model_version, method, task, metric, estimated, sampling_error, lower_threshold,
                   upper_threshold, alert, realized, reference_value, current_start, current_end,
                   predictions, labelled, message
            FROM estimated_performance_results FINAL
            WHERE {where}
            ORDER BY current_start DESC, metric
            LIMIT {MAX_WINDOWS} BY metric
            """,
            params,
        )
    )[::-1]


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


def _verdict(row: dict) -> str:
    if row["estimated"] is None:
        return badge("warn", "no estimate")
    return badge("bad", "outside reference range") if row["alert"] else badge("ok", "within reference range")


def _ratio(row: dict) -> str:
    if not (_finite(row["estimated"]) and _finite(row["reference_value"])) or not row["reference_value"]:
        return "—"
    return f"{row['estimated'] / row['reference_value']:.2f}×"


def section(client: Client, principal: Principal, model: str, within: Window | None = None) -> str:
    """The HTML of the section, or "" when the model has no estimates in the range."""
    rows = estimates(client, principal, model, within)
    if not rows:
        return ""
    by_metric: dict[str, list[dict]] = {}
    for r in rows:
        by_metric.setdefault(r["metric"], []).append(r)
    order = [m for m in LABELS if m in by_metric]
    first = by_metric[order[0]][-1]
    parts = [
        "<h2>Performance without labels</h2>",
        f'<p class="muted">{e(first["method"].upper())} ({e(first["task"])}): estimated from the model\'s '
        + ("scores" if first["method"] == "cbpe" else "inputs and predictions")
        + ", against the labelled reference; the thresholds are the realized metric on reference chunks "
        "as long as a window, mean ± 3 standard deviations. Realized values appear as labels arrive.</p>",
    ]
    body = []
    for metric in order:
        last = by_metric[metric][-1]
        estimate = "—" if last["estimated"] is None else f"{fmt(last['estimated'])} ± {fmt(last['sampling_error'], 2)}"
        body.append(
            f"<tr><td>{e(LABELS[metric])}</td><td class='num'>{estimate}</td>"
            f"<td class='num'>{fmt(last['reference_value'])}</td><td class='num'>{_ratio(last)}</td>"
            f"<td class='num'>{fmt(last['lower_threshold'])} .. {fmt(last['upper_threshold'])}</td>"
            f"<td>{_verdict(last)}</td><td class='num'>{fmt(last['realized'])}</td>"
            f"<td>{e(iso(last['current_start']))}..{e(iso(last['current_end']))}</td>"
            f"<td>{e(last['message'] or '')}</td></tr>"
        )
    parts.append(
        _table(
            ["metric", "estimated", "reference", "ratio", "thresholds", "verdict", "realized", "window", "note"], body
        )
    )
    for metric in order:
        series = by_metric[metric]
        last = series[-1]
        lower, upper = last["lower_threshold"], last["upper_threshold"]
        parts.append(
            charts.line_chart(
                [
                    charts.Series(
                        "estimated",
                        [(r["current_start"], r["estimated"]) for r in series],
                        flagged=[bool(r["alert"]) for r in series],
                        dashed=True,
                    ),
                    charts.Series("realized", [(r["current_start"], r["realized"]) for r in series]),
                ],
                title=f"{LABELS[metric]}: estimated vs realized",
                subtitle=f"reference {fmt(last['reference_value'])}",
                band=charts.Band(
                    lower if _finite(lower) else None, upper if _finite(upper) else None, "no alert in this range"
                )
                if _finite(lower) or _finite(upper)
                else None,
            )
        )
    return "".join(parts)
