"""Calibration of a model's scores on the reference, and its form as a grid that SQL interpolates.

CBPE reads a calibrated score as the probability that the prediction is of the class:
when the reference shows that the scores are not calibrated, an isotonic regression of the
label on the score is fitted on the reference (scikit-learn's ``IsotonicRegression``, clipped
out of bounds), exactly when NannyML fits one (``nannyml.calibration.needs_calibration``):

* not when the reference labels hold one class, nor when the reference ROC AUC > 0.999;
* else ten stratified 90/10 splits (seed 42): fit on 90 %, calibrate the 10 %, and compare the
  expected calibration error (ECE, ten equal-count bins of the sorted scores, weighted
  |mean score - mean label|) of the pooled test scores before and after; calibrate when it fell.

The fitted map is piecewise linear; :func:`grid` evaluates it on ``GRID_CELLS + 1`` equally spaced
points of [0, 1] and the SQL interpolates linearly between them (:func:`sql_interpolate`), so every
prediction of a window is calibrated inside ClickHouse. Between two grid points the
interpolation differs from the isotonic map only where the map bends inside the cell
(at most the map's rise over one cell, 1/4096 of the score range).

Reference: Guo et al., "On Calibration of Modern Neural Networks" (2017) for the ECE; NannyML
``nannyml/calibration.py``.
"""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit

GRID_CELLS = 4096


def _bin_edges(length: int, bins: int) -> list[tuple[int, int]]:
    if length <= 2 * bins:
        bins = length // 2
    width = length // bins
    edges = np.asarray(range(0, length + 1, width))
    edges[-1] = length
    return list(zip(edges[:-1], edges[1:], strict=True))


def _ece(truth: np.ndarray, scores: np.ndarray, edges: list[tuple[int, int]]) -> float:
    order = scores.argsort()
    scores, truth = scores[order], truth[order]
    return float(sum((r - left) / len(scores) * abs(scores[left:r].mean() - truth[left:r].mean()) for left, r in edges))


def needs_calibration(truth: np.ndarray, scores: np.ndarray, bins: int = 10, splits: int = 10) -> bool:
    """Whether isotonic calibration lowers the expected calibration error on held-out reference rows."""
    truth = np.asarray(truth, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if len(np.unique(truth)) == 1 or len(truth) < 40:
        return False
    if roc_auc_score(truth, scores) > 0.999:
        return False
    tests, before, after = [], [], []
    for train, test in StratifiedShuffleSplit(n_splits=splits, test_size=0.1, random_state=42).split(scores, truth):
        fitted = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(scores[train], truth[train])
        tests.append(truth[test])
        before.append(scores[test])
        after.append(fitted.predict(scores[test]))
    y, s, c = np.concatenate(tests), np.concatenate(before), np.concatenate(after)
    edges = _bin_edges(len(s), bins)
    return _ece(y, s, edges) > _ece(y, c, edges)


def fit_grid(truth: np.ndarray, scores: np.ndarray, binned: np.ndarray | None = None) -> list[float] | None:
    """The calibration map on the grid, or None when the scores need no calibration.

    The decision is taken on ``truth``/``scores``; the map is fitted on them, or on ``binned`` when given:
    rows (positives, sum of scores, count) per grid cell of every labelled reference row, fitted as a
    weighted isotonic regression of the cells' share of positives on their mean score (PAV pools adjacent
    rows; pooling the rows of one cell first changes the map only inside a cell)."""
    if not needs_calibration(truth, scores):
        return None
    regression = IsotonicRegression(out_of_bounds="clip", increasing=True)
    if binned is not None and binned[2].sum() > 0:
        used = binned[2] > 0
        positives, sums, counts = binned[0][used], binned[1][used], binned[2][used]
        fitted = regression.fit(sums / counts, positives / counts, sample_weight=counts)
    else:
        fitted = regression.fit(scores, truth)
    return [float(v) for v in fitted.predict(np.linspace(0.0, 1.0, GRID_CELLS + 1))]


def sql_interpolate(score: str, grid: str) -> str:
    """SQL: the calibrated value of ``score`` (an expression in [0, 1]) on the grid array ``grid``."""
    cell = f"least(toUInt32(floor({score} * {GRID_CELLS})), {GRID_CELLS - 1})"
    return (
        f"(arrayElement({grid}, {cell} + 1) + (arrayElement({grid}, {cell} + 2) - arrayElement({grid}, {cell} + 1))"
        f" * ({score} * {GRID_CELLS} - {cell}))"
    )
