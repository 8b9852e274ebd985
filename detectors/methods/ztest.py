"""Two-proportion Z-test for a binary feature."""

from __future__ import annotations

import math

from driftwarden.detectors.methods.base import Counts, DriftMethod, Score


class ZTest(DriftMethod):
    """Two-sided Z-test for the difference of two proportions, for a feature with two values.

    With the keys sorted, ``p_ref`` and ``p_cur`` are the shares of rows *not* equal
    to the first key (as Evidently encodes it), ``P`` the pooled share:

        P = (p_ref n_ref + p_cur n_cur) / (n_ref + n_cur)
        z = (p_ref - p_cur) / sqrt(P (1 - P) (1/n_ref + 1/n_cur))
        p = 2 (1 - Phi(|z|))

    When both samples hold the same single value, ``p = 1``. Drift when ``p < threshold``.

    Parameters: ``threshold`` — significance level, default 0.05.
    Effect size: ``|p_ref - p_cur|``.

    >>> from driftwarden.detectors.methods.base import Counts
    >>> c = Counts(("no", "yes"), (400, 100), (330, 170))
    >>> r = ZTest().score(c)
    >>> round(r.statistic, 3), r.p_value < 1e-6, r.drifted
    (-4.986, True, True)

    Reference: Fleiss, J. L., Levin, B., Paik, M. C. (2003), "Statistical Methods for
    Rates and Proportions", 3rd ed., Wiley, section 2.4.
    """

    name = "ztest"
    title = "Z-test p_value"
    kind = "p_value"
    needs = "counts"
    default_threshold = 0.05
    feature_types = ("categorical", "numeric")

    def score(self, data: Counts, threshold: float | None = None) -> Score:
        threshold = self._threshold(threshold)
        present = [i for i in range(len(data.keys)) if data.reference[i] or data.current[i]]
        ref_keys = [i for i in present if data.reference[i]]
        cur_keys = [i for i in present if data.current[i]]
        n1, n2 = data.reference_rows, data.current_rows
        if len(ref_keys) == 1 and cur_keys == ref_keys:
            return Score(self.name, 0.0, 1.0, threshold, False, 0.0)
        first = present[0]  # Counts keys are sorted; Evidently codes the first key as 0, the rest as 1
        p1 = (n1 - data.reference[first]) / n1
        p2 = (n2 - data.current[first]) / n2
        pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
        denominator = math.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
        z = (p1 - p2) / denominator if denominator else math.copysign(math.inf, p1 - p2) if p1 != p2 else 0.0
        from scipy.stats import norm  # at the first score: scipy.stats weighs ~35 MB (see methods.ks)

        p = float(2 * (1 - norm.cdf(abs(z)))) if math.isfinite(z) else 0.0
        return Score(self.name, float(z), p, threshold, p < threshold, abs(p1 - p2))
