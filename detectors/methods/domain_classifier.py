"""Domain classifier: can a model tell the current window's rows from the reference's?

Train a classifier to label each row "reference" (0) or "current" (1) on one half of both
windows (``train_test_split(test_size=0.5, random_state=42, shuffle=True)`` over the
reference rows followed by the current rows) and score it on the other half by ROC AUC:

    AUC = P(score(current row) > score(reference row))   (0.5: the windows look alike)

Text (Evidently's ``abs_text_content_drift`` / ``perc_text_content_drift``): TF-IDF with
``sublinear_tf=True, max_df=0.5, stop_words="english"`` into an ``SGDClassifier(alpha=1e-4,
max_iter=50, penalty="l1", loss="modified_huber", random_state=42)``. Drift when AUC > 0.55
for references above 1000 rows; for smaller ones when AUC exceeds the 95th percentile of the
AUCs of 1000 random scorers on the same test labels (Evidently's bootstrap rule, same seeds).
Explained by the words with the largest positive (current) and negative (reference) weights
and by the test documents the classifier is most sure about.

Embeddings (Evidently's ``ModelDriftMethod``, the default of ``EmbeddingsDrift``): the vectors
into an ``SGDClassifier(loss="log_loss", random_state=42)`` with the reference labelled 1, in the
dtype they come in (Float32 as stored: Evidently trains on Float32 too when its frames are Float32);
drift when AUC > 0.55, or, for references below 1000 rows, above the 95th percentile of 100
random scorers (seeds 0..99).

A classifier trained on a sample is weaker than one trained on the whole windows (in 384
dimensions, 2,000 vectors per window learn much less than 100,000), so its AUC is biased low. A
first, small sample therefore decides alone only when it is clear (:func:`undecided`): its AUC is
more than two standard errors (Hanley–McNeil) from the threshold, and, when it says "no drift",
the whole windows' means do not differ either. The mean-shift screen sums the squared z-scores of
the ``d`` per-component mean differences (means over the whole windows from SQL, variances from the
samples),

    T = sum_j (mean_cur_j - mean_ref_j)^2 / (var_ref_j / n_ref + var_cur_j / n_cur),

whose null distribution, the components being correlated (correlation matrix ``R``, estimated
from the pooled samples and corrected for the sampling bias of ``r^2``), is approximated by a
scaled chi-squared (Satterthwaite): ``T ~ c chi2(nu)``, ``c = tr(R^2) / d``, ``nu = d^2 / tr(R^2)``.
A linear classifier can only do better than chance when the means differ, so a first sample that
says "no drift" while the screen's p-value is below 0.01 is undecided. Undecided samples are
replaced by the larger sample (the whole window up to ``embedding_sample_rows``), whose verdict is
final.

Reference: Rabanser, Günnemann, Lipton, "Failing Loudly: An Empirical Study of Methods for
Detecting Dataset Shift", NeurIPS 2019 (domain classifiers); Evidently 0.7.23,
``legacy/utils/data_drift_utils.py`` and ``legacy/metrics/data_drift/embedding_drift_methods.py``.

>>> from driftwarden.detectors.methods.samples import TextSample
>>> ref = ["the cat sat on the mat", "a dog in the park", "birds sing in spring"] * 40
>>> cur = ["stock prices fell sharply", "markets rallied on earnings", "bond yields rose"] * 40
>>> score = DomainClassifier().score(TextSample(ref, cur))
>>> score.drifted, score.statistic > 0.9
(True, True)
"""

from __future__ import annotations

import math
from typing import ClassVar

from driftwarden.detectors.methods.base import DriftMethod
from driftwarden.detectors.methods.samples import EmbeddingSample, ExplainedScore, TextSample
from driftwarden.lazy import numpy as np

TEXT_BOOTSTRAP_ROWS = 1000  # text: references of at most this many rows use the bootstrap rule
EMBEDDING_BOOTSTRAP_ROWS = 1000  # embeddings: references of fewer rows than this use it
TYPICAL_WORDS = 25
TYPICAL_EXAMPLES = 10
EXAMPLE_CHARS = 300  # typical documents are cut to this many characters in the results


