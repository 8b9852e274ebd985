"""Jensen–Shannon distance."""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def jensenshannon(p: Sequence[float], q: Sequence[float]) -> float:
    """``scipy.spatial.distance.jensenshannon(p, q)`` (natural logarithm), the same arithmetic in plain Python:
    ``scipy.spatial`` would load ``scipy.sparse``, ``scipy.linalg`` and ``scipy.special`` with it, about 30 MB of a
    drift run's memory, and numpy 14 more (BENCHMARKS.md, lean processes). The sums are ``math.fsum``'s
    (correctly rounded, where numpy's pairwise sums may differ in the last bit). NaN for an empty sample, as
    scipy."""
    p_total, q_total = math.fsum(p), math.fsum(q)
    if not (p_total and q_total):
        return math.nan  # 0 / 0, as numpy divides
    p = [x / p_total for x in p]
    q = [x / q_total for x in q]
    m = [(x + y) / 2.0 for x, y in zip(p, q, strict=True)]
    divergence = math.fsum(_rel_entr(x, y) for x, y in zip(p + q, m + m, strict=True)) / 2.0
    return math.sqrt(divergence) if divergence >= 0 else math.nan  # NaN stays NaN; a rounding below 0, as numpy


def _rel_entr(x: float, y: float) -> float:
    """``scipy.special.rel_entr``: ``x log(x / y)`` where both are positive, 0 where ``x`` is 0 and ``y`` is not
    negative, infinity elsewhere, NaN where either is."""
    if math.isnan(x) or math.isnan(y):
        return math.nan
    if x > 0 and y > 0:
        return x * math.log(x / y)
    return 0.0 if x == 0 and y >= 0 else math.inf
