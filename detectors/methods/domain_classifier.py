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
into an ``SGDClassifier(loss="log_loss", random_state=42)`` with the reference labelled 1;
drift when AUC > 0.55, or, for references below 1000 rows, above the 95th percentile of 100
random scorers (seeds 0..99).

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

from typing import ClassVar

import numpy as np

from driftwarden.detectors.methods.base import DriftMethod
from driftwarden.detectors.methods.samples import EmbeddingSample, ExplainedScore, TextSample

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

        vectors = np.vstack([data.reference, data.current])
        labels = np.concatenate([np.ones(len(data.reference), int), np.zeros(len(data.current), int)])
        x_train, x_test, y_train, y_test = _split(vectors, labels)
        classifier = SGDClassifier(loss="log_loss", random_state=42)
        classifier.fit(x_train, y_train)
        auc = float(roc_auc_score(y_test, classifier.predict_proba(x_test)[:, 1]))
        bootstrap = self.bootstrap if self.bootstrap is not None else data.reference_rows < EMBEDDING_BOOTSTRAP_ROWS
        details: dict = {}
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
