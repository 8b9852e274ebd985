"""Embedding drift on embeddings of real tweets: Evidently's four methods, scores and verdicts.

The embeddings are latent semantic analysis vectors of the tweets (TF-IDF reduced to 48
dimensions by truncated SVD: tests/text_data.py), stored as Float32 like any embedding; Evidently
is given the same Float32 values in the same (time) order.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from driftwarden import storage
from driftwarden.detectors.drift import DriftSettings, FeatureSpec, compute_drift
from driftwarden.detectors.drift.embedding import FIRST_SAMPLE_ROWS
from driftwarden.detectors.window import Window
from tests.text_data import evidently_embedding_drift, insert, lsa_embeddings, tweets

_counter = itertools.count()


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    frame = tweets()
    return frame, lsa_embeddings(frame["text"])


@pytest.fixture(scope="module")
def vector_store(engine_dir, data):
    frame, vectors = data
    url = f"chdb://{engine_dir}?database=embedding_drift_{next(_counter)}"
    client = storage.connect(url, create_database=True)
    storage.migrate(client, retention_days=3650)
    insert(client, "tweets", frame["ts"], embeddings={"vec": vectors})
    return client


def _window(data, window: str) -> np.ndarray:
    frame, vectors = data
    w = Window.parse(window)
    return vectors[((frame["ts"] >= w.start) & (frame["ts"] < w.end)).to_numpy()]


SMALL = ("2017-03-01..2017-05-01", "2017-05-01..2017-07-01")  # 271 vs 316 vectors
MEDIUM = ("2013-01-01..2013-03-01", "2013-03-01..2013-05-01")  # within the domain classifier's first sample
LARGE = ("2013-01-01..2013-07-01", "2013-07-01..2014-01-01")  # 3505 vs 2111 vectors
CAMPAIGN = ("2013-01-01..2013-04-01", "2016-01-01..2016-04-01")


@pytest.mark.parametrize(
    ("method", "windows"),
    [
        ("domain_classifier", SMALL),  # below 1000 reference rows: Evidently's bootstrap (100 random classifiers)
        ("domain_classifier", MEDIUM),  # above: ROC AUC > 0.55
        ("mmd", SMALL),
        ("mmd", ("2014-01-01..2014-04-01", "2016-01-01..2016-03-01")),
        ("ratio", LARGE),
        ("ratio", SMALL),
        ("distance", LARGE),
        ("distance", CAMPAIGN),
    ],
)
def test_each_embedding_method_gives_evidentlys_score_and_verdict(vector_store, data, method, windows):
    reference, current = windows
    ref, cur = _window(data, reference), _window(data, current)
    bound = {"mmd": 2000, "domain_classifier": FIRST_SAMPLE_ROWS}.get(method, 20_000)
    assert max(len(ref), len(cur)) <= bound  # within the sample bounds: the whole windows, Evidently's numbers
    evidently_score, evidently_drifted = evidently_embedding_drift(ref, cur, method)
    spec = FeatureSpec("vec", "embedding", "auto" if method == "domain_classifier" else method)
    report = compute_drift(vector_store, "tweets", Window.parse(reference), Window.parse(current), features=[spec])
    (result,) = report.features
    assert result.feature_type == "embedding" and result.method == method
    assert result.statistic == pytest.approx(evidently_score, rel=1e-6, abs=1e-9)
    assert result.drifted == evidently_drifted
    assert result.details["dimension"] == 48
    assert result.reference_rows == len(ref) and result.current_rows == len(cur)


def test_every_embedding_feature_of_the_reference_is_analysed_with_the_default_method(vector_store):
    report = compute_drift(vector_store, "tweets", Window.parse(CAMPAIGN[0]), Window.parse(CAMPAIGN[1]))
    (result,) = report.features
    assert (result.feature, result.feature_type, result.method) == ("vec", "embedding", "domain_classifier")
    assert result.drifted and result.statistic > 0.7
    document = report.as_dict()
    assert document["dataset"]["drifted_features"] == ["vec"]
    assert document["features"][0]["details"]["sample"]["bound"] == FIRST_SAMPLE_ROWS  # a clear first sample


def test_distance_needs_no_rows_in_python_and_mmd_samples_above_its_bound(vector_store):
    reference, current = Window.parse(LARGE[0]), Window.parse(LARGE[1])
    distance = compute_drift(vector_store, "tweets", reference, current, [FeatureSpec("vec", "embedding", "distance")])
    assert "sample" not in distance.features[0].details
    mmd = compute_drift(vector_store, "tweets", reference, current, [FeatureSpec("vec", "embedding", "mmd")])
    assert mmd.features[0].details["sample"] == {"reference": 2000, "current": 2000, "bound": 2000}
    assert mmd.features[0].details["sampled"] is True


def test_a_clear_first_sample_decides_alone_with_evidentlys_verdict(vector_store, data):
    """3505 vs 3551 vectors (business tweets of 2013 against the campaign): the first sample (2000 per window)
    is far above 0.55, so its verdict stands, and it is Evidently's on the whole windows."""
    reference, current = "2013-01-01..2013-07-01", "2015-07-01..2016-07-01"
    ref, cur = _window(data, reference), _window(data, current)
    assert min(len(ref), len(cur)) > FIRST_SAMPLE_ROWS
    evidently_score, evidently_drifted = evidently_embedding_drift(ref, cur, "domain_classifier")
    report = compute_drift(vector_store, "tweets", Window.parse(reference), Window.parse(current))
    (result,) = report.features
    assert result.details["sample"] == {"reference": 2000, "current": 2000, "bound": 2000}
    assert result.details["sampled"] is True and "first_sample" not in result.details
    assert result.drifted == evidently_drifted is True
    assert min(result.statistic, evidently_score) > 0.55 + 4 * result.details["auc_standard_error"]


