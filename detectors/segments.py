"""Segments: drift, realized performance and latency per value of a dimension, ranked by degradation.

A *dimension* is a tag of the event (``tenant``, ``model_version``, ``endpoint``,
``protocol``) or any categorical feature (``region``, or ``feature:region`` to be explicit).
Each segment (one value of the dimension) is compared with the same segment in the
reference window, so a segment is judged against itself, not against the others:

=====================  ===========================================  =====================================
signal · metric        value (current and reference)                degradation (worse > 0), flagged when
=====================  ===========================================  =====================================
latency · p95_ms       95th percentile of latency_ms (exact)        p95 / reference p95 - 1  > 0.5
performance · mae      mean absolute error (regression, labelled)   MAE / reference MAE - 1  > 0.5
performance · accuracy share of correct labels (classification)     reference - current      > 0.05
drift · mean_shift     largest standardised mean shift among the    the shift itself (Cohen's d) > 0.5
                       numeric features: |mean - ref mean| / ref std
estimated_performance  estimated without labels by the model's      as performance (accuracy drop > 0.05,
· accuracy | mae       CBPE / DLE (current); realized (reference)   MAE / reference MAE - 1 > 0.5)
=====================  ===========================================  =====================================

Cardinality cap: the ``max_segments`` values with the most rows in the current window are
segments of their own; every other value is summed into the explicit segment ``other``,
so the labelled metrics (``driftwarden_segment_degradation``) stay bounded at
``max_segments + 1`` series per dimension, signal and metric. A segment with fewer than
``min_rows`` rows (in either window) gets no value and a message that says so, e.g.
``"1 row in the current window, below the minimum of 30"``.

Within a dimension, signal and metric, segments are ranked by degradation (rank 1 = degraded
most; segments without a value last). Everything is aggregated in ClickHouse.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.config import SegmentsConfig
from driftwarden.detectors.provenance import code_version, content_hash, schema_version
from driftwarden.detectors.rows import WELL_FORMED
from driftwarden.detectors.window import Window

UTC = dt.UTC
TAGS = ("tenant", "model_version", "endpoint", "protocol")
OTHER = "other"
MISSING = "(missing)"
LATENCY_RATIO = 0.5
ERROR_RATIO = 0.5
ACCURACY_DROP = 0.05
MEAN_SHIFT = 0.5
QUALITY_METRICS = ("accuracy", "f1", "precision", "recall", "roc_auc")  # higher is better: a drop degrades


@dataclass
class SegmentResult:
    """One row of ``segment_results``."""

    model: str
    model_version: str
    dimension: str
    segment: str
    signal: str
    metric: str
    value: float | None
    reference_value: float | None
    degradation: float | None
    flagged: bool
    rank: int
    current_rows: int
    reference_rows: int
    message: str
    details: dict
    reference_start: dt.datetime
    reference_end: dt.datetime
    current_start: dt.datetime
    current_end: dt.datetime
    input_hash: str = ""
    code_version: str = field(default_factory=code_version)
    schema_version: int = field(default_factory=schema_version)
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)
    computed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(UTC))


def dimension_sql(dimension: str) -> tuple[str, str]:
    """``(label, SQL expression of the segment value)`` of a dimension: a tag column or a categorical feature."""
    if dimension in TAGS:
        return dimension, f"toString({dimension})"
    name = dimension.removeprefix("feature:")
    quoted = "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return (
        f"feature:{name}",
        f"if(indexOf(cat_names, {quoted}) > 0, cat_values[indexOf(cat_names, {quoted})], '{MISSING}')",
    )


def _where(window: Window, model_version: str | None) -> str:
    version = " AND model_version = {v:String}" if model_version is not None else ""
    return f"model = {{m:String}}{version} AND NOT is_replay AND {window.sql()} AND {WELL_FORMED}"


def compute_segments(
    client: Client,
    model: str,
    reference: Window,
    current: Window,
    config: SegmentsConfig,
    *,
    model_version: str | None = None,
    task: str | None = None,
    estimator: Any = None,
) -> list[SegmentResult]:
    """Every configured dimension's segments with latency, performance (``task`` given), drift and, with a fitted
    ``estimator`` (CBPE or DLE, :mod:`driftwarden.detectors.estimation`), estimated performance signals."""
    params = {"m": model, "v": model_version or ""}
    out: list[SegmentResult] = []
    for dimension in config.dimensions:
        label, expression = dimension_sql(dimension)
        top = [
            str(s)
            for (s, _) in client.query(
                f"SELECT {expression} AS s, count() AS n FROM inferences FINAL WHERE {_where(current, model_version)} "
                "GROUP BY s ORDER BY n DESC, s LIMIT {k:UInt32}",
                parameters={**params, "k": config.max_segments},
            ).result_rows
        ]
        capped = f"if({expression} IN {{top:Array(String)}}, {expression}, '{OTHER}')"
        columns = f"{capped} AS seg, event_id, latency_ms, prediction, prediction_label, num_names, num_values"
        both = (
            f"SELECT 'reference' AS w, {columns} FROM inferences FINAL WHERE {_where(reference, model_version)} "
            f"UNION ALL SELECT 'current' AS w, {columns} FROM inferences FINAL WHERE {_where(current, model_version)}"
        )
        p = {**params, "top": top}
        signals: list[tuple[str, str, dict[tuple[str, str], tuple[int, float | None, dict]]]] = []
        latency = {
            (str(w), str(s)): (int(n), float(q), {})
            for w, s, n, q in client.query(
                f"SELECT w, seg, count(), quantileExact(0.95)(latency_ms) FROM ({both}) GROUP BY w, seg", parameters=p
            ).result_rows
        }
        signals.append(("latency", "p95_ms", latency))
        if task in ("regression", "classification"):
            metric = "mae" if task == "regression" else "accuracy"
            value = "avg(abs(i.prediction - g.value))" if task == "regression" else "avg(i.prediction_label = g.label)"
            condition = "i.prediction IS NOT NULL AND g.value IS NOT NULL" if task == "regression" else "1"
            performance = {
                (str(w), str(s)): (int(n), float(x), {})
                for w, s, n, x in client.query(
                    f"""
                    SELECT i.w, i.seg, count(), {value}
                    FROM (SELECT w, seg, event_id, prediction, prediction_label FROM ({both})) AS i
                    INNER JOIN (SELECT event_id, label, value FROM ground_truth FINAL WHERE model = {{m:String}}) AS g
                    ON i.event_id = g.event_id
                    WHERE {condition}
                    GROUP BY i.w, i.seg
                    """,
                    parameters=p,
                ).result_rows
            }
            signals.append(("performance", metric, performance))
        moments: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
        rows_by: dict[tuple[str, str], int] = {}
        for w, s, n, k, mean, std in client.query(
            f"""
            SELECT w, seg, name, count(), avg(v), stddevPop(v)
            FROM (SELECT w, seg, name, v FROM ({both}) ARRAY JOIN num_names AS name, num_values AS v WHERE isFinite(v))
            GROUP BY w, seg, name
            """,
            parameters=p,
        ).result_rows:
            moments.setdefault((str(w), str(s)), {})[str(n)] = (float(mean), float(std))
            rows_by[(str(w), str(s))] = max(rows_by.get((str(w), str(s)), 0), int(k))
        drift: dict[tuple[str, str], tuple[int, float | None, dict]] = {}
        for (w, s), features in moments.items():
            if w != "current":
                continue
            ref = moments.get(("reference", s), {})
            shifts = {
                name: abs(mean - ref[name][0]) / ref[name][1]
                for name, (mean, _) in features.items()
                if name in ref and ref[name][1] > 0
            }
            worst = max(shifts, key=lambda name: shifts[name]) if shifts else None
            drift[("current", s)] = (
                rows_by[(w, s)],
                shifts[worst] if worst else None,
                {"feature": worst, "shifts": dict(sorted(shifts.items(), key=lambda kv: -kv[1])[:5])} if worst else {},
            )
            if ("reference", s) in moments:
                drift[("reference", s)] = (rows_by[("reference", s)], 0.0, {})
        signals.append(("drift", "mean_shift", drift))
        if estimator is not None:
            segments = sorted({s for (w, s) in latency if w == "current"})
            metric, estimated = _estimated(client, estimator, reference, current, expression, top, segments)
            signals.append(("estimated_performance", metric, estimated))
        for signal, metric, values in signals:
            out.extend(_rank(label, signal, metric, values, config.min_rows))
    input_hash = content_hash(
        {
            "detector": "segments",
            "model": model,
            "model_version": model_version or "",
            "reference": [reference.start, reference.end],
            "current": [current.start, current.end],
            "config": config.model_dump(),
            "task": task,
        }
    )
    for r in out:
        r.model, r.model_version, r.input_hash = model, model_version or "", input_hash
        r.reference_start, r.reference_end = reference.start, reference.end
        r.current_start, r.current_end = current.start, current.end
    return out


def _literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _estimated(
    client: Client,
    estimator: Any,
    reference: Window,
    current: Window,
    expression: str,
    top: list[str],
    segments: list[str],
) -> tuple[str, dict[tuple[str, str], tuple[int, float | None, dict]]]:
    """Per segment: the metric estimated on its current predictions (no label needed) and, as its reference
    value, the realized metric of the same segment in the (labelled) reference window.

    The metric is MAE for a regressor (DLE), accuracy for a classifier (CBPE), else the estimator's first."""
    from driftwarden.detectors.estimation.dle import DLEFit
    from driftwarden.detectors.estimation.estimator import estimate

    preferred = "mae" if isinstance(estimator, DLEFit) else "accuracy"
    metric = preferred if preferred in estimator.metrics else estimator.metrics[0]
    out: dict[tuple[str, str], tuple[int, float | None, dict]] = {}
    others = ", ".join(_literal(t) for t in top) or "''"
    for segment in segments:
        where = (
            f"{expression} NOT IN ({others})"
            if segment == OTHER and OTHER not in top
            else (f"{expression} = {_literal(segment)}")
        )
        now = next(r for r in estimate(client, estimator, current, where=where) if r.metric == metric)
        then = next(r for r in estimate(client, estimator, reference, where=where) if r.metric == metric)
        details = {
            "method": now.method,
            "sampling_error": now.sampling_error
            if now.sampling_error is not None and math.isfinite(now.sampling_error)
            else None,
            "reference": "realized",
        }
        if now.estimated is None and now.message:
            details["message"] = now.message
        out[("current", segment)] = (now.predictions, now.estimated, details)
        out[("reference", segment)] = (then.labelled, then.realized, {})
    return metric, out


