"""Message content sent as OpenTelemetry log records (``POST /v1/logs``), attached to the calls of its spans.

GenAI instrumentations (OpenAI's ``openai-v2`` among them) send a call's prompt and answer as log records
emitted inside the call's span: this is what the real OpenTelemetry SDK does here, through a ``LoggerProvider``
and ``opentelemetry-exporter-otlp-proto-http``'s log exporter (the spans through its span exporter), to the hub
app under uvicorn on loopback over a database of the session's embedded store. What is asserted is read back
from the store: the calls' rows in ``inferences`` after the content attacher gave them their content, whichever
of span and records arrived first, redacted like the collector's payloads. OTLP/JSON, OTLP/gRPC, the bad-input
answers and a restart between the records and their span are covered too.
"""

from __future__ import annotations

import gzip
import json
import time

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from driftwarden import storage
from driftwarden.collector.hub_app import close_ingest, create_app, start_otlp_grpc
from driftwarden.collector.receivers.genai_content import content_of
from driftwarden.collector.receivers.otlp import GenAIIngest
from tests.collector_harness import module_store_url
from tests.test_otlp import Served, hub_app, rows, samples

CARD = "4111 1111 1111 1111"  # passes the Luhn check: the card rule redacts it
MODEL = "logs-llm"


@pytest.fixture(scope="module")
def store_client(engine_dir):
    return storage.connect(module_store_url(engine_dir, "otlp_logs"))


@pytest.fixture(scope="module")
def hub(store_client):
    served = Served(hub_app(store_client))
    yield served
    served.close()


class Sdk:
    """A tracer and a logger of the real SDK, exporting over OTLP/HTTP (or gRPC) to the hub; each flushed at will."""

    def __init__(self, url: str | None = None, grpc_endpoint: str | None = None) -> None:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        if grpc_endpoint is None:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            spans, logs = OTLPSpanExporter(endpoint=url + "/v1/traces"), OTLPLogExporter(endpoint=url + "/v1/logs")
        else:
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            spans = OTLPSpanExporter(endpoint=grpc_endpoint, insecure=True)
            logs = OTLPLogExporter(endpoint=grpc_endpoint, insecure=True)
        resource = Resource.create({"service.name": "logs-app"})
        self.tracers = TracerProvider(resource=resource)
        self.tracers.add_span_processor(SimpleSpanProcessor(spans))
        self.loggers = LoggerProvider(resource=resource)
        self.loggers.add_log_record_processor(SimpleLogRecordProcessor(logs))
        self.tracer = self.tracers.get_tracer("test.genai.logs")
        self.logger = self.loggers.get_logger("test.genai.logs")

    def call(self, name: str, tracer=None, **attributes):
        return (tracer or self.tracer).start_span(
            f"chat {name}",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": MODEL,
                "gen_ai.request.temperature": 0.0,
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 5,
                **attributes,
            },
        )

    def event(self, span, name: str, body=None, **attributes) -> None:
        """A log record of ``name`` emitted inside ``span``, as an instrumentation emits it (exported at once)."""
        self.logger.emit(
            event_name=name,
            body=body,
            attributes={"gen_ai.provider.name": "openai", **attributes},
            context=trace.set_span_in_context(span),
        )

    def close(self) -> None:
        self.tracers.shutdown()
        self.loggers.shutdown()


def call_row(client, name: str, *, content: bool = True, timeout: float = 15.0) -> dict:
    """The call ``chat NAME``, once it has content (``content``) or once it is stored."""
    deadline = time.monotonic() + timeout
    while True:
        found = rows(client, f"model = '{MODEL}' AND endpoint = 'chat {name}'")
        if found and (found[0]["payload_sampled"] or not content):
            assert len(found) == 1, found
            return found[0]
        assert time.monotonic() < deadline, f"call {name!r}: {found}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def sdk(hub):
    sdk = Sdk(hub.url)
    yield sdk
    sdk.close()


# -- the previous conventions, as openai-v2 sends them: one record per message, one per choice ---------------------


