"""Pearson's chi-squared test of the current category counts against the reference shares."""

from __future__ import annotations

import warnings

from driftwarden.detectors.methods.base import Counts, DriftMethod, Score
from driftwarden.lazy import numpy as np


class ChiSquare(DriftMethod):
    """Chi-squared goodness-of-fit test of the current counts against the reference proportions.

    Over the categories seen in either sample, the expected current count of category
    ``i`` is its reference count scaled to the current sample size:

        E_i = ref_i * n_cur / n_ref
        X^2 = sum_i (cur_i - E_i)^2 / E_i,   p = P(chi2_{k-1} >= X^2)

    exactly as Evidently's ``chisquare`` test calls ``scipy.stats.chisquare``; a
    category absent from the reference has ``E_i = 0``, hence ``X^2 = inf`` and
    ``p = 0``. Drift when ``p < threshold``.

    That test treats the reference shares as exact. When the reference window is not
    much larger than the current one its own sampling noise inflates ``X^2`` (by about
    ``1 + n_cur / n_ref``) and the false-positive rate far exceeds ``threshold``
    (measured in tests/test_drift_fpr.py). ``homogeneity=True`` runs Pearson's
    two-sample test of homogeneity on the 2 x k table instead
    (``scipy.stats.chi2_contingency``, no continuity correction), which accounts for
    both samples' noise:

        E_si = n_s (ref_i + cur_i) / (n_ref + n_cur),   X^2 = sum_s,i (O_si - E_si)^2 / E_si

    Parameters: ``threshold`` — significance level, default 0.05; ``homogeneity`` —
    two-sample test instead of Evidently's goodness of fit (default False).
    Effect size: total variation distance of the two category distributions.

    >>> from driftwarden.detectors.methods.base import Counts
    >>> c = Counts(("a", "b", "c"), (50, 30, 20), (30, 30, 40))
    >>> r = ChiSquare().score(c)
    >>> round(r.statistic, 2), round(r.p_value, 6), r.drifted
    (28.0, 1e-06, True)

    Reference: Pearson, K. (1900), "On the criterion that a given system of deviations
    from the probable ...", Philosophical Magazine 50(302).
    """

    name = "chisquare"
    title = "chi-square p_value"
    kind = "p_value"
    needs = "counts"
    default_threshold = 0.05
    feature_types = ("categorical", "numeric")

    def __init__(self, homogeneity: bool = False) -> None:
        self.homogeneity = homogeneity

    def score(self, data: Counts, threshold: float | None = None) -> Score:
        threshold = self._threshold(threshold)
        if self.homogeneity:
            return self._homogeneity(data, threshold)
        observed = np.asarray(data.current, dtype=float)
        expected = np.asarray(data.reference, dtype=float) * (data.current_rows / data.reference_rows)
        from scipy.stats import chisquare  # at the first score: scipy.stats weighs ~35 MB (see methods.ks)

        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            statistic, p_value = chisquare(observed, expected)
        p = float(p_value)
        return Score(self.name, float(statistic), p, threshold, p < threshold, data.total_variation())

    def _homogeneity(self, data: Counts, threshold: float) -> Score:
        table = np.array([data.reference, data.current], dtype=float)
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            return Score(self.name, 0.0, 1.0, threshold, False, 0.0)
        from scipy.stats import chi2_contingency

        statistic, p_value, _, _ = chi2_contingency(table, correction=False)
        p = float(p_value)
        return Score(self.name, float(statistic), p, threshold, p < threshold, data.total_variation())

    def __repr__(self) -> str:
        return f"ChiSquare(homogeneity={self.homogeneity})"
