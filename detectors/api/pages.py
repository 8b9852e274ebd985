"""Server-rendered HTML of the model owners' pages: every value escaped, charts as inline SVG.

The pages load one stylesheet from the service itself (``/static/driftwarden.css``);
no script, font or image comes from anywhere else. Layout and login form are
``string.Template`` files in ``templates/`` (jinja2 is not a dependency).
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote, urlencode

from driftwarden.detectors import provenance
from driftwarden.detectors.api.reports import provenance_rows, regenerate_command

TEMPLATES = Path(__file__).with_name("templates")
P_VALUE_METHODS = {"ks", "chisquare", "ztest"}  # drift when the score is below the threshold


def e(value: Any) -> str:
    """Escape anything for HTML text and attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def layout(title: str, body: str, *, root: str = "", who: str = "") -> str:
    """A whole page around ``body`` (already HTML)."""
    return _template("layout.html").substitute(
        title=e(title),
        body=body,
        root=e(root),
        who=(
            f'signed in as {e(who)} <form class="logout" method="post" action="{e(root)}/logout">'
            '<button type="submit">sign out</button></form>'
            if who
            else ""
        ),
        version=e(provenance.code_version()),
        schema=e(provenance.schema_version()),
    )


def login_page(*, root: str = "", message: str = "", next_url: str = "/") -> str:
    body = _template("login.html").substitute(
        root=e(root), message=e(message or "This service needs an API token."), next=e(next_url)
    )
    return layout("Sign in", body, root=root)


def error_page(title: str, message: str, *, root: str = "", who: str = "") -> str:
    body = f'<h1>{e(title)}</h1><p class="error">{e(message)}</p><p><a href="{e(root)}/">Back to the models</a></p>'
    return layout(title, body, root=root, who=who)


# -- formatting -----------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3g}"
        return f"{value:.{digits}g}"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")
    return str(value)


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def badge(kind: str, text: str) -> str:
    return f'<span class="badge {e(kind)}">{e(text)}</span>'


def severity(method: str, statistic: float, p_value: float | None, threshold: float) -> float:
    """How far a result is past its threshold: > 1 drifted, < 1 not (one scale for tests and distances)."""
    if method in P_VALUE_METHODS:
        p = p_value if p_value is not None else statistic
        if threshold <= 0 or threshold >= 1:
            return 0.0
        return -math.log10(max(p, 1e-300)) / -math.log10(threshold)
    return statistic / threshold if threshold > 0 else 0.0


def sparkline(points: Sequence[tuple[float, bool]], *, width: int = 120, height: int = 26, label: str = "") -> str:
    """An inline SVG trend of ``(value, flagged)`` points; a dashed line at 1 (the threshold) when in range."""
    values = [v for v, _ in points if math.isfinite(v)]
    if not values:
        return '<span class="muted">—</span>'
    lo, hi = min([*values, 0.0]), max([*values, 1.0])
    span = (hi - lo) or 1.0
    pad = 3

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad + (width - 2 * pad) * (i / max(1, len(points) - 1))
        y = height - pad - (height - 2 * pad) * ((v - lo) / span)
        return round(x, 1), round(y, 1)

    coords = [xy(i, v) for i, (v, _) in enumerate(points) if math.isfinite(v)]
    polyline = " ".join(f"{x},{y}" for x, y in coords)
    circles = "".join(
        f'<circle class="{"bad" if flagged else "ok"}" cx="{xy(i, v)[0]}" cy="{xy(i, v)[1]}" r="2"/>'
        for i, (v, flagged) in enumerate(points)
        if math.isfinite(v)
    )
    _, ty = xy(0, 1.0)
    title = e(label or "trend")
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{title}"><title>{title}</title>'
        f'<line x1="0" y1="{ty}" x2="{width}" y2="{ty}"/>'
        f'<polyline points="{polyline}"/>{circles}</svg>'
    )


def _table(headers: Iterable[str], rows: Iterable[str], *, css: str = "") -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    return f'<table class="{e(css)}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


