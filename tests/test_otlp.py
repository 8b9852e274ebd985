"""OTLP/HTTP ``POST /v1/traces``: GenAI spans from the real OpenTelemetry SDK and exporter become LLM calls.

The receiver runs in the hub's FastAPI app (``collector.hub_app``, as ``driftwarden api`` and
``up`` serve it) under uvicorn on loopback, over a database of the session's embedded store.
Spans are sent by ``opentelemetry-exporter-otlp-proto-http`` (protobuf), as OTLP/JSON the way
the specification shows it, and as pre-encoded protobuf for the bad-input cases. Metric sums
are read from the app's ``/metrics``, as Prometheus would.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi import Response
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from driftwarden import storage
from driftwarden.auth import TokenConfig
from driftwarden.collector.genai_config import GenAIConfig, ModelPrice
from driftwarden.collector.hub_app import close_ingest, create_app
from driftwarden.collector.metrics import REGISTRY
from driftwarden.detectors.api import ApiSettings, create_router
from tests.collector_harness import module_store_url

API_TOKEN = "otlp-test-read-token-0123456789"
PRICES = {"llama-otlp": ModelPrice(input=0.5, output=2.0)}


class Served:
    """The hub app under uvicorn on 127.0.0.1:<free port>, in a thread; :meth:`close` also closes its ingest."""

    def __init__(self, app) -> None:
        self.app = app
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started, "uvicorn did not start"

    def close(self) -> None:
        """Stop the server, then the app's ingest threads (``close_ingest``), in ``driftwarden api``'s order."""
        self.server.should_exit = True
        self.thread.join(10)
        close_ingest(self.app)


def hub_app(client, **genai):
    app = create_app(client, genai=GenAIConfig(**{"prices": PRICES, **genai}))
    app.include_router(create_router(ApiSettings(tokens=[TokenConfig(name="ops", token=API_TOKEN)])))

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return app


@pytest.fixture(scope="module")
def store_client(engine_dir):
    return storage.connect(module_store_url(engine_dir, "otlp_receiver"))


@pytest.fixture(scope="module")
def hub(store_client):
    served = Served(hub_app(store_client, service_models={"mapped-svc": "support-bot"}))
    yield served
    served.close()


def rows(client, where: str) -> list[dict]:
    result = client.query(f"SELECT *, ended_at FROM inferences FINAL WHERE {where} ORDER BY ts, span_id")
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def samples(url: str, name: str, **labels: str) -> float:
    """Sum of the samples ``name`` on ``url``/metrics whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# -- building spans by hand, for the pre-encoded cases -------------------------------------------------


def kv(key: str, value) -> KeyValue:
    if isinstance(value, list):
        items = ArrayValue(values=[kv("", v).value for v in value])
        return KeyValue(key=key, value=AnyValue(array_value=items))
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def genai_span(i: int, model: str, *, start: int, duration_ns: int = 250_000_000, tokens=(10, 20), **extra) -> Span:
    attributes = [
        kv("gen_ai.operation.name", "chat"),
        kv("gen_ai.provider.name", "vllm"),
        kv("gen_ai.request.model", model),
        kv("gen_ai.usage.input_tokens", tokens[0]),
        kv("gen_ai.usage.output_tokens", tokens[1]),
        *(kv(k, v) for k, v in extra.items()),
    ]
    return Span(
        trace_id=(i + 1).to_bytes(16, "big"),
        span_id=(i + 1).to_bytes(8, "big"),
        name=f"chat {model}",
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration_ns,
        attributes=attributes,
    )


def export_request(spans: list[Span], service: str = "pre-encoded") -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(kv("service.name", service))
    resource_spans.scope_spans.add().spans.extend(spans)
    return request


def post(url: str, body: bytes, content_type: str = "application/x-protobuf", **headers: str) -> httpx.Response:
    return httpx.post(url + "/v1/traces", content=body, headers={"content-type": content_type, **headers}, timeout=60)


# -- the real SDK exporter ---------------------------------------------------------------------------


