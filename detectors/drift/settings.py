"""What a drift run compares and how strictly: :class:`FeatureSpec` and :class:`DriftSettings`.

The defaults reproduce Evidently's ``DataDriftPreset`` (same methods, thresholds
and dataset rule), so verdicts compare one to one. The false-positive controls
beyond Evidently are off by default and switched on here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from driftwarden.detectors.methods import METHODS

FeatureKind = Literal["numeric", "categorical", "text", "embedding"]
KINDS = ("numeric", "categorical", "text", "embedding")


@dataclass(frozen=True)
class FeatureSpec:
    """One feature to analyse: its name in the event arrays, its kind, its method and threshold.

    ``method="auto"`` picks the method as Evidently does (see :mod:`driftwarden.detectors.drift.selection`);
    ``threshold=None`` uses the method's default (or ``DriftSettings.thresholds``).
    """

    name: str
    kind: FeatureKind = "numeric"
    method: str = "auto"
    threshold: float | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a feature needs a name")
        if self.kind not in KINDS:
            raise ValueError(f"feature {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.method != "auto" and self.method not in METHODS:
            raise ValueError(
                f"feature {self.name!r}: method {self.method!r} is not one of auto, {', '.join(sorted(METHODS))}"
            )
        if self.method != "auto" and self.kind not in METHODS[self.method].feature_types:
            raise ValueError(f"feature {self.name!r}: method {self.method!r} does not apply to {self.kind} features")
        if self.threshold is not None and not self.threshold > 0:
            raise ValueError(f"feature {self.name!r}: threshold must be > 0, got {self.threshold}")


@dataclass(frozen=True)
class DriftSettings:
    """How a drift run decides.

    Evidently-compatible part:
      ``drift_share`` — the dataset drifts when at least this share of analysed features drift (0.5);
      ``small_reference_rows`` — reference sizes up to this use tests (KS, chi-squared, Z), above it
      distances (Wasserstein, Jensen–Shannon) (1000);
      ``thresholds`` — default threshold per method name, overriding the method's own.

    False-positive control (off by default):
      ``min_rows`` — a feature with fewer non-missing rows than this in either window gets no
      verdict (``drifted=False``, ``verdict="insufficient data"``);
      ``effect_size_floor`` — a p-value test only drifts when its effect size (KS's D, the total
      variation distance of the categories, the difference of proportions) is at least this;
      ``fdr`` — Benjamini–Hochberg across the run's p-value tests: a test drifts when its adjusted
      p-value is below its threshold, which then is the false discovery rate;
      ``persistence`` — ``persistent=True`` only when the feature drifted in this many consecutive
      analysed windows (this one and the ones before it in ``drift_results``);
      ``chisquare_homogeneity`` — chi-squared as a two-sample test of homogeneity instead of
      Evidently's goodness of fit against the reference shares, whose false-positive rate is
      far above its threshold unless the reference is much larger than the current window.

    Limits: ``max_categories`` — a categorical feature with more distinct values than this gets no
    verdict (counts per category would not be an aggregate any more).

    Text and embedding features: ``text_sample_rows`` / ``embedding_sample_rows`` — at most this many
    rows per window go to the domain classifier (and the component share), a deterministic hash sample
    of the window when it is larger; ``mmd_sample_rows`` — the same for MMD's kernel matrix.

    Scale: ``exact_max_values`` — a numeric feature whose reference and current windows hold at
    most this many values together is compared exactly over its sorted support (what scipy and
    Evidently compute); above it, over cells of ``cell_resolution`` reference standard deviations,
    with a computed bound on the error of each statistic (see :mod:`driftwarden.detectors.drift.cells`);
    ``exact_max_run_values`` — the same for a whole run: when its numeric features times the rows of both
    windows exceed this, every numeric feature goes on cells (a wide model: 500 features of 100,000 rows
    per window would sort and store 100M values exactly);
    ``hour_profiles_min_rows`` — a reference window of at least this many events whose numeric features go on
    cells is read from the partial profiles kept per hour as data arrives
    (:mod:`driftwarden.detectors.drift.incremental`): both windows are merged from their hours instead of scanned,
    while at most a quarter of their complete hours are unprofiled (the scheduler keeps them; a run profiles the
    few that late rows changed), and the model has at most 200 numeric features (0: whatever the window's size).
    """

    drift_share: float = 0.5
    small_reference_rows: int = 1000
    thresholds: dict[str, float] = field(default_factory=dict)
    min_rows: int = 1
    effect_size_floor: float = 0.0
    fdr: bool = False
    persistence: int = 1
    chisquare_homogeneity: bool = False
    max_categories: int = 10_000
    exact_max_values: int = 200_000
    exact_max_run_values: int = 10_000_000
    cell_resolution: float = 0.002
    hour_profiles_min_rows: int = 1_000_000
    # text and embedding features: rows per window sent to Python (detectors/drift/text.py, embedding.py)
    text_sample_rows: int = 20_000
    embedding_sample_rows: int = 20_000
    mmd_sample_rows: int = 2_000

    def __post_init__(self) -> None:
        if not 0 < self.drift_share <= 1:
            raise ValueError(f"drift_share must be in (0, 1], got {self.drift_share}")
        if self.small_reference_rows < 0:
            raise ValueError(f"small_reference_rows must be >= 0, got {self.small_reference_rows}")
        for name, value in self.thresholds.items():
            if name not in METHODS:
                raise ValueError(f"thresholds: unknown method {name!r}; accepted: {', '.join(sorted(METHODS))}")
            if not value > 0:
                raise ValueError(f"thresholds: {name} must be > 0, got {value}")
        if self.min_rows < 1:
            raise ValueError(f"min_rows must be >= 1, got {self.min_rows}")
        if not 0 <= self.effect_size_floor <= 1:
            raise ValueError(f"effect_size_floor must be in [0, 1], got {self.effect_size_floor}")
        if self.persistence < 1:
            raise ValueError(f"persistence must be >= 1 window, got {self.persistence}")
        if self.max_categories < 2:
            raise ValueError(f"max_categories must be >= 2, got {self.max_categories}")
        if self.exact_max_values < 0:
            raise ValueError(f"exact_max_values must be >= 0, got {self.exact_max_values}")
        if self.exact_max_run_values < 0:
            raise ValueError(f"exact_max_run_values must be >= 0, got {self.exact_max_run_values}")
        if self.hour_profiles_min_rows < 0:
            raise ValueError(f"hour_profiles_min_rows must be >= 0, got {self.hour_profiles_min_rows}")
        for key in ("text_sample_rows", "embedding_sample_rows", "mmd_sample_rows"):
            if getattr(self, key) < 10:
                raise ValueError(f"{key} must be >= 10 rows, got {getattr(self, key)}")
        if not 0 < self.cell_resolution <= 0.1:
            raise ValueError(
                f"cell_resolution must be in (0, 0.1] reference standard deviations, got {self.cell_resolution}"
            )

    def as_dict(self) -> dict:
        """The settings as plain data, for provenance hashes and JSON output."""
        return {
            "drift_share": self.drift_share,
            "small_reference_rows": self.small_reference_rows,
            "thresholds": dict(sorted(self.thresholds.items())),
            "min_rows": self.min_rows,
            "effect_size_floor": self.effect_size_floor,
            "fdr": self.fdr,
            "persistence": self.persistence,
            "chisquare_homogeneity": self.chisquare_homogeneity,
            "max_categories": self.max_categories,
            "exact_max_values": self.exact_max_values,
            "exact_max_run_values": self.exact_max_run_values,
            "cell_resolution": self.cell_resolution,
            "hour_profiles_min_rows": self.hour_profiles_min_rows,
            "text_sample_rows": self.text_sample_rows,
            "embedding_sample_rows": self.embedding_sample_rows,
            "mmd_sample_rows": self.mmd_sample_rows,
        }
