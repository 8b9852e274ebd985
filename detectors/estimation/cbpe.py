"""Confidence-based performance estimation (CBPE): a classifier's quality from its scores, without labels.

When a classifier's scores are calibrated probabilities, a prediction of class c with calibrated
score p is correct with probability p. Summing over the rows of a window gives the *expected*
confusion matrix, and every metric follows (Kivimäki et al., "Confidence-based performance
estimation", NannyML 2022):

* binary, y = predicted positive: TP = sum_{y=1} p, FP = sum_{y=1} (1 - p), FN = sum_{y=0} p,
  TN = sum_{y=0} (1 - p); precision = TP / (TP + FP), recall = TP / (TP + FN),
  F1 = TP / (TP + (FP + FN) / 2), accuracy = (TP + TN) / n;
* ROC AUC: rows sorted by the uncalibrated score, descending; each row is p of a positive and
  1 - p of a negative, so ROC AUC = sum_i (1 - p_i) (sum_{j before i} p_j + p_i / 2) / (P N) with
  P = sum p, N = sum (1 - p) (rows with equal scores are one step of the curve);
* multiclass: per class c the calibrated one-vs-rest scores, normalised to sum to one per row;
  precision, recall, F1 and ROC AUC are macro averages of the one-vs-rest estimates,
  accuracy = mean p of the predicted class.

Scale: the sums are computed in ClickHouse over every prediction of the window (the calibration
map is interpolated in SQL, see :mod:`.calibration`); ROC AUC groups the window by distinct score
in SQL and runs the cumulative sum over those groups in SQL as well. Python receives a few numbers
per window. The reference is read twice: the realized metrics of its chunks (SQL aggregates, for the
thresholds) and a bounded uniform sample (default 200,000 labelled rows) for the calibration and the
ROC AUC sampling error.

Example (a store with scored, labelled January and scored February)::

    fit = fit_cbpe(client, "loans", Window.parse("2018-01-01..2018-02-01"), dt.timedelta(days=7))
    for r in estimate_cbpe(client, fit, Window.parse("2018-02-05..2018-02-12")):
        print(r.metric, r.estimated, r.lower_threshold, r.alert)

Reference: NannyML ``performance_estimation/confidence_based`` (0.13), whose estimates, sampling
errors and alerts this module reproduces (tests/test_estimation_agreement.py).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from clickhouse_connect.driver.client import Client

from driftwarden.detectors.estimation import sampling
from driftwarden.detectors.estimation.calibration import GRID_CELLS, fit_grid, sql_interpolate
from driftwarden.detectors.estimation.inputs import SETTINGS, TRUTH, chunk_count, chunk_index, rows
from driftwarden.detectors.estimation.results import EstimateResult, window_hash
from driftwarden.detectors.window import Window

METRICS = ("roc_auc", "f1", "precision", "recall", "accuracy")
SAMPLE_ROWS = 100_000
_IDENTITY = [i / GRID_CELLS for i in range(GRID_CELLS + 1)]


class EstimationError(ValueError):
    """The reference cannot be used for estimation; the message says why and what to do."""


@dataclass
class CBPEFit:
    """What CBPE learned on the reference: classes, calibration, sampling-error components, thresholds."""

    model: str
    model_version: str | None
    reference: Window
    chunk: dt.timedelta
    task: str  # binary | multiclass
    classes: list[str]
    positive: str | None
    grids: list[list[float]]  # one calibration grid per scored class (binary: the positive class)
    calibrated: list[bool]
    metrics: list[str]
    components: dict = field(default_factory=dict)
    lower: dict[str, float] = field(default_factory=dict)
    upper: dict[str, float] = field(default_factory=dict)
    reference_values: dict[str, float] = field(default_factory=dict)
    chunks: int = 0
    reference_rows: int = 0
    sample_rows: int = 0
    notes: list[str] = field(default_factory=list)


def _score_sql(task: str) -> str:
    """SQL over inferences (alias ``i``): the score (binary) or the array of class scores (multiclass)."""
    if task == "binary":
        return (
            "if(has(i.output_names, {pos:String}), "
            "i.output_values[indexOf(i.output_names, {pos:String})], ifNull(i.prediction, nan)) AS s"
        )
    return (
        "arrayMap(c -> if(has(i.output_names, c), i.output_values[indexOf(i.output_names, c)], nan), "
        "{classes:Array(String)}) AS s"
    )


def _columns(task: str) -> str:
    return f"i.event_id AS event_id, i.ts AS ts, i.prediction_label AS predicted, {_score_sql(task)}"


def _yp(task: str) -> str:
    """SQL: the predicted class: 1/0 for the positive class (binary), its 1-based index (multiclass).

    Without a predicted label, the positive class is predicted at a score of 0.5 or more (binary),
    the class of the highest score (multiclass)."""
    if task == "binary":
        return "toUInt8(if(predicted != '', predicted = {pos:String}, s >= 0.5))"
    return "if(predicted != '', indexOf({classes:Array(String)}, predicted), arrayFirstIndex(x -> x = arrayMax(s), s))"


def _has_score(task: str) -> str:
    return "NOT isNaN(s)" if task == "binary" else "NOT arrayExists(x -> isNaN(x), s)"


def _params(fit: CBPEFit | None, model: str, model_version: str | None, classes, positive) -> dict:
    return {"m": model, "v": model_version or "", "pos": positive or "", "classes": list(classes)}


def _classes(client: Client, model: str, reference: Window, model_version: str | None) -> tuple[list[str], list[str]]:
    """(classes among the reference labels, classes among its predicted labels and score names)."""
    base = rows(
        reference, model_version, columns="i.prediction_label AS predicted, i.output_names AS names", labels=False
    )
    params = {"m": model, "v": model_version or ""}
    predicted, names = client.query(
        f"SELECT groupUniqArrayIf(predicted, predicted != ''), groupUniqArrayArray(names) FROM {base}",
        parameters=params,
    ).result_rows[0]
    version = "" if model_version is None else "AND model_version = {v:String}"
    (truth,) = client.query(
        f"SELECT groupUniqArrayIf(truth, truth != '') FROM (SELECT {TRUTH} AS truth FROM ground_truth FINAL "
        f"WHERE model = {{m:String}} AND event_id IN (SELECT event_id FROM inferences WHERE model = {{m:String}} "
        f"AND NOT is_replay AND {reference.sql()} {version}))",
        parameters=params,
    ).result_rows[0]
    return sorted(map(str, truth)), sorted(set(map(str, predicted)) | set(map(str, names)))


def _positive(classes: list[str], configured: str | None) -> str:
    if configured is not None:
        return configured
    for candidate in ("1", "true", "True", "yes", "positive"):
        if candidate in classes:
            return candidate
    return classes[-1]


def fit_cbpe(
    client: Client,
    model: str,
    reference: Window,
    chunk: dt.timedelta,
    *,
    model_version: str | None = None,
    positive_label: str | None = None,
    metrics: list[str] | None = None,
    sample_rows: int = SAMPLE_ROWS,
) -> CBPEFit:
    """Fit CBPE on the labelled, scored ``reference``; ``chunk`` is the length of the windows to estimate."""
    metrics = list(metrics or METRICS)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise EstimationError(f"CBPE estimates {', '.join(METRICS)}, not {', '.join(unknown)}")
    truth_classes, output_classes = _classes(client, model, reference, model_version)
    if len(truth_classes) < 2:
        raise EstimationError(
            f"the reference {reference} of model {model} has "
            + ("no labels" if not truth_classes else f"labels of one class only ({truth_classes[0]})")
            + ": CBPE calibrates on the reference and needs it labelled with at least two classes; "
            "ingest its ground truth (driftwarden ingest --ground-truth) or choose another reference"
        )
    task = "binary" if len(truth_classes) == 2 else "multiclass"
    classes = truth_classes
    positive = _positive(classes, positive_label) if task == "binary" else None
    if task == "binary" and positive not in classes:
        raise EstimationError(f"positive label {positive!r} is not among the reference labels {', '.join(classes)}")
    fit = CBPEFit(
        model=model,
        model_version=model_version,
        reference=reference,
        chunk=chunk,
        task=task,
        classes=classes,
        positive=positive,
        grids=[],
        calibrated=[],
        metrics=metrics,
    )
    params = _params(None, model, model_version, classes, positive)
    base = rows(reference, model_version, columns=_columns(task))
    n, _, problem = _input_problems(
        client,
        task,
        rows(reference, model_version, columns=_columns(task), labels=False),
        params,
        classes,
        [reference],
        what="the reference",
    )[0]
    if problem:
        raise EstimationError(problem)

    # bounded uniform sample of labelled reference rows (by event-id hash: no sort), for the calibration
    # and the ROC AUC sampling error
    keep = min(1.0, sample_rows / max(n, 1))
    sample = client.query(
        f"""
        SELECT s, truth, {_yp(task)} AS yp FROM {base}
        WHERE has = 1 AND truth != '' AND {_has_score(task)}
          AND cityHash64(event_id) <= {int(keep * (2**64 - 1))}
        LIMIT {int(sample_rows)}
        """,
        parameters=params,
        settings=SETTINGS,
    ).result_rows
    if len(sample) < 2:
        raise EstimationError(f"the reference {reference} of model {model} has fewer than 2 scored, labelled rows")
    fit.sample_rows = len(sample)
    truth = np.array([str(r[1]) for r in sample])
    if task == "binary":
        scores = np.array([float(r[0]) for r in sample])
        y = (truth == positive).astype(float)
        grid = fit_grid(y, scores)
        fit.grids, fit.calibrated = [grid or _IDENTITY], [grid is not None]
        fit.components["roc_auc"] = sampling.auroc_component(scores, y)
    else:
        matrix = np.array([list(r[0]) for r in sample], dtype=float)
        fit.components["roc_auc"] = []
        for k, c in enumerate(classes):
            y = (truth == c).astype(float)
            grid = fit_grid(y, matrix[:, k])
            fit.grids.append(grid or _IDENTITY)
            fit.calibrated.append(grid is not None)
            sigma, f = sampling.auroc_component(matrix[:, k], y)
            fit.components["roc_auc"].append((sigma**2, f))

    # realized metrics per reference chunk (and over the whole reference), in SQL
    # chunk k is group k + 1, the whole reference group 0 (one pass: GROUPING SETS)
    per_chunk = _realized(
        client, task, base, params, classes, positive, group=f"{chunk_index(reference, chunk)} + 1", total=True
    )
    fit.chunks = chunk_count(reference, chunk)
    values = {m: [per_chunk[k][m] for k in range(1, fit.chunks + 1) if k in per_chunk] for m in metrics}
    whole = per_chunk.get(0, {})
    fit.reference_rows = int(whole.get("_labelled", 0))
    fit.reference_values = {m: whole.get(m, math.nan) for m in metrics}
    matrix = whole.get("_matrix")
    if task == "binary":
        fit.components.update(sampling.binary_components(*whole["_counts"]))
    else:
        fit.components.update(sampling.multiclass_components(matrix))
    if fit.chunks < 2:
        fit.notes.append(
            f"the reference holds {fit.chunks} window(s) of {chunk}: thresholds need at least 2; "
            "give a reference at least twice as long as the window"
        )
    for m in metrics:
        fit.lower[m], fit.upper[m] = (
            sampling.thresholds(values[m], 0.0, 1.0) if fit.chunks >= 2 else (math.nan, math.nan)
        )
    return fit


def _input_problems(
    client: Client, task: str, base: str, params: dict, classes: list[str], windows: list[Window], what: str
) -> list[tuple[int, int, str]]:
    """Per window: (predictions, labelled, a message when its scores cannot be used, else '')."""
    if task == "binary":
        out_of_range = "s < 0 OR s > 1"
        lo, hi = "minIf(s, NOT isNaN(s))", "maxIf(s, NOT isNaN(s))"
    else:
        out_of_range = "arrayExists(x -> x < 0 OR x > 1, s)"
        lo, hi = "minIf(arrayMin(s), NOT arrayExists(x -> isNaN(x), s))", "maxIf(arrayMax(s), 1)"
    found = {
        int(r[0]): r[1:]
        for r in client.query(
            f"""
            SELECT w, count(), countIf(has = 1 AND truth != ''), countIf({_has_score(task)}), countIf({out_of_range}),
                   {lo}, {hi},
                   groupUniqArrayIf(5)(predicted, predicted != '' AND NOT has({{classes:Array(String)}}, predicted))
            FROM {base} GROUP BY w
            """,
            parameters=params,
            settings=SETTINGS,
        ).result_rows
    }
    out = []
    for k, window in enumerate(windows, start=1):
        n, labelled, scored, bad, low, high, unseen = found.get(k, (0, 0, 0, 0, 0.0, 0.0, []))
        out.append((int(n), int(labelled), _message(task, what, window, n, scored, bad, low, high, unseen, classes)))
    return out


def _message(task, what, window, n, scored, bad, low, high, unseen, classes) -> str:
    if not n:
        return f"no predictions in {what} {window}"
    if not scored:
        how = "--score-column S" if task == "binary" else "--score-column CLASS=COLUMN for every class"
        return (
            f"no scores in {what} {window} ({n} predictions): CBPE needs the model's predicted probability "
            f"with each prediction; ingest it with {how} or send it as an output of the model"
        )
    if bad:
        return (
            f"{bad} of {n} scores in {what} {window} lie outside [0, 1] (min {low:.4g}, max {high:.4g}): CBPE reads "
            "scores as probabilities; record the predicted probability, not a logit or a margin"
        )
    if unseen:
        return (
            f"{what} {window} predicts class(es) {', '.join(sorted(map(str, unseen)))} that the reference labels "
            f"never hold (reference classes: {', '.join(classes)}): choose a reference with every class"
        )
    return ""


def _realized(
    client: Client,
    task: str,
    base: str,
    params: dict,
    classes: list[str],
    positive: str | None,
    group: str,
    total: bool = False,
) -> dict[int, dict]:
    """Realized metrics per group (an SQL expression > 0) from the labelled rows, in SQL; with ``total``
    also over every row, as group 0."""
    labelled = f"has = 1 AND truth != '' AND {_has_score(task)}"
    by_counts = "GROUPING SETS ((g, truth, yp), (truth, yp))" if total else "g, truth, yp"
    by_auc = "GROUPING SETS ((g), ())" if total else "g"
    by_class = "GROUPING SETS ((g, k), (k))" if total else "g, k"
    if task == "binary":  # one pass: the confusion counts and ROC AUC per group
        counts, auc_rows = [], []
        for g, tp, fp, fn, tn, pos, neg, auc in client.query(
            f"""
            SELECT {group} AS g,
                   countIf(truth = {{pos:String}} AND yp = 1), countIf(truth != {{pos:String}} AND yp = 1),
                   countIf(truth = {{pos:String}} AND yp = 0), countIf(truth != {{pos:String}} AND yp = 0),
                   countIf(truth = {{pos:String}}), countIf(truth != {{pos:String}}),
                   arrayAUC(groupArray(toFloat64(s)), groupArray(truth = {{pos:String}}))
            FROM (SELECT *, {_yp(task)} AS yp FROM {base} WHERE {labelled}) GROUP BY {by_auc}
            """,
            parameters=params,
            settings=SETTINGS,
        ).result_rows:
            counts += [(g, positive, 1, tp), (g, "", 1, fp), (g, positive, 0, fn), (g, "", 0, tn)]
            auc_rows.append((g, 0, pos, neg, auc))
        return _metrics(task, classes, positive, counts, auc_rows)
    counts = client.query(
        f"SELECT {group} AS g, truth, {_yp(task)} AS yp, count() FROM {base} WHERE {labelled} GROUP BY {by_counts}",
        parameters=params,
        settings=SETTINGS,
    ).result_rows
    auc_rows = client.query(
        f"""
            SELECT g, k, countIf(truth = c), countIf(truth != c), arrayAUC(groupArray(sk), groupArray(truth = c))
            FROM (SELECT {group} AS g, truth, s FROM {base} WHERE {labelled})
            ARRAY JOIN arrayEnumerate(s) AS k, s AS sk, {{classes:Array(String)}} AS c
            GROUP BY {by_class}
            """,
        parameters=params,
        settings=SETTINGS,
    ).result_rows
    return _metrics(task, classes, positive, counts, auc_rows)


def _metrics(task: str, classes: list[str], positive: str | None, counts: list, auc_rows: list) -> dict[int, dict]:
    """Realized metrics per group from (group, truth, predicted, count) and (group, class, pos, neg, auc) rows."""
    out: dict[int, dict] = {}
    K = len(classes)
    for g, truth, yp, n in counts:
        entry = out.setdefault(int(g), {"_matrix": np.zeros((K, K)) if task == "multiclass" else None, "_b": [0] * 4})
        if task == "binary":
            t = str(truth) == positive
            # tp, fp, fn, tn
            entry["_b"][(0 if t else 1) if yp else (2 if t else 3)] += int(n)
        else:
            if str(truth) in classes and int(yp) > 0:
                entry["_matrix"][classes.index(str(truth)), int(yp) - 1] += int(n)
            entry.setdefault("_other", 0)
            entry["_other"] += 0 if str(truth) in classes and int(yp) > 0 else int(n)
    aucs: dict[int, dict[int, float]] = {}
    for g, k, pos, neg, auc in auc_rows:
        aucs.setdefault(int(g), {})[int(k)] = float(auc) if pos and neg else math.nan
    for g, entry in out.items():
        if task == "binary":
            tp, fp, fn, tn = entry["_b"]
            entry["_counts"] = (tp, fp, fn, tn)
            entry["_labelled"] = tp + fp + fn + tn
            entry.update(_binary_realized(tp, fp, fn, tn))
            entry["roc_auc"] = aucs.get(g, {}).get(0, math.nan)
        else:
            matrix = entry["_matrix"]
            entry["_labelled"] = int(matrix.sum()) + entry.get("_other", 0)
            entry.update(_multiclass_realized(matrix, entry.get("_other", 0)))
            per_class = [aucs.get(g, {}).get(k + 1, math.nan) for k in range(K)]
            entry["roc_auc"] = float(np.mean(per_class)) if per_class else math.nan
    return out


def _binary_realized(tp: float, fp: float, fn: float, tn: float) -> dict[str, float]:
    n = tp + fp + fn + tn
    one_truth = tp + fn == 0 or fp + tn == 0
    one_predicted = tp + fp == 0 or fn + tn == 0
    nan_if = math.nan if one_truth or one_predicted else None
    return {
        "accuracy": (tp + tn) / n if n else math.nan,
        "precision": nan_if if nan_if is not None else (tp / (tp + fp) if tp + fp else 0.0),
        "recall": nan_if if nan_if is not None else (tp / (tp + fn) if tp + fn else 0.0),
        "f1": nan_if if nan_if is not None else (2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0),
    }


def _multiclass_realized(matrix: np.ndarray, other: int) -> dict[str, float]:
    n = matrix.sum() + other
    tp = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = np.divide(2 * tp, predicted + actual, out=np.zeros_like(tp), where=predicted + actual > 0)
    return {
        "accuracy": float(tp.sum() / n) if n else math.nan,
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
    }


def _calibrated(task: str, classes: int) -> str:
    """SQL: ``p``, the calibrated probability (binary) or normalised calibrated class probabilities.

    One expression per class: a grid handed to a lambda would be copied for every row, while a constant
    grid indexed per row is read in place."""
    if task == "binary":
        return f"{sql_interpolate('s', 'grid')} AS p"
    per_class = ", ".join(sql_interpolate(f"s[{k}]", f"grids[{k}]") for k in range(1, classes + 1))
    return (
        f"[{per_class}] AS q, "
        "if(arraySum(q) > 0, arrayMap(x -> x / arraySum(q), q), arrayMap(x -> 1 / length(q), q)) AS p"
    )


def estimate_cbpe(client: Client, fit: CBPEFit, current: Window) -> list[EstimateResult]:
    """Estimated metrics of ``current`` (one result per metric), with realized values where labels exist."""
    return estimate_cbpe_windows(client, fit, [current])


def estimate_cbpe_windows(client: Client, fit: CBPEFit, windows: Sequence[Window]) -> list[EstimateResult]:
    """:func:`estimate_cbpe` of several windows in one pass over their rows (one query per kind of aggregate)."""
    windows = list(windows)
    if not windows:
        return []
    params = {**_params(fit, fit.model, fit.model_version, fit.classes, fit.positive), "grids": fit.grids}
    base = rows(windows, fit.model_version, columns=_columns(fit.task))
    checks = _input_problems(client, fit.task, base, params, fit.classes, windows, what="window")
    usable = [k for k, (_, _, problem) in enumerate(checks, start=1) if not problem]
    # the calibration grids are bound once per query (WITH), not once per use; estimates read no labels
    unlabelled = rows(windows, fit.model_version, columns=_columns(fit.task), labels=False)
    scored = (
        "(WITH {grids:Array(Array(Float64))} AS grids, grids[1] AS grid "
        f"SELECT w, s, {_yp(fit.task)} AS yp, {_calibrated(fit.task, len(fit.classes))} FROM {unlabelled} "
        f"WHERE {_has_score(fit.task)} AND w IN {{usable:Array(UInt32)}})"
    )
    params["usable"] = usable
    estimates: dict[int, tuple[int, dict[str, float]]] = {}
    if usable:
        estimator = _binary_estimates if fit.task == "binary" else _multiclass
        estimates = estimator(client, scored, params)
    realized: dict[int, dict] = {}
    if any(labelled for _, labelled, _ in checks):
        realized = _realized(client, fit.task, base, params, fit.classes, fit.positive, group="w")
    out = []
    for k, (current, (n, labelled, problem)) in enumerate(zip(windows, checks, strict=True), start=1):
        used, values = estimates.get(k, (0, {}))
        note = f"{n - used} of {n} predictions have no score and were left out" if not problem and used < n else ""
        out += _results(fit, current, n, labelled, used, values, realized.get(k, {}), problem or note)
    return out


def _results(
    fit: CBPEFit, current: Window, n: int, labelled: int, used: int, estimates: dict, realized: dict, message: str
) -> list[EstimateResult]:
    details = {
        "positive_label": fit.positive,
        "classes": fit.classes,
        "calibrated": fit.calibrated,
        "reference_sample_rows": fit.sample_rows,
        "scored_rows": used,
    }
    input_hash = window_hash("cbpe", fit, current, n, labelled, details, estimates)
    out = []
    for metric in fit.metrics:
        value = estimates.get(metric)
        error = None
        if value is not None and math.isfinite(value):
            error = _sampling_error(fit, metric, used)
        out.append(
            EstimateResult.of_fit(
                fit,
                method="cbpe",
                task=fit.task,
                metric=metric,
                estimated=value,
                sampling_error=error,
                realized=realized.get(metric),
                current=current,
                predictions=n,
                labelled=labelled,
                message=message,
                details=details,
                input_hash=input_hash,
            )
        )
    return out


def _sampling_error(fit: CBPEFit, metric: str, n: int) -> float:
    component = fit.components.get(metric)
    if component is None:
        return math.nan
    if fit.task == "binary":
        sigma, fraction = component
        return sampling.standard_error(sigma, fraction, n)
    if metric == "accuracy":
        sigma, fraction = component
        return sampling.standard_error(sigma, fraction, n)
    return sampling.multiclass_standard_error(component, n, factor=1.2 if metric == "roc_auc" else 1.0)


# ROC AUC steps: scores on 2^16 cells of [0, 1] (equal scores are one step, as in the exact curve). Rows in one
# cell count as tied; their calibrated probabilities differ by at most the calibration map's rise over 1/65536,
# so the estimate moves by less than that (1e-5 in the agreement tests) while a window of millions of
# predictions is summed over at most 65,537 steps.
AUC_CELLS = 65_536


def _step(score: str) -> str:
    return f"toUInt32(round({score} * {AUC_CELLS}))"


def _auc_sql(scored: str, by_class: bool) -> str:
    """SQL: estimated ROC AUC per window (and class when ``by_class``) from rows of ``scored`` (w, s, p)."""
    if by_class:
        groups = (
            f"SELECT w, k, {_step('sk')} AS score, sum(pk) AS sp, sum(1 - pk) AS sf FROM {scored} "
            "ARRAY JOIN arrayEnumerate(s) AS k, s AS sk, p AS pk GROUP BY w, k, score"
        )
    else:
        groups = (
            f"SELECT w, 1 AS k, {_step('s')} AS score, sum(p) AS sp, sum(1 - p) AS sf FROM {scored} GROUP BY w, score"
        )
    return f"""
        SELECT w, k, arrayReverseSort(groupArray((score, sp, sf))) AS steps,
               arraySum(arrayMap(x -> x.2, steps)) AS positives, arraySum(arrayMap(x -> x.3, steps)) AS negatives,
               arraySum(arrayMap((x, c) -> x.3 * (c - x.2 / 2), steps, arrayCumSum(arrayMap(x -> x.2, steps))))
                   / (positives * negatives)
        FROM ({groups}) GROUP BY w, k ORDER BY w, k
    """


def _aucs(client: Client, scored: str, params: dict, by_class: bool) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for w, _, _, _, _, auc in client.query(
        _auc_sql(scored, by_class), parameters=params, settings=SETTINGS
    ).result_rows:
        out.setdefault(int(w), []).append(float(auc))
    return out


def _binary_estimates(client: Client, scored: str, params: dict) -> dict[int, tuple[int, dict[str, float]]]:
    sums = client.query(
        f"SELECT w, count(), sum(p * yp), sum((1 - p) * yp), sum(p * (1 - yp)), sum((1 - p) * (1 - yp)) "
        f"FROM {scored} GROUP BY w",
        parameters=params,
        settings=SETTINGS,
    ).result_rows
    aucs = _aucs(client, scored, params, by_class=False)
    out = {}
    for w, n, tp, fp, fn, tn in sums:
        out[int(w)] = (
            int(n),
            {
                "roc_auc": aucs.get(int(w), [math.nan])[0],
                "f1": tp / (tp + 0.5 * (fp + fn)) if tp + 0.5 * (fp + fn) else 0.0,
                "precision": tp / (tp + fp) if tp + fp else 0.0,
                "recall": tp / (tp + fn) if tp + fn else 0.0,
                "accuracy": (tp + tn) / n,
            },
        )
    return out


def _multiclass(client: Client, scored: str, params: dict) -> dict[int, tuple[int, dict[str, float]]]:
    sums = client.query(
        f"""
        SELECT w, count(),
               sumForEach(arrayMap((x, k) -> x * (k = yp), p, arrayEnumerate(p))),
               sumForEach(arrayMap((x, k) -> (1 - x) * (k = yp), p, arrayEnumerate(p))),
               sumForEach(arrayMap((x, k) -> x * (k != yp), p, arrayEnumerate(p))),
               avg(arrayElement(p, yp))
        FROM {scored} GROUP BY w
        """,
        parameters=params,
        settings=SETTINGS,
    ).result_rows
    aucs = _aucs(client, scored, params, by_class=True)
    out = {}
    for w, n, tp, fp, fn, accuracy in sums:
        tp, fp, fn = (np.asarray(v, dtype=float) for v in (tp, fp, fn))
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=tp + fp > 0)
        recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=tp + fn > 0)
        f1 = np.divide(tp, tp + 0.5 * (fp + fn), out=np.zeros_like(tp), where=tp + 0.5 * (fp + fn) > 0)
        per_class = aucs.get(int(w), [])
        out[int(w)] = (
            int(n),
            {
                "roc_auc": float(np.mean(per_class)) if per_class else math.nan,
                "f1": float(f1.mean()),
                "precision": float(precision.mean()),
                "recall": float(recall.mean()),
                "accuracy": float(accuracy),
            },
        )
    return out