def test_sdk_exporter_genai_spans_are_stored_as_llm_calls_with_every_field_and_their_tree(hub, store_client):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Status as SdkStatus
    from opentelemetry.trace import StatusCode, set_span_in_context

    provider = TracerProvider(resource=Resource.create({"service.name": "agent-app"}))
    exporter = OTLPSpanExporter(endpoint=hub.url + "/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test.genai")
    t0 = time.time_ns() - 60_000_000_000
    sent_in, sent_out = 0, 0
    root = tracer.start_span(
        "invoke_agent planner",
        start_time=t0,
        attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"},
    )
    context = set_span_in_context(root)
    for i, (tin, tout) in enumerate([(120, 40), (300, 85), (55, 0)]):
        span = tracer.start_span(
            "chat llama-otlp",
            context=context,
            start_time=t0 + (i + 1) * 1_000_000_000,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "vllm",
                "gen_ai.request.model": "llama-otlp",
                "gen_ai.response.model": "llama-otlp-2025-01",
                "gen_ai.usage.input_tokens": tin,
                "gen_ai.usage.output_tokens": tout,
                "gen_ai.response.finish_reasons": ["stop"] if tout else ["length"],
                "gen_ai.request.temperature": 0.0 if i == 0 else 0.7,
                "gen_ai.request.top_p": 0.9,
                "gen_ai.request.max_tokens": 256,
                "gen_ai.request.seed": 42 + i,
                "gen_ai.response.time_to_first_chunk": 0.120,
                "server.address": "vllm.internal",
            },
        )
        if i == 2:
            span.set_attribute("error.type", "timeout")
            span.set_status(SdkStatus(StatusCode.ERROR, "upstream timed out"))
        span.end(end_time=t0 + (i + 1) * 1_000_000_000 + 800_000_000)
        sent_in, sent_out = sent_in + tin, sent_out + tout
    with tracer.start_as_current_span("GET /health", context=context):  # not a GenAI span: counted, not stored
        pass
    root.end(end_time=t0 + 5_000_000_000)
    provider.shutdown()

    calls = rows(store_client, "request_model = 'llama-otlp'")
    assert len(calls) == 3
    (agent,) = rows(store_client, "model = 'agent-app'")  # no model attribute: stored under the service name
    assert agent["operation_name"] == "invoke_agent" and agent["parent_span_id"] == ""
    first, _, failed = calls
    assert {c["parent_span_id"] for c in calls} == {agent["span_id"]}
    assert {c["trace_id"] for c in calls} == {agent["trace_id"]} and len(agent["trace_id"]) == 32
    assert first["model"] == "llama-otlp" and first["protocol"] == "otlp" and first["service_name"] == "agent-app"
    assert (first["operation_name"], first["provider_name"]) == ("chat", "vllm")
    assert (first["response_model"], first["model_version"]) == ("llama-otlp-2025-01", "llama-otlp-2025-01")
    assert (first["prompt_tokens"], first["completion_tokens"], first["finish_reason"]) == (120, 40, "stop")
    assert (first["temperature"], first["top_p"], first["max_tokens"], first["seed"]) == (0.0, 0.9, 256, 42)
    assert first["deterministic"] and first["server_address"] == "vllm.internal"
    assert first["latency_ms"] == pytest.approx(800.0) and first["ttft_ms"] == pytest.approx(120.0)
    assert (first["ended_at"] - first["ts"]).total_seconds() == pytest.approx(0.8)
    assert first["span_status"] == "unset" and first["error_class"] == "" and first["status"] == 200
    assert first["cost"] == pytest.approx((120 * 0.5 + 40 * 2.0) / 1e6)
    assert failed["error_class"] == "timeout" and failed["span_status"] == "error" and failed["status"] == 500
    assert failed["finish_reason"] == "length"

    base = {"gen_ai_request_model": "llama-otlp", "gen_ai_provider_name": "vllm", "gen_ai_operation_name": "chat"}
    assert samples(hub.url, "gen_ai_client_token_usage_sum", gen_ai_token_type="input", **base) == sent_in
    assert samples(hub.url, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **base) == sent_out
    assert samples(hub.url, "gen_ai_client_token_usage_count", gen_ai_token_type="input", **base) == 3
    assert samples(hub.url, "gen_ai_client_operation_duration_seconds_count", error_type="timeout", **base) == 1
    assert samples(hub.url, "gen_ai_client_operation_duration_seconds_sum", **base) == pytest.approx(2.4)
    assert samples(hub.url, "gen_ai_server_time_to_first_token_seconds_count", **base) == 3
    # time per output token: (0.8 - 0.12) / (tokens - 1), for the two calls with more than one output token
    assert samples(hub.url, "gen_ai_server_time_per_output_token_seconds_count", **base) == 2
    assert samples(hub.url, "gen_ai_server_time_per_output_token_seconds_sum", **base) == pytest.approx(
        0.68 / 39 + 0.68 / 84
    )
    assert samples(hub.url, "driftwarden_gen_ai_tokens_total", gen_ai_request_model="llama-otlp") == sent_in + sent_out
    assert samples(hub.url, "driftwarden_gen_ai_cost_total", gen_ai_request_model="llama-otlp") == pytest.approx(
        (sent_in * 0.5 + sent_out * 2.0) / 1e6
    )