class DomainClassifier(DriftMethod):
    """ROC AUC of a classifier telling current rows from reference rows; see the module docstring."""

    name = "domain_classifier"
    title = "Domain classifier ROC AUC"
    kind = "distance"
    needs = "sample"
    default_threshold = 0.55
    feature_types = ("text", "embedding")
    bootstrap_quantile: ClassVar[float] = 0.95

    def __init__(self, bootstrap: bool | None = None) -> None:
        self.bootstrap = bootstrap  # None: Evidently's rule by reference size

    def is_drift(self, score: float, threshold: float) -> bool:
        return score > threshold  # Evidently compares strictly

    def score(self, data, threshold: float | None = None) -> ExplainedScore:
        if isinstance(data, TextSample):
            return self._text(data, self._threshold(threshold))
        if isinstance(data, EmbeddingSample):
            return self._embedding(data, self._threshold(threshold))
        raise TypeError(f"domain_classifier scores a TextSample or an EmbeddingSample, not {type(data).__name__}")

    def _text(self, data: TextSample, threshold: float) -> ExplainedScore:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import SGDClassifier
        from sklearn.metrics import roc_auc_score
        from sklearn.pipeline import Pipeline

        texts = np.asarray([*data.reference, *data.current], dtype=object)
        labels = np.concatenate([np.zeros(len(data.reference), int), np.ones(len(data.current), int)])
        x_train, x_test, y_train, y_test = _split(texts, labels)
        pipeline = Pipeline(
            [
                ("vectorization", TfidfVectorizer(sublinear_tf=True, max_df=0.5, stop_words="english")),
                (
                    "classification",
                    SGDClassifier(alpha=0.0001, max_iter=50, penalty="l1", loss="modified_huber", random_state=42),
                ),
            ]
        )
        pipeline.fit(x_train, y_train)
        proba = pipeline.predict_proba(x_test)[:, 1]
        auc = float(roc_auc_score(y_test, proba))
        bootstrap = self.bootstrap if self.bootstrap is not None else data.reference_rows <= TEXT_BOOTSTRAP_ROWS
        details: dict = {}
        if bootstrap:
            # Evidently: p_value = 1 - 0.95, percentile 100 * (1 - p_value) of 1000 seeded random AUCs
            p_value = 1 - self.bootstrap_quantile
            rng_seeds = _seeds(42, 1000, 1000 * 10)
            threshold = float(np.percentile(_random_aucs(y_test, rng_seeds), 100 * (1 - p_value)))
            details["bootstrap"] = {"random_classifiers": 1000, "quantile": self.bootstrap_quantile}
        words_current, words_reference = _typical_words(pipeline)
        examples_current, examples_reference = _typical_examples(x_test, y_test, proba)
        details["typical_words"] = {"current": words_current, "reference": words_reference}
        details["typical_examples"] = {"current": examples_current, "reference": examples_reference}
        return self._result(auc, threshold, details)

    def _embedding(self, data: EmbeddingSample, threshold: float) -> ExplainedScore:
        from sklearn.linear_model import SGDClassifier
        from sklearn.metrics import roc_auc_score

        vectors = np.vstack([data.reference, data.current])  # keeps Float32
        labels = np.concatenate([np.ones(len(data.reference), int), np.zeros(len(data.current), int)])
        x_train, x_test, y_train, y_test = _split(vectors, labels)
        del vectors
        classifier = SGDClassifier(loss="log_loss", random_state=42)
        classifier.fit(x_train, y_train)
        auc = float(roc_auc_score(y_test, classifier.predict_proba(x_test)[:, 1]))
        bootstrap = self.bootstrap if self.bootstrap is not None else data.reference_rows < EMBEDDING_BOOTSTRAP_ROWS
        positives = int(np.sum(y_test))
        details: dict = {"auc_standard_error": auc_standard_error(auc, positives, len(y_test) - positives)}
        if bootstrap:
            threshold = float(np.percentile(_random_aucs(y_test, list(range(100))), 100 * self.bootstrap_quantile))
            details["bootstrap"] = {"random_classifiers": 100, "quantile": self.bootstrap_quantile}
        return self._result(auc, threshold, details)

    def _result(self, auc: float, threshold: float, details: dict) -> ExplainedScore:
        return ExplainedScore(
            method=self.name,
            statistic=auc,
            p_value=None,
            threshold=threshold,
            drifted=self.is_drift(auc, threshold),
            effect_size=max(0.0, 2 * auc - 1),
            details=details,
        )


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley–McNeil standard error of a ROC AUC measured on ``positives`` + ``negatives`` rows:

    SE^2 = (A(1-A) + (n1-1)(Q1-A^2) + (n0-1)(Q2-A^2)) / (n1 n0),  Q1 = A/(2-A),  Q2 = 2A^2/(1+A)

    (Hanley, McNeil, "The meaning and use of the area under a ROC curve", Radiology 143, 1982)."""
    if positives < 1 or negatives < 1:
        return math.inf
    a = auc
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    variance = (a * (1 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


def mean_shift_p_value(data: EmbeddingSample) -> float:
    """P-value of the screen ``T = sum_j z_j^2`` for equal means of the whole windows (module docstring):
    means and row counts of the whole windows, variances and correlations from the samples."""
    from scipy.stats import chi2

    ref, cur = np.asarray(data.reference, dtype=np.float64), np.asarray(data.current, dtype=np.float64)
    if len(ref) < 3 or len(cur) < 3:
        return 1.0
    var_ref, var_cur = ref.var(axis=0, ddof=1), cur.var(axis=0, ddof=1)
    spread = var_ref / data.reference_rows + var_cur / data.current_rows
    keep = spread > 0
    d = int(keep.sum())
    if d == 0:
        return 1.0
    diff = np.asarray(data.current_mean, dtype=np.float64) - np.asarray(data.reference_mean, dtype=np.float64)
    statistic = float(np.sum(diff[keep] ** 2 / spread[keep]))
    centred = np.vstack([ref - ref.mean(axis=0), cur - cur.mean(axis=0)])[:, keep]
    covariance = centred.T @ centred
    scale = np.sqrt(np.diag(covariance))
    r2 = float(np.sum((covariance / np.outer(scale, scale)) ** 2))
    trace_r2 = d + max(0.0, r2 - d - d * (d - 1) / len(centred))  # E[r_hat^2] ~ r^2 + 1/n off the diagonal
    c, nu = trace_r2 / d, d * d / trace_r2
    return float(chi2.sf(statistic / c, nu))


def undecided(score: ExplainedScore, data: EmbeddingSample, alpha: float = 0.01) -> str | None:
    """Why a domain classifier's verdict on a sample smaller than its windows needs a larger sample, or
    ``None`` when it is clear (module docstring): within two standard errors of the threshold, or "no
    drift" while the whole windows' means differ (screen p-value below ``alpha``)."""
    if "bootstrap" in score.details:
        return None
    error = score.details.get("auc_standard_error", math.inf)
    if abs(score.statistic - score.threshold) < 2 * error:
        return f"ROC AUC {score.statistic:.4f} within two standard errors ({error:.4f}) of {score.threshold}"
    if not score.drifted:
        p_value = mean_shift_p_value(data)
        if p_value < alpha:
            return f"no drift on the sample, but the windows' means differ (p = {p_value:.2g})"
    return None


