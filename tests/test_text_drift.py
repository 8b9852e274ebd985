"""Text drift on real tweets: Evidently's verdicts and scores, explanations, descriptors, false positives.

The tweets (tests/text_data.py) go into the embedded store once per module; each test reads
its windows with ``compute_drift`` and gives Evidently the same documents in the same (time)
order, which is what the drift run's sample is when a window holds fewer documents than the
sample bound.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re

import numpy as np
import pandas as pd
import pytest

from driftwarden import storage
from driftwarden.detectors.drift import DriftSettings, FeatureSpec, compute_drift
from driftwarden.detectors.window import Window
from tests.text_data import (
    evidently_absolute_text_drift,
    evidently_bootstrap_text_drift,
    evidently_text_drift,
    insert,
    tweets,
)

_counter = itertools.count()


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return tweets()


@pytest.fixture(scope="module")
def tweet_store(engine_dir, data):
    url = f"chdb://{engine_dir}?database=text_drift_{next(_counter)}"
    client = storage.connect(url, create_database=True)
    storage.migrate(client, retention_days=3650)
    insert(client, "tweets", data["ts"], text={"text": data["text"].tolist()})
    return client


def _window(data: pd.DataFrame, window: str) -> list[str]:
    w = Window.parse(window)
    return data[(data["ts"] >= w.start) & (data["ts"] < w.end)]["text"].tolist()


def _text(report):
    return next(f for f in report.features if f.feature_type == "text")


@pytest.mark.parametrize(
    ("reference", "current", "report"),
    [
        # 3505 vs 2111: above 1000 rows, ROC AUC > 0.55; Evidently's stattest called directly (its report also
        # trains the classifier again for its plots: 25 s more here)
        ("2013-01-01..2013-07-01", "2013-07-01..2014-01-01", False),
        ("2013-01-01..2014-01-01", "2016-01-01..2017-01-01", True),  # business and TV vs the campaign: the report
    ],
)
def test_text_drift_on_real_tweets_gives_evidentlys_score_and_verdict(tweet_store, data, reference, current, report):
    ref, cur = _window(data, reference), _window(data, current)
    if report:
        method, evidently_auc, evidently_drifted = evidently_text_drift(ref, cur)
        assert method == "Absolute text content drift"
    else:
        evidently_auc, evidently_drifted = evidently_absolute_text_drift(ref, cur)
    text = _text(compute_drift(tweet_store, "tweets", Window.parse(reference), Window.parse(current)))
    assert text.method == "domain_classifier" and text.threshold == 0.55 and "bootstrap" not in text.details
    assert text.statistic == pytest.approx(evidently_auc, abs=1e-9)
    assert text.drifted == evidently_drifted
    assert text.details["sample"]["reference"] == text.reference_rows == len(_window(data, reference))


@pytest.mark.slow
def test_below_1000_reference_rows_the_verdict_is_evidentlys_bootstrap_rule(tweet_store, data):
    """271 vs 316 tweets: Evidently's ``perc_text_content_drift`` (what its preset picks for references of at
    most 1000 rows): drift when the ROC AUC exceeds the 95th percentile of 1000 random classifiers' AUCs."""
    reference, current = "2017-03-01..2017-05-01", "2017-05-01..2017-07-01"
    evidently_auc, evidently_drifted = evidently_bootstrap_text_drift(_window(data, reference), _window(data, current))
    text = _text(compute_drift(tweet_store, "tweets", Window.parse(reference), Window.parse(current)))
    assert text.details["bootstrap"] == {"random_classifiers": 1000, "quantile": 0.95}
    assert text.statistic == pytest.approx(evidently_auc, abs=1e-9)
    assert text.drifted == evidently_drifted
    assert 0.5 < text.threshold < 0.6  # the random classifiers' 95th percentile for about 290 test rows