def test_per_message_records_sent_before_the_span_become_the_calls_content_redacted(sdk, store_client):
    span = sdk.call("before")
    sdk.event(span, "gen_ai.system.message", {"content": "You are a payments assistant."})
    sdk.event(span, "gen_ai.user.message", {"content": f"charge my card {CARD}"})
    sdk.event(span, "gen_ai.choice", {"index": 1, "finish_reason": "length", "message": {"content": "Second"}})
    sdk.event(
        span,
        "gen_ai.choice",
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Your card is charged."}},
    )
    span.end()  # the span reaches the hub after its records, as with the SDK's batch processors
    call = call_row(store_client, "before")
    messages = json.loads(call["input_payload"])
    assert messages == [
        {"role": "system", "content": "You are a payments assistant."},
        {"role": "user", "content": messages[1]["content"]},
    ]
    assert CARD not in call["input_payload"] and messages[1]["content"].startswith("charge my card [redacted:card:")
    choices = json.loads(call["output_payload"])
    assert [(c["index"], c["finish_reason"], c["role"]) for c in choices] == [
        (0, "stop", "assistant"),
        (1, "length", "assistant"),
    ]
    assert call["output_text"] == "Your card is charged.\nSecond"
    assert call["content_source"] == "logs" and call["redactions"] == 1 and not call["payload_truncated"]
    assert call["text_names"] == ["prompt", "completion"]  # what text drift reads, as for content on a span
    assert call["text_values"] == [messages[1]["content"], "Your card is charged.\nSecond"]
    assert call["input_hash"] != 0 and call["output_hash"] != 0 and call["params_hash"] != 0
    # what the span itself gave stays: tokens, model, ids
    assert (call["prompt_tokens"], call["completion_tokens"], call["protocol"]) == (10, 5, "otlp")
    assert call["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_records_that_come_after_the_span_and_in_two_requests_complete_the_call(sdk, store_client):
    span = sdk.call("after")
    span.end()
    assert call_row(store_client, "after", content=False)["payload_sampled"] == 0
    sdk.event(span, "gen_ai.user.message", {"content": "What is 2+2?"})
    first = call_row(store_client, "after")
    assert json.loads(first["input_payload"]) == [{"role": "user", "content": "What is 2+2?"}]
    assert first["output_payload"] == "" and first["output_hash"] == 0
    assert (first["text_names"], first["text_values"]) == (["prompt"], ["What is 2+2?"])
    sdk.event(span, "gen_ai.choice", {"index": 0, "finish_reason": "stop", "message": {"content": "4"}})
    deadline = time.monotonic() + 15
    while (call := call_row(store_client, "after"))["output_text"] != "4":
        assert time.monotonic() < deadline, call
        time.sleep(0.1)
    assert json.loads(call["input_payload"]) == [{"role": "user", "content": "What is 2+2?"}]
    assert call["input_hash"] == first["input_hash"] and call["output_hash"] != 0
    assert (call["text_names"], call["text_values"]) == (["prompt", "completion"], ["What is 2+2?", "4"])


def test_the_details_record_of_the_current_conventions_hashes_as_the_same_event_on_a_span(sdk, store_client):
    instructions = [{"type": "text", "content": "You answer briefly."}]
    inputs = [{"role": "user", "parts": [{"type": "text", "content": "write to jane.doe@example.com"}]}]
    outputs = [{"role": "assistant", "parts": [{"type": "text", "content": "Done."}], "finish_reason": "stop"}]
    span = sdk.call("details")
    sdk.event(
        span,
        "gen_ai.client.inference.operation.details",
        **{
            "gen_ai.system_instructions": json.dumps(instructions),
            "gen_ai.input.messages": json.dumps(inputs),
            "gen_ai.output.messages": json.dumps(outputs),
        },
    )
    span.end()
    call = call_row(store_client, "details")
    stored = json.loads(call["input_payload"])
    assert stored[0] == {"role": "system", "parts": instructions}
    assert "jane.doe@example.com" not in call["input_payload"] and "[redacted:email:" in call["input_payload"]
    assert call["output_text"] == "Done." and call["redactions"] == 1
    assert call["text_values"][0].startswith("write to [redacted:email:") and call["text_values"][1] == "Done."
    params = {"temperature": 0.0, "top_p": None, "max_tokens": None, "seed": None}
    on_a_span = content_of(inputs, outputs, instructions, params, GenAIIngest().redactor, 65536)
    assert (call["input_hash"], call["output_hash"], call["params_hash"]) == (
        on_a_span.input_hash,
        on_a_span.output_hash,
        on_a_span.params_hash,
    )


def test_a_span_that_carries_its_content_keeps_it(sdk, store_client):
    answer = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "from the span"}]}])
    span = sdk.call("own-content", **{"gen_ai.output.messages": answer})
    sdk.event(span, "gen_ai.choice", {"index": 0, "message": {"content": "from a record"}})
    span.end()
    call_row(store_client, "own-content")
    sdk.event(span, "gen_ai.user.message", {"content": "later"})  # looked at again: still the span's
    time.sleep(2.0)
    call = call_row(store_client, "own-content")
    assert call["output_text"] == "from the span" and call["content_source"] == "" and call["input_payload"] == ""


