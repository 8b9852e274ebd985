"""The analytics sections of a model's page: what changed, where, and how it evolved, as server-side charts.

Two blocks, each self-contained (its own scoped queries, charts from :mod:`.charts`):

* :func:`drift_section`, under the data drift table: the reference and current
  distributions of each drifted feature of the latest window (histograms from SQL
  aggregates for numeric features, category shares for categorical ones), multivariate
  drift (value, thresholds, drivers, over time), and the data-quality checks.
* :func:`trends_section`, before the detector runs: the segments that degrade most, then
  each metric over time with its threshold (dataset drift share, the drifted features'
  scores on one scale, realized performance, latency p95 against its objective).
"""

from __future__ import annotations

import json
import math
from typing import Any

from clickhouse_connect.driver.client import Client

from driftwarden.auth import Principal
from driftwarden.detectors.api import analytics_queries, charts, queries
from driftwarden.detectors.api.pages import _table, badge, e, fmt, iso, severity
from driftwarden.detectors.window import Window

MAX_DISTRIBUTIONS = 8
MAX_TREND_FEATURES = 6
TREND_WINDOWS = 60  # analysed windows drawn over time, up to the end of the page's range


def _until(rows: list[dict], until) -> list[dict]:
    """Rows whose window ended by ``until`` (all when None), the last :data:`TREND_WINDOWS` windows."""
    kept = [r for r in rows if until is None or r["current_end"] <= until]
    ends = sorted({r["current_end"] for r in kept})[-TREND_WINDOWS:]
    return [r for r in kept if ends and r["current_end"] >= ends[0]]


def _figures(svgs: list[str]) -> str:
    return '<div class="charts">' + "".join(f"<figure>{s}</figure>" for s in svgs) + "</div>"


