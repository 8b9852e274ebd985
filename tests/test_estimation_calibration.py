"""The calibration test of CBPE (NannyML's ``needs_calibration``) gives scikit-learn's answers, faster.

:func:`stratified_splits` must draw the same rows as ``StratifiedShuffleSplit`` and
:func:`_isotonic_predict` must predict what ``IsotonicRegression`` predicts, bit for bit, so that the
decision to calibrate is the one the reference implementation takes.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import StratifiedShuffleSplit

from driftwarden.detectors.estimation.calibration import (
    _bin_edges,
    _ece,
    _isotonic_predict,
    needs_calibration,
    stratified_splits,
)


def _data(seed: int, n: int, decimals: int | None, classes: int = 2):
    rng = np.random.default_rng(seed)
    scores = rng.beta(0.6, 0.6, n)
    if decimals is not None:
        scores = np.round(scores, decimals)  # many tied scores
    truth = (rng.random(n) < scores).astype(float) if classes == 2 else rng.integers(0, classes, n).astype(float)
    return scores, truth


@pytest.mark.parametrize(("seed", "n", "classes"), [(1, 50_000, 2), (2, 997, 2), (3, 5_000, 3), (4, 41, 2)])
def test_stratified_splits_draw_the_rows_scikit_learn_draws(seed, n, classes):
    _, truth = _data(seed, n, None, classes)
    expected = list(StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=42).split(truth, truth))
    ours = list(stratified_splits(truth, 10, 0.1, 42))
    assert len(ours) == len(expected) == 10
    for (train, test), (want_train, want_test) in zip(ours, expected, strict=True):
        assert np.array_equal(train, want_train)
        assert np.array_equal(test, want_test)


@pytest.mark.parametrize(("seed", "decimals"), [(5, None), (6, 3), (7, 1)])
def test_isotonic_predictions_equal_scikit_learns_bit_for_bit(seed, decimals):
    scores, truth = _data(seed, 20_000, decimals)
    order = np.lexsort((truth, scores))
    for train, test in stratified_splits(truth, 3, 0.1, seed):
        want = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(scores[train], truth[train])
        assert np.array_equal(_isotonic_predict(scores, truth, order, train, test), want.predict(scores[test]))


def test_isotonic_prediction_near_ties_takes_scikit_learns_pooling():
    scores, truth = _data(8, 2_000, None)
    scores[1::2] = scores[::2] + 4e-16  # distinct floats closer than the resolution (1e-15): scikit-learn pools them
    order = np.lexsort((truth, scores))
    steps = np.diff(scores[order])
    assert ((steps > 0) & (steps < np.finfo(float).resolution)).any()
    train, test = next(stratified_splits(truth, 1, 0.1, 0))
    want = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(scores[train], truth[train])
    assert np.array_equal(_isotonic_predict(scores, truth, order, train, test), want.predict(scores[test]))


def _reference_decision(truth, scores) -> bool:
    """NannyML's test written with scikit-learn's classes, as the module did before (the oracle; the ECE
    and its bins are the module's, unchanged)."""
    tests, before, after = [], [], []
    for train, test in StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=42).split(scores, truth):
        fitted = IsotonicRegression(out_of_bounds="clip", increasing=True).fit(scores[train], truth[train])
        tests.append(truth[test])
        before.append(scores[test])
        after.append(fitted.predict(scores[test]))
    y, s, c = np.concatenate(tests), np.concatenate(before), np.concatenate(after)
    edges = _bin_edges(len(s), 10)
    return _ece(y, s, edges) > _ece(y, c, edges)


@pytest.mark.parametrize("skew", [0.0, 0.15, -0.2])
def test_calibration_decision_is_the_reference_implementations(skew):
    rng = np.random.default_rng(11)
    true_p = rng.beta(0.8, 0.8, 30_000)
    truth = (rng.random(30_000) < true_p).astype(float)
    scores = np.clip(true_p + skew * true_p * (1 - true_p) * 4, 0, 1)  # calibrated (0) or bent (±)
    assert needs_calibration(truth, scores) == _reference_decision(truth, scores)
    if skew:
        assert needs_calibration(truth, scores)  # a bent map is worth calibrating
