"""Share of drifted components of an embedding (Evidently's ``RatioDriftMethod``).

Each of the ``d`` components is a numeric feature tested with the normalised Wasserstein
distance, ``W1(ref_j, cur_j) / max(std(ref_j), 0.001)`` against 0.1; the score is the share
of drifted components, drift when it exceeds 0.2:

    share = #{j : W1(ref_j, cur_j) / max(std(ref_j), 0.001) >= 0.1} / d

Reference: Evidently 0.7.23, ``legacy/metrics/data_drift/embedding_drift_methods.py``
(``component_stattest="wasserstein"``, ``component_stattest_threshold=0.1``, ``threshold=0.2``).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = rng.normal(size=(3000, 10))
>>> cur = rng.normal(size=(3000, 10)); cur[:, :5] += 1.0
>>> score = ComponentShare().score(EmbeddingSample.from_samples(ref, cur))
>>> score.statistic, score.drifted
(0.5, True)
"""

from __future__ import annotations

from driftwarden.detectors.methods.base import DriftMethod
from driftwarden.detectors.methods.samples import EmbeddingSample, ExplainedScore
from driftwarden.lazy import numpy as np

COMPONENT_THRESHOLD = 0.1
STD_FLOOR = 0.001


class ComponentShare(DriftMethod):
    """Share of components whose normalised Wasserstein distance is at least 0.1; see the module docstring."""

    name = "ratio"
    title = "Share of drifted components"
    kind = "distance"
    needs = "sample"
    default_threshold = 0.2
    feature_types = ("embedding",)

    def __init__(self, component_threshold: float = COMPONENT_THRESHOLD) -> None:
        self.component_threshold = component_threshold

    def is_drift(self, score: float, threshold: float) -> bool:
        return score > threshold

    def score(self, data: EmbeddingSample, threshold: float | None = None) -> ExplainedScore:
        threshold = self._threshold(threshold)
        reference = np.asarray(data.reference, dtype=np.float64)  # Float32 samples: distances in Float64
        distances = normalised_wasserstein(reference, np.asarray(data.current, dtype=np.float64))
        drifted = distances >= self.component_threshold
        share = float(drifted.mean()) if len(distances) else 0.0
        top = np.argsort(-distances, kind="stable")[:10]
        return ExplainedScore(
            method=self.name,
            statistic=share,
            p_value=None,
            threshold=threshold,
            drifted=self.is_drift(share, threshold),
            effect_size=share,
            details={
                "drifted_components": int(drifted.sum()),
                "components": len(distances),
                "component_threshold": self.component_threshold,
                "most_drifted_components": [[int(j), float(distances[j])] for j in top],
            },
        )


def normalised_wasserstein(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """``W1 / max(std, 0.001)`` of every column: the area between the two ECDFs over the merged sorted
    support, computed for all columns at once (equal to ``scipy.stats.wasserstein_distance`` per column)."""
    ref = np.sort(reference, axis=0)
    cur = np.sort(current, axis=0)
    out = np.empty(ref.shape[1])
    for j in range(ref.shape[1]):
        support = np.concatenate([ref[:, j], cur[:, j]])
        support.sort(kind="mergesort")
        steps = np.diff(support)
        f_ref = np.searchsorted(ref[:, j], support[:-1], side="right") / len(ref)
        f_cur = np.searchsorted(cur[:, j], support[:-1], side="right") / len(cur)
        out[j] = float(np.sum(np.abs(f_ref - f_cur) * steps))
    return out / np.maximum(np.std(reference, axis=0), STD_FLOOR)
