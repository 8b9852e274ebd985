"""Protocol adapters and processors: a request/response pair in, the events the store would get out.

These run the receivers and the capture pipeline on exchanges built here (no
network); the proxy and the real model servers are in test_collector_proxy.py
and test_collector_e2e.py.
"""

from __future__ import annotations

import json
import math
import time

from driftwarden.collector.config import CollectorConfig, GenericConfig
from driftwarden.collector.exchange import Exchange
from driftwarden.collector.pipeline import Pipeline
from driftwarden.collector.processors.hashing import canonical_hash
from driftwarden.collector.processors.truncation import cap_text, decode_capped
from driftwarden.collector.receivers import select
from driftwarden.collector.receivers.base import parse_json


class _Events:
    """The pipeline's sink in these tests: keeps what it is given."""

    def __init__(self) -> None:
        self.events = []

    def submit(self, event) -> None:
        self.events.append(event)


def _config(**kw) -> CollectorConfig:
    kw.setdefault("upstream", "http://127.0.0.1:9")
    kw.setdefault("model", "m")
    return CollectorConfig(**kw)


def _exchange(path: str, request, response, *, status: int = 200, method: str = "POST", **kw) -> Exchange:
    t0 = time.perf_counter()
    body = request if isinstance(request, bytes) else json.dumps(request).encode()
    out = response if isinstance(response, bytes) else json.dumps(response).encode()
    ex = Exchange(method=method, path=path, query="", ts_us=time.time_ns() // 1000, t_start=t0, **kw)
    ex.request_body = body
    ex.response_body = out
    ex.response_bytes = len(out)
    ex.status = status
    ex.t_upstream_start, ex.t_upstream_end, ex.t_end = t0 + 0.001, t0 + 0.003, t0 + 0.004
    return ex


def _capture(ex: Exchange, **config) -> list:
    sink = _Events()
    assert Pipeline(_config(**config), sink).process(ex) == len(sink.events)
    return sink.events


OIP = "/v2/models/bikes/infer"


def test_oip_batched_request_gives_one_event_per_row_with_named_columns_and_shared_trace():
    request = {
        "inputs": [
            {"name": "x", "shape": [3, 2], "datatype": "FP64", "data": [[1, 2], [3, 4], [5, 6]]},
            {"name": "season", "shape": [3], "datatype": "BYTES", "data": ["winter", "spring", "summer"]},
        ]
    }
    response = {
        "model_name": "bikes",
        "model_version": "v7",
        "outputs": [
            {"name": "predict", "shape": [3, 1], "datatype": "FP64", "data": [10.5, 20.5, 30.5]},
            {"name": "proba", "shape": [3, 2], "datatype": "FP32", "data": [0.1, 0.9, 0.2, 0.8, 0.3, 0.7]},
        ],
    }
    events = _capture(_exchange(OIP, request, response, trace_id="ab" * 16), oip={"columns": {"x": ["temp", "hum"]}})
    assert len(events) == 3
    assert [e.num_names for e in events] == [["temp", "hum"]] * 3
    assert [e.num_values for e in events] == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    assert [(e.cat_names, e.cat_values) for e in events] == [
        (["season"], ["winter"]),
        (["season"], ["spring"]),
        (["season"], ["summer"]),
    ]
    assert [e.prediction for e in events] == [10.5, 20.5, 30.5]
    assert events[1].output_names == ["predict", "proba_0", "proba_1"]
    assert events[1].output_values == [20.5, 0.2, 0.8]
    assert {e.trace_id for e in events} == {"ab" * 16}
    assert len({e.event_id for e in events}) == 3
    assert {e.model_version for e in events} == {"v7"}
    assert all(e.protocol == "oip" and e.deterministic and e.error_class == "" for e in events)
    # Each row's payload is a valid single-row request and response (what a replay re-sends).
    row = json.loads(events[2].input_payload)
    assert row["inputs"][0] == {"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [5, 6]}
    assert json.loads(events[2].output_payload)["outputs"][0]["data"] == [30.5]
    assert len({e.input_hash for e in events}) == 3


def test_oip_column_names_come_from_parameters_else_tensor_name_and_index():
    request = {
        "inputs": [
            {"name": "a", "shape": [1, 2], "datatype": "INT64", "data": [1, 2], "parameters": {"columns": ["p", "q"]}},
            {"name": "b", "shape": [1, 3], "datatype": "FP32", "data": [7, 8, 9]},
        ]
    }
    response = {"outputs": [{"name": "label", "shape": [1], "datatype": "BYTES", "data": ["high"]}]}
    (event,) = _capture(_exchange(OIP, request, response))
    assert event.num_names == ["p", "q", "b_0", "b_1", "b_2"]
    assert event.prediction is None and event.prediction_label == "high"
    assert event.output_names == []


def test_oip_version_in_path_and_configured_version_precedence():
    request = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
    response = {
        "model_version": "from-response",
        "outputs": [{"name": "y", "shape": [1], "datatype": "FP64", "data": [2]}],
    }
    (from_path,) = _capture(_exchange("/v2/models/bikes/versions/3/infer", request, response))
    assert from_path.model_version == "3"
    (configured,) = _capture(_exchange("/v2/models/bikes/versions/3/infer", request, response), model_version="v9")
    assert configured.model_version == "v9"


def test_malformed_and_binary_bodies_are_recorded_with_an_error_class_not_rejected():
    (bad_json,) = _capture(_exchange(OIP, b'{"inputs": [', b'{"error": "bad"}', status=400))
    assert bad_json.error_class == "malformed_request" and bad_json.status == 400
    (binary,) = _capture(_exchange("/v1/chat/completions", b"\x00\xff\xfe\x01", b"ok"))
    assert binary.error_class == "malformed_request" and binary.protocol == "openai"
    assert binary.input_payload == "\x00\ufffd\ufffd\x01"
    (bad_response,) = _capture(
        _exchange(OIP, {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}, b"<html>")
    )
    assert bad_response.error_class == "unparsed_response" and bad_response.num_values == [1.0]
    (failed,) = _capture(
        _exchange(OIP, {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}, b"boom", status=503)
    )
    assert failed.error_class == "upstream_5xx"


def test_openai_chat_response_gives_text_usage_finish_reason_and_determinism():
    request = {
        "model": "llama",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
        "temperature": 0,
        "max_tokens": 16,
    }
    response = {
        "model": "llama-3-8b",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    (event,) = _capture(_exchange("/v1/chat/completions", request, response))
    assert (event.output_text, event.finish_reason) == ("Hi there", "stop")
    assert (event.prompt_tokens, event.completion_tokens) == (12, 3)
    assert event.deterministic is True
    assert event.model_version == "llama-3-8b"
    assert dict(zip(event.num_names, event.num_values, strict=True)) == {
        "prompt_chars": 13.0,
        "messages": 2.0,
        "temperature": 0.0,
        "max_tokens": 16.0,
    }
    assert event.cat_values == ["llama"]
    assert event.input_hash == canonical_hash(request["messages"])
    # Same prompt, other parameters: same input hash, other params hash; sampling makes it non-deterministic.
    (warm,) = _capture(_exchange("/v1/chat/completions", {**request, "temperature": 0.7}, response))
    assert warm.input_hash == event.input_hash and warm.params_hash != event.params_hash
    assert warm.deterministic is False
    (seeded,) = _capture(_exchange("/v1/chat/completions", {**request, "temperature": 0.7, "seed": 1}, response))
    assert seeded.deterministic is True


def test_openai_stream_is_reassembled_with_time_to_first_token_from_chunk_arrival():
    chunks = [
        {"model": "llama", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo!"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
    ]
    pieces = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
    ex = _exchange("/v1/completions", {"prompt": "say hello", "stream": True}, b"".join(pieces))
    ex.response_content_type = "text/event-stream"
    # Arrival times: the role chunk at +10 ms, the first content at +50 ms, the rest later.
    marks, total = [], 0
    for i, piece in enumerate(pieces):
        total += len(piece)
        marks.append((ex.t_start + (0.010 if i == 0 else 0.050 * i), total))
    ex.chunk_marks = marks
    (event,) = _capture(ex)
    assert event.output_text == "Hello!"
    assert event.finish_reason == "length"
    assert (event.prompt_tokens, event.completion_tokens) == (5, 2)
    assert math.isclose(event.ttft_ms, 50.0, abs_tol=1e-6)
    assert event.error_class == ""


def test_generic_mapping_reads_rows_and_paired_predictions():
    mapping = GenericConfig(
        numeric={"temp": "row.temp", "hour": "row.hr"},
        categorical={"city": "request.city"},
        rows="request.instances[*]",
        response_rows="response.predictions[*]",
        prediction="prediction_row.value",
        prediction_label="prediction_row.label",
    )
    request = {"city": "dc", "instances": [{"temp": 0.3, "hr": 7}, {"temp": "0.5"}]}
    response = {"predictions": [{"value": 12, "label": "low"}, {"value": 40, "label": "high"}]}
    events = _capture(_exchange("/predict", request, response), generic=mapping, protocol="generic")
    assert [dict(zip(e.num_names, e.num_values, strict=True)) for e in events] == [
        {"temp": 0.3, "hour": 7.0},
        {"temp": 0.5},
    ]
    assert [e.cat_values for e in events] == [["dc"], ["dc"]]
    assert [(e.prediction, e.prediction_label) for e in events] == [(12.0, "low"), (40.0, "high")]
    assert {e.protocol for e in events} == {"generic"}


def test_auto_selection_by_path_and_reads_are_not_recorded():
    chooser = select(_config())
    assert chooser.pick("POST", "/v2/models/x/versions/2/infer").name == "oip"
    assert chooser.pick("POST", "/v1/chat/completions").name == "openai"
    assert chooser.pick("POST", "/v1/embeddings").name == "openai"
    assert chooser.pick("POST", "/score").name == "unknown"
    assert chooser.pick("GET", "/v2/health/ready") is None
    assert select(_config(protocol="oip")).pick("POST", "/v1/chat/completions").name == "unknown"
    (unknown,) = _capture(_exchange("/score", b"abc", b"def"))
    assert unknown.protocol == "unknown" and unknown.input_hash != 0


def test_canonical_hash_ignores_key_order_and_integral_float_spelling():
    assert canonical_hash({"a": 1.0, "b": [0.1, 2]}) == canonical_hash({"b": [0.1, 2.0], "a": 1})
    assert canonical_hash({"a": 0.1}) != canonical_hash({"a": 0.2})
    assert canonical_hash({"a": float("nan")}) == canonical_hash({"a": float("nan")})


def test_payload_sampling_rate_zero_keeps_metadata_but_not_payloads():
    request = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [4.0]}]}
    response = {"outputs": [{"name": "y", "shape": [1], "datatype": "FP64", "data": [8.0]}]}
    (kept,) = _capture(_exchange(OIP, request, response))
    assert kept.payload_sampled and kept.input_payload
    (dropped,) = _capture(_exchange(OIP, request, response), payload={"sample_rate": 0.0, "sample_rates": {"x": 1.0}})
    assert not dropped.payload_sampled and dropped.input_payload == "" and dropped.output_payload == ""
    assert dropped.num_values == [4.0] and dropped.prediction == 8.0 and dropped.input_hash == kept.input_hash


def test_payloads_over_the_cap_are_cut_on_a_character_boundary_and_flagged():
    text, cut = decode_capped("aé€".encode(), 4)  # 1 + 2 + 3 bytes: the euro sign does not fit
    assert (text, cut) == ("aé", True)
    assert cap_text("é" * 10, 5) == ("éé", True)
    request = {"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "data": ["x" * 5000]}]}
    (event,) = _capture(_exchange(OIP, request, {"outputs": []}), payload={"max_bytes": 100})
    assert event.payload_truncated and len(event.input_payload.encode()) <= 100
    assert event.cat_values == ["x" * 5000]


def test_oip_binary_tensors_from_tritonclient_are_decoded_like_inline_data():
    import numpy as np
    import tritonclient.http as triton

    rows = np.array([[1.5, 2.5], [3.5, 4.5]], dtype=np.float32)
    labels = np.array([b"a", "é".encode()], dtype=np.object_)
    x = triton.InferInput("x", list(rows.shape), "FP32")
    x.set_data_from_numpy(rows, binary_data=True)
    s = triton.InferInput("s", [2], "BYTES")
    s.set_data_from_numpy(labels, binary_data=True)
    body, json_size = triton.InferenceServerClient.generate_request_body([x, s])
    assert json_size is not None and json_size < len(body)  # really the binary extension
    header = json.dumps(
        {"outputs": [{"name": "y", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}]}
    ).encode()
    response = header + np.array([7, 9], dtype="<i8").tobytes()
    ex = _exchange(OIP, body, response, request_json_length=json_size, response_json_length=len(header))
    events = _capture(ex)
    assert [e.num_values for e in events] == [[1.5, 2.5], [3.5, 4.5]]
    assert [e.cat_values for e in events] == [["a"], ["é"]]
    assert [e.prediction for e in events] == [7.0, 9.0]
    assert all(e.error_class == "" for e in events)
    # The stored payload is the JSON equivalent, with the row's data inline.
    stored = json.loads(events[1].input_payload)
    assert stored["inputs"][0]["data"] == [3.5, 4.5] and "binary_data_size" not in json.dumps(stored)


def test_json_bodies_parse_to_the_standard_librarys_values_also_where_orjson_refuses_them():
    """orjson parses bodies first; what it refuses, Python's parser still reads: the values are the standard
    library's in every case, and only what neither reads is not JSON."""
    bodies = [
        b'{"inputs": [{"data": [0.1, 1e-7, 2.5e300, -0, 3]}], "id": "\\u00e9\\n"}',
        b'{"id": 123456789012345678901234567890}',  # beyond 64 bits: orjson would give a float
        b'{"x": NaN, "y": -Infinity}',  # what json.dumps writes for NaN: orjson refuses it
        json.dumps({"text": "caf\u00e9"}).encode("utf-16"),  # UTF-16 with a byte-order mark
        b'\xef\xbb\xbf{"a": 1}',  # UTF-8 with a byte-order mark: orjson refuses it
        b'{"a": 1, "a": 2}',
        b'"\\ud800"',  # a lone surrogate: orjson refuses it
    ]
    for body in bodies:
        value, ok = parse_json(body)
        expected = json.loads(body)
        assert ok and json.dumps(value) == json.dumps(expected), body[:40]
    assert parse_json(b'{"x": 1') == (None, False)
    assert parse_json(b"\xff\xfe{") == (None, False)
    assert parse_json(b"") == (None, False)
    assert parse_json(b"[" * 5000 + b"]" * 5000) == (None, False)  # deeper than either parser goes