# -- overview -------------------------------------------------------------------------------------


def overview_page(
    statuses: list[dict],
    versions: list[dict],
    runs: dict[str, dict],
    *,
    root: str = "",
    who: str = "",
    health: dict[str, str] | None = None,
) -> str:
    """One row per model version: drift, SLO, reproducibility (the version's, else the model's), detector runs.

    ``statuses`` are per model and version (``''`` for results over every version); ``runs`` per model.
    """
    if not versions and not statuses:
        body = (
            '<h1>Models</h1><p class="notice">No model has sent events yet (or none is visible to this token). '
            "Start a collector or run <code>driftwarden ingest</code>.</p>"
        )
        return layout("Models", body, root=root, who=who)
    by_key = {(s["model"], s["model_version"]): s for s in statuses}
    rows = []
    for v in versions:
        own = by_key.get((v["model"], v["model_version"]), {})
        shared = by_key.get((v["model"], ""), {})
        counts = runs.get(v["model"], {})
        s = {
            "failed_runs": counts.get("failed_runs", 0),
            "total_runs": counts.get("total_runs", 0),
            **{k: val for k, val in {**shared, **own}.items() if val is not None},
        }
        link = f"{e(root)}/models/{e(quote(v['model'], safe=''))}"
        rows.append(
            "<tr>"
            f'<td><a href="{link}">{e(v["model"])}</a></td><td>{e(v["model_version"] or "—")}</td>'
            f"<td>{(health or {}).get(v['model'], '')}</td>"  # the model's worst signal (detectors.health)
            f'<td class="num">{v["events"]:,}</td><td>{fmt(v["last_event"])}</td>'
            f"<td>{_drift_badge(s)}</td><td>{_slo_badge(s)}</td><td>{_repro_badge(s)}</td>"
            f"<td>{_runs_badge(s)}</td></tr>"
        )
    body = "<h1>Models</h1>" + _table(
        ["model", "version", "health", "events", "last event", "drift", "latency SLO", "reproducibility"]
        + ["detector runs"],
        rows,
        css="overview",
    )
    return layout("Models", body, root=root, who=who)


def _drift_badge(s: dict) -> str:
    if s.get("drifted") is None:
        return badge("none", "not analysed")
    share = f"{s['drift_share'] * 100:.0f}% of features" if s.get("drift_share") is not None else "share unknown"
    return badge("bad", f"drift · {share}") if s["drifted"] else badge("ok", f"no drift · {share}")


def _slo_badge(s: dict) -> str:
    if s.get("slo_attainment") is None:
        return badge("none", "no data")
    text = f"{s['slo_attainment'] * 100:.2f}% / {s['slo_percentile'] * 100:.2f}%"
    return badge("ok" if s["slo_attainment"] >= s["slo_percentile"] else "bad", text)


def _repro_badge(s: dict) -> str:
    if s.get("reproducibility_rate") is None:
        return badge("none", "not checked")
    text = f"{s['reproducibility_rate'] * 100:.2f}% reproduced"
    return badge("ok" if not s.get("reproducibility_mismatches") else "warn", text)


def _runs_badge(s: dict) -> str:
    if not s.get("total_runs"):
        return badge("none", "none")
    if s.get("failed_runs"):
        return badge("bad", f"{s['failed_runs']} failed of {s['total_runs']}")
    return badge("ok", f"{s['total_runs']} runs ok")


# -- model page -----------------------------------------------------------------------------------


