"""Wasserstein distance normalised by the reference standard deviation."""

from __future__ import annotations

from driftwarden.detectors.methods.base import DriftMethod, Score, Support

STD_FLOOR = 0.001  # Evidently's floor, so that a constant reference does not divide by zero


class Wasserstein(DriftMethod):
    """First Wasserstein (earth mover's) distance between two numeric samples, in reference standard deviations.

    The distance is the area between the two empirical CDFs, computed exactly over
    the merged sorted support ``x_1 < ... < x_k`` of both samples:

        W = sum_{i<k} |F_ref(x_i) - F_cur(x_i)| (x_{i+1} - x_i)
        score = W / max(std_ref, 0.001)

    with ``std_ref`` the population standard deviation (ddof=0) of the reference —
    ``scipy.stats.wasserstein_distance`` divided as Evidently's ``wasserstein`` test
    does. Drift when ``score >= threshold``; 0.1 means the current distribution moved by
    a tenth of a reference standard deviation.

    Parameters: ``threshold`` — default 0.1.
    Effect size: the score itself.

    >>> from driftwarden.detectors.methods.base import Support
    >>> s = Support.from_samples([0.0, 1.0, 2.0, 3.0], [0.5, 1.5, 2.5, 3.5])
    >>> r = Wasserstein().score(s)
    >>> round(r.statistic, 4), r.drifted
    (0.4472, True)

    Reference: Vaserstein, L. N. (1969), "Markov processes over denumerable products of
    spaces describing large systems of automata", Problems Inform. Transmission 5(3);
    Ramdas, García Trillos, Cuturi (2017), "On Wasserstein two-sample testing", Entropy 19(2).
    """

    name = "wasserstein"
    title = "Wasserstein distance (normed)"
    kind = "distance"
    needs = "support"
    default_threshold = 0.1
    feature_types = ("numeric",)

    def score(self, data: Support, threshold: float | None = None) -> Score:
        threshold = self._threshold(threshold)
        value = float(data.wasserstein) / max(float(data.reference_std), STD_FLOOR)
        return Score(self.name, value, None, threshold, value >= threshold, value)
