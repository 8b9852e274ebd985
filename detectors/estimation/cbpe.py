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

Scale: a binary classifier's windows are read in one aggregate without labels — per window, cell of
the calibration grid (4,096 cells of [0, 1]) and predicted class, the count and the sum of the scores.
The calibration map is linear inside a cell, so a cell's calibrated probabilities sum to
n g[c] + (g[c+1] - g[c]) (4096 sum(s) - n c), exactly what a per-row interpolation sums to; the cells
are also the ROC AUC steps (rows of one cell count as tied: their calibrated probabilities differ by at
most the map's rise over a cell). The reference is read once through its join with the labels: per
chunk the input checks, the confusion counts and the realized ROC AUC (the thresholds; from the cells,
within 1e-4 of the exact value, else sorted), a uniform sample by event-id hash (default 50,000 labelled
rows: NannyML's calibration test and the ROC AUC sampling error) and the per-cell histogram of every
labelled row (the isotonic map).
Multiclass windows are calibrated per row in SQL (the grid interpolated, see :mod:`.calibration`) with
ROC AUC on 2^16 score steps. Python receives a few thousand numbers per window.

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
from sklearn.metrics import roc_auc_score

from driftwarden.detectors.estimation import sampling
from driftwarden.detectors.estimation.calibration import GRID_CELLS, fit_grid, sql_interpolate
from driftwarden.detectors.estimation.inputs import (
    SETTINGS,
    TRUTH,
    chunk_count,
    chunk_index,
    labels_observed_since,
    rows,
)
from driftwarden.detectors.estimation.results import EstimateResult, window_hash
from driftwarden.detectors.window import Window

METRICS = ("roc_auc", "f1", "precision", "recall", "accuracy")
SAMPLE_ROWS = 50_000
CANDIDATE_LABELS = 100_000
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


def _classes(
    client: Client, model: str, reference: Window, model_version: str | None, exact: bool = False
) -> tuple[list[str], int]:
    """(classes among the reference labels, its predictions).

    Unless ``exact``, the label classes are candidates read from the first ``CANDIDATE_LABELS`` labels observed
    since the reference began, without a join; fit_cbpe verifies them on the whole reference (both held, no
    other class) and asks for the exact set when they fail."""
    base = rows(reference, model_version, columns="i.event_id AS event_id", labels=False)
    params = {"m": model, "v": model_version or "", "s": reference.start}
    # the reference's predictions and every label of the model observed since the reference began (no join), in
    # one query: when the labels hold two classes, those are the candidates (fit_cbpe checks that the reference
    # holds both); else the exact set
    n, candidates = client.query(
        f"SELECT * FROM (SELECT count() FROM {base}) AS p CROSS JOIN (SELECT groupUniqArrayIf(3)(truth, truth != '') "
        f"FROM (SELECT {TRUTH} AS truth FROM ground_truth WHERE model = {{m:String}} "
        f"AND ts >= {{s:DateTime64(6, 'UTC')}} LIMIT {CANDIDATE_LABELS})) AS l",
        parameters=params,
    ).result_rows[0]
    if not exact and len(candidates) == 2:
        return sorted(map(str, candidates)), n
    version = "" if model_version is None else "AND model_version = {v:String}"
    (truth,) = client.query(
        f"SELECT groupUniqArrayIf(truth, truth != '') FROM (SELECT {TRUTH} AS truth FROM ground_truth FINAL "
        f"WHERE model = {{m:String}} AND event_id IN (SELECT event_id FROM inferences WHERE model = {{m:String}} "
        f"AND NOT is_replay AND {reference.sql()} {version}))",
        parameters=params,
    ).result_rows[0]
    return sorted(map(str, truth)), n


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
    _exact_classes: bool = False,
) -> CBPEFit:
    """Fit CBPE on the labelled, scored ``reference``; ``chunk`` is the length of the windows to estimate."""
    metrics = list(metrics or METRICS)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise EstimationError(f"CBPE estimates {', '.join(METRICS)}, not {', '.join(unknown)}")
    truth_classes, predictions = _classes(client, model, reference, model_version, exact=_exact_classes)
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
    if task == "binary":
        found = _binary_reference(client, fit, base, params, sample_rows, predictions)
        if found is None and _exact_classes:
            raise EstimationError(
                f"the reference {reference} of model {model} has scored, labelled rows of one class only: CBPE "
                "calibrates on the reference and needs both classes among its scored predictions; ingest their "
                "ground truth or choose another reference"
            )
        if found is None:  # the candidate classes were not the reference's: read them exactly
            return fit_cbpe(
                client,
                model,
                reference,
                chunk,
                model_version=model_version,
                positive_label=positive_label,
                metrics=metrics,
                sample_rows=sample_rows,
                _exact_classes=True,
            )
        per_chunk, sample_auc = found
        return _thresholds(fit, per_chunk, sample_auc)
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
    # the sample is drawn on both sides of the join (predictions and labels by the same event-id hash)
    sampled = rows(
        reference, model_version, columns=_columns(task), events=f"cityHash64(event_id) <= {int(keep * (2**64 - 1))}"
    )
    target = "truth = {pos:String}" if task == "binary" else "indexOf({classes:Array(String)}, truth)"
    sample = client.query(
        f"""
        SELECT s, {target} FROM {sampled}
        WHERE has = 1 AND truth != '' AND {_has_score(task)}
        ORDER BY cityHash64(event_id) LIMIT {int(sample_rows)}
        """,
        parameters=params,
        settings=SETTINGS,
    ).result_columns
    if not sample or len(sample[0]) < 2:
        raise EstimationError(f"the reference {reference} of model {model} has fewer than 2 scored, labelled rows")
    fit.sample_rows = len(sample[0])
    matrix = np.array(sample[0], dtype=float)
    truth = np.asarray(sample[1])
    fit.components["roc_auc"] = []
    for k in range(len(classes)):
        y = (truth == k + 1).astype(float)
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
    fit.components.update(sampling.multiclass_components(per_chunk.get(0, {}).get("_matrix")))
    return _thresholds(fit, per_chunk, None)


def _thresholds(fit: CBPEFit, per_chunk: dict[int, dict], roc_auc: float | None) -> CBPEFit:
    """The reference values (group 0), the thresholds from the chunks (groups 1..) and the notes."""
    chunk, metrics = fit.chunk, fit.metrics
    fit.chunks = chunk_count(fit.reference, chunk)
    values = {m: [per_chunk[k][m] for k in range(1, fit.chunks + 1) if k in per_chunk] for m in metrics}
    whole = per_chunk.get(0, {})
    fit.reference_rows = int(whole.get("_labelled", 0))
    fit.reference_values = {m: whole.get(m, math.nan) for m in metrics}
    if roc_auc is not None and "roc_auc" in metrics:
        fit.reference_values["roc_auc"] = roc_auc
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


def _binary_reference(
    client: Client, fit: CBPEFit, base: str, params: dict, sample_rows: int, predictions: int
) -> tuple[dict[int, dict], float] | None:
    """Everything a binary CBPE learns from its reference, in one pass over the labelled reference.

    Per reference chunk: the input checks, the realized confusion counts, the per-cell histogram of its
    labelled rows (the isotonic map, and the realized ROC AUC for the thresholds: :func:`_cell_auc`), and the
    chunk's share of the calibration sample (labelled rows whose event-id hash falls under a bound: uniform, no
    sort). Fills the calibration and the sampling-error components of ``fit`` and returns the realized metrics
    per chunk (group 0: the whole reference) with the ROC AUC of the sample; None when the candidate classes of
    :func:`_classes` are not the reference's."""
    reference, model, classes, positive = fit.reference, fit.model, fit.classes, fit.positive
    bound = int(min(1.0, sample_rows / max(predictions, 1)) * (2**64 - 1))
    labelled = "has = 1 AND truth != '' AND NOT isNaN(s)"
    found = client.query(
        f"""
        SELECT g, count(), countIf(has = 1 AND truth != ''), countIf(NOT isNaN(s)), countIf(s < 0 OR s > 1),
               minIf(s, NOT isNaN(s)), maxIf(s, NOT isNaN(s)),
               groupUniqArrayIf(5)(predicted, predicted != '' AND NOT has({{classes:Array(String)}}, predicted)),
               countIf(l AND NOT has({{classes:Array(String)}}, truth)),
               countIf(l AND y AND yp), countIf(l AND NOT y AND yp), countIf(l AND y AND NOT yp),
               countIf(l AND NOT y AND NOT yp), countIf(l AND y), countIf(l AND NOT y),
               groupArrayIf(x, l AND sampled), groupArrayIf(y, l AND sampled), groupArrayIf(h, l AND sampled),
               sumResample(0, {GRID_CELLS}, 1)(y, c), sumResample(0, {GRID_CELLS}, 1)(x, c),
               countResample(0, {GRID_CELLS}, 1)(c)
        FROM (SELECT {chunk_index(reference, fit.chunk)} + 1 AS g, s, predicted, truth, has,
                     {labelled} AS l, toUInt8(truth = {{pos:String}}) AS y, {_yp("binary")} AS yp,
                     toFloat64(s) AS x, cityHash64(event_id) AS h, h <= {bound} AS sampled,
                     if(l AND x >= 0 AND x <= 1, least(toUInt32(x * {GRID_CELLS}), {GRID_CELLS - 1}), {GRID_CELLS}) AS c
              FROM {base})
        GROUP BY g ORDER BY g
        """,
        parameters=params,
        settings=SETTINGS,
    ).result_rows
    n = sum(r[1] for r in found)
    scored, bad = sum(r[3] for r in found), sum(r[4] for r in found)
    low = min((r[5] for r in found if r[3]), default=0.0)
    high = max((r[6] for r in found if r[3]), default=0.0)
    unseen = sorted({c for r in found for c in r[7]})[:5]
    problem = _message("binary", "the reference", reference, n, scored, bad, low, high, unseen, classes)
    if problem:
        raise EstimationError(problem)
    tp, fp, fn, tn = (sum(r[k] for r in found) for k in (9, 10, 11, 12))
    if sum(r[8] for r in found) or not (tp + fn and fp + tn):
        return None  # another class in the reference, or one of the candidates missing from it
    # in event-hash order (the order of groupArray depends on the engine's threads): the same reference gives
    # the same sample, the same calibration decision and the same splits at every run
    kept = np.argsort(np.concatenate([np.asarray(r[17], dtype=np.uint64) for r in found]), kind="stable")[:sample_rows]
    scores = np.concatenate([np.asarray(r[15], dtype=float) for r in found])[kept]
    y = np.concatenate([np.asarray(r[16], dtype=float) for r in found])[kept]
    if len(scores) < 2:
        raise EstimationError(f"the reference {reference} of model {model} has fewer than 2 scored, labelled rows")
    fit.sample_rows = len(scores)
    # the calibration: decided on the sample (NannyML's test), fitted on every labelled reference row, binned
    # into the grid's cells (their mean score, share positive and count: a weighted isotonic regression)
    cells = np.zeros((3, GRID_CELLS))
    for r in found:
        cells += np.asarray(r[18:21], dtype=float)
    # the reference's realized ROC AUC, shown beside the estimates: exact on the sample (every labelled
    # reference row up to sample_rows); over millions of rows a second sort would cost more than the estimate
    sample_auc = float(roc_auc_score(y, scores)) if 0 < y.sum() < len(y) else math.nan
    grid = fit_grid(y, scores, binned=cells, auc=None if math.isnan(sample_auc) else sample_auc)
    fit.grids, fit.calibrated = [grid or _IDENTITY], [grid is not None]
    fit.components["roc_auc"] = sampling.auroc_component(scores, y)
    fit.components.update(sampling.binary_components(tp, fp, fn, tn))
    # each chunk's realized ROC AUC from its cells, exact to AUC_TOLERANCE; the chunks whose cells cannot
    # guarantee it (scores crowded into few cells) are read again and sorted
    aucs = [_cell_auc(np.asarray(r[18], dtype=float), np.asarray(r[20], dtype=float)) for r in found]
    crowded = [r[0] for r, (_, error) in zip(found, aucs, strict=True) if error > AUC_TOLERANCE]
    exact = _exact_aucs(client, fit, base, params, crowded) if crowded else {}
    counts, auc_rows = [], []
    for r, (auc, _) in zip(found, aucs, strict=True):
        g, (c_tp, c_fp, c_fn, c_tn, pos, neg) = r[0], r[9:15]
        counts += [(g, positive, 1, c_tp), (g, "", 1, c_fp), (g, positive, 0, c_fn), (g, "", 0, c_tn)]
        auc_rows.append((g, 0, pos, neg, exact.get(g, auc)))
    counts += [(0, positive, 1, tp), (0, "", 1, fp), (0, positive, 0, fn), (0, "", 0, tn)]
    return _metrics("binary", classes, positive, counts, auc_rows), sample_auc


AUC_TOLERANCE = 1e-4
"""Largest difference allowed between a reference chunk's realized ROC AUC computed from its score cells and the
exact value (scikit-learn's ``roc_auc_score``); a chunk whose cells cannot guarantee it is sorted instead."""


def _cell_auc(positives: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """ROC AUC of labelled rows binned into ascending score cells, and the most it can differ from the exact value.

    A (positive, negative) pair in two cells is ranked as its scores are; a pair in one cell counts as a tie
    (1/2), as it is exactly when the two scores are equal, and is off by at most 1/2 otherwise: the bound is
    half the share of such pairs. Spread scores make it small (calibrated, uniform scores on 4,096 cells: about
    1/12,000)."""
    negatives = counts - positives
    pairs = positives.sum() * negatives.sum()
    if not pairs:
        return math.nan, 0.0
    below = np.cumsum(negatives) - negatives
    auc = (positives * (below + 0.5 * negatives)).sum() / pairs
    return float(auc), float(0.5 * (positives * negatives).sum() / pairs)


def _exact_aucs(client: Client, fit: CBPEFit, base: str, params: dict, groups: list[int]) -> dict[int, float]:
    """The exact realized ROC AUC of the reference chunks ``groups`` (their labelled rows sorted by score)."""
    found = client.query(
        f"""
        SELECT g, arrayAUC(groupArray(toFloat64(s)), groupArray(truth = {{pos:String}}))
        FROM (SELECT {chunk_index(fit.reference, fit.chunk)} + 1 AS g, s, truth FROM {base}
              WHERE has = 1 AND truth != '' AND NOT isNaN(s))
        WHERE g IN {{groups:Array(UInt32)}}
        GROUP BY g
        """,
        parameters={**params, "groups": groups},
        settings=SETTINGS,
    ).result_rows
    return {int(g): float(auc) for g, auc in found}


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
    by_auc = "GROUPING SETS ((g), ())" if total and task != "binary" else "g"
    by_class = "GROUPING SETS ((g, k), (k))" if total else "g, k"
    if task == "binary":  # one pass: the confusion counts and ROC AUC per group
        counts, auc_rows = [], []
        for g, tp, fp, fn, tn, pos, neg, auc in client.query(
            f"""
            SELECT g, countIf(y AND yp), countIf(NOT y AND yp), countIf(y AND NOT yp), countIf(NOT y AND NOT yp),
                   countIf(y), countIf(NOT y), arrayAUC(groupArray(x), groupArray(y))
            FROM (SELECT {group} AS g, toUInt8(truth = {{pos:String}}) AS y, {_yp(task)} AS yp, toFloat64(s) AS x
                  FROM {base} WHERE {labelled})
            GROUP BY {by_auc}
            """,
            parameters=params,
            settings=SETTINGS,
        ).result_rows:
            counts += [(g, positive, 1, tp), (g, "", 1, fp), (g, positive, 0, fn), (g, "", 0, tn)]
            auc_rows.append((g, 0, pos, neg, auc))
            if total:  # the whole reference: the groups' counts summed (its ROC AUC: fit_cbpe, from the sample)
                counts += [(0, positive, 1, tp), (0, "", 1, fp), (0, positive, 0, fn), (0, "", 0, tn)]
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


def estimate_cbpe(client: Client, fit: CBPEFit, current: Window, *, where: str = "1") -> list[EstimateResult]:
    """Estimated metrics of ``current`` (one result per metric), with realized values where labels exist;
    ``where`` (SQL over ``inferences``) keeps a segment's predictions only."""
    return estimate_cbpe_windows(client, fit, [current], where=where)


def estimate_cbpe_windows(
    client: Client, fit: CBPEFit, windows: Sequence[Window], *, where: str = "1"
) -> list[EstimateResult]:
    """:func:`estimate_cbpe` of several windows in one pass over their rows (one query per kind of aggregate)."""
    windows = list(windows)
    if not windows:
        return []
    params = _params(fit, fit.model, fit.model_version, fit.classes, fit.positive)
    base = rows(windows, fit.model_version, columns=_columns(fit.task), where=where)
    labels = labels_observed_since(client, fit.model, min(w.start for w in windows))
    if fit.task == "binary":
        return _binary_windows(client, fit, windows, params, base if labels else None, where)
    params["grids"] = fit.grids  # bound only where read: 4,097 values per class to format
    checks = _input_problems(client, fit.task, base, params, fit.classes, windows, what="window")
    usable = [k for k, (_, _, problem) in enumerate(checks, start=1) if not problem]
    # the calibration grids are bound once per query (WITH), not once per use; estimates read no labels
    unlabelled = rows(windows, fit.model_version, columns=_columns(fit.task), labels=False, where=where)
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
    return _window_results(fit, windows, checks, estimates, realized)


def _window_results(fit: CBPEFit, windows: list[Window], checks: list, estimates: dict, realized: dict) -> list:
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


# Binary windows in one scan of their predictions: per window, calibration-grid cell of the score and predicted
# class, the count and the sum of the scores. Within a grid cell the calibration map is linear, so the calibrated
# probabilities of a cell sum to n g[c] + (g[c+1] - g[c]) (G sum(s) - n c), exactly what a per-row
# interpolation sums to; the cells are also the ROC AUC steps (rows in one cell count as tied: their calibrated
# probabilities differ by at most the map's rise over 1/4096, and only pairs inside one cell are affected).
_NAN_CELL, _BAD_CELL = GRID_CELLS + 1, GRID_CELLS + 2
_STRIDE = (GRID_CELLS + 3) * 4


def _binary_windows(
    client: Client, fit: CBPEFit, windows: list[Window], params: dict, labelled_base: str | None, where: str
) -> list[EstimateResult]:
    """:func:`estimate_cbpe_windows` of a binary classifier: one aggregate over the windows' predictions (no
    label is read unless labels were observed since the first window began; then the realized metrics too)."""
    unlabelled = rows(windows, fit.model_version, columns=_columns("binary"), labels=False, where=where)
    cell = (
        f"if(isNaN(s), {_NAN_CELL}, if(s < 0 OR s > 1, {_BAD_CELL}, least(toUInt32(s * {GRID_CELLS}), "
        f"{GRID_CELLS - 1})))"
    )
    predicted = "if(predicted = '', 3, indexOf({classes:Array(String)}, predicted))"
    key, count, total = client.query(
        f"SELECT w * {_STRIDE} + {cell} * 4 + {predicted} AS k, count(), sum(if(isNaN(s), 0, s)) "
        f"FROM {unlabelled} GROUP BY k",
        parameters=params,
        settings=SETTINGS,
    ).result_columns or ([], [], [])
    key, count, total = np.asarray(key, dtype=np.int64), np.asarray(count, dtype=float), np.asarray(total, dtype=float)
    window, cells, code = key // _STRIDE, key % _STRIDE // 4, key % 4
    if labelled_base is not None:
        checks = _input_problems(client, "binary", labelled_base, params, fit.classes, windows, what="window")
    else:
        checks = _histogram_checks(client, fit, windows, params, unlabelled, window, cells, code, count)
    estimates = {}
    grid = np.asarray(fit.grids[0])
    positive = fit.classes.index(fit.positive) + 1
    for k, (_, _, problem) in enumerate(checks, start=1):
        mine = (window == k) & (cells < GRID_CELLS)
        if problem or not mine.any():
            continue
        c, n, total_s = cells[mine], count[mine], total[mine]
        p = n * grid[c] + (grid[c + 1] - grid[c]) * (GRID_CELLS * total_s - n * c)
        yp = np.where(code[mine] == 3, c >= GRID_CELLS // 2, code[mine] == positive)
        tp, fp = p[yp].sum(), (n - p)[yp].sum()
        fn, tn = p[~yp].sum(), (n - p)[~yp].sum()
        used = n.sum()
        estimates[k] = (
            int(used),
            {
                "roc_auc": _auc_of_cells(c, p, n - p),
                "f1": tp / (tp + 0.5 * (fp + fn)) if tp + 0.5 * (fp + fn) else 0.0,
                "precision": tp / (tp + fp) if tp + fp else 0.0,
                "recall": tp / (tp + fn) if tp + fn else 0.0,
                "accuracy": (tp + tn) / used,
            },
        )
    realized: dict[int, dict] = {}
    if labelled_base is not None and any(labelled for _, labelled, _ in checks):
        realized = _realized(client, "binary", labelled_base, params, fit.classes, fit.positive, group="w")
    return _window_results(fit, windows, checks, estimates, realized)


def _auc_of_cells(cells: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> float:
    """Estimated ROC AUC from expected positives and negatives per score cell (cells may repeat)."""
    size = GRID_CELLS
    sp = np.bincount(cells, weights=positive, minlength=size)[::-1]  # descending score
    sf = np.bincount(cells, weights=negative, minlength=size)[::-1]
    pos, neg = sp.sum(), sf.sum()
    if pos <= 0 or neg <= 0:
        return math.nan
    return float((sf * (np.cumsum(sp) - sp / 2)).sum() / (pos * neg))


def _histogram_checks(client, fit, windows, params, unlabelled, window, cells, code, count) -> list:
    """:func:`_input_problems` of unlabelled windows from the histogram; the rare details (score range,
    unseen class names) are read only for a window that needs them."""
    out, details = [], {}
    need = [
        k for k in range(1, len(windows) + 1) if count[(window == k) & ((cells == _BAD_CELL) | (code == 0))].sum() > 0
    ]
    if need:
        details = {
            int(r[0]): r[1:]
            for r in client.query(
                f"""
                SELECT w, minIf(s, NOT isNaN(s)), maxIf(s, NOT isNaN(s)),
                       groupUniqArrayIf(5)(predicted, predicted != '' AND NOT has({{classes:Array(String)}}, predicted))
                FROM {unlabelled} WHERE w IN {{need:Array(UInt32)}} GROUP BY w
                """,
                parameters={**params, "need": need},
                settings=SETTINGS,
            ).result_rows
        }
    for k, current in enumerate(windows, start=1):
        mine = window == k
        n = int(count[mine].sum())
        scored = int(count[mine & (cells <= GRID_CELLS)].sum() + count[mine & (cells == _BAD_CELL)].sum())
        bad = int(count[mine & (cells == _BAD_CELL)].sum())
        low, high, unseen = details.get(k, (0.0, 0.0, []))
        out.append((n, 0, _message("binary", "window", current, n, scored, bad, low, high, unseen, fit.classes)))
    return out


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
