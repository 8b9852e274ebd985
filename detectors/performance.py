"""Performance drift: model quality per window once ground truth arrives, computed in ClickHouse.

Predictions (``inferences``, replays excluded) are joined to ``ground_truth``
by event id; labels may arrive late, and the latest label of an event wins
(``ground_truth`` is a ReplacingMergeTree by ``received_at``, read with FINAL).

Classification (the prediction is ``prediction_label``, the truth ``label``):
the confusion matrix is counted in SQL, then

* accuracy = correct / labelled;
* binary (two classes): precision = TP / (TP + FP), recall = TP / (TP + FN),
  F1 = 2 TP / (2 TP + FP + FN) for the positive label (configured, else "1",
  "true" or the greater label), 0 when a denominator is 0 (scikit-learn's
  ``zero_division=0``); ROC AUC of the ``prediction`` score by ClickHouse's
  ``arrayAUC`` (when both classes occur among the labels);
* multiclass: the unweighted mean of the per-class values over every class seen
  among labels and predictions (scikit-learn's ``average="macro"``).

Regression (the prediction is ``prediction``, the truth ``value``): MAE, RMSE
and mean error = mean(prediction - truth) (positive: the model over-predicts).

Each window's rows record ``predictions`` (events with an output) and
``labelled`` (of which have ground truth). Recomputing a window after more
labels arrived writes new rows with a later ``computed_at``; the table is a
ReplacingMergeTree by ``computed_at``, so readers using FINAL see the latest.
:func:`label_state` is the cheap fingerprint the scheduler compares to decide
whether a window must be recomputed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.provenance import code_version, content_hash, schema_version
from driftwarden.detectors.window import Window, micros

UTC = dt.UTC
CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")
REGRESSION_METRICS = ("mae", "rmse", "mean_error")


@dataclass
class PerformanceResult:
    """One row of ``performance_results``."""

    model: str
    model_version: str
    task: str
    metric: str
    value: float
    current_start: dt.datetime
    current_end: dt.datetime
    predictions: int
    labelled: int
    input_hash: str = ""
    code_version: str = field(default_factory=code_version)
    schema_version: int = field(default_factory=schema_version)
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)
    computed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(UTC))


def _joined(window: Window, model_version: str | None) -> str:
    """Predictions of the window left-joined to their latest label (``has`` = 1 when labelled)."""
    version = "" if model_version is None else "AND model_version = {v:String}"
    return f"""
        (SELECT event_id, ts, model_version, prediction, prediction_label
         FROM inferences FINAL
         WHERE model = {{m:String}} AND NOT is_replay AND {window.sql()} {version}
           AND (prediction IS NOT NULL OR prediction_label != '')) AS i
        LEFT JOIN
        (SELECT event_id, label, value, received_at, toUInt8(1) AS has
         FROM ground_truth FINAL WHERE model = {{m:String}}) AS g
        ON i.event_id = g.event_id
    """


def label_state(
    client: Client, model: str, window: Window, model_version: str | None = None
) -> dict[str, tuple[int, int, int]]:
    """``{version: (predictions, labelled, fingerprint of the labels)}`` of the window: cheap, no metrics."""
    return label_states(client, model, [window], model_version).get(window, {})


def label_states(
    client: Client, model: str, windows: Sequence[Window], model_version: str | None = None
) -> dict[Window, dict[str, tuple[int, int, int]]]:
    """:func:`label_state` of many windows of one length in one query (windows without predictions are left out)."""
    if not windows:
        return {}
    size = micros(windows[0].end) - micros(windows[0].start)
    if any(micros(w.end) - micros(w.start) != size or micros(w.start) % size for w in windows):
        raise ValueError("label_states needs windows of one length, aligned to it")
    span = Window(min(w.start for w in windows), max(w.end for w in windows))
    rows = client.query(
        f"""
        SELECT intDiv(toUnixTimestamp64Micro(i.ts), {size}) AS bucket, i.model_version, count(), countIf(g.has = 1),
               groupBitXorIf(cityHash64(g.event_id, g.label, coalesce(g.value, nan)), g.has = 1)
        FROM {_joined(span, model_version)}
        GROUP BY bucket, i.model_version ORDER BY bucket, i.model_version
        """,
        parameters={"m": model, "v": model_version or ""},
    ).result_rows
    by_bucket = {micros(w.start) // size: w for w in windows}
    out: dict[Window, dict[str, tuple[int, int, int]]] = {}
    for bucket, version, n, k, x in rows:
        window = by_bucket.get(int(bucket))
        if window is not None:
            out.setdefault(window, {})[str(version)] = (int(n), int(k), int(x))
    return out


def compute_performance(
    client: Client,
    model: str,
    window: Window,
    task: str,
    *,
    model_version: str | None = None,
    positive_label: str | None = None,
) -> list[PerformanceResult]:
    """Quality metrics of ``model`` in ``window``, per model version with at least one labelled prediction."""
    if task not in ("classification", "regression"):
        raise ValueError(f"task {task!r} is not classification or regression")
    params = {"m": model, "v": model_version or ""}
    counts = client.query(
        f"""
        SELECT i.model_version, count(), countIf(g.has = 1),
               groupBitXorIf(
                   cityHash64(i.event_id, coalesce(i.prediction, nan), i.prediction_label,
                              g.label, coalesce(g.value, nan)),
                   g.has = 1)
        FROM {_joined(window, model_version)}
        GROUP BY i.model_version ORDER BY i.model_version
        """,
        parameters=params,
    ).result_rows
    out: list[PerformanceResult] = []
    for version, predictions, labelled, fingerprint in counts:
        if not labelled:
            continue
        if task == "classification":
            metrics, details = _classification(client, window, model_version, version, params, positive_label)
        else:
            metrics, details = _regression(client, window, model_version, version, params)
        input_hash = content_hash(
            {
                "detector": "performance",
                "model": model,
                "model_version": version,
                "task": task,
                "window": [window.start, window.end],
                "predictions": int(predictions),
                "labelled": int(labelled),
                "rows_fingerprint": int(fingerprint),
                **details,
            }
        )
        for metric, value in metrics.items():
            out.append(
                PerformanceResult(
                    model=model,
                    model_version=version,
                    task=task,
                    metric=metric,
                    value=float(value),
                    current_start=window.start,
                    current_end=window.end,
                    predictions=int(predictions),
                    labelled=int(labelled),
                    input_hash=input_hash,
                )
            )
    return out


def _classification(
    client: Client,
    window: Window,
    filter_version: str | None,
    version: str,
    params: dict,
    positive_label: str | None,
) -> tuple[dict[str, float], dict]:
    rows = client.query(
        f"""
        SELECT g.label, i.prediction_label, count()
        FROM {_joined(window, filter_version)}
        WHERE g.has = 1 AND i.model_version = {{version:String}}
        GROUP BY g.label, i.prediction_label
        """,
        parameters={**params, "version": version},
    ).result_rows
    matrix = {(str(t), str(p)): int(n) for t, p, n in rows}
    total = sum(matrix.values())
    classes = sorted({t for t, _ in matrix} | {p for _, p in matrix})
    metrics: dict[str, float] = {"accuracy": sum(n for (t, p), n in matrix.items() if t == p) / total}
    details: dict = {"classes": classes, "method": "confusion matrix; arrayAUC"}

    def scores(label: str) -> tuple[float, float, float]:
        tp = matrix.get((label, label), 0)
        fp = sum(n for (t, p), n in matrix.items() if p == label and t != label)
        fn = sum(n for (t, p), n in matrix.items() if t == label and p != label)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        return precision, recall, f1

    if len(classes) <= 2:
        positive = _positive(classes, positive_label)
        details["positive_label"] = positive
        metrics["precision"], metrics["recall"], metrics["f1"] = scores(positive)
        auc = client.query(
            f"""
            SELECT countIf(g.label = {{pos:String}}), countIf(g.label != {{pos:String}}),
                   arrayAUC(groupArray(assumeNotNull(i.prediction)), groupArray(g.label = {{pos:String}}))
            FROM {_joined(window, filter_version)}
            WHERE g.has = 1 AND i.model_version = {{version:String}} AND i.prediction IS NOT NULL
            """,
            parameters={**params, "version": version, "pos": positive},
        ).result_rows
        n_pos, n_neg, value = auc[0]
        if n_pos and n_neg:  # ROC AUC is undefined when the labels hold one class only
            metrics["roc_auc"] = float(value)
    else:
        per_class = [scores(c) for c in classes]
        metrics["precision"] = sum(s[0] for s in per_class) / len(classes)
        metrics["recall"] = sum(s[1] for s in per_class) / len(classes)
        metrics["f1"] = sum(s[2] for s in per_class) / len(classes)
    return metrics, details


def _positive(classes: list[str], configured: str | None) -> str:
    if configured is not None:
        return configured
    for candidate in ("1", "true", "True", "yes", "positive"):
        if candidate in classes:
            return candidate
    return classes[-1]


def _regression(
    client: Client, window: Window, filter_version: str | None, version: str, params: dict
) -> tuple[dict[str, float], dict]:
    rows = client.query(
        f"""
        SELECT count(), avg(abs(i.prediction - g.value)), sqrt(avg(pow(i.prediction - g.value, 2))),
               avg(i.prediction - g.value)
        FROM {_joined(window, filter_version)}
        WHERE g.has = 1 AND i.model_version = {{version:String}}
          AND i.prediction IS NOT NULL AND g.value IS NOT NULL
        """,
        parameters={**params, "version": version},
    ).result_rows
    n, mae, rmse, mean_error = rows[0]
    if not n:
        return {}, {"method": "mae, rmse, mean_error"}
    return (
        {"mae": float(mae), "rmse": float(rmse), "mean_error": float(mean_error)},
        {"method": "mae, rmse, mean_error", "pairs": int(n)},
    )


def write_performance(client: Client, results: Sequence[PerformanceResult]) -> int:
    """Insert ``results`` into ``performance_results``; return the number of rows written."""
    if not results:
        return 0
    names = [f.name for f in dataclasses.fields(PerformanceResult)]
    client.insert("performance_results", [[getattr(r, n) for n in names] for r in results], column_names=names)
    return len(results)
