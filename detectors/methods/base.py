"""The interface every drift method implements, and the aggregates methods read.

A drift method never sees raw rows. ClickHouse reduces both windows to one of
two aggregates, and the method turns that aggregate into a score:

* :class:`Support` — for Kolmogorov–Smirnov and Wasserstein: the exact
  statistics of the merged sorted support of the two samples (the largest ECDF
  gap, the area between the ECDFs, the reference standard deviation), computed
  in SQL over the distinct values and their counts;
* :class:`Counts` — for chi-squared, Z-test, PSI and Jensen–Shannon: the counts
  of both samples on one set of keys (categories, distinct values, or bins).

Both have a ``from_samples`` constructor over small in-memory samples: it
computes the same aggregate with numpy, for examples and tests.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from driftwarden.lazy import numpy as np

ScoreKind = Literal["p_value", "distance"]


@dataclass(frozen=True)
class Support:
    """Exact aggregates of two numeric samples over their merged sorted support.

    ``ks_statistic`` is ``max |F_ref(x) - F_cur(x)|`` over every observed value,
    ``wasserstein`` is ``sum_i |F_ref(x_i) - F_cur(x_i)| (x_{i+1} - x_i)`` (the
    first Wasserstein distance, unnormalised) and ``reference_std`` the
    population standard deviation (ddof=0) of the reference.
    """

    reference_rows: int
    current_rows: int
    ks_statistic: float
    wasserstein: float
    reference_std: float

    @classmethod
    def from_samples(cls, reference: Sequence[float], current: Sequence[float]) -> Support:
        """The same aggregates computed with numpy, for small samples held in memory."""
        ref = np.sort(np.asarray(reference, dtype=float))
        cur = np.sort(np.asarray(current, dtype=float))
        support = np.unique(np.concatenate([ref, cur]))
        f_ref = np.searchsorted(ref, support, side="right") / ref.size
        f_cur = np.searchsorted(cur, support, side="right") / cur.size
        gap = np.abs(f_ref - f_cur)
        area = float(np.sum(gap[:-1] * np.diff(support)))
        return cls(ref.size, cur.size, float(gap.max()), area, float(np.std(ref)))


@dataclass(frozen=True)
class Counts:
    """Counts of the reference and current samples on one set of keys.

    Keys are categories, distinct numeric values or histogram bins; a key seen
    in only one sample has count 0 in the other.
    """

    keys: tuple[str, ...]
    reference: tuple[int, ...]
    current: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.keys) == len(self.reference) == len(self.current)):
            raise ValueError("keys, reference and current counts must have the same length")

    @property
    def reference_rows(self) -> int:
        return int(sum(self.reference))

    @property
    def current_rows(self) -> int:
        return int(sum(self.current))

    def shares(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The share of each key in the reference and in the current sample (NaN for a sample without rows).

        Plain Python (a small drift run does not load numpy, ``driftwarden.lazy``): the counts are integers, so
        their sums, and the shares, are the ones numpy computes."""
        return _shares(self.reference), _shares(self.current)

    def total_variation(self) -> float:
        """Half the L1 distance between the two distributions: the largest gap in any event's probability."""
        ref, cur = self.shares()
        return 0.5 * math.fsum(abs(r - c) for r, c in zip(ref, cur, strict=True))

    @classmethod
    def from_samples(cls, reference: Sequence, current: Sequence) -> Counts:
        """Counts per distinct value (sorted), for small samples held in memory."""
        keys = sorted(set(reference) | set(current))
        ref = [sum(1 for v in reference if v == k) for k in keys]
        cur = [sum(1 for v in current if v == k) for k in keys]
        return cls(tuple(str(k) for k in keys), tuple(ref), tuple(cur))


@dataclass(frozen=True)
class Score:
    """A method's verdict on one feature.

    ``statistic`` is the method's own number (a distance, or the test
    statistic of a p-value test), ``p_value`` is set for tests only,
    ``effect_size`` is a distance in [0, 1] (the largest gap in probability)
    that the effect-size floor compares against.
    """

    method: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool
    effect_size: float

    @property
    def score(self) -> float:
        """The number compared with the threshold: the p-value of a test, else the statistic."""
        return self.p_value if self.p_value is not None else self.statistic


class DriftMethod(ABC):
    """One statistical method: its name, its default threshold, how it reads an aggregate.

    Every method has the same signature, ``method.score(data, threshold=None)``,
    where ``data`` is the aggregate named by ``needs``.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    kind: ClassVar[ScoreKind]
    needs: ClassVar[Literal["support", "counts", "sample", "means"]]  # the last two: methods/samples.py
    default_threshold: ClassVar[float]
    feature_types: ClassVar[tuple[str, ...]]

    @abstractmethod
    def score(self, data: Support | Counts, threshold: float | None = None) -> Score:
        """Score the two samples summarised by ``data``; ``threshold`` defaults to the method's."""

    def is_drift(self, score: float, threshold: float) -> bool:
        """Distances drift at or above the threshold, tests when the p-value is below it."""
        return score >= threshold if self.kind == "distance" else score < threshold

    def _threshold(self, threshold: float | None) -> float:
        return self.default_threshold if threshold is None else float(threshold)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _shares(counts: Sequence[int]) -> tuple[float, ...]:
    total = float(sum(counts))
    return tuple(c / total for c in counts) if total else tuple(math.nan for _ in counts)