def _details(row: dict) -> dict:
    try:
        value = json.loads(row.get("details") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _verdict_text(row: dict) -> str:
    score = row["p_value"] if row["p_value"] is not None else row["statistic"]
    relation = "<" if row["method"] in ("ks", "chisquare", "ztest") else "≥"
    text = f"{row['method']} {fmt(score, 3)} {relation} threshold {fmt(row['threshold'], 3)} · drift"
    return text + (" · persistent" if row["persistent"] else "")


# -- under the data drift table ---------------------------------------------------------------------


def drift_section(client: Client, principal: Principal, model: str, within: Window | None) -> str:
    """Distributions of the drifted features, multivariate drift and data quality (HTML)."""
    return (
        _distributions(client, principal, model, within)
        + _multivariate(client, principal, model, within)
        + _quality(client, principal, model, within)
    )


def _distributions(client: Client, principal: Principal, model: str, within: Window | None) -> str:
    latest = [r for r in queries.latest_drift(client, principal, model, within) if r["target"] == "feature"]
    if not latest:
        return ""
    drifted = sorted(
        (r for r in latest if r["drifted"]),
        key=lambda r: -severity(r["method"], r["statistic"], r["p_value"], r["threshold"]),
    )
    head = '<h3 id="distributions">Distributions of the drifted features</h3>'
    if not drifted:
        return head + '<p class="notice">No feature drifted in the latest analysed window.</p>'
    shown = drifted[:MAX_DISTRIBUTIONS]
    first = shown[0]
    reference = Window(first["reference_start"], first["reference_end"])
    current = Window(first["current_start"], first["current_end"])
    numeric = [r["feature"] for r in shown if r["feature_type"] == "numeric"]
    bins = analytics_queries.histograms(client, principal, model, first["model_version"], numeric, reference, current)
    svgs = []
    for row in shown:
        title = f"{row['feature']}: reference vs current"
        subtitle = _verdict_text(row)
        if row["feature_type"] == "numeric" and row["feature"] in bins:
            edges, ref, cur = bins[row["feature"]]
            svgs.append(charts.histogram_chart(edges, ref, cur, title=title, subtitle=subtitle, x_label=row["feature"]))
        elif row["feature_type"] == "categorical":
            d = _details(row)
            keys, ref, cur = d.get("keys") or [], d.get("reference_counts") or [], d.get("current_counts") or []
            if keys and len(keys) == len(ref) == len(cur):
                svgs.append(charts.category_chart(keys, ref, cur, title=title, subtitle=subtitle))
    more = len(drifted) - len(shown)
    note = (
        f'<p class="muted">Window <span class="mono">{e(iso(current.start))}..{e(iso(current.end))}</span> against '
        f'<span class="mono">{e(iso(reference.start))}..{e(iso(reference.end))}</span>; bins span the 0.1%–99.9% '
        "quantiles of both windows (values beyond count in the first or last bin)."
        + (f" {more} more drifted features are not drawn." if more > 0 else "")
        + "</p>"
    )
    return head + note + _figures(svgs)


def _multivariate(client: Client, principal: Principal, model: str, within: Window | None) -> str:
    rows = _until(analytics_queries.multivariate(client, principal, model, None), within.end if within else None)
    if within is not None:  # the table shows the range's latest window; the chart the trend leading to it
        inside = [r for r in rows if r["current_start"] >= within.start]
        rows = rows if inside else []
    head = '<h3 id="multivariate">Multivariate drift</h3>'
    if not rows:
        return head + (
            '<p class="notice">No multivariate drift results in this range: enable the '
            "<code>multivariate_drift</code> detector, or run <code>driftwarden drift --save</code>.</p>"
        )
    latest = analytics_queries.latest_window(rows)
    body = []
    for r in latest:
        kind = "none" if r["value"] is None else ("bad" if r["alert"] else "ok")
        verdict = "no verdict" if r["value"] is None else ("drift" if r["alert"] else "no drift")
        drivers = ", ".join(f"{d['feature']} ({fmt(d.get('score'), 3)})" for d in r["drivers"][:5])
        body.append(
            f'<tr data-method="{e(r["method"])}"><td>{e(r["method"])}</td><td>{e(r["model_version"] or "all")}</td>'
            f'<td class="num">{fmt(r["value"])}</td><td class="num">{fmt(r["sampling_error"], 2)}</td>'
            f'<td class="num">{fmt(r["lower_threshold"])} .. {fmt(r["upper_threshold"])}</td>'
            f"<td>{badge(kind, verdict)}</td><td>{e(drivers or r['message'])}</td></tr>"
        )
    table = _table(
        ["method", "version", "value", "± sampling error", "thresholds", "verdict", "driven by"],
        body,
        css="multivariate",
    )
    svgs = []
    series: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        series.setdefault((r["method"], r["model_version"]), []).append(r)
    titles = {"pca_reconstruction": "PCA reconstruction error", "domain_classifier": "Domain classifier ROC AUC"}
    for (method, version), points in sorted(series.items()):
        last = points[-1]
        band = None
        if last["lower_threshold"] is not None or last["upper_threshold"] is not None:
            band = charts.Band(last["lower_threshold"], last["upper_threshold"], "no-alert range")
        svgs.append(
            charts.line_chart(
                [
                    charts.Series(
                        titles.get(method, method),
                        [(p["current_start"], p["value"]) for p in points],
                        flagged=[bool(p["alert"]) for p in points],
                    )
                ],
                title=f"{titles.get(method, method)} over time" + (f" · {version}" if version else ""),
                subtitle=f"{len(points)} window{'s' if len(points) != 1 else ''}; thresholds of the latest window",
                band=band,
            )
        )
    for r in latest:
        if r["alert"] and r["drivers"]:
            svgs.append(
                charts.ranking_chart(
                    [charts.Bar(d["feature"], float(d.get("score") or 0.0)) for d in r["drivers"]],
                    title=f"What drives it: {titles.get(r['method'], r['method'])}",
                    value_label="increase of the residual"
                    if r["method"] == "pca_reconstruction"
                    else "AUC lost when the feature is shuffled",
                )
            )
    return head + table + _figures(svgs)


def _quality(client: Client, principal: Principal, model: str, within: Window | None) -> str:
    rows = analytics_queries.quality(client, principal, model, within)
    head = '<h3 id="quality">Data quality</h3>'
    if not rows:
        return head + (
            '<p class="notice">No data-quality results in this range: the <code>data_quality</code> detector has '
            "not analysed a window yet.</p>"
        )
    latest = analytics_queries.latest_window(rows)
    failed = [r for r in latest if r["failed"]]
    first = latest[0]
    summary = (
        f"<p>{badge('bad' if failed else 'ok', f'{len(failed)} failed' if failed else 'all checks passed')} "
        f'{len(latest)} checks on window <span class="mono">{e(iso(first["current_start"]))}..'
        f"{e(iso(first['current_end']))}</span> ({first['current_rows']:,} rows).</p>"
    )
    shown = sorted(latest, key=lambda r: (not r["failed"], r["check_name"], r["feature"]))
    body = [
        f'<tr class="{"failed" if r["failed"] else ""}" data-check="{e(r["check_name"])}"><td>{e(r["check_name"])}</td>'
        f'<td>{e(r["feature"] or "—")}</td><td class="num">{fmt(r["value"], 3)}</td>'
        f'<td class="num">{fmt(r["threshold"], 3)}</td><td class="num">{r["affected_rows"]:,}</td>'
        f"<td>{badge('bad' if r['failed'] else 'ok', 'failed' if r['failed'] else 'ok')}</td>"
        f"<td>{e(_quality_note(r))}</td></tr>"
        for r in shown
        if r["failed"] or r["value"]
    ]
    passed = sum(1 for r in latest if not r["failed"] and not r["value"])
    tail = f'<p class="muted">{passed} more checks passed with nothing to report.</p>' if passed else ""
    table = _table(["check", "feature", "value", "threshold", "rows", "result", "details"], body, css="quality")
    return head + summary + (table if body else "") + tail


def _quality_note(row: dict) -> str:
    d: dict[str, Any] = row["details"] or {}
    if d.get("examples"):
        return "e.g. " + ", ".join(map(str, d["examples"][:5]))
    if d.get("note"):
        return str(d["note"])
    return ""


# -- before the detector runs ------------------------------------------------------------------------


def trends_section(client: Client, principal: Principal, model: str, within: Window | None) -> str:
    """The segments that degrade most, then each metric over time with its threshold (HTML)."""
    return _segments(client, principal, model, within) + _over_time(client, principal, model, within)


def _segments(client: Client, principal: Principal, model: str, within: Window | None) -> str:
    rows = analytics_queries.segments(client, principal, model, within)
    head = '<h2 id="segments">Segments</h2>'
    if not rows:
        return head + (
            '<p class="notice">No segment results in this range: configure <code>segments.dimensions</code> '
            "(e.g. tenant, model_version, or a categorical feature) for this model.</p>"
        )
    latest = analytics_queries.latest_window(rows)
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in latest:
        groups.setdefault((r["dimension"], r["signal"], r["metric"]), []).append(r)
    svgs, notes = [], []
    for (dimension, signal, metric), items in sorted(groups.items()):
        valued = [r for r in items if r["degradation"] is not None]
        notes += [f"{dimension}={r['segment']}: {r['message']}" for r in items if r["message"]]
        if not valued:
            continue
        svgs.append(
            charts.ranking_chart(
                [
                    charts.Bar(
                        f"{dimension}={r['segment']}",
                        float(r["degradation"]),
                        flagged=bool(r["flagged"]),
                        note=_segment_note(r),
                    )
                    for r in valued
                ],
                title=f"{signal} · {metric} by {dimension}: segments that degrade most",
                subtitle="degradation against the segment's own reference; red: past the threshold",
                value_label=_degradation_label(signal),
            )
        )
    first = latest[0]
    note = (
        f'<p class="muted">Window <span class="mono">{e(iso(first["current_start"]))}..'
        f"{e(iso(first['current_end']))}</span>.</p>"
    )
    messages = '<ul class="muted">' + "".join(f"<li>{e(n)}</li>" for n in notes[:20]) + "</ul>" if notes else ""
    return head + note + _figures(svgs) + messages


def _segment_note(row: dict) -> str:
    if row["signal"] == "drift":
        feature = (row["details"] or {}).get("feature")
        return f"largest shift: {feature}" if feature else ""
    return f"{fmt(row['value'], 3)} vs {fmt(row['reference_value'], 3)}"


def _degradation_label(signal: str) -> str:
    return {
        "drift": "largest mean shift, in reference std",
        "performance": "relative change of the metric (worse > 0)",
        "estimated_performance": "relative change of the estimate (worse > 0)",
        "latency": "p95 / reference p95 - 1",
    }.get(signal, "degradation")


def _over_time(client: Client, principal: Principal, model: str, within: Window | None) -> str:
    head = '<h2 id="over-time">Over time</h2>'
    # the trend leading to the chosen range, as the sparklines: every window that ended by its end
    until = within.end if within else None
    history = queries.drift_history(client, principal, model, None, None, TREND_WINDOWS, until=until)
    performance = _until(queries.performance(client, principal, model, None), until)
    latency = _until(queries.latency(client, principal, model, None), until)
    svgs = []
    dataset = [h for h in history if h["target"] == "dataset" and h["feature"] == ""]
    if dataset:
        by_version: dict[str, list[dict]] = {}
        for h in dataset:
            by_version.setdefault(h["model_version"], []).append(h)
        svgs.append(
            charts.line_chart(
                [
                    charts.Series(
                        f"drifted share{' · ' + v if v else ''}",
                        [(h["current_start"], h["statistic"]) for h in points],
                        flagged=[bool(h["drifted"]) for h in points],
                    )
                    for v, points in sorted(by_version.items())
                ],
                title="Share of drifted features",
                thresholds=[
                    charts.Threshold(dataset[-1]["threshold"], f"dataset drift at {fmt(dataset[-1]['threshold'], 3)}")
                ],
                y_min=0.0,
                y_format=charts.percent,
            )
        )
    features = [h for h in history if h["target"] == "feature"]
    if features:
        worst: dict[str, float] = {}
        for h in features:
            s = severity(h["method"], h["statistic"], h["p_value"], h["threshold"])
            if math.isfinite(s):
                worst[h["feature"]] = max(worst.get(h["feature"], 0.0), s)
        top = sorted(worst, key=lambda f: -worst[f])[:MAX_TREND_FEATURES]
        svgs.append(
            charts.line_chart(
                [
                    charts.Series(
                        name,
                        [
                            (h["current_start"], severity(h["method"], h["statistic"], h["p_value"], h["threshold"]))
                            for h in features
                            if h["feature"] == name
                        ],
                        flagged=[bool(h["drifted"]) for h in features if h["feature"] == name],
                    )
                    for name in top
                ],
                title="Drift score of the most drifted features",
                subtitle="on one scale: score relative to its method's threshold (above 1 = drift)",
                thresholds=[charts.Threshold(1.0, "threshold (1)")],
                y_min=0.0,
            )
        )
    metrics: dict[str, dict[str, list[dict]]] = {}
    for p in performance:
        metrics.setdefault(p["metric"], {}).setdefault(p["model_version"], []).append(p)
    for metric, versions in sorted(metrics.items()):
        svgs.append(
            charts.line_chart(
                [
                    charts.Series(f"{metric} · {v}" if v else metric, [(p["current_start"], p["value"]) for p in pts])
                    for v, pts in sorted(versions.items())
                ],
                title=f"{metric} (realized, from labels)",
                subtitle="per analysed window and model version",
            )
        )
    if latency:
        versions_l: dict[str, list[dict]] = {}
        for w in latency:
            versions_l.setdefault(w["model_version"], []).append(w)
        objective = latency[-1]["slo_latency_ms"]
        svgs.append(
            charts.line_chart(
                [
                    charts.Series(
                        f"p95 · {v}" if v else "p95",
                        [(w["current_start"], w["latency_p95_ms"]) for w in pts],
                        flagged=[w["slo_attainment"] < w["slo_percentile"] for w in pts],
                    )
                    for v, pts in sorted(versions_l.items())
                ],
                title="Latency p95 (ms)",
                subtitle="red markers: the window missed its SLO",
                thresholds=[charts.Threshold(objective, f"latency objective {fmt(objective)} ms")],
                y_min=0.0,
            )
        )
    if not svgs:
        return head + '<p class="notice">No results over time in this range.</p>'
    return head + _figures(svgs)
