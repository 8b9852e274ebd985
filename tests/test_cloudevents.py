"""KServe's payload logger: CloudEvents on ``POST /v1/cloudevents`` paired into stored inferences.

The hub app runs under uvicorn on loopback (as ``driftwarden api`` serves it) over a database
of the session's embedded store; events are posted over HTTP exactly as KServe's logger
sends them in binary mode (the attributes in ``ce-*`` headers, the payload as the body).
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from driftwarden import storage
from driftwarden.collector.hub_app import create_app
from driftwarden.collector.receivers.cloudevents import REQUEST_TYPE, RESPONSE_TYPE
from tests.collector_harness import module_store_url
from tests.test_otlp import Served, rows


@pytest.fixture(scope="module")
def client(engine_dir):
    return storage.connect(module_store_url(engine_dir, "kserve_cloudevents"))


@pytest.fixture(scope="module")
def hub(client):
    served = Served(create_app(client))
    yield served
    served.close()


def send(url: str, kind: str, ce_id: str, payload, *, model="sklearn-iris", time="", **extra) -> httpx.Response:
    headers = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": ce_id,
        "ce-type": REQUEST_TYPE if kind == "request" else RESPONSE_TYPE,
        "ce-source": "http://localhost:9081/",
        "ce-inferenceservicename": model,
        "ce-namespace": "default",
        "ce-component": "predictor",
        "ce-endpoint": "",
        "ce-traceparent": "00-90bdf848647d50283394155d2df58f19-84dacdfdf07cadfc-00",
        **({"ce-time": time} if time else {}),
        **extra,
    }
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return httpx.post(url + "/v1/cloudevents", content=body, headers=headers, timeout=30)


def test_a_kserve_v1_request_and_response_are_paired_by_ce_id_into_one_event_per_instance(hub, client):
    ce_id = str(uuid.uuid4())
    instances = {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}
    first = send(hub.url, "request", ce_id, instances, time="2026-04-10T00:23:26.078952Z")
    assert first.status_code == 200 and first.json() == {"stored": 2, "paired": False}
    halves = rows(client, "model = 'sklearn-iris'")
    assert len(halves) == 2 and all(r["prediction"] is None for r in halves)  # stored at once: nothing answered is lost
    second = send(hub.url, "response", ce_id, {"predictions": [1, 2]}, time="2026-04-10T00:23:26.080736Z")
    assert second.json() == {"stored": 2, "paired": True}
    paired = rows(client, "model = 'sklearn-iris'")
    assert len(paired) == 2  # the pair replaced the halves (same event ids)
    by_row = {tuple(r["num_values"]): r["prediction"] for r in paired}
    assert by_row == {(6.8, 2.8, 4.8, 1.4): 1.0, (6.0, 3.4, 4.5, 1.6): 2.0}
    assert paired[0]["num_names"] == ["x0", "x1", "x2", "x3"]
    assert {r["tenant"] for r in paired} == {"default"} and {r["protocol"] for r in paired} == {"cloudevents"}
    assert paired[0]["model_version"] == "predictor" and paired[0]["status"] == 200
    assert paired[0]["latency_ms"] == pytest.approx(1.784, abs=0.01)
    assert paired[0]["trace_id"] == "90bdf848647d50283394155d2df58f19"
    assert '"predictions"' in paired[0]["output_payload"] and "6.8" in paired[0]["input_payload"]


def test_a_response_that_arrives_first_is_paired_too(hub, client):
    ce_id = str(uuid.uuid4())
    assert send(hub.url, "response", ce_id, {"predictions": ["setosa"]}, model="iris-labels").json()["paired"] is False
    assert send(hub.url, "request", ce_id, {"instances": [{"petal": 1.4, "kind": "wild"}]}, model="iris-labels").json()[
        "paired"
    ]
    (event,) = rows(client, "model = 'iris-labels'")
    assert event["prediction_label"] == "setosa"
    assert (event["num_names"], event["cat_names"], event["cat_values"]) == (["petal"], ["kind"], ["wild"])


def test_open_inference_protocol_payloads_are_read_by_the_oip_receiver(hub, client):
    ce_id = str(uuid.uuid4())
    request = {"inputs": [{"name": "temp", "shape": [2], "datatype": "FP64", "data": [0.2, 0.4]}]}
    response = {"model_name": "bikes-v2", "outputs": [{"name": "y", "shape": [2], "datatype": "FP64", "data": [7, 9]}]}
    send(hub.url, "request", ce_id, request, model="bikes-v2")
    assert send(hub.url, "response", ce_id, response, model="bikes-v2").json() == {"stored": 2, "paired": True}
    events = rows(client, "model = 'bikes-v2'")
    assert sorted((e["num_names"], e["num_values"], e["prediction"]) for e in events) == [
        (["temp"], [0.2], 7.0),
        (["temp"], [0.4], 9.0),
    ]


def test_a_pair_split_by_a_restart_is_completed_from_the_store(client):
    ce_id = str(uuid.uuid4())
    before = Served(create_app(client))
    try:
        send(before.url, "request", ce_id, {"instances": [[1.0, 2.0]]}, model="restarted")
    finally:
        before.close()
    after = Served(create_app(client))  # a new process state: nothing pending in memory
    try:
        assert send(after.url, "response", ce_id, {"predictions": [3.0]}, model="restarted").json()["paired"]
    finally:
        after.close()
    (event,) = rows(client, "model = 'restarted'")
    assert (event["num_values"], event["prediction"]) == ([1.0, 2.0], 3.0)


def test_personal_data_in_payloads_is_redacted_like_the_sidecars(hub, client):
    ce_id = str(uuid.uuid4())
    send(hub.url, "request", ce_id, {"instances": [{"email": "jane.doe@example.com", "age": 41}]}, model="pii-model")
    (event,) = rows(client, "model = 'pii-model'")
    assert "jane.doe@example.com" not in event["input_payload"] and "[redacted:email:" in event["input_payload"]
    assert event["redactions"] >= 1


def test_bad_events_get_400_naming_the_problem_and_structured_mode_is_accepted(hub, client):
    missing = httpx.post(
        hub.url + "/v1/cloudevents", json={"instances": [[1]]}, headers={"ce-specversion": "1.0"}, timeout=10
    )
    assert missing.status_code == 400 and "ce-id" in missing.json()["detail"]
    wrong = send(hub.url, "request", "x1", {"instances": [[1]]}, **{"ce-type": "com.example.other"})
    assert wrong.status_code == 400 and REQUEST_TYPE in wrong.json()["detail"]
    refused = send(hub.url, "request", "x2", {"instances": [[1]]}, model="bad\tname")
    assert refused.status_code == 400 and "control character" in refused.json()["detail"]
    structured = {
        "specversion": "1.0",
        "id": "structured-1",
        "type": REQUEST_TYPE,
        "source": "http://localhost:9081/models/structured-model",
        "datacontenttype": "application/json",
        "data": {"instances": [[5.0]]},
    }
    answer = httpx.post(
        hub.url + "/v1/cloudevents",
        content=json.dumps(structured),
        headers={"content-type": "application/cloudevents+json"},
        timeout=10,
    )
    assert answer.status_code == 200
    (event,) = rows(client, "model = 'structured-model'")  # no inferenceservicename: the source's last segment
    assert event["num_values"] == [5.0]


def test_the_kserve_logger_needs_the_ingest_token_unless_the_configuration_opens_its_route(client):
    from driftwarden.collector.genai_config import GenAIConfig

    guarded = Served(create_app(client, ingest_token="i" * 32))
    opened = Served(create_app(client, ingest_token="i" * 32, genai=GenAIConfig(cloudevents_require_token=False)))
    try:
        assert send(guarded.url, "request", str(uuid.uuid4()), {"instances": [[1.0]]}).status_code == 401
        answer = send(opened.url, "request", str(uuid.uuid4()), {"instances": [[2.0]]}, model="kserve-open")
        assert answer.status_code == 200
        assert [event["num_values"] for event in rows(client, "model = 'kserve-open'")] == [[2.0]]
        # only that route opens: the other ingest endpoints still need the token
        events = httpx.post(opened.url + "/v1/traces", content=b"", headers={"content-type": "application/x-protobuf"})
        assert events.status_code == 401
    finally:
        guarded.close()
        opened.close()