def test_a_model_seen_only_through_spans_is_listed_and_has_its_page(hub, store_client):
    start = time.time_ns() - 30_000_000_000
    answer = post(hub.url, export_request([genai_span(900, "spans-only-model", start=start)]).SerializeToString())
    assert answer.status_code == 200
    headers = {"authorization": f"Bearer {API_TOKEN}"}
    models = httpx.get(hub.url + "/api/v1/models", headers=headers, timeout=10).json()
    assert any(m["model"] == "spans-only-model" and m["events"] == 1 for m in models)
    page = httpx.get(hub.url + "/models/spans-only-model", headers=headers, timeout=30)
    assert page.status_code == 200 and "spans-only-model" in page.text


def test_otlp_json_as_the_specification_shows_it_gzip_too_and_service_mapping(hub, store_client):
    start = time.time_ns() - 20_000_000_000
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "mapped-svc"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "my.library", "version": "1.0.0"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "parentSpanId": "EEE19B7EC3C1B173",
                                "name": "chat qwen2.5-7b",
                                "startTimeUnixNano": str(start),
                                "endTimeUnixNano": str(start + 1_500_000_000),
                                "kind": 3,
                                "attributes": [
                                    {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
                                    {"key": "gen_ai.system", "value": {"stringValue": "ollama"}},
                                    {"key": "gen_ai.request.model", "value": {"stringValue": "qwen2.5-7b"}},
                                    {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "17"}},
                                    {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "33"}},
                                    {
                                        "key": "gen_ai.response.finish_reasons",
                                        "value": {"arrayValue": {"values": [{"stringValue": "stop"}]}},
                                    },
                                ],
                                "status": {},
                            }
                        ],
                    }
                ],
            }
        ]
    }
    answer = post(hub.url, json.dumps(document).encode(), "application/json")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {}  # nothing rejected: no partialSuccess
    (call,) = rows(store_client, "trace_id = '5b8efff798038103d269b633813fc60c'")
    assert call["model"] == "support-bot" and call["request_model"] == "qwen2.5-7b"  # service.name mapped
    assert (call["span_id"], call["parent_span_id"]) == ("eee19b7ec3c1b174", "eee19b7ec3c1b173")
    assert (call["provider_name"], call["prompt_tokens"], call["completion_tokens"]) == ("ollama", 17, 33)
    assert call["finish_reason"] == "stop" and call["latency_ms"] == pytest.approx(1500.0)

    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "EEE19B7EC3C1B175"
    zipped = gzip.compress(json.dumps(document).encode())
    answer = post(hub.url, zipped, "application/json", **{"content-encoding": "gzip"})
    assert answer.status_code == 200
    assert len(rows(store_client, "trace_id = '5b8efff798038103d269b633813fc60c'")) == 2


def test_a_retried_export_is_stored_once(hub, store_client):
    body = export_request([genai_span(700, "retry-model", start=time.time_ns() - 10**10)]).SerializeToString()
    assert post(hub.url, body).status_code == 200
    assert post(hub.url, body).status_code == 200
    assert len(rows(store_client, "model = 'retry-model'")) == 1


