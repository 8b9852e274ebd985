"""Jensen–Shannon distance."""

from __future__ import annotations

from scipy.spatial import distance

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
        value = float(distance.jensenshannon(ref, cur))
        return Score(self.name, value, None, threshold, value >= threshold, data.total_variation())