def test_an_undecided_first_sample_is_replaced_by_the_whole_window_and_gives_evidentlys_score(vector_store, data):
    """With the threshold within two standard errors of the first sample's AUC, the classifier is trained
    again on the whole windows (within embedding_sample_rows): then its score is Evidently's on the same rows."""
    ref, cur = _window(data, LARGE[0]), _window(data, LARGE[1])
    evidently_score, _ = evidently_embedding_drift(ref, cur, "domain_classifier")
    reference, current = Window.parse(LARGE[0]), Window.parse(LARGE[1])
    first = compute_drift(vector_store, "tweets", reference, current).features[0].statistic
    settings = DriftSettings(thresholds={"domain_classifier": round(first, 2)})
    (result,) = compute_drift(vector_store, "tweets", reference, current, settings=settings).features
    assert result.details["first_sample"]["statistic"] == pytest.approx(first)
    assert "two standard errors" in result.details["first_sample"]["undecided"]
    assert result.details["sample"] == {"reference": len(ref), "current": len(cur), "bound": 20_000}
    assert "sampled" not in result.details
    assert result.statistic == pytest.approx(evidently_score, rel=1e-6, abs=1e-9)
    assert result.drifted == (evidently_score > round(first, 2))


def test_the_mean_shift_screen_sees_a_shift_too_small_for_a_classifier_on_the_first_sample():
    """Correlated 128-dimensional Gaussians, 50,000 rows per window; the screen's p-value (whole-window means,
    sample variances and correlations) is large for equal means and tiny for a shift of 0.007 sd per component,
    which a classifier trained on 2,000 + 2,000 vectors does not see."""
    from driftwarden.detectors.methods.domain_classifier import DomainClassifier, mean_shift_p_value, undecided
    from driftwarden.detectors.methods.samples import EmbeddingSample

    rng = np.random.default_rng(7)
    mixing = rng.normal(size=(128, 128)) / np.sqrt(128)
    ref = (rng.normal(size=(50_000, 128)) @ mixing).astype(np.float32)
    same = (rng.normal(size=(50_000, 128)) @ mixing).astype(np.float32)
    moved = same + 0.007 * ref.std(axis=0)

    def first_sample(cur):
        return EmbeddingSample(ref[:2000], cur[:2000], ref.mean(axis=0), cur.mean(axis=0), len(ref), len(cur))

    assert mean_shift_p_value(first_sample(same)) > 0.05
    assert mean_shift_p_value(first_sample(moved)) < 1e-6
    score = DomainClassifier().score(first_sample(moved))
    assert not score.drifted
    assert undecided(score, first_sample(moved))  # "means differ" (or, by chance, close to the threshold)
    assert undecided(DomainClassifier().score(first_sample(same)), first_sample(same)) is None