def test_message_content_is_stored_only_when_present_and_redacted(hub, store_client):
    start = time.time_ns() - 10**10
    messages = [{"role": "user", "parts": [{"type": "text", "content": "mail me at jane.doe@example.com"}]}]
    output = [{"role": "assistant", "parts": [{"type": "text", "content": "Sure, Jane."}], "finish_reason": "stop"}]
    with_content = genai_span(
        800,
        "content-model",
        start=start,
        **{"gen_ai.input.messages": json.dumps(messages), "gen_ai.output.messages": json.dumps(output)},
    )
    without = genai_span(801, "content-model", start=start + 1000)
    assert post(hub.url, export_request([with_content, without]).SerializeToString()).status_code == 200
    stored, bare = rows(store_client, "model = 'content-model'")
    assert "jane.doe@example.com" not in stored["input_payload"] and "[redacted:email:" in stored["input_payload"]
    assert stored["redactions"] == 1 and stored["payload_sampled"] and stored["input_hash"] != 0
    assert stored["output_text"] == "Sure, Jane." and "assistant" in stored["output_payload"]
    assert bare["input_payload"] == "" and bare["output_payload"] == "" and not bare["payload_sampled"]


# -- bad input: the documented answer, and nothing valid lost ------------------------------------------


def test_a_truncated_protobuf_gets_400_with_a_status_and_stores_nothing(hub, store_client):
    body = export_request([genai_span(i, "truncated-model", start=time.time_ns()) for i in range(50)])
    answer = post(hub.url, body.SerializeToString()[:-7])
    assert answer.status_code == 400 and answer.headers["content-type"] == "application/x-protobuf"
    status = status_pb2.Status.FromString(answer.content)
    assert status.code == 3 and "ExportTraceServiceRequest" in status.message
    assert rows(store_client, "model = 'truncated-model'") == []
    garbage = post(hub.url, b"{not json", "application/json")
    assert garbage.status_code == 400 and "not valid JSON" in garbage.json()["message"]


def test_a_wrong_content_type_or_encoding_gets_415(hub):
    answer = post(hub.url, b"<spans/>", "text/xml")
    assert answer.status_code == 415 and "application/x-protobuf" in answer.json()["message"]
    answer = post(hub.url, b"x", "application/x-protobuf", **{"content-encoding": "br"})
    assert answer.status_code == 415 and "gzip" in status_pb2.Status.FromString(answer.content).message


def test_a_body_over_the_limit_gets_413_compressed_or_inflated(store_client):
    served = Served(hub_app(store_client, max_request_bytes=64 * 1024))
    try:
        big = export_request(
            [genai_span(i, "limit-model", start=time.time_ns(), **{"pad": "x" * 200}) for i in range(400)]
        ).SerializeToString()
        assert len(big) > 64 * 1024
        answer = post(served.url, big)
        assert answer.status_code == 413 and "max_request_bytes" in status_pb2.Status.FromString(answer.content).message
        bomb = gzip.compress(b"\0" * (10 * 1024 * 1024))  # 10 MiB of zeros in about 10 KiB
        answer = post(served.url, bomb, **{"content-encoding": "gzip"})
        assert answer.status_code == 413
        small = export_request([genai_span(1000, "limit-model", start=time.time_ns())]).SerializeToString()
        assert post(served.url, small).status_code == 200
    finally:
        served.close()
    assert len(rows(store_client, "model = 'limit-model'")) == 1


def test_absurd_tokens_and_negative_durations_are_rejected_and_the_valid_spans_kept(hub, store_client):
    start = time.time_ns() - 10**10
    spans = [
        genai_span(500, "mixed-model", start=start),
        genai_span(501, "mixed-model", start=start, tokens=(10, 2**40)),  # absurd
        genai_span(502, "mixed-model", start=start, tokens=(-5, 3)),  # negative
        genai_span(503, "mixed-model", start=start, duration_ns=-1_000_000),  # ends before it starts
        genai_span(504, "mixed-model", start=start + 1),
        genai_span(505, "bad\nname", start=start),  # model name with a control character
    ]
    answer = post(hub.url, export_request(spans).SerializeToString())
    assert answer.status_code == 200
    result = ExportTraceServiceResponse.FromString(answer.content)
    assert result.partial_success.rejected_spans == 4
    message = result.partial_success.error_message
    assert "token count" in message and "negative duration" in message and "model name refused" in message
    kept = [r["span_id"] for r in rows(store_client, "model = 'mixed-model'")]
    assert kept == [spans[0].span_id.hex(), spans[4].span_id.hex()]


