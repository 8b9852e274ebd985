"""Text and embedding features from the collector's protocols, and from files, into the store.

Receivers run through the capture pipeline on exchanges built here (as in test_collector_receivers.py);
the ingest test runs the real command line on a Parquet file and then ``driftwarden drift``.
"""

from __future__ import annotations

import base64
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftwarden.collector.arrow import from_ipc, to_ipc, to_table
from driftwarden.collector.config import CollectorConfig
from driftwarden.collector.exchange import Exchange
from driftwarden.collector.ingest_file import predictions_and_labels
from driftwarden.collector.pipeline import Pipeline
from driftwarden.errors import UserError
from tests.conftest import run_cli


class _Events:
    def __init__(self) -> None:
        self.events = []

    def submit(self, event) -> None:
        self.events.append(event)


def _capture(path: str, request, response, **config) -> list:
    t0 = time.perf_counter()
    ex = Exchange(method="POST", path=path, query="", ts_us=time.time_ns() // 1000, t_start=t0)
    ex.request_body = json.dumps(request).encode()
    ex.response_body = json.dumps(response).encode()
    ex.response_bytes = len(ex.response_body)
    ex.status = 200
    ex.t_upstream_start, ex.t_upstream_end, ex.t_end = t0 + 0.001, t0 + 0.003, t0 + 0.004
    sink = _Events()
    Pipeline(CollectorConfig(upstream="http://127.0.0.1:9", model="m", **config), sink).process(ex)
    return sink.events


def test_oip_text_tensors_become_text_features_and_other_bytes_stay_categorical():
    request = {
        "inputs": [
            {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["great phone, poor battery", "mail me"]},
            {"name": "lang", "shape": [2], "datatype": "BYTES", "data": ["en", "fr"]},
            {"name": "notes", "shape": [2], "datatype": "BYTES", "data": ["a b", "c d"]},
        ]
    }
    response = {"outputs": [{"name": "label", "shape": [2], "datatype": "BYTES", "data": ["neg", "pos"]}]}
    events = _capture("/v2/models/m/infer", request, response, oip={"text": ["text", "notes"]})
    assert [(e.text_names, e.text_values) for e in events] == [
        (["text", "notes"], ["great phone, poor battery", "a b"]),
        (["text", "notes"], ["mail me", "c d"]),
    ]
    assert [(e.cat_names, e.cat_values) for e in events] == [(["lang"], ["en"]), (["lang"], ["fr"])]
    default = _capture("/v2/models/m/infer", request, response)  # `text` is a text tensor by default
    assert default[0].text_names == ["text"] and default[0].cat_names == ["lang", "notes"]
    assert events[0].input_hash != events[1].input_hash


def test_oip_two_dimensional_float_tensors_become_embeddings_inputs_and_outputs():
    vectors = np.arange(2 * 48, dtype=float).reshape(2, 48) / 100
    request = {
        "inputs": [
            {"name": "query", "shape": [2], "datatype": "BYTES", "data": ["red shoes", "blue hat"]},
            {"name": "context", "shape": [2, 48], "datatype": "FP32", "data": vectors.tolist()},
            {"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [[1, 2, 3], [4, 5, 6]]},
        ]
    }
    response = {
        "outputs": [{"name": "embedding", "shape": [2, 48], "datatype": "FP32", "data": vectors.ravel().tolist()}]
    }
    events = _capture("/v2/models/m/infer", request, response)
    assert [e.emb_names for e in events] == [["context", "embedding"], ["context", "embedding"]]
    assert events[1].emb_values[0] == pytest.approx(vectors[1].tolist())
    assert events[0].num_names == ["x_0", "x_1", "x_2"]  # a narrow tensor keeps one numeric feature per column
    assert events[0].text_values == ["red shoes"]
    assert events[0].prediction is None and events[0].output_names == []
    named = _capture("/v2/models/m/infer", request, response, oip={"embeddings": ["x"]})
    assert named[0].emb_names == ["context", "x", "embedding"] and named[0].num_names == []


def test_openai_prompts_and_completions_become_text_features():
    request = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": [{"type": "text", "text": "what is"}, {"type": "text", "text": "drift?"}]},
        ],
    }
    response = {"model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "A change."}}]}
    (event,) = _capture("/v1/chat/completions", request, response)
    assert event.text_names == ["prompt", "completion"]
    assert event.text_values == ["what is\ndrift?", "A change."]
    (completion,) = _capture(
        "/v1/completions", {"model": "m", "prompt": "Once upon"}, {"choices": [{"index": 0, "text": " a time"}]}
    )
    assert completion.text_values == ["Once upon", " a time"]


def test_openai_embeddings_responses_become_embedding_features_as_floats_or_base64():
    vector = [0.25, -0.5, 1.0, 0.125]
    (event,) = _capture(
        "/v1/embeddings",
        {"model": "e", "input": "hello world"},
        {"data": [{"index": 0, "embedding": vector}], "model": "e"},
    )
    assert (event.text_names, event.text_values) == (["prompt"], ["hello world"])
    assert (event.emb_names, event.emb_values) == (["embedding"], [vector])
    packed = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    (b64,) = _capture(
        "/v1/embeddings",
        {"model": "e", "input": ["first", "second"], "encoding_format": "base64"},
        {"data": [{"index": 0, "embedding": packed}, {"index": 1, "embedding": packed}]},
    )
    assert b64.emb_values == [vector] and b64.text_values == ["first"]


def test_text_and_embedding_features_survive_the_arrow_batch_and_the_spool_format():
    (event,) = _capture(
        "/v1/embeddings", {"model": "e", "input": "x"}, {"data": [{"index": 0, "embedding": [0.5, 1.5]}]}
    )
    table = from_ipc(to_ipc(to_table([event])))
    assert table.column("text_names").to_pylist() == [["prompt"]]
    assert table.column("emb_values").to_pylist() == [[[0.5, 1.5]]]
    assert table.schema.field("emb_values").type == pa.list_(pa.list_(pa.float32()))


@pytest.mark.timeout(180)
def test_ingest_text_and_embedding_columns_then_drift_them_from_the_command_line(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    words = ["battery", "screen", "price", "delivery", "refund", "camera", "broken", "love", "great", "slow"]
    reviews = [" ".join(rng.choice(words[:6] if i < n // 2 else words[4:], 8)) for i in range(n)]
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    vectors[n // 2 :] += 1.0
    table = pa.table(
        {
            "ts": pa.array([f"2030-0{1 if i < n // 2 else 2}-01T00:{i % 60:02d}:{i // 60:02d}Z" for i in range(n)]),
            "review": reviews,
            "vec": pa.array(vectors.tolist(), pa.list_(pa.float32())),
            "stars": rng.integers(1, 6, n),
        }
    )
    path = tmp_path / "reviews.parquet"
    pq.write_table(table, path)
    store = f"chdb://{tmp_path}/store"  # an embedded store is created and migrated by its first command
    args = ["--store", store, "--model", "shop"]
    loaded = run_cli(
        "ingest",
        *args,
        "--file",
        str(path),
        "--timestamp-column",
        "ts",
        "--text-column",
        "review",
        "--embedding-column",
        "vec",
    )
    assert loaded.returncode == 0, loaded.stderr
    drift = run_cli(
        "drift",
        *args,
        "--reference",
        "2030-01-01..2030-02-01",
        "--current",
        "2030-02-01..2030-03-01",
        "--format",
        "json",
    )
    assert drift.returncode == 0, drift.stderr
    document = json.loads(drift.stdout)
    kinds = {f["feature"]: (f["feature_type"], f["method"], f["verdict"]) for f in document["features"]}
    assert kinds["review"] == ("text", "domain_classifier", "drift")
    assert kinds["vec"] == ("embedding", "domain_classifier", "drift")
    assert kinds["stars"][0] == "numeric"
    assert kinds["review.length_words"][0] == "text_descriptor"
    review = next(f for f in document["features"] if f["feature"] == "review")
    assert {"love", "great", "slow"} & set(review["details"]["typical_words"]["current"])
    table_out = run_cli(
        "drift",
        *args,
        "--reference",
        "2030-01-01..2030-02-01",
        "--current",
        "2030-02-01..2030-03-01",
        "--feature",
        "vec:embedding:distance",
        "--feature",
        "review:text",
    )
    assert table_out.returncode == 0, table_out.stderr
    vec_line = next(line for line in table_out.stdout.splitlines() if line.startswith("vec "))
    assert vec_line.split()[:3] == ["vec", "embedding", "distance"] and "DRIFT" in vec_line
    assert "review: words of the current window:" in table_out.stdout


def test_ingest_refuses_columns_that_are_not_text_or_vectors_naming_the_column_and_row():
    table = pa.table(
        {"ts": ["2030-01-01T00:00:00Z"] * 2, "note": ["fine", "[1, 2"], "n": [1, 2], "csv": ["[1, 2.5]", ""]}
    )

    def load(**columns):
        return predictions_and_labels(table, model="m", timestamp_column="ts", source="f.csv", **columns)

    with pytest.raises(UserError, match=r"column 'note' \(--embedding-column\) row 1: 'fine' is not a JSON array"):
        load(embedding_columns=["note"])
    with pytest.raises(UserError, match=r"column 'n' \(--text-column\) holds int64 values, not text"):
        load(text_columns=["n"])
    with pytest.raises(UserError, match=r"column 'gone' \(--text-column\) is not in f.csv"):
        load(text_columns=["gone"])
    rows, _ = load(text_columns=["note"], embedding_columns=["csv"])  # CSV vectors as JSON arrays; empty: missing
    assert rows.column("emb_values").to_pylist() == [[[1.0, 2.5]], []]
    assert rows.column("text_names").to_pylist() == [["note"], ["note"]]
    assert rows.column("num_names").to_pylist() == [["n"], ["n"]]
