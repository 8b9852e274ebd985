"""Bad text and embedding input gives a clear per-feature result, never a crash of the run.

Each window here holds one kind of bad input beside a well-formed feature, and each test checks
that the run completes, that the well-formed feature still gets its verdict, and that the bad one
says what is wrong (a note, ignored counts) instead of raising.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from driftwarden.detectors.drift import FeatureSpec, compute_drift
from driftwarden.detectors.window import Window
from tests.text_data import insert, tweets

REFERENCE = Window.parse("2030-01-01..2030-02-01")
CURRENT = Window.parse("2030-02-01..2030-03-01")


@pytest.fixture(scope="module")
def documents() -> list[str]:
    return tweets()["text"].tolist()[5000:5600]


def _times(month: int, n: int) -> pd.Series:
    start = pd.Timestamp(dt.datetime(2030, month, 1, tzinfo=dt.UTC))
    return pd.Series([start + pd.Timedelta(minutes=i) for i in range(n)])


def _by_name(report):
    return {f.feature: f for f in report.features}


def test_empty_strings_count_as_empty_texts_and_a_window_of_only_empty_texts_gets_no_verdict(store, documents):
    insert(store, "m", _times(1, 300), text={"text": documents[:300], "notes": [""] * 300})
    current = documents[300:600]
    current[:60] = [""] * 60
    insert(store, "m", _times(2, 300), text={"text": current, "notes": [""] * 300})
    found = _by_name(compute_drift(store, "m", REFERENCE, CURRENT))
    assert found["text"].verdict in ("drift", "no drift")
    assert found["text"].details["empty_share"] == {"reference": 0.0, "current": 0.2}
    empty = found["text.empty"]
    assert empty.details["current_mean"] == pytest.approx(0.2) and empty.drifted  # 0% -> 20% empty texts
    assert found["notes"].verdict == "no verdict"
    assert found["notes"].note == "no verdict: the documents hold no words the classifier can use"


def test_invalid_utf8_is_read_with_replacement_characters(store, documents):
    insert(store, "m", _times(1, 200), text={"text": documents[:200]})
    insert(store, "m", _times(2, 200), text={"text": documents[200:400]})
    # Arrow strings are valid UTF-8 by construction: write the bad bytes with SQL, as another client might
    store.command(
        "INSERT INTO inferences (event_id, ts, model, text_names, text_values) "
        "SELECT generateUUIDv4(), toDateTime64('2030-02-20 00:00:00', 6, 'UTC') + number, 'm', ['text'], "
        "[concat('caf', unhex('E9'), ' ', unhex('FFFE'), ' broken bytes ', toString(number))] FROM numbers(50)"
    )
    text = _by_name(compute_drift(store, "m", REFERENCE, CURRENT))["text"]
    assert text.verdict in ("drift", "no drift") and text.current_rows == 250
    assert any("\ufffd" in example for example in text.details["typical_examples"]["current"])


def test_a_one_megabyte_document_is_analysed_like_any_other(store, documents):
    insert(store, "m", _times(1, 200), text={"text": documents[:200]})
    huge = " ".join(documents) * 40
    huge = huge[: 1 << 20]
    assert len(huge) == 1 << 20
    insert(store, "m", _times(2, 200), text={"text": [huge, *documents[200:399]]})
    found = _by_name(compute_drift(store, "m", REFERENCE, CURRENT))
    assert found["text"].verdict in ("drift", "no drift")
    assert found["text.length_chars"].details["current_mean"] > (1 << 20) / 200
    assert all(len(e) <= 300 for e in found["text"].details["typical_examples"]["current"])


def test_nan_and_infinite_vectors_are_left_out_and_counted(store):
    rng = np.random.default_rng(1)
    insert(store, "m", _times(1, 2000), embeddings={"vec": rng.normal(size=(2000, 8))})
    current = rng.normal(size=(2000, 8)).tolist()
    current[0][3] = float("nan")
    current[1][0] = float("inf")
    current[2][7] = float("-inf")
    insert(store, "m", _times(2, 2000), embeddings={"vec": current})
    for method in ("domain_classifier", "mmd", "ratio", "distance"):
        (vec,) = compute_drift(store, "m", REFERENCE, CURRENT, [FeatureSpec("vec", "embedding", method)]).features
        assert vec.verdict == "no drift", (method, vec.statistic)
        assert vec.current_rows == 1997
        assert vec.details["ignored"]["current"] == {"non_finite": 3, "other_dimension": 0}


def test_vectors_of_another_dimension_are_left_out_and_a_window_of_only_those_gets_no_verdict(store):
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(200, 8)).tolist() + rng.normal(size=(5, 4)).tolist()
    insert(store, "m", _times(1, 205), embeddings={"vec": reference, "other": rng.normal(size=(205, 8))})
    insert(
        store,
        "m",
        _times(2, 200),
        embeddings={"vec": rng.normal(size=(200, 8)).tolist(), "other": rng.normal(size=(200, 16)).tolist()},
    )
    found = _by_name(compute_drift(store, "m", REFERENCE, CURRENT))
    assert found["vec"].verdict == "no drift" and found["vec"].details["dimension"] == 8
    assert found["vec"].details["ignored"]["reference"] == {"non_finite": 0, "other_dimension": 5}
    assert found["other"].verdict == "no verdict"
    assert found["other"].note == (
        "no verdict: 205 reference and 0 current valid vectors of dimension 8, below 10 (current dimensions: 16)"
    )


def test_a_window_with_three_documents_gets_no_verdict_saying_why(store, documents):
    insert(store, "m", _times(1, 200), text={"text": documents[:200]}, embeddings={"vec": np.ones((200, 4))})
    insert(store, "m", _times(2, 3), text={"text": documents[200:203]}, embeddings={"vec": np.ones((3, 4))})
    report = compute_drift(store, "m", REFERENCE, CURRENT)
    found = _by_name(report)
    assert found["text"].verdict == "no verdict"
    assert found["text"].note == (
        "no verdict: 200 reference and 3 current documents, below the minimum of 10 per window for the "
        "domain classifier"
    )
    assert found["vec"].verdict == "no verdict" and "3 current valid vectors" in found["vec"].note
    assert report.as_dict()["dataset"]["analysed_features"] == 0
