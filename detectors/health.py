"""A model's health at a glance: the worst of its signals, with the reason in words.

Signals, each read from the latest analysed window of its result table (aggregates in SQL):

* **realized performance** (``performance_results``) against the reference value: the realized
  metric over the model's labelled reference as the estimator computed it
  (``estimated_performance_results.reference_value``), else the mean of the performance windows
  inside the drift reference. Errors (MAE, RMSE): bad at ``ERROR_BAD`` times the reference or above
  the estimator's upper threshold, warn at ``ERROR_WARN`` times; quality (accuracy, F1, ...): bad
  below the lower threshold or at ``QUALITY_BAD`` of the reference, warn at ``QUALITY_WARN``;
* **estimated performance** (``estimated_performance_results``): bad when the estimate left its
  thresholds, warn when the window could not be estimated (its message);
* **feature drift** (``drift_results``): bad when a feature drifted persistently, warn when some
  drifted once; the reason names them and for how many consecutive windows;
* **data quality** (``quality_results``, when the quality detector ran): bad when a check failed;
* **latency SLO** (``latency_results``): bad when the attainment is below the objective;
* **reproducibility** (``reproducibility_results``): bad below ``REPRODUCIBILITY_BAD`` (the
  ReproducibilityDrop alert's threshold), warn below 1;
* **detector runs** (``detector_runs``): warn when the latest run of a detector failed;
* **alerts firing** (the configured Alertmanager's ``GET /api/v2/alerts``, filtered on the ``model``
  label, active alerts only — neither silenced nor inhibited; or Prometheus's ``GET /api/v1/alerts``,
  state ``firing``), read with a short timeout: bad while an alert of the model fires (warn for
  ``severity`` info/none), warn when the alert source did not answer, and "alerts: not configured"
  (state unknown, never green) when no source is configured. Only the configured URL is contacted.

The model's state is the worst signal's (bad > warn > ok > unknown), so it is never green while a
signal is red; the reason joins the words of the bad signals (else the warning ones), e.g.
"MAE 6.0x January's; temp and atemp drifting for 2 windows".
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

ERROR_METRICS = ("mae", "rmse")
QUALITY_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
ERROR_WARN, ERROR_BAD = 1.2, 1.5
QUALITY_WARN, QUALITY_BAD = 0.95, 0.9
REPRODUCIBILITY_BAD = 0.99
RANK = {"unknown": 0, "ok": 1, "warn": 2, "bad": 3}
LABELS = {"mae": "MAE", "rmse": "RMSE", "roc_auc": "ROC AUC", "f1": "F1"}


@dataclass
class Signal:
    """One signal's verdict: ``state`` ok | warn | bad | unknown, ``reason`` in words, and its numbers."""

    name: str
    state: str
    reason: str = ""
    value: float | None = None
    reference: float | None = None
    ratio: float | None = None
    threshold: str = ""
    window_end: dt.datetime | None = None


@dataclass
class Health:
    """The model's state (the worst signal's) and the reason in words."""

    model: str
    state: str = "unknown"
    reason: str = "no detector results yet"
    signals: list[Signal] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "state": self.state,
            "reason": self.reason,
            "signals": [
                {
                    "name": s.name,
                    "state": s.state,
                    "reason": s.reason,
                    "value": _finite(s.value),
                    "reference": _finite(s.reference),
                    "ratio": _finite(s.ratio),
                    "threshold": s.threshold,
                    "window_end": s.window_end.isoformat() if s.window_end else None,
                }
                for s in self.signals
            ],
        }


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _label(metric: str) -> str:
    return LABELS.get(metric, metric)


def reference_name(start: dt.datetime | None, end: dt.datetime | None) -> str:
    """How to name a reference window in a sentence: "January's" for a calendar month, else "the reference's"."""
    if start is None or end is None:
        return "the reference's"
    start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
    next_month = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    if start.day == 1 and start.hour == 0 and end == next_month:
        return f"{start:%B}'s"
    return "the reference's"


def _rows(client: Client, sql: str, params: dict) -> list[tuple]:
    return client.query(sql, parameters=params).result_rows