def test_records_without_content_and_other_logs_are_counted_not_stored(hub, sdk, store_client):
    before = {o: samples(hub.url, "driftwarden_otlp_log_records_total", outcome=o) for o in ("no_content", "not_genai")}
    span = sdk.call("capture-off")
    sdk.event(span, "gen_ai.user.message")  # content capture off: the record has no body
    sdk.event(span, "gen_ai.choice", {"index": 0, "finish_reason": "stop", "message": {"role": "assistant"}})
    sdk.logger.emit(body="connection pool resized", attributes={"pool": 4}, context=trace.set_span_in_context(span))
    sdk.logger.emit(body="odd", attributes={"event.name": ["a", "list"]}, context=trace.set_span_in_context(span))
    span.end()
    call = call_row(store_client, "capture-off", content=False)
    time.sleep(1.0)
    call = call_row(store_client, "capture-off", content=False)
    assert not call["payload_sampled"] and call["input_payload"] == "" and call["content_source"] == ""
    trace_id = call["trace_id"]
    assert (
        store_client.query(f"SELECT count() FROM genai_content_events WHERE trace_id = '{trace_id}'").result_rows[0][0]
        == 0
    )
    assert samples(hub.url, "driftwarden_otlp_log_records_total", outcome="no_content") == before["no_content"] + 2
    assert samples(hub.url, "driftwarden_otlp_log_records_total", outcome="not_genai") == before["not_genai"] + 2


# -- requests built by hand: OTLP/JSON, partial success, bad input ---------------------------------------------------


def _record(name: str, body: dict | None, trace_id: bytes, span_id: bytes) -> LogRecord:
    record = LogRecord(event_name=name, trace_id=trace_id, span_id=span_id, time_unix_nano=time.time_ns())
    if body is not None:
        record.body.kvlist_value.values.extend(KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in body.items())
    return record


def _request(*records: LogRecord) -> bytes:
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=list(records))])]
    ).SerializeToString()