def test_a_text_verdict_names_the_words_and_documents_typical_of_each_window(tweet_store):
    report = compute_drift(
        tweet_store, "tweets", Window.parse("2013-01-01..2014-01-01"), Window.parse("2016-01-01..2017-01-01")
    )
    text = _text(report)
    words = text.details["typical_words"]
    assert {"hillary", "debate", "trump2016"} <= set(words["current"][:10])
    assert {"celebapprentice", "apprentice"} <= set(words["reference"])
    assert "hillary" not in words["reference"]
    examples = text.details["typical_examples"]
    assert len(examples["current"]) == 10 and len(examples["reference"]) == 10
    assert any("#Trump2016" in e or "#MAGA" in e for e in examples["current"][:5])
    document = report.as_dict()
    assert document["features"][0]["details"]["typical_words"]["current"] == words["current"]


def test_descriptors_are_computed_in_the_database_and_drift_tested_like_numeric_features(tweet_store, data):
    reference, current = "2012-01-01..2013-01-01", "2016-01-01..2017-01-01"
    report = compute_drift(tweet_store, "tweets", Window.parse(reference), Window.parse(current))
    descriptors = {f.details["descriptor"]: f for f in report.features if f.feature_type == "text_descriptor"}
    assert set(descriptors) == {"length_chars", "length_words", "oov_share", "non_letter_share", "empty"}
    ref, cur = _window(data, reference), _window(data, current)
    chars = descriptors["length_chars"]
    assert chars.method == "wasserstein"  # a numeric feature above 1000 rows, as Evidently picks
    assert chars.details["reference_mean"] == pytest.approx(np.mean([len(t) for t in ref]))
    assert chars.details["current_mean"] == pytest.approx(np.mean([len(t) for t in cur]))
    from scipy.stats import wasserstein_distance

    expected = wasserstein_distance([len(t) for t in ref], [len(t) for t in cur]) / np.std([len(t) for t in ref])
    assert chars.statistic == pytest.approx(expected, rel=1e-9)
    words = descriptors["length_words"]
    ascii_words = [len(re.findall(r"[^ \t\n\r\f\v]+", t)) for t in cur]  # words between ASCII white space
    assert words.details["current_mean"] == pytest.approx(np.mean(ascii_words))
    assert descriptors["oov_share"].reference_rows < len(ref)  # measured on the half not in the vocabulary
    assert chars.drifted and words.drifted  # tweets grew from 140 to 280 characters in late 2017 only, yet 2016's
    # campaign tweets are longer than 2012's
    document = report.as_dict()
    assert document["dataset"]["analysed_features"] == 1  # descriptors do not count in the dataset share


def _halves(data: pd.DataFrame, seed: int, n: int) -> tuple[pd.Series, list[str], list[str]]:
    """``n`` tweets of 2013 in a random order, the first half dated January 2030, the second February 2030."""
    year = data[(data["ts"] >= "2013-01-01") & (data["ts"] < "2014-01-01")]["text"]
    picked = year.sample(n, random_state=seed).tolist()
    start = pd.Timestamp("2030-01-01", tz="UTC")
    half = n // 2
    ts = [start + pd.Timedelta(minutes=i) for i in range(half)]
    ts += [start + pd.Timedelta(days=31, minutes=i) for i in range(n - half)]
    return pd.Series(ts), picked[:half], picked[half:]


@pytest.mark.slow
def test_two_random_halves_of_one_year_drift_no_more_often_than_the_nominal_rate(engine_dir, data):
    url = f"chdb://{engine_dir}?database=text_halves_{next(_counter)}"
    client = storage.connect(url, create_database=True)
    storage.migrate(client, retention_days=3650)
    reference = Window.parse("2030-01-01..2030-02-01")
    current = Window.parse("2030-02-01..2030-03-01")
    verdicts = []
    for seed, n in [(s, 800) for s in range(8)] + [(s, 4000) for s in range(100, 103)]:
        model = f"halves-{seed}"
        ts, first, second = _halves(data, seed, n)
        insert(client, model, ts, text={"text": first + second})
        text = _text(compute_drift(client, model, reference, current))
        if n > 2000:  # above 1000 rows Evidently's verdict is quick to get: compare it too
            evidently_auc, evidently_drifted = evidently_absolute_text_drift(first, second)
            assert text.drifted == evidently_drifted and text.statistic == pytest.approx(evidently_auc, abs=1e-9)
        verdicts.append((n, text.drifted, text.statistic))
    small = [d for n, d, _ in verdicts if n == 800]
    large = [d for n, d, _ in verdicts if n == 4000]
    # 400 vs 400: the bootstrap rule's nominal false-positive rate is 5%; 3 or more of 8 has probability 0.6%
    assert sum(small) <= 2, verdicts
    # 2000 vs 2000: ROC AUC of indistinguishable windows is 0.5 +- 0.013, far below 0.55
    assert sum(large) == 0, verdicts
    assert all(abs(auc - 0.5) < 0.05 for n, _, auc in verdicts if n == 4000)