def _split(x: np.ndarray, y: np.ndarray):
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=0.5, random_state=42, shuffle=True)


def _seeds(seed: int, count: int, high: int) -> list[int]:
    np.random.seed(seed)
    return [int(s) for s in np.random.randint(0, high, size=count)]


def _random_aucs(y_test: np.ndarray, seeds: list[int]) -> np.ndarray:
    """ROC AUC of ``np.random.seed(s); np.random.rand(n)`` as scores, per seed (Mann–Whitney U / n1 n0;
    random floats have no ties, so this equals ``roc_auc_score``)."""
    y = np.asarray(y_test)
    positives = int(y.sum())
    negatives = len(y) - positives
    out = np.empty(len(seeds))
    for i, seed in enumerate(seeds):
        np.random.seed(seed)
        scores = np.random.rand(len(y))
        ranks = np.empty(len(y))
        ranks[np.argsort(scores, kind="stable")] = np.arange(1, len(y) + 1)
        out[i] = (ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    return out


def _typical_words(pipeline) -> tuple[list[str], list[str]]:
    weights = pipeline["classification"].coef_[0]
    vocabulary = pipeline["vectorization"].get_feature_names_out()
    order = np.argsort(-weights, kind="stable")
    current = [str(vocabulary[i]) for i in order if weights[i] > 0][:TYPICAL_WORDS]
    reference = [str(vocabulary[i]) for i in order[::-1] if weights[i] < 0][:TYPICAL_WORDS]
    return current, reference


def _typical_examples(x_test, y_test, proba) -> tuple[list[str], list[str]]:
    y = np.asarray(y_test)
    texts = np.asarray(x_test, dtype=object)
    current = np.flatnonzero(y == 1)
    reference = np.flatnonzero(y == 0)
    current = current[np.argsort(-proba[current], kind="stable")][:TYPICAL_EXAMPLES]
    reference = reference[np.argsort(proba[reference], kind="stable")][:TYPICAL_EXAMPLES]
    return [_cut(texts[i]) for i in current], [_cut(texts[i]) for i in reference]


def _cut(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"