def _tables(client: Client) -> set[str]:
    return {r[0] for r in client.query("SELECT name FROM system.tables WHERE database = currentDatabase()").result_rows}


@dataclass(frozen=True)
class AlertSource:
    """Where the firing alerts are read: an Alertmanager (``kind`` alertmanager) or a Prometheus server."""

    url: str
    kind: str = "alertmanager"  # alertmanager | prometheus
    timeout: float = 1.0  # seconds: the page must not wait on a slow monitoring system


NOT_CONFIGURED = "alerts: not configured"
QUIET_SEVERITIES = ("info", "none")


def firing_alerts(source: AlertSource, models: Sequence[str]) -> dict[str, list[dict]]:
    """The active alerts of ``models`` (label sets), by model; raises ``httpx.HTTPError`` when unanswered."""
    import httpx

    wanted = sorted(set(models))
    if source.kind == "prometheus":
        response = httpx.get(f"{source.url.rstrip('/')}/api/v1/alerts", timeout=source.timeout)
        response.raise_for_status()
        found = [
            a.get("labels", {}) for a in response.json().get("data", {}).get("alerts", []) if a.get("state") == "firing"
        ]
    else:
        model_filter = (
            f'model="{wanted[0]}"' if len(wanted) == 1 else f'model=~"{"|".join(re.escape(m) for m in wanted)}"'
        )
        response = httpx.get(
            f"{source.url.rstrip('/')}/api/v2/alerts",
            params={"active": "true", "silenced": "false", "inhibited": "false", "filter": model_filter},
            timeout=source.timeout,
        )
        response.raise_for_status()
        found = [a.get("labels", {}) for a in response.json() if a.get("status", {}).get("state") == "active"]
    out: dict[str, list[dict]] = {m: [] for m in wanted}
    for labels in found:
        if labels.get("model") in out:
            out[labels["model"]].append(labels)
    return out