def test_windows_above_the_sample_bound_are_sampled_and_keep_the_verdict(tweet_store):
    reference, current = Window.parse("2013-01-01..2014-01-01"), Window.parse("2016-01-01..2017-01-01")
    full = _text(compute_drift(tweet_store, "tweets", reference, current))
    sampled = _text(
        compute_drift(tweet_store, "tweets", reference, current, settings=DriftSettings(text_sample_rows=1500))
    )
    assert sampled.details["sample"] == {"reference": 1500, "current": 1500, "bound": 1500}
    assert sampled.details["sampled"] is True
    assert sampled.reference_rows == full.reference_rows > 5000
    assert sampled.drifted == full.drifted
    # a classifier trained on fewer documents separates a little less well; the verdict is far from the line
    assert sampled.statistic == pytest.approx(full.statistic, abs=0.08)


def test_a_text_feature_can_be_named_with_its_kind_and_method(tweet_store):
    report = compute_drift(
        tweet_store,
        "tweets",
        Window.parse("2013-01-01..2013-07-01"),
        Window.parse("2013-07-01..2014-01-01"),
        features=[FeatureSpec("text", "text", "domain_classifier", 0.9)],
    )
    text = _text(report)
    assert text.threshold == 0.9 and not text.drifted  # ROC AUC 0.68 is below the threshold given
    assert [f.feature for f in report.features][0] == "text"
    with pytest.raises(ValueError, match="does not apply to text features"):
        FeatureSpec("text", "text", "ks")


def test_the_reference_window_dates_the_change_of_topic(tweet_store):
    """Weekly windows of 2015 against 2014: the campaign (announced 16 June 2015) drifts, early 2015 does not
    drift more than 2014's own months do."""
    reference = Window.parse("2014-01-01..2015-01-01")
    start = dt.datetime(2015, 9, 1, tzinfo=dt.UTC)
    current = Window(start, start + dt.timedelta(days=14))
    text = _text(compute_drift(tweet_store, "tweets", reference, current))
    assert text.drifted and text.statistic > 0.7
    assert {"hillary", "makeamericagreatagain"} <= set(text.details["typical_words"]["current"])


def test_the_json_api_and_the_model_page_show_the_words_that_drove_a_text_verdict(tweet_store, make_app):
    from fastapi.testclient import TestClient

    from driftwarden.auth import TokenConfig
    from driftwarden.detectors.api import ApiSettings, create_router
    from driftwarden.detectors.drift import write_drift

    report = compute_drift(
        tweet_store, "tweets", Window.parse("2013-01-01..2014-01-01"), Window.parse("2016-01-01..2017-01-01")
    )
    write_drift(tweet_store, report)
    app = make_app(tweet_store)
    app.include_router(create_router(ApiSettings(tokens=[TokenConfig(name="ops", token="t" * 32)])))
    http = TestClient(app)
    auth = {"authorization": "Bearer " + "t" * 32}
    body = http.get("/api/v1/models/tweets/drift", params={"window": "2016-01-01..2017-01-01"}, headers=auth).json()
    text = next(f for f in body["features"] if f["feature"] == "text")
    assert text["feature_type"] == "text" and text["method"] == "domain_classifier" and text["verdict"] == "drift"
    assert "hillary" in text["typical_words"]["current"]
    assert len(text["typical_examples"]["reference"]) == 10
    kinds = {f["feature"]: f["feature_type"] for f in body["features"]}
    assert kinds["text.length_chars"] == "text_descriptor"
    page = http.get("/models/tweets", params={"window": "2016-01-01..2017-01-01"}, headers=auth).text
    assert "words: " in page and "hillary" in page
