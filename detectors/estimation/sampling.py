"""Sampling errors of estimated metrics and alert thresholds from reference chunks, as NannyML computes them.

Sampling error (NannyML ``sampling_error/``): the metric of a window of ``n`` predictions
varies from window to window even when nothing changed. Its standard error is taken from
the reference as ``sigma / sqrt(n * f)``, where ``sigma`` is the standard deviation of an
observation-level quantity on the reference and ``f`` the share of observations relevant to
the metric; every quantity below depends on the reference confusion counts only
(TP, FP, FN, TN of the positive class, or per class one-vs-rest):

* accuracy: sigma = sqrt(a (1 - a)), a = share correct, f = 1;
* precision: sigma = sqrt(q (1 - q)), q = TP / (TP + FP), f = (TP + FP) / n;
* recall: sigma = sqrt(r (1 - r)), r = TP / (TP + FN), f = (TP + FN) / n;
* F1 (binary): the observations TP -> 1, FP and FN -> 0, scaled by m / (TP + (FP + FN) / 2) with
  m = TP + FP + FN: sigma = that factor * sqrt(t (1 - t)), t = TP / m, f = m / n;
* ROC AUC: for each positive in score order, the share of negatives ranked below it
  (classes swapped when positives are the majority); sigma is their standard deviation and
  f = share of positives (Hanley & McNeil 1982, as NannyML);
* MAE / RMSE (DLE): sigma = standard deviation of the absolute (squared) errors on the reference;
  for RMSE the error of the mean squared error is carried through the square root.

Multiclass (macro averages): with per-class variances v_c and shares f_c,
SE = sqrt(sum_c v_c / (n f_c)) / K (times 1.2 for ROC AUC, as NannyML); accuracy as binary.

Thresholds (NannyML ``StandardDeviationThreshold``): the realized metric on each reference
chunk, mean +- 3 standard deviations (population), clipped to the metric's range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

STD_MULTIPLIER = 3.0


def _bernoulli_std(k: float, m: float) -> float:
    if m <= 0:
        return math.nan
    q = k / m
    return math.sqrt(max(q * (1 - q), 0.0))


def binary_components(tp: float, fp: float, fn: float, tn: float) -> dict[str, tuple[float, float]]:
    """``{metric: (sigma, f)}`` for accuracy, precision, recall and F1 from reference confusion counts."""
    n = tp + fp + fn + tn
    m = tp + fp + fn
    factor = m / (tp + 0.5 * (fp + fn)) if tp + 0.5 * (fp + fn) > 0 else math.nan
    return {
        "accuracy": (_bernoulli_std(tp + tn, n), 1.0),
        "precision": (_bernoulli_std(tp, tp + fp), (tp + fp) / n if n else math.nan),
        "recall": (_bernoulli_std(tp, tp + fn), (tp + fn) / n if n else math.nan),
        "f1": (factor * _bernoulli_std(tp, m), m / n if n else math.nan),
    }


def multiclass_components(matrix: np.ndarray) -> dict[str, list[tuple[float, float]] | tuple[float, float]]:
    """Per-class ``(variance, f)`` for precision, recall and F1, and ``(sigma, 1)`` for accuracy.

    ``matrix[i, j]`` counts reference rows of true class i predicted as class j.
    """
    n = matrix.sum()
    out: dict = {"precision": [], "recall": [], "f1": []}
    for c in range(matrix.shape[0]):
        tp = matrix[c, c]
        fp = matrix[:, c].sum() - tp
        fn = matrix[c, :].sum() - tp
        out["precision"].append((_bernoulli_std(tp, tp + fp) ** 2, (tp + fp) / n))
        out["recall"].append((_bernoulli_std(tp, tp + fn) ** 2, (tp + fn) / n))
        out["f1"].append((_bernoulli_std(tp, tp + fp + fn) ** 2, (tp + fp + fn) / n))
    out["accuracy"] = (_bernoulli_std(np.trace(matrix), n), 1.0)
    return out


def auroc_component(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """``(sigma, f)`` of ROC AUC from reference scores and 0/1 truth (NannyML's rank formula)."""
    truth = np.asarray(truth, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if truth.size == 0 or truth.min() == truth.max():
        return math.nan, 0.0
    if truth.mean() > 0.5:
        truth, scores = 1 - truth, 1 - scores
    order = np.argsort(scores, kind="stable")
    truth = truth[order]
    n_pos = truth.sum()
    n_neg = truth.size - n_pos
    negatives_below = np.cumsum(1 - truth)[truth == 1]
    return float(np.std(negatives_below / n_neg)), float(n_pos / truth.size)


def standard_error(sigma: float, fraction: float, n: int) -> float:
    """``sigma / sqrt(n f)``: NaN when undefined."""
    if n <= 0 or not fraction or not math.isfinite(sigma) or not math.isfinite(fraction):
        return math.nan
    return sigma / math.sqrt(n * fraction)


def multiclass_standard_error(components: Sequence[tuple[float, float]], n: int, factor: float = 1.0) -> float:
    """``sqrt(sum_c v_c / (n f_c)) / K``, times ``factor``."""
    terms = [v / (n * f) for v, f in components if f and n and math.isfinite(v)]
    if not terms or len(terms) != len(components):
        return math.nan
    return math.sqrt(sum(terms)) / len(components) * factor


def thresholds(values: Sequence[float], lower_limit: float | None, upper_limit: float | None) -> tuple[float, float]:
    """Mean +- 3 standard deviations of the realized reference chunk values, clipped to the metric's range."""
    data = np.asarray([v for v in values if v is not None], dtype=float)
    if data.size == 0 or np.all(np.isnan(data)):
        return math.nan, math.nan
    mean, std = float(np.nanmean(data)), float(np.nanstd(data))
    lower, upper = mean - STD_MULTIPLIER * std, mean + STD_MULTIPLIER * std
    if lower_limit is not None and lower <= lower_limit:
        lower = lower_limit
    if upper_limit is not None and upper >= upper_limit:
        upper = upper_limit
    return lower, upper


def alert(value: float | None, lower: float, upper: float) -> bool:
    """The estimate left the thresholds."""
    if value is None or not math.isfinite(value):
        return False
    return (math.isfinite(lower) and value < lower) or (math.isfinite(upper) and value > upper)
