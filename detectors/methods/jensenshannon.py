"""Jensen–Shannon distance."""

from __future__ import annotations

import numpy as np

from driftwarden.detectors.methods.base import Counts, DriftMethod, Score


class JensenShannon(DriftMethod):
    """Jensen–Shannon distance between the reference and current distributions.

    With ``P`` and ``Q`` the shares of both samples per bin (or category) and
    ``M = (P + Q) / 2``:

        JS(P, Q) = sqrt( (KL(P || M) + KL(Q || M)) / 2 ),   natural logarithm,

    the square root of the Jensen–Shannon divergence, in [0, sqrt(ln 2)]. Empty bins
    need no smoothing. Bins follow Evidently (categories or distinct values when the
    reference has at most 20, else Sturges' bins over both samples); the value equals
    ``scipy.spatial.distance.jensenshannon`` on those shares. Drift when
    ``JS >= threshold`` (default 0.1).

    Parameters: ``threshold`` — default 0.1.
    Effect size: total variation distance of the binned distributions.

    >>> from driftwarden.detectors.methods.base import Counts
    >>> c = Counts(("a", "b", "c"), (50, 30, 20), (30, 30, 40))
    >>> r = JensenShannon().score(c)
    >>> round(r.statistic, 4), r.drifted
    (0.1721, True)

    Reference: Lin, J. (1991), "Divergence measures based on the Shannon entropy",
    IEEE Trans. Inf. Theory 37(1); Endres, D. M., Schindelin, J. E. (2003), "A new
    metric for probability distributions", IEEE Trans. Inf. Theory 49(7).
    """

    name = "jensenshannon"
    title = "Jensen-Shannon distance"
    kind = "distance"
    needs = "counts"
    default_threshold = 0.1
    feature_types = ("numeric", "categorical")

    def score(self, data: Counts, threshold: float | None = None) -> Score:
        threshold = self._threshold(threshold)
        ref, cur = data.shares()
        value = jensenshannon(ref, cur)
        return Score(self.name, value, None, threshold, value >= threshold, data.total_variation())


def jensenshannon(p: np.ndarray, q: np.ndarray) -> float:
    """``scipy.spatial.distance.jensenshannon(p, q)`` (natural logarithm), the same arithmetic in numpy:
    ``scipy.spatial`` would load ``scipy.sparse``, ``scipy.linalg`` and ``scipy.special`` with it, about 30 MB of a
    drift run's memory (BENCHMARKS.md, lean processes)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2.0
    return float(np.sqrt((_rel_entr(p, m).sum() + _rel_entr(q, m).sum()) / 2.0))


def _rel_entr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``scipy.special.rel_entr``: ``x log(x / y)`` where both are positive, 0 where ``x`` is 0 and ``y`` is not
    negative, infinity elsewhere, NaN where either is."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = x * np.log(x / y)
    terms = np.where((x > 0) & (y > 0), terms, np.where((x == 0) & (y >= 0), 0.0, np.inf))
    return np.where(np.isnan(x) | np.isnan(y), np.nan, terms)