def model_page(
    model: str,
    *,
    versions: list[dict],
    latest: list[dict],
    history: list[dict],
    performance: list[dict],
    latency_summary: list[dict],
    latency: list[dict],
    reproducibility: list[dict],
    runs: list[dict],
    within: str = "",
    root: str = "",
    who: str = "",
    llm_section: str = "",
    analytics_drift: str = "",
    analytics_trends: str = "",
    estimation_section: str = "",
    health_section: str = "",
) -> str:
    """The model owner's page: drift per feature with trends, predictions, performance, latency, reproducibility.

    ``llm_section`` is the HTML of the language-model section (``detectors.api.llm_section``), shown
    before latency when the model has language-model calls.
    ``analytics_drift`` (distributions of the drifted features, multivariate drift, data quality) follows
    the data drift table; ``analytics_trends`` (segments, metrics over time) precedes the detector runs
    (``detectors.api.analytics_section``).
    """
    parts = [f"<h1>{e(model)}</h1>", health_section]  # state and reason first (detectors.api.health_section)
    parts.append(
        '<p class="muted">versions: '
        + (", ".join(f"{e(v['model_version'] or '—')} ({v['events']:,} events)" for v in versions) or "none")
        + "</p>"
    )
    parts.append(
        f'<form class="inline" method="get" action="{e(root)}/models/{e(quote(model, safe=""))}">'
        f'<label>analysed windows inside (START..END, ISO 8601)<input type="text" name="window" value="{e(within)}" '
        'placeholder="2011-02-01..2011-03-01"></label><button type="submit">Show</button></form>'
    )
    features = [r for r in latest if r["target"] == "feature"]
    predictions = [r for r in latest if r["target"] == "prediction"]
    dataset = [r for r in latest if r["target"] == "dataset" and r["feature"] == ""]
    trends = _trends(history)

    parts.append("<h2>Data drift</h2>")
    if not latest:
        where = f" in {e(within)}" if within else ""
        parts.append(
            f'<p class="notice">No drift results for this model{where}: the drift detector has not '
            "analysed a window yet, or no window lies in the requested range.</p>"
        )
    else:
        first = latest[0]
        parts.append(
            f'<p>Latest analysed window <span class="mono">{e(iso(first["current_start"]))}..'
            f'{e(iso(first["current_end"]))}</span> against reference <span class="mono">'
            f"{e(iso(first['reference_start']))}..{e(iso(first['reference_end']))}</span>.</p>"
        )
        for d in dataset:
            drifted = sum(1 for f in features if f["drifted"])
            verdict = badge("bad", "dataset drift") if d["drifted"] else badge("ok", "no dataset drift")
            parts.append(
                f"<p>{verdict} {drifted} of {len(features)} features drifted (share {fmt(d['statistic'], 3)}, "
                f"threshold {fmt(d['threshold'], 3)}).</p>"
            )
        parts.append(_drift_table(features, trends, "feature"))
        report = urlencode(
            {
                "reference": f"{iso(first['reference_start'])}..{iso(first['reference_end'])}",
                "current": f"{iso(first['current_start'])}..{iso(first['current_end'])}",
            }
        )
        parts.append(
            f'<p><a href="{e(root)}/models/{e(quote(model, safe=""))}/report?{e(report)}">Full Evidently report of '
            "this window against its reference</a> (data drift and data summary, from a bounded sample)</p>"
        )

    parts.append(analytics_drift)
    parts.append("<h2>Prediction drift</h2>")
    parts.append(
        _drift_table(predictions, trends, "prediction")
        if predictions
        else '<p class="notice">No prediction drift results in this range.</p>'
    )
    parts.append("<h2>Performance</h2>" + _performance(performance))
    parts.append(estimation_section)  # performance without labels (detectors.api.estimation_section)
    parts.append(llm_section)
    parts.append("<h2>Latency and errors</h2>" + _latency(latency_summary, latency))
    parts.append("<h2>Reproducibility</h2>" + _reproducibility(reproducibility))
    parts.append(analytics_trends)
    parts.append("<h2>Detector runs</h2>" + _runs(runs))
    return layout(model, "".join(parts), root=root, who=who)


def _trends(history: list[dict]) -> dict[tuple[str, str], list[tuple[float, bool]]]:
    out: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for h in history:
        point = (severity(h["method"], h["statistic"], h["p_value"], h["threshold"]), bool(h["drifted"]))
        out.setdefault((h["target"], h["feature"]), []).append(point)
    return out