def _degradation(signal: str, metric: str, value: float, reference: float) -> tuple[float, bool]:
    if signal == "drift":
        return value, value > MEAN_SHIFT
    if metric in QUALITY_METRICS:
        drop = reference - value
        return drop, drop > ACCURACY_DROP
    ratio = value / reference - 1 if reference > 0 else (math.inf if value > 0 else 0.0)
    return ratio, ratio > (LATENCY_RATIO if signal == "latency" else ERROR_RATIO)


def _rank(
    dimension: str,
    signal: str,
    metric: str,
    values: dict[tuple[str, str], tuple[int, float | None, dict]],
    min_rows: int,
) -> list[SegmentResult]:
    segments = sorted({s for (w, s) in values if w == "current"})
    results = []
    for s in segments:
        n, value, details = values[("current", s)]
        ref_n, ref_value, _ = values.get(("reference", s), (0, None, {}))
        message, degradation, flagged = "", None, False
        if n < min_rows or ref_n < min_rows:
            which = []
            if n < min_rows:
                which.append(f"{n} row{'s' if n != 1 else ''} in the current window")
            if ref_n < min_rows:
                which.append(f"{ref_n} row{'s' if ref_n != 1 else ''} in the reference")
            message = f"segment {dimension}={s}: {' and '.join(which)}, below the minimum of {min_rows}: no value"
            value = ref_value = None if n < min_rows else value
        elif value is None or ref_value is None:
            message = f"segment {dimension}={s}: no {metric} in both windows"
        else:
            degradation, flagged = _degradation(signal, metric, value, ref_value)
        results.append(
            SegmentResult(
                model="",
                model_version="",
                dimension=dimension,
                segment=s,
                signal=signal,
                metric=metric,
                value=value,
                reference_value=ref_value if not message else None,
                degradation=degradation if degradation is None or math.isfinite(degradation) else None,
                flagged=flagged,
                rank=0,
                current_rows=n,
                reference_rows=ref_n,
                message=message,
                details=details,
                reference_start=dt.datetime.min.replace(tzinfo=UTC),
                reference_end=dt.datetime.min.replace(tzinfo=UTC),
                current_start=dt.datetime.min.replace(tzinfo=UTC),
                current_end=dt.datetime.min.replace(tzinfo=UTC),
            )
        )
    results.sort(key=lambda r: (r.degradation is None, -(r.degradation or 0.0), r.segment))
    for i, r in enumerate(results, start=1):
        r.rank = i
    return results


def write_segments(client: Client, results: Sequence[SegmentResult]) -> int:
    """Insert ``results`` into ``segment_results``; return the rows written."""
    if not results:
        return 0
    names = [f.name for f in dataclasses.fields(SegmentResult)]
    rows = [
        [json.dumps(r.details, sort_keys=True) if n == "details" else getattr(r, n) for n in names] for r in results
    ]
    client.insert("segment_results", rows, column_names=names)
    return len(rows)
