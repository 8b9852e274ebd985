"""Maximum mean discrepancy between two samples of embeddings (Evidently's ``MMDDriftMethod``).

With the Gaussian kernel ``k(x, y) = exp(-||x - y||^2 / sigma^2)``, where ``sigma`` is the
median Euclidean distance between (at most 1000) reference and current vectors, the unbiased
estimate of the squared MMD of samples ``X`` (m rows) and ``Y`` (n rows) is

    MMD^2_u = 1/(m(m-1)) sum_{i!=j} k(x_i, x_j) + 1/(n(n-1)) sum_{i!=j} k(y_i, y_j)
              - 2/(mn) sum_{i,j} k(x_i, y_j)

The score is ``max(MMD^2_u, 0)``; drift when MMD^2_u > 0.015 (Evidently's default, no bootstrap).
The kernel matrix is (m+n)^2, so the windows are sampled (``DriftSettings.mmd_sample_rows`` per
window); below that bound the numbers are Evidently's on the same rows in the same order.

Reference: Gretton, Borgwardt, Rasch, Schölkopf, Smola, "A Kernel Two-Sample Test", JMLR 13
(2012); Evidently 0.7.23, ``legacy/metrics/data_drift/embedding_drift_methods.py``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> same = MaximumMeanDiscrepancy().score(EmbeddingSample.from_samples(rng.normal(size=(200, 8)),
...                                                                     rng.normal(size=(200, 8))))
>>> moved = MaximumMeanDiscrepancy().score(EmbeddingSample.from_samples(rng.normal(size=(200, 8)),
...                                                                      rng.normal(1.0, size=(200, 8))))
>>> same.drifted, moved.drifted
(False, True)
"""

from __future__ import annotations

from driftwarden.detectors.methods.base import DriftMethod
from driftwarden.detectors.methods.samples import EmbeddingSample, ExplainedScore
from driftwarden.lazy import numpy as np


class MaximumMeanDiscrepancy(DriftMethod):
    """Unbiased squared MMD with a median-heuristic Gaussian kernel; see the module docstring."""

    name = "mmd"
    title = "Maximum mean discrepancy (MMD²ᵤ)"
    kind = "distance"
    needs = "sample"
    default_threshold = 0.015
    feature_types = ("embedding",)

    def is_drift(self, score: float, threshold: float) -> bool:
        return score > threshold

    def score(self, data: EmbeddingSample, threshold: float | None = None) -> ExplainedScore:
        import pandas as pd
        from sklearn.metrics import pairwise_distances, pairwise_kernels

        threshold = self._threshold(threshold)
        x = pd.DataFrame(np.asarray(data.reference, dtype=np.float64))  # Float32 samples: kernels in Float64
        y = pd.DataFrame(np.asarray(data.current, dtype=np.float64))
        m, n = len(x), len(y)
        distances = pairwise_distances(
            x.sample(min(m, 1000), random_state=0), y.sample(min(n, 1000), random_state=0), metric="euclidean"
        )
        sigma2 = float(np.median(distances)) ** 2
        kernel = pairwise_kernels(np.vstack([x, y]), metric="rbf", gamma=1.0 / sigma2 if sigma2 > 0 else 1.0)
        kx, ky, kxy = kernel[:m, :m], kernel[m:, m:], kernel[:m, m:]
        mmd2u = (
            (kx.sum() - np.trace(kx)) / (m * (m - 1.0))
            + (ky.sum() - np.trace(ky)) / (n * (n - 1.0))
            - 2.0 * kxy.sum() / (m * n)
        )
        return ExplainedScore(
            method=self.name,
            statistic=max(float(mmd2u), 0.0),
            p_value=None,
            threshold=threshold,
            drifted=self.is_drift(float(mmd2u), threshold),
            effect_size=min(1.0, max(float(mmd2u), 0.0)),
            details={"kernel_sigma": float(np.sqrt(sigma2))},
        )