def test_a_content_record_outside_a_span_is_rejected_and_the_others_are_stored(hub, store_client):
    trace_id, span_id = bytes.fromhex("ab" * 16), bytes.fromhex("cd" * 8)
    body = _request(
        _record("gen_ai.user.message", {"content": "no span"}, b"", b""),
        _record("gen_ai.user.message", {"content": "kept"}, trace_id, span_id),
    )
    answer = httpx.post(hub.url + "/v1/logs", content=body, headers={"content-type": "application/x-protobuf"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/x-protobuf"
    parsed = ExportLogsServiceResponse.FromString(answer.content)
    assert parsed.partial_success.rejected_log_records == 1
    assert "without the trace and span ids of its call's span" in parsed.partial_success.error_message
    stored = store_client.query(
        f"SELECT input FROM genai_content_events FINAL WHERE trace_id = '{trace_id.hex()}'"
    ).result_rows
    assert stored == [('{"role":"user","content":"kept"}',)]


def test_otlp_json_as_the_specification_shows_it_with_hex_ids_and_gzip(hub, sdk, store_client):
    span = sdk.call("json")
    span.end()
    context = span.get_span_context()
    document = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "logs-app"}}]},
                "scopeLogs": [
                    {
                        "scope": {"name": "opentelemetry.instrumentation.openai_v2"},
                        "logRecords": [
                            {
                                "timeUnixNano": str(time.time_ns()),
                                "eventName": "gen_ai.user.message",
                                "traceId": format(context.trace_id, "032x"),
                                "spanId": format(context.span_id, "016x"),
                                "body": {
                                    "kvlistValue": {"values": [{"key": "content", "value": {"stringValue": "hi"}}]}
                                },
                                "attributes": [{"key": "gen_ai.system", "value": {"stringValue": "openai"}}],
                            },
                            {
                                "timeUnixNano": str(time.time_ns()),
                                "traceId": format(context.trace_id, "032x"),
                                "spanId": format(context.span_id, "016x"),
                                "attributes": [
                                    {"key": "event.name", "value": {"stringValue": "gen_ai.choice"}},
                                    {"key": "index", "value": {"intValue": "0"}},
                                    {"key": "message", "value": {"stringValue": '{"content": "hello"}'}},
                                ],
                            },
                        ],
                    }
                ],
            }
        ]
    }
    answer = httpx.post(
        hub.url + "/v1/logs",
        content=gzip.compress(json.dumps(document).encode()),
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert answer.status_code == 200 and answer.json() == {}
    call = call_row(store_client, "json")
    assert json.loads(call["input_payload"]) == [{"role": "user", "content": "hi"}]
    assert call["output_text"] == "hello" and call["content_source"] == "logs"


@pytest.mark.parametrize(
    ("content_type", "body", "status", "message"),
    [
        ("application/x-protobuf", _request(_record("gen_ai.user.message", {"content": "x"}, b"a" * 16, b"b" * 8))[:-3],
         400, "not a valid ExportLogsServiceRequest protobuf"),
        ("application/json", b'{"resourceLogs": [', 400, "not valid JSON"),
        ("application/json", b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "soon"}]}]}]}', 400,
         "not a valid OTLP/JSON ExportLogsServiceRequest"),
        ("text/plain", b"hello", 415, "is not accepted"),
        ("application/x-protobuf", b"\0" * (2 * 1024 * 1024), 413, "larger than"),
    ],
    ids=["truncated-protobuf", "invalid-json", "wrong-json-type", "content-type", "too-large"],
)  # fmt: skip
def test_bad_input_gets_the_documented_answer(store_client, content_type, body, status, message):
    served = Served(hub_app(store_client, max_request_bytes=1024 * 1024))
    try:
        answer = httpx.post(served.url + "/v1/logs", content=body, headers={"content-type": content_type})
        assert answer.status_code == status, answer.text
        assert message in answer.text
        assert httpx.get(served.url + "/healthz").status_code == 200
    finally:
        served.close()


def test_the_store_content_switch_off_stores_no_record(store_client):
    served = Served(hub_app(store_client, store_content=False))
    trace_id = bytes.fromhex("ef" * 16)
    try:
        body = _request(_record("gen_ai.user.message", {"content": "secret"}, trace_id, b"\1" * 8))
        answer = httpx.post(served.url + "/v1/logs", content=body, headers={"content-type": "application/x-protobuf"})
        assert answer.status_code == 200
        assert not ExportLogsServiceResponse.FromString(answer.content).HasField("partial_success")
    finally:
        served.close()
    query = f"SELECT count() FROM genai_content_events WHERE trace_id = '{trace_id.hex()}'"
    assert store_client.query(query).result_rows[0][0] == 0


