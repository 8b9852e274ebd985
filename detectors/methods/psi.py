"""Population Stability Index."""

from __future__ import annotations

from driftwarden.detectors.methods.base import Counts, DriftMethod, Score
from driftwarden.lazy import numpy as np


def fill_zero_shares(shares: np.ndarray) -> np.ndarray:
    """Replace empty bins by a small share, as Evidently does, so that the logarithm stays finite.

    The fill is ``min(nonzero) / 1e6`` when the smallest non-empty share is at most
    1e-4, else 1e-4.
    """
    out = shares.copy()
    nonzero = out[out != 0]
    if nonzero.size:
        smallest = nonzero.min()
        out[out == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return out


class PopulationStabilityIndex(DriftMethod):
    """Population Stability Index between the reference and current distributions.

    With ``r_i`` and ``c_i`` the shares of the reference and current samples in bin
    (or category) ``i``, empty shares replaced by a small constant (see
    :func:`fill_zero_shares`):

        PSI = sum_i (r_i - c_i) ln(r_i / c_i)

    Bins follow Evidently: categories (or the distinct values of a numeric feature
    with at most 20 reference values), else Sturges' equal-width bins over the range
    of both samples together. Drift when ``PSI >= threshold`` (default 0.1; 0.25 is
    the customary "significant shift").

    Parameters: ``threshold`` — default 0.1.
    Effect size: total variation distance of the binned distributions.

    >>> from driftwarden.detectors.methods.base import Counts
    >>> c = Counts(("a", "b", "c"), (50, 30, 20), (30, 30, 40))
    >>> r = PopulationStabilityIndex().score(c)
    >>> round(r.statistic, 4), r.drifted
    (0.2408, True)

    Reference: Yurdakul, B. (2018), "Statistical properties of population stability
    index", Western Michigan University dissertation 3208; Siddiqi, N. (2006), "Credit
    Risk Scorecards", Wiley.
    """

    name = "psi"
    title = "PSI"
    kind = "distance"
    needs = "counts"
    default_threshold = 0.1
    feature_types = ("numeric", "categorical")

    def score(self, data: Counts, threshold: float | None = None) -> Score:
        threshold = self._threshold(threshold)
        ref, cur = (fill_zero_shares(np.asarray(shares, dtype=np.float64)) for shares in data.shares())
        value = float(np.sum((ref - cur) * np.log(ref / cur)))
        return Score(self.name, value, None, threshold, value >= threshold, data.total_variation())
