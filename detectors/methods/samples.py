"""The bounded samples that the text and embedding methods read, and their aggregates computed in SQL.

Text and embedding drift cannot be reduced to counts or an ECDF: Evidently's methods train a
classifier on the documents or vectors themselves, or compare kernel matrices. ClickHouse sends
at most a configured number of rows per window (a deterministic hash sample of the window, in
time order: the whole window when it is smaller), and reduces everything else (mean vectors,
dimensions, counts of bad values, text descriptors) in the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from driftwarden.detectors.methods.base import Score
from driftwarden.lazy import numpy as np


@dataclass(frozen=True)
class TextSample:
    """Documents of the reference and the current window, each list in the window's time order.

    ``reference_rows``/``current_rows`` count the documents of the whole windows (the sample
    holds at most the configured bound of them).
    """

    reference: Sequence[str]
    current: Sequence[str]
    reference_rows: int = 0
    current_rows: int = 0

    def __post_init__(self) -> None:
        if not self.reference_rows:
            object.__setattr__(self, "reference_rows", len(self.reference))
        if not self.current_rows:
            object.__setattr__(self, "current_rows", len(self.current))


@dataclass(frozen=True)
class EmbeddingSample:
    """Vectors of the reference and the current window (rows x dimensions, time order; Float32 as stored,
    or whatever the caller gives), and the mean vector of each whole window (computed in SQL; the sample's
    mean when built from samples). ``reference_rows``/``current_rows`` count the valid vectors of the whole
    windows; the samples hold at most the configured bound of them."""

    reference: np.ndarray
    current: np.ndarray
    reference_mean: np.ndarray
    current_mean: np.ndarray
    reference_rows: int
    current_rows: int

    @classmethod
    def from_samples(cls, reference: Sequence[Sequence[float]], current: Sequence[Sequence[float]]) -> EmbeddingSample:
        """Two in-memory samples, whole windows: the means are the samples' means."""
        ref = np.asarray(reference, dtype=np.float64)
        cur = np.asarray(current, dtype=np.float64)
        return cls(ref, cur, ref.mean(axis=0), cur.mean(axis=0), len(ref), len(cur))

    @property
    def sampled(self) -> bool:
        """Whether either sample holds fewer vectors than its whole window."""
        return len(self.reference) < self.reference_rows or len(self.current) < self.current_rows


@dataclass(frozen=True)
class ExplainedScore(Score):
    """A score with what explains it (typical words and documents, bootstrap thresholds, sample sizes)."""

    details: dict = field(default_factory=dict)