def test_content_over_the_size_limit_is_cut_and_says_so(store_client):
    app = hub_app(store_client, max_content_bytes=200)
    served = Served(app)
    sdk = Sdk(served.url)
    try:
        long_question = [{"role": "user", "parts": [{"type": "text", "content": "why? " * 100}]}]
        span = sdk.call("cut-details")
        details = {"gen_ai.input.messages": json.dumps(long_question)}
        sdk.event(span, "gen_ai.client.inference.operation.details", **details)
        span.end()
        call = call_row(store_client, "cut-details")
        assert call["payload_truncated"] and len(call["input_payload"].encode()) <= 200
        assert call["text_names"] == []  # a cut JSON array does not say what was asked
        span = sdk.call("cut-messages")
        sdk.event(span, "gen_ai.user.message", {"content": "short"})
        sdk.event(span, "gen_ai.choice", {"index": 0, "message": {"content": "long answer " * 50}})
        span.end()
        call = call_row(store_client, "cut-messages")
        assert call["payload_truncated"] and call["text_values"][0] == "short"
        assert len(call["output_text"].encode()) <= 200 and call["output_text"].startswith("long answer")
    finally:
        sdk.close()
        served.close()


@pytest.mark.parametrize("journal", [False, True], ids=["answered-after-insert", "journal"])
def test_a_span_sent_again_after_its_call_got_content_gets_it_back(store_client, tmp_path, journal):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider

    app = create_app(store_client, journal_dir=tmp_path / "journal" if journal else None)
    served = Served(app)
    sdk = Sdk(served.url)
    try:
        held = TracerProvider().get_tracer("held")  # no processor: the span is exported by hand, twice
        span = sdk.call(f"sent-again-{journal}", tracer=held)
        sdk.event(span, "gen_ai.user.message", {"content": "asked once"})
        span.end()
        exporter = OTLPSpanExporter(endpoint=served.url + "/v1/traces")
        exporter.export([span])
        assert call_row(store_client, f"sent-again-{journal}")["content_source"] == "logs"
        # the span sent again, in a request with another (so not an identical block, which the store would drop as
        # a repeated insert): its later row, without content, replaces the call's row that had it
        other = sdk.call(f"other-{journal}", tracer=held)
        other.end()
        exporter.export([span, other])
        if journal:
            assert app.state.otlp_journal.wait_empty(10)
        call = call_row(store_client, f"sent-again-{journal}")  # the attacher gave it its content back
        assert json.loads(call["input_payload"]) == [{"role": "user", "content": "asked once"}]
        assert call["content_source"] == "logs"
    finally:
        sdk.close()
        served.close()


# -- OTLP/gRPC, and a restart between the records and their span -----------------------------------------------------


def test_records_over_otlp_grpc_give_the_call_its_content(store_client):
    app = create_app(store_client)
    port = start_otlp_grpc(app, "127.0.0.1:0")
    sdk = Sdk(grpc_endpoint=f"127.0.0.1:{port}")
    try:
        span = sdk.call("grpc")
        sdk.event(span, "gen_ai.user.message", {"content": "over gRPC"})
        sdk.event(span, "gen_ai.choice", {"index": 0, "message": {"content": "received"}})
        span.end()
        call = call_row(store_client, "grpc")
        assert json.loads(call["input_payload"]) == [{"role": "user", "content": "over gRPC"}]
        assert call["output_text"] == "received"
    finally:
        sdk.close()
        close_ingest(app)


def test_a_restart_between_the_records_and_their_span_loses_nothing(store_client):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider

    app = hub_app(store_client)
    first = Served(app)
    sdk = Sdk(first.url)
    held = TracerProvider().get_tracer("held")  # no processor: the span is exported by hand, after the restart
    span = sdk.call("restart", tracer=held)
    sdk.event(span, "gen_ai.user.message", {"content": "asked before the restart"})
    span.end()
    first.close()  # and its ingest: the span never came, the call waits
    sdk.close()

    app = hub_app(store_client)  # a new process's hub: it looks at the records of the last 15 minutes again
    second = Served(app)
    try:
        OTLPSpanExporter(endpoint=second.url + "/v1/traces").export([span])  # the exporter's retry
        call = call_row(store_client, "restart")
        assert json.loads(call["input_payload"]) == [{"role": "user", "content": "asked before the restart"}]
        assert call["content_source"] == "logs"
    finally:
        second.close()
