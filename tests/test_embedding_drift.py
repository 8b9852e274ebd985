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
from driftwarden.detectors.drift import FeatureSpec, compute_drift
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
LARGE = ("2013-01-01..2013-07-01", "2013-07-01..2014-01-01")  # 3505 vs 2111 vectors
CAMPAIGN = ("2013-01-01..2013-04-01", "2016-01-01..2016-04-01")


@pytest.mark.parametrize(
    ("method", "windows"),
    [
        ("domain_classifier", SMALL),  # below 1000 reference rows: Evidently's bootstrap (100 random classifiers)
        ("domain_classifier", LARGE),  # above: ROC AUC > 0.55
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
    assert len(ref) <= 20_000 and (method != "mmd" or max(len(ref), len(cur)) <= 2000)  # within the sample bounds
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
    assert document["features"][0]["details"]["sample"]["bound"] == 20_000


def test_distance_needs_no_rows_in_python_and_mmd_samples_above_its_bound(vector_store):
    reference, current = Window.parse(LARGE[0]), Window.parse(LARGE[1])
    distance = compute_drift(vector_store, "tweets", reference, current, [FeatureSpec("vec", "embedding", "distance")])
    assert "sample" not in distance.features[0].details
    mmd = compute_drift(vector_store, "tweets", reference, current, [FeatureSpec("vec", "embedding", "mmd")])
    assert mmd.features[0].details["sample"] == {"reference": 2000, "current": 2000, "bound": 2000}
    assert mmd.features[0].details["sampled"] is True