def test_without_a_journal_calls_the_store_refuses_are_rejected_and_the_others_of_the_request_stored(engine_dir):
    """A constraint added to the table refuses two calls of twenty (VIOLATED_CONSTRAINT); the hub answers without a
    journal (each request waits for its insert): 200, the two in ``partial_success`` with the store's reason, the
    eighteen others stored, and only their tokens on /metrics. Before, the whole request was answered 503, and
    refused again at every retry of the exporter."""
    client = storage.connect(module_store_url(engine_dir, "otlp_refused"))
    client.command("ALTER TABLE inferences ADD CONSTRAINT bounded CHECK prompt_tokens < 5000")
    served = Served(hub_app(client))
    try:
        start = time.time_ns() - 10**10
        spans = [genai_span(900 + i, "refused-model", start=start + i, tokens=(10, 1)) for i in range(20)]
        for i in (4, 13):
            spans[i] = genai_span(900 + i, "refused-model", start=start + i, tokens=(6000, 1))
        before = samples(served.url, "gen_ai_client_token_usage_sum", gen_ai_request_model="refused-model")
        answer = post(served.url, export_request(spans).SerializeToString())
        assert answer.status_code == 200, answer.text
        result = ExportTraceServiceResponse.FromString(answer.content)
        assert result.partial_success.rejected_spans == 2
        assert "2 span(s): the store refused them for what they hold" in result.partial_success.error_message
        assert "bounded" in result.partial_success.error_message
        kept = {r["span_id"] for r in rows(client, "model = 'refused-model'")}
        assert kept == {span.span_id.hex() for i, span in enumerate(spans) if i not in (4, 13)}
        after = samples(served.url, "gen_ai_client_token_usage_sum", gen_ai_request_model="refused-model")
        assert after - before == 18 * (10 + 1), "the refused calls are not counted"
    finally:
        served.close()
        client.command("ALTER TABLE inferences DROP CONSTRAINT bounded")


def test_ten_thousand_spans_in_one_request_are_all_stored_and_counted(hub, store_client):
    start = time.time_ns() - 10**10
    spans = [
        genai_span(100_000 + i, "bulk-model", start=start + i * 1000, tokens=(i % 97, i % 13)) for i in range(10_000)
    ]
    spans.append(Span(trace_id=b"\1" * 16, span_id=b"\2" * 8, name="db query", start_time_unix_nano=start))
    answer = post(hub.url, export_request(spans).SerializeToString())
    assert answer.status_code == 200
    assert not ExportTraceServiceResponse.FromString(answer.content).HasField("partial_success")
    (count,) = store_client.query(
        "SELECT count(), sum(prompt_tokens), sum(completion_tokens) FROM inferences FINAL WHERE model = 'bulk-model'"
    ).result_rows
    assert count == (10_000, sum(i % 97 for i in range(10_000)), sum(i % 13 for i in range(10_000)))
    labels = {"gen_ai_request_model": "bulk-model"}
    assert samples(hub.url, "gen_ai_client_token_usage_count", gen_ai_token_type="input", **labels) == 10_000
    assert samples(hub.url, "gen_ai_client_token_usage_sum", gen_ai_token_type="output", **labels) == count[2]


def test_the_ingest_token_guards_v1_traces_like_v1_events(store_client):
    app = create_app(store_client, ingest_token="ingest-secret-token-0123456789")
    served = Served(app)
    try:
        body = export_request([genai_span(1100, "guarded-model", start=time.time_ns())]).SerializeToString()
        assert post(served.url, body).status_code == 401
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import SpanExportResult

        exporter = OTLPSpanExporter(
            endpoint=served.url + "/v1/traces", headers={"authorization": "Bearer ingest-secret-token-0123456789"}
        )
        from opentelemetry.sdk.trace import TracerProvider

        tracer = TracerProvider().get_tracer("t")
        span = tracer.start_span("chat guarded-model", attributes={"gen_ai.request.model": "guarded-model"})
        span.end()
        assert exporter.export([span]) == SpanExportResult.SUCCESS
    finally:
        served.close()
    assert len(rows(store_client, "model = 'guarded-model'")) == 1