def _drift_table(rows: list[dict], trends: dict, target: str) -> str:
    def key(r: dict) -> tuple:
        return (
            not r["drifted"],
            not r["persistent"],
            -severity(r["method"], r["statistic"], r["p_value"], r["threshold"]),
        )

    body = []
    for r in sorted(rows, key=key):
        verdict = r.get("verdict") or ("drift" if r["drifted"] else "no drift")
        kind = "bad" if r["drifted"] else ("none" if verdict == "no verdict" else "ok")
        new = ", ".join(r["new_categories"][:5]) + (" …" if len(r["new_categories"]) > 5 else "")
        if r.get("typical_words"):  # a text feature: the words that drove its classifier
            new = "words: " + ", ".join(r["typical_words"].get("current", [])[:8])
        spark = sparkline(trends.get((target, r["feature"]), []), label=f"{r['feature']}: score / threshold by window")
        body.append(
            f'<tr class="{"drifted" if r["drifted"] else ""}" data-feature="{e(r["feature"])}">'
            f"<td>{e(r['feature'])}</td><td>{e(r['feature_type'])}</td><td>{e(r['method'])}</td>"
            f'<td class="num">{fmt(r["statistic"])}</td><td class="num">{fmt(r["p_value"])}</td>'
            f'<td class="num">{fmt(r["threshold"])}</td><td>{badge(kind, verdict)}</td>'
            f"<td>{badge('bad', 'persistent') if r['persistent'] else ''}</td><td>{spark}</td>"
            f'<td class="num">{fmt(r["missing_share"], 3)}</td><td>{e(new)}</td></tr>'
        )
    return _table(
        [
            target,
            "type",
            "method",
            "score",
            "p-value",
            "threshold",
            "verdict",
            "persistence",
            "trend",
            "missing",
            "new",
        ],
        body,
        css="drift",
    )


def _performance(rows: list[dict]) -> str:
    if not rows:
        return '<p class="notice">No performance results: no ground truth has arrived for this range.</p>'
    metrics: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        metrics.setdefault((r["model_version"], r["metric"]), []).append(r)
    body = []
    for (version, metric), series in sorted(metrics.items()):
        last = series[-1]
        points = [(p["value"], False) for p in series]
        body.append(
            f'<tr><td>{e(version)}</td><td>{e(metric)}</td><td class="num">{fmt(last["value"])}</td>'
            f"<td>{e(iso(last['current_start']))}..{e(iso(last['current_end']))}</td>"
            f'<td class="num">{last["labelled"]:,} / {last["predictions"]:,}</td>'
            f"<td>{sparkline(points, label=f'{metric} by window')}</td></tr>"
        )
    return _table(["version", "metric", "latest", "window", "labelled / predictions", "trend"], body)


def _latency(summary: list[dict], windows: list[dict]) -> str:
    if not summary:
        return '<p class="notice">No latency results in this range.</p>'
    series: dict[str, list[tuple[float, bool]]] = {}
    for w in windows:
        slo = w["slo_latency_ms"] or 1.0
        series.setdefault(w["model_version"], []).append(
            (w["latency_p95_ms"] / slo, w["slo_attainment"] < w["slo_percentile"])
        )
    body = []
    for s in summary:
        met = s["slo_attainment"] >= s["slo_percentile"]
        attained = f"{s['slo_attainment'] * 100:.2f}% under {fmt(s['slo_latency_ms'])} ms"
        body.append(
            f'<tr><td>{e(s["model_version"])}</td><td class="num">{s["requests"]:,}</td>'
            f'<td class="num">{s["errors"]:,} ({s["error_ratio"] * 100:.2f}%)</td>'
            f'<td class="num">{fmt(s["latency_p95_ms"], 4)} ms</td><td class="num">{fmt(s["worst_p99_ms"], 4)} ms</td>'
            f"<td>{badge('ok' if met else 'bad', attained)}"
            f' <span class="muted">objective {s["slo_percentile"] * 100:.2f}%</span></td>'
            f"<td>{sparkline(series.get(s['model_version'], []), label='p95 / latency objective by window')}</td></tr>"
        )
    return _table(["version", "requests", "errors", "p95 (weighted)", "worst p99", "SLO attainment", "p95 trend"], body)


