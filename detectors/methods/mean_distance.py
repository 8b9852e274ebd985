"""Distance between the mean embeddings of two windows (Evidently's ``DistanceDriftMethod``).

    score = dist(mean(reference), mean(current))

with ``dist`` Euclidean (default), cosine, cityblock or Chebyshev; drift when the score exceeds
0.2 (Evidently's default, no bootstrap). The means are reduced in ClickHouse over the whole
windows (``avgForEach``), so this method reads no rows at all.

Reference: Evidently 0.7.23, ``legacy/metrics/data_drift/embedding_drift_methods.py``.

>>> import numpy as np
>>> score = MeanDistance().score(EmbeddingSample.from_samples([[0.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]]))
>>> score.statistic, score.drifted
(1.0, True)
"""

from __future__ import annotations

from driftwarden.detectors.methods.base import DriftMethod
from driftwarden.detectors.methods.samples import EmbeddingSample, ExplainedScore
from driftwarden.lazy import numpy as np

DISTANCES = ("euclidean", "cosine", "cityblock", "chebyshev")


class MeanDistance(DriftMethod):
    """Distance between the mean vectors; see the module docstring."""

    name = "distance"
    title = "Distance between mean embeddings"
    kind = "distance"
    needs = "means"
    default_threshold = 0.2
    feature_types = ("embedding",)

    def __init__(self, dist: str = "euclidean") -> None:
        if dist not in DISTANCES:
            raise ValueError(f"distance {dist!r} is not one of {', '.join(DISTANCES)}")
        self.dist = dist

    def is_drift(self, score: float, threshold: float) -> bool:
        return score > threshold

    def score(self, data: EmbeddingSample, threshold: float | None = None) -> ExplainedScore:
        from scipy.spatial import distance

        threshold = self._threshold(threshold)
        ref = np.asarray(data.reference_mean, dtype=np.float64)
        cur = np.asarray(data.current_mean, dtype=np.float64)
        value = float(getattr(distance, self.dist)(ref, cur))
        return ExplainedScore(
            method=self.name,
            statistic=value,
            p_value=None,
            threshold=threshold,
            drifted=self.is_drift(value, threshold),
            effect_size=min(1.0, value),
            details={"distance": self.dist},
        )
