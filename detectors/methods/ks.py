"""Two-sample Kolmogorov–Smirnov test."""

from __future__ import annotations

import functools
import math

from driftwarden.detectors.methods.base import DriftMethod, Score, Support
from driftwarden.lazy import numpy as np

EXACT_MAX_N = 10_000  # scipy's MAX_AUTO_N: exact below, Smirnov's asymptotic formula above


class KolmogorovSmirnov(DriftMethod):
    """Two-sample Kolmogorov–Smirnov test on a numeric feature (two-sided).

    The statistic is the largest vertical gap between the two empirical CDFs,

        D = max_x |F_ref(x) - F_cur(x)|,

    evaluated at every observed value (ties handled exactly, as ``scipy.stats.ks_2samp``
    does). The p-value is the probability of a gap at least ``D`` under the null
    hypothesis that both samples come from one continuous distribution: the exact
    distribution when both samples have at most 10,000 rows, Smirnov's asymptotic
    ``kstwo`` distribution with ``n = round(n_ref n_cur / (n_ref + n_cur))`` above — the
    same ``method="auto"`` rule as scipy, so the numbers equal ``ks_2samp``'s and
    Evidently's ``ks`` test's. Drift when ``p <= threshold`` (Evidently's comparison).

    Parameters: ``threshold`` — significance level, default 0.05.
    Effect size: ``D`` itself.

    >>> from driftwarden.detectors.methods.base import Support
    >>> s = Support.from_samples([0.1, 0.4, 0.5, 0.9, 1.3], [1.1, 1.2, 1.6, 2.0, 2.2, 2.5])
    >>> r = KolmogorovSmirnov().score(s)
    >>> round(r.statistic, 4), round(r.p_value, 4), r.drifted
    (0.8, 0.0476, True)

    Reference: Smirnov, N. (1948), "Table for estimating the goodness of fit of empirical
    distributions", Ann. Math. Statist. 19(2); Hodges, J.L. (1958), "The significance
    probability of the Smirnov two-sample test", Arkiv för Matematik 3.
    """

    name = "ks"
    title = "K-S p_value"
    kind = "p_value"
    needs = "support"
    default_threshold = 0.05
    feature_types = ("numeric",)

    def score(self, data: Support, threshold: float | None = None) -> Score:
        threshold = self._threshold(threshold)
        d = float(data.ks_statistic)
        p = ks_p_value(d, data.reference_rows, data.current_rows)
        return Score(self.name, d, p, threshold, self.is_drift(p, threshold), d)

    def is_drift(self, score: float, threshold: float) -> bool:
        """Evidently's KS test drifts at ``p <= threshold`` (its other tests at ``p < threshold``)."""
        return score <= threshold


@functools.cache
def _scipy() -> tuple:
    """``scipy.stats``' ``kstwo`` and its exact two-sided computation (or None), imported at the first p-value:
    ``scipy.stats`` costs a process about 35 MB (BENCHMARKS.md, lean processes), and most drift runs use other
    methods. ``_attempt_exact_2kssamp`` is private, since ``ks_2samp`` has no entry point taking the statistic and
    the sample sizes, and recomputing the p-value any other way would not match it: if a scipy release renames
    it, p-values fall back to the asymptotic formula (tests/test_drift_methods.py then fails on the exact case,
    which is the signal to adapt)."""
    from scipy.stats import distributions

    try:
        from scipy.stats._stats_py import _attempt_exact_2kssamp
    except ImportError:  # pragma: no cover - depends on the scipy release
        _attempt_exact_2kssamp = None
    return distributions.kstwo, _attempt_exact_2kssamp


def ks_p_value(d: float, n1: int, n2: int) -> float:
    """Two-sided p-value of ``D`` for sample sizes ``n1``, ``n2``, with ``ks_2samp``'s ``auto`` method."""
    kstwo, exact = _scipy()
    g = math.gcd(n1, n2)
    exact_possible = exact is not None and (n1 // g) < np.iinfo(np.int32).max / (n2 // g)
    if max(n1, n2) <= EXACT_MAX_N and exact_possible:
        success, _, prob = exact(n1, n2, g, d, "two-sided")
        if success:
            return float(np.clip(prob, 0, 1))
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return float(np.clip(kstwo.sf(d, np.round(en)), 0, 1))