def _reproducibility(rows: list[dict]) -> str:
    if not rows:
        return '<p class="notice">No reproducibility results in this range.</p>'
    latest: dict[tuple[str, str, str], dict] = {}
    for r in rows:
        latest[(r["model_version"], r["model_digest"], r["kind"])] = r
    body = []
    for (v, d, k), r in sorted(latest.items()):
        rate = f"{r['rate'] * 100:.2f}%"
        body.append(
            f'<tr><td>{e(v)}</td><td class="mono">{e(d[:19])}</td><td>{e(k)}</td>'
            f'<td class="num">{r["checked"]:,}</td><td class="num">{r["mismatches"]:,}</td>'
            f"<td>{badge('ok' if not r['mismatches'] else 'warn', rate)}</td>"
            f"<td>{e(iso(r['current_start']))}..{e(iso(r['current_end']))}</td></tr>"
        )
    return _table(["version", "digest", "check", "checked", "mismatches", "reproduced", "latest window"], body)


def _runs(rows: list[dict]) -> str:
    if not rows:
        return '<p class="notice">No detector runs recorded for this model in this range.</p>'
    failed = [r for r in rows if r["status"] == "error"]
    shown = failed[:20] + [r for r in rows if r["status"] != "error"][: max(0, 20 - len(failed[:20]))]
    body = [
        f"<tr><td>{e(fmt(r['started_at']))}</td><td>{e(r['detector'])}</td>"
        f"<td>{badge('bad' if r['status'] == 'error' else 'ok', r['status'])}</td>"
        f"<td>{e(iso(r['current_start']))}..{e(iso(r['current_end']))}</td>"
        f'<td class="num">{r["results"]}</td><td class="num">{fmt(r["duration_ms"], 4)} ms</td>'
        f"<td>{e(r['error'])}</td></tr>"
        for r in shown
    ]
    summary = f"<p>{len(failed)} failed of the {len(rows)} most recent runs.</p>"
    return summary + _table(["started", "detector", "status", "window", "rows", "duration", "error"], body)


# -- report page ----------------------------------------------------------------------------------


def report_page(model: str, record: dict, *, query: str, cached: bool, root: str = "", who: str = "") -> str:
    """Provenance, downloads and the Evidently report (same-origin iframe of the downloadable HTML)."""
    base = f"{e(root)}/models/{e(quote(model, safe=''))}"
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in provenance_rows(record))
    body = (
        f'<h1>Report: {e(model)}</h1><p><a href="{base}">back to the model</a> · '
        f'<a href="{base}/report.html?{e(query)}" download>download HTML</a> · '
        f'<a href="{base}/report.json?{e(query)}" download>download JSON</a> · '
        f'<span class="muted">{"from the cache" if cached else "generated now"}; sample size '
        f"{record['sample_size']} per window</span></p>"
        f'<h2>Provenance</h2><table class="provenance">{rows}</table>'
        f"<p>Reproduce: <code>{e(regenerate_command(record))}</code></p>"
        '<p class="muted">Evidently analyses the samples above; the drift detector analyses every event of '
        "each window, so on a sample its verdicts can differ near the threshold. The model page shows the "
        "detector's verdicts.</p>"
        f'<h2>Evidently</h2><iframe class="report" title="Evidently report" src="{base}/report.html?{e(query)}">'
        "</iframe>"
    )
    return layout(f"Report {model}", body, root=root, who=who)


def no_data_page(model: str, message: str, *, root: str = "", who: str = "") -> str:
    base = f"{e(root)}/models/{e(quote(model, safe=''))}"
    body = (
        f'<h1>Report: {e(model)}</h1><p class="notice">{e(message)}</p>'
        f'<p>Pick windows that hold events; the <a href="{base}">model page</a> lists the analysed windows.</p>'
    )
    return layout(f"Report {model}", body, root=root, who=who)
