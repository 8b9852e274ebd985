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

The test's 20 fits cost what a fit costs (the sort): the rows are sorted once and every split's
training rows are read off that order, and the splits are scikit-learn's (same generator, same draws)
without its per-row Python lists; the fits and predictions equal ``IsotonicRegression``'s bit for bit
(tests/test_estimation_calibration.py).

Reference: Guo et al., "On Calibration of Modern Neural Networks" (2017) for the ECE; NannyML
``nannyml/calibration.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from scipy.interpolate import interp1d
from sklearn.isotonic import IsotonicRegression, isotonic_regression
from sklearn.metrics import roc_auc_score
from sklearn.utils import check_random_state
from sklearn.utils.extmath import _approximate_mode

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


def stratified_splits(
    truth: np.ndarray, splits: int, test_size: float, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The (train, test) indices of ``StratifiedShuffleSplit(splits, test_size=test_size, random_state=seed)``.

    The same draws from the same generator in the same order (scikit-learn 1.9's ``_iter_indices``), with
    each class's rows gathered as arrays instead of Python lists of numpy integers (five times faster)."""
    n_test = math.ceil(test_size * len(truth))
    n_train = len(truth) - n_test
    _, inverse, counts = np.unique(truth, return_inverse=True, return_counts=True)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = check_random_state(seed)
    for _ in range(splits):
        n_i = _approximate_mode(counts, n_train, rng)
        t_i = _approximate_mode(counts - n_i, n_test, rng)
        train, test = [], []
        for i, rows in enumerate(members):
            drawn = rows.take(rng.permutation(counts[i]), mode="clip")
            train.append(drawn[: n_i[i]])
            test.append(drawn[n_i[i] : n_i[i] + t_i[i]])
        yield rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _isotonic_predict(scores: np.ndarray, truth: np.ndarray, order: np.ndarray, train: np.ndarray, test: np.ndarray):
    """``IsotonicRegression(out_of_bounds="clip").fit(scores[train], truth[train]).predict(scores[test])``.

    ``order`` sorts all rows by (score, truth); the training rows keep that order, so no sort is needed.
    Duplicate scores are pooled (mean label, weight the count), the pool-adjacent-violators fit is
    scikit-learn's, and the prediction interpolates the same trimmed points with the same ``interp1d``."""
    chosen = np.zeros(len(scores), dtype=bool)
    chosen[train] = True
    rows = order[chosen[order]]
    x, y = scores[rows], truth[rows]
    steps = np.diff(x)
    if ((steps > 0) & (steps < np.finfo(x.dtype).resolution)).any():  # scikit-learn pools such near-ties
        return IsotonicRegression(out_of_bounds="clip", increasing=True).fit(x, y).predict(scores[test])
    starts = np.flatnonzero(np.r_[True, steps != 0])
    weights = np.diff(np.r_[starts, len(x)]).astype(x.dtype)
    unique_x = x[starts]
    fitted = isotonic_regression(np.add.reduceat(y, starts) / weights, sample_weight=weights, increasing=True)
    keep = np.ones(len(fitted), dtype=bool)
    keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
    points = np.clip(scores[test], unique_x[0], unique_x[-1])
    if keep.sum() == 1:
        return fitted[keep].repeat(points.shape)
    return interp1d(unique_x[keep], fitted[keep], kind="linear", bounds_error=False)(points).astype(points.dtype)


def needs_calibration(
    truth: np.ndarray, scores: np.ndarray, bins: int = 10, splits: int = 10, auc: float | None = None
) -> bool:
    """Whether isotonic calibration lowers the expected calibration error on held-out reference rows.

    ``auc``: the ROC AUC of ``scores`` against ``truth`` when the caller has it already."""
    truth = np.asarray(truth, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if len(np.unique(truth)) == 1 or len(truth) < 40:
        return False
    if (roc_auc_score(truth, scores) if auc is None else auc) > 0.999:
        return False
    order = np.lexsort((truth, scores))
    tests, before, after = [], [], []
    for train, test in stratified_splits(truth, splits, 0.1, 42):
        tests.append(truth[test])
        before.append(scores[test])
        after.append(_isotonic_predict(scores, truth, order, train, test))
    y, s, c = np.concatenate(tests), np.concatenate(before), np.concatenate(after)
    edges = _bin_edges(len(s), bins)
    return _ece(y, s, edges) > _ece(y, c, edges)


def fit_grid(
    truth: np.ndarray, scores: np.ndarray, binned: np.ndarray | None = None, auc: float | None = None
) -> list[float] | None:
    """The calibration map on the grid, or None when the scores need no calibration.

    The decision is taken on ``truth``/``scores``; the map is fitted on them, or on ``binned`` when given:
    rows (positives, sum of scores, count) per grid cell of every labelled reference row, fitted as a
    weighted isotonic regression of the cells' share of positives on their mean score (PAV pools adjacent
    rows; pooling the rows of one cell first changes the map only inside a cell)."""
    if not needs_calibration(truth, scores, auc=auc):
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