def test_the_model_page_of_a_language_model_shows_tokens_ttft_cost_and_the_slowest_and_costliest_calls(hub):
    start = time.time_ns() - 3_600_000_000_000
    spans = []
    for i in range(30):
        spans.append(
            genai_span(
                2000 + i,
                "llama-otlp",
                start=start + i * 60_000_000_000,
                duration_ns=(500 + 40 * i) * 1_000_000,
                tokens=(100 + i, 10 * i if i != 7 else 5000),
                **{"gen_ai.response.time_to_first_chunk": 0.05 + i / 1000},
            )
        )
    output = [{"role": "assistant", "parts": [{"type": "text", "content": "the costliest answer"}]}]
    spans[7].attributes.append(kv("gen_ai.output.messages", json.dumps(output)))
    assert post(hub.url, export_request(spans, service="page-svc").SerializeToString()).status_code == 200
    page = httpx.get(hub.url + "/models/llama-otlp", headers={"authorization": f"Bearer {API_TOKEN}"}, timeout=60)
    assert page.status_code == 200
    html = page.text
    section = html[html.index('id="language-model"') :]
    assert "Tokens per second" in section and "Time to first token" in section and "Cost" in section
    assert section.count("<svg") >= 3
    slowest = section[section.index("Slowest recent calls") : section.index("Most expensive recent calls")]
    costliest = section[section.index("Most expensive recent calls") :]
    slowest_trace = spans[29].trace_id.hex()
    costliest_trace = spans[7].trace_id.hex()
    assert slowest.index(slowest_trace) < slowest.index(spans[28].trace_id.hex())  # ordered by duration
    body = costliest.index("<tbody>")
    first_row = costliest[body : costliest.index("</tr>", body)]
    assert costliest_trace in first_row and "the costliest answer" in first_row


@pytest.mark.timeout(120)
def test_up_mounts_v1_traces_with_its_genai_prices_and_serves_the_metrics(engine_dir):
    from driftwarden import up

    store_url = module_store_url(engine_dir, "otlp_up")
    text = (
        "models: [{name: up-llm}]\n"
        "api: {listen: '127.0.0.1:0'}\n"
        "genai: {currency: EUR, prices: {up-llm: {input: 1.0, output: 3.0}}}\n"
    )
    platform = up.Platform(
        up.parse(text, source="up.yaml", store=store_url), run_scheduler=False, announce=lambda _: None
    )
    platform.start()
    try:
        url = platform.addresses.api_url()
        body = export_request([genai_span(3000, "up-llm", start=time.time_ns(), tokens=(1000, 2000))])
        assert post(url, body.SerializeToString()).status_code == 200
        assert samples(url, "driftwarden_gen_ai_cost_total", gen_ai_request_model="up-llm", currency="EUR") == (
            pytest.approx((1000 * 1.0 + 2000 * 3.0) / 1e6)
        )
        journal = platform.app.state.otlp_journal  # answered once journaled beside the embedded store
        assert journal.directory == engine_dir.with_name(engine_dir.name + "-spool") / "otlp-otlp_up"
        assert journal.wait_empty(30)
        (call,) = rows(storage.connect(store_url), "model = 'up-llm'")
        assert call["cost"] == pytest.approx(0.007)
    finally:
        platform.stop()


def test_a_truncated_gzip_body_gets_400_and_json_partial_success_is_camel_case(hub, store_client):
    body = gzip.compress(export_request([genai_span(4000, "gzip-model", start=time.time_ns())]).SerializeToString())
    answer = post(hub.url, body[:-12], **{"content-encoding": "gzip"})
    assert answer.status_code == 400 and "gzip" in status_pb2.Status.FromString(answer.content).message
    span = {
        "traceId": "not-hex",
        "spanId": "EEE19B7EC3C1B174",
        "name": "chat",
        "startTimeUnixNano": str(time.time_ns()),
        "endTimeUnixNano": str(time.time_ns()),
        "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "gzip-model"}}],
    }
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    answer = post(hub.url, json.dumps(document).encode(), "application/json")
    assert answer.status_code == 200
    assert answer.json()["partialSuccess"] == {
        "rejectedSpans": "1",
        "errorMessage": "1 span(s): trace_id must be 16 bytes and span_id 8 bytes",
    }
    assert rows(store_client, "model = 'gzip-model'") == []