def _alerts(source: AlertSource | None, models: Sequence[str]):
    if source is None:
        for model in models:
            yield model, Signal("alerts firing", "unknown", NOT_CONFIGURED)
        return
    import httpx

    where = f"{'Prometheus' if source.kind == 'prometheus' else 'Alertmanager'} at {source.url}"
    try:
        firing = firing_alerts(source, models)
    except (httpx.HTTPError, ValueError) as exc:
        reason = f"alerts: {where} did not answer within {source.timeout:g}s ({type(exc).__name__})"
        for model in models:
            yield model, Signal("alerts firing", "warn", reason, threshold="none firing")
        return
    for model in models:
        alerts = firing.get(model, [])
        if not alerts:
            yield model, Signal("alerts firing", "ok", f"no alert firing ({where})", 0.0, threshold="none firing")
            continue
        names = sorted({a.get("alertname", "?") + (f" ({a['feature']})" if a.get("feature") else "") for a in alerts})
        loud = [a for a in alerts if a.get("severity", "warning") not in QUIET_SEVERITIES]
        shown = _and(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        reason = f"{shown} firing"
        yield (
            model,
            Signal("alerts firing", "bad" if loud else "warn", reason, float(len(alerts)), None, None, "none firing"),
        )


def models_health(
    client: Client,
    models: Sequence[str],
    *,
    where: str = "1",
    params: dict | None = None,
    alerts: AlertSource | None = None,
    with_alerts: bool = False,
) -> dict[str, Health]:
    """The health of each model in ``models``; ``where``/``params`` scope every query (the API's token).

    With ``with_alerts`` the firing alerts of ``alerts`` are a signal too ("alerts: not configured" when
    ``alerts`` is None)."""
    models = sorted(set(models))
    out = {m: Health(m) for m in models}
    if not models:
        return out
    p = {**(params or {}), "models": models}
    scope = f"model IN {{models:Array(String)}} AND {where}"
    tables = _tables(client)
    signals: dict[str, list[Signal]] = {m: [] for m in models}

    references = _estimation_references(client, scope, p, tables)
    drift_refs = {
        m: (s, e)
        for m, s, e in _rows(
            client,
            f"SELECT model, argMax(reference_start, current_end), argMax(reference_end, current_end) "
            f"FROM drift_results WHERE {scope} AND target = 'dataset' GROUP BY model",
            p,
        )
    }
    for sig_model, sig in _performance(client, scope, p, references, drift_refs):
        signals[sig_model].append(sig)
    if "estimated_performance_results" in tables:
        for sig_model, sig in _estimated(client, scope, p):
            signals[sig_model].append(sig)
    for sig_model, sig in _drift(client, scope, p):
        signals[sig_model].append(sig)
    if "quality_results" in tables:
        for sig_model, sig in _quality(client, scope, p):
            signals[sig_model].append(sig)
    for sig_model, sig in _latency(client, scope, p):
        signals[sig_model].append(sig)
    for sig_model, sig in _reproducibility(client, scope, p):
        signals[sig_model].append(sig)
    for sig_model, sig in _runs(client, scope, p):
        signals[sig_model].append(sig)
    if with_alerts:
        for sig_model, sig in _alerts(alerts, models):
            signals[sig_model].append(sig)
    for model, found in signals.items():
        out[model] = summarise(model, found)
    return out


def model_health(
    client: Client,
    model: str,
    *,
    where: str = "1",
    params: dict | None = None,
    alerts: AlertSource | None = None,
    with_alerts: bool = False,
) -> Health:
    """The health of one model."""
    return models_health(client, [model], where=where, params=params, alerts=alerts, with_alerts=with_alerts)[model]


def summarise(model: str, signals: list[Signal]) -> Health:
    """The worst state of ``signals`` and the reasons of the signals in that state."""
    if not signals:
        return Health(model)
    state = max((s.state for s in signals), key=RANK.__getitem__)
    if state == "ok":
        reason = "every signal within its reference"
    elif state == "unknown":
        reason = "no detector results yet"
    else:
        reason = "; ".join(s.reason for s in signals if s.state == state and s.reason)
    if state in ("ok", "unknown") and any(s.reason == NOT_CONFIGURED for s in signals):
        reason += f" ({NOT_CONFIGURED})"  # green only as far as driftwarden can see
    return Health(model, state, reason, signals)


def _estimation_references(client: Client, scope: str, p: dict, tables: set[str]) -> dict[tuple[str, str], tuple]:
    """``{(model, metric): (reference value, lower, upper, reference start, reference end)}`` from the estimator."""
    if "estimated_performance_results" not in tables:
        return {}
    latest = "argMax({x}, (current_end, computed_at))"
    return {
        (m, metric): (ref, lower, upper, start, end)
        for m, metric, ref, lower, upper, start, end in _rows(
            client,
            f"SELECT model, metric, {latest.format(x='reference_value')}, {latest.format(x='lower_threshold')}, "
            f"{latest.format(x='upper_threshold')}, {latest.format(x='reference_start')}, "
            f"{latest.format(x='reference_end')} FROM estimated_performance_results FINAL WHERE {scope} "
            "GROUP BY model, metric",
            p,
        )
    }


def _performance(client: Client, scope: str, p: dict, references: dict, drift_refs: dict):
    rows = _rows(
        client,
        f"""
        SELECT model, metric, argMax(value, (current_end, computed_at)), max(current_end)
        FROM performance_results FINAL WHERE {scope} AND metric IN {{metrics:Array(String)}}
        GROUP BY model, metric
        """,
        {**p, "metrics": list(ERROR_METRICS + QUALITY_METRICS)},
    )
    order = ERROR_METRICS + QUALITY_METRICS
    for model, metric, value, end in sorted(rows, key=lambda r: (r[0], order.index(r[1]))):
        ref, lower, upper, ref_start, ref_end = references.get((model, metric), (None, None, None, None, None))
        if ref is None and model in drift_refs:  # the performance windows inside the drift reference
            ref_start, ref_end = drift_refs[model]
            found = _rows(
                client,
                "SELECT avg(value) FROM performance_results FINAL WHERE model = {m:String} AND metric = {k:String} "
                "AND current_start >= {s:DateTime64(6, 'UTC')} AND current_end <= {e:DateTime64(6, 'UTC')}",
                {"m": model, "k": metric, "s": ref_start, "e": ref_end},
            )
            ref = found[0][0] if found and found[0][0] is not None and math.isfinite(found[0][0]) else None
        yield model, _judge_realized(metric, float(value), ref, lower, upper, reference_name(ref_start, ref_end), end)


def _judge_realized(metric, value, ref, lower, upper, ref_name, end) -> Signal:
    name = f"realized {_label(metric)}"
    if ref is None or not ref:
        return Signal(name, "ok", f"{_label(metric)} {value:.3g} (no reference value)", value, window_end=end)
    ratio = value / ref
    lower = _finite(lower)
    upper = _finite(upper)
    if metric in ERROR_METRICS:
        threshold = f"bad ≥ {ERROR_BAD}x" + (f" or > {upper:.3g}" if upper is not None else "")
        bad = ratio >= ERROR_BAD or (upper is not None and value > upper)
        state = "bad" if bad else "warn" if ratio >= ERROR_WARN else "ok"
        reason = f"{_label(metric)} {ratio:.1f}x {ref_name}"
    else:
        threshold = f"bad ≤ {QUALITY_BAD}x" + (f" or < {lower:.3g}" if lower is not None else "")
        bad = ratio <= QUALITY_BAD or (lower is not None and value < lower)
        state = "bad" if bad else "warn" if ratio <= QUALITY_WARN else "ok"
        reason = f"{_label(metric)} {value:.3g} against {ref:.3g} ({ref_name.removesuffix(chr(39) + 's')})"
    return Signal(name, state, reason, value, ref, ratio, threshold, end)


def _estimated(client: Client, scope: str, p: dict):
    latest = "argMax({x}, (current_end, computed_at))"
    rows = _rows(
        client,
        f"""
        SELECT model, metric, {latest.format(x="estimated")}, {latest.format(x="alert")},
               {latest.format(x="lower_threshold")}, {latest.format(x="upper_threshold")},
               {latest.format(x="reference_value")}, {latest.format(x="message")}, max(current_end)
        FROM estimated_performance_results FINAL WHERE {scope} GROUP BY model, metric
        """,
        p,
    )
    for model, metric, value, alert, lower, upper, ref, message, end in rows:
        name = f"estimated {_label(metric)}"
        threshold = f"{_fmt(lower)} .. {_fmt(upper)}"
        ratio = value / ref if value is not None and ref else None
        if value is None:
            yield model, Signal(name, "warn", f"{_label(metric)} not estimated: {message}", window_end=end)
        elif alert:
            side = "below" if lower is not None and value < lower else "above"
            reason = f"estimated {_label(metric)} {value:.3g} {side} its reference range {threshold}"
            yield model, Signal(name, "bad", reason, value, ref, ratio, threshold, end)
        else:
            reason = f"estimated {_label(metric)} {value:.3g} within {threshold}"
            yield model, Signal(name, "ok", reason, value, ref, ratio, threshold, end)


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _drift(client: Client, scope: str, p: dict):
    rows = _rows(
        client,
        f"""
        SELECT model, feature, arraySlice(arrayReverseSort(x -> x.1, groupArray((current_end, drifted))), 1, 24),
               argMax(persistent, current_end)
        FROM (SELECT model, feature, current_end, max(drifted) AS drifted, max(persistent) AS persistent
              FROM drift_results FINAL WHERE {scope} AND target = 'feature'
              GROUP BY model, feature, current_end)
        GROUP BY model, feature
        """,
        p,
    )
    latest: dict[str, dt.datetime] = {}
    per_model: dict[str, list[tuple[str, int, bool]]] = {}
    for model, feature, history, persistent in rows:
        end = history[0][0]
        latest[model] = max(latest.get(model, end), end)
        per_model.setdefault(model, []).append((feature, history, bool(persistent)))
    for model, features in per_model.items():
        end = latest[model]
        drifting = []
        for feature, history, persistent in features:
            if history[0][0] != end or not history[0][1]:
                continue  # not analysed in the latest window, or not drifting there
            streak = 0
            for _, drifted in history:
                if not drifted:
                    break
                streak += 1
            drifting.append((feature, streak, persistent))
        if not drifting:
            yield model, Signal("feature drift", "ok", f"no feature drifting of {len(features)}", 0.0, window_end=end)
            continue
        persistent = sorted((f, n) for f, n, p_ in drifting if p_)
        state = "bad" if persistent else "warn"
        shown = persistent or sorted((f, n) for f, n, _ in drifting)
        names = _and([f for f, _ in shown[:4]]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")
        longest = max(n for _, n in shown)
        verb = "drifting" if len(shown) > 1 or longest > 1 else "drifted"
        span = f" for {longest} windows" if longest > 1 else " in the latest window"
        reason = f"{names} {verb}{span}"
        yield model, Signal("feature drift", state, reason, float(len(drifting)), window_end=end)


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _quality(client: Client, scope: str, p: dict):
    rows = _rows(
        client,
        f"""
        SELECT model, groupArrayIf(concat(check_name, if(feature = '', '', concat(' ', feature))), failed), count(),
               max(current_end)
        FROM quality_results FINAL
        WHERE {scope} AND (model, current_end) IN
              (SELECT model, max(current_end) FROM quality_results WHERE {scope} GROUP BY model)
        GROUP BY model
        """,
        p,
    )
    for model, failed, checks, end in rows:
        if failed:
            reason = f"data quality: {_and(sorted(failed)[:3])}" + (
                f" and {len(failed) - 3} more checks failed" if len(failed) > 3 else " failed"
            )
            yield model, Signal("data quality", "bad", reason, float(len(failed)), window_end=end)
        else:
            yield model, Signal("data quality", "ok", f"{checks} data-quality checks passed", 0.0, window_end=end)


def _latency(client: Client, scope: str, p: dict):
    rows = _rows(
        client,
        f"""
        SELECT model, argMax(attainment, current_end), argMax(objective, current_end), max(current_end)
        FROM (SELECT model, current_start, current_end,
                     sum(slo_attainment * requests) / greatest(sum(requests), 1) AS attainment,
                     any(slo_percentile) AS objective
              FROM latency_results FINAL WHERE {scope} GROUP BY model, current_start, current_end)
        GROUP BY model
        """,
        p,
    )
    for model, attainment, objective, end in rows:
        threshold = f"≥ {objective * 100:.2f}%"
        if attainment < objective:
            reason = f"latency SLO {attainment * 100:.2f}% under the objective {objective * 100:.2f}%"
            yield model, Signal("latency SLO", "bad", reason, attainment, objective, None, threshold, end)
        else:
            reason = f"latency SLO met ({attainment * 100:.2f}%)"
            yield model, Signal("latency SLO", "ok", reason, attainment, objective, None, threshold, end)


def _reproducibility(client: Client, scope: str, p: dict):
    rows = _rows(
        client,
        f"""
        SELECT model, kind, min(rate), sum(checked), max(current_end)
        FROM reproducibility_results FINAL
        WHERE {scope} AND (model, kind, current_end) IN
              (SELECT model, kind, max(current_end) FROM reproducibility_results WHERE {scope} GROUP BY model, kind)
        GROUP BY model, kind
        """,
        p,
    )
    for model, kind, rate, checked, end in rows:
        threshold = f"bad < {REPRODUCIBILITY_BAD * 100:.0f}%"
        state = "bad" if rate < REPRODUCIBILITY_BAD else "warn" if rate < 1 else "ok"
        reason = f"{kind}: {rate * 100:.2f}% of {checked:,} reproduced"
        yield model, Signal(f"reproducibility ({kind})", state, reason, rate, 1.0, None, threshold, end)


def _runs(client: Client, scope: str, p: dict):
    rows = _rows(
        client,
        f"""
        SELECT model, groupArrayIf(detector, last_status = 'error'), max(last_end)
        FROM (SELECT model, detector, argMax(status, started_at) AS last_status, max(current_end) AS last_end
              FROM detector_runs WHERE {scope} GROUP BY model, detector)
        GROUP BY model
        """,
        p,
    )
    for model, failed, end in rows:
        if failed:
            yield (
                model,
                Signal("detector runs", "warn", f"the latest {_and(sorted(failed))} run failed", window_end=end),
            )
