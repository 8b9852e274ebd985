"""Message content carried by span events, from the real OpenTelemetry SDK and exporter.

Each kind of GenAI content event (the current ``gen_ai.client.inference.operation.details``,
the older per-message ``gen_ai.*.message``/``gen_ai.choice`` events, the oldest
``gen_ai.content.prompt``/``.completion``) is added to a real SDK span with ``add_event`` and
exported by ``opentelemetry-exporter-otlp-proto-http`` to the hub's ``POST /v1/traces``
(uvicorn on loopback, a database of the session's embedded store). What is stored is read
back from the store: the content, redacted like the collector's payloads, only when present.
"""

from __future__ import annotations

import json
import time

import pytest

from driftwarden import storage
from tests.collector_harness import module_store_url
from tests.test_otlp import Served, hub_app, rows

CARD = "4111 1111 1111 1111"  # passes the Luhn check: the card rule redacts it


@pytest.fixture(scope="module")
def store_client(engine_dir):
    return storage.connect(module_store_url(engine_dir, "otlp_events"))


@pytest.fixture(scope="module")
def exported(store_client):
    """Export one span per kind of content event (and two controls) with the real SDK; yield the stored rows."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    served = Served(hub_app(store_client))
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "events-app"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=served.url + "/v1/traces")))
        tracer = provider.get_tracer("test.genai.events")
        t0 = time.time_ns() - 60_000_000_000

        def call(kind: str, i: int, **attributes):
            span = tracer.start_span(
                f"chat {kind}",
                start_time=t0 + i * 1_000_000_000,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": "events-llm",
                    "gen_ai.usage.input_tokens": 10,
                    "gen_ai.usage.output_tokens": 5,
                    "kind": kind,
                    **attributes,
                },
            )
            return span

        # the current conventions: one details event with structured messages and system instructions
        span = call("details", 0)
        span.add_event(
            "gen_ai.client.inference.operation.details",
            {
                "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "You answer briefly."}]),
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "write to jane.doe@example.com"}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": "Done."}],
                            "finish_reason": "stop",
                        }
                    ]
                ),
            },
        )
        span.end(end_time=t0 + 500_000_000)

        # the previous conventions: one event per message, gen_ai.choice per answer (sent out of order)
        span = call("per-message", 1)
        span.add_event("gen_ai.system.message", {"content": "You are a payments assistant."})
        span.add_event("gen_ai.user.message", {"content": f"charge my card {CARD}"})
        span.add_event(
            "gen_ai.assistant.message",
            {"tool_calls": json.dumps([{"id": "call_1", "type": "function", "function": {"name": "charge"}}])},
        )
        span.add_event("gen_ai.tool.message", {"content": "charged", "id": "call_1"})
        span.add_event(
            "gen_ai.choice",
            {"index": 1, "finish_reason": "length", "message": json.dumps({"role": "assistant", "content": "Second"})},
        )
        span.add_event(
            "gen_ai.choice",
            {"index": 0, "finish_reason": "stop", "message": json.dumps({"content": "Your card is charged."})},
        )
        span.end(end_time=t0 + 1_500_000_000)

        # the oldest: gen_ai.content.prompt / gen_ai.content.completion
        span = call("content-events", 2)
        span.add_event("gen_ai.content.prompt", {"gen_ai.prompt": json.dumps([{"role": "user", "content": "2+2?"}])})
        span.add_event("gen_ai.content.completion", {"gen_ai.completion": "4"})
        span.end(end_time=t0 + 2_500_000_000)

        # attributes win over events; an event that is not a content event adds nothing
        answer = json.dumps([{"role": "assistant", "content": "A"}])
        span = call("attributes-win", 3, **{"gen_ai.output.messages": answer})
        span.add_event("gen_ai.content.completion", {"gen_ai.completion": "from the event"})
        span.add_event("exception", {"exception.message": "retrying"})
        span.end(end_time=t0 + 3_500_000_000)

        # no content anywhere: nothing stored
        span = call("no-content", 4)
        span.add_event("retry", {"attempt": 2})
        span.end(end_time=t0 + 4_500_000_000)
        provider.shutdown()
    finally:
        served.close()
    return {row["endpoint"].removeprefix("chat "): row for row in rows(store_client, "model = 'events-llm'")}


def test_the_details_event_gives_the_messages_and_the_system_instructions_first(exported):
    call = exported["details"]
    stored = json.loads(call["input_payload"])
    assert stored[0] == {"role": "system", "parts": [{"type": "text", "content": "You answer briefly."}]}
    assert stored[1]["role"] == "user" and "[redacted:email:" in stored[1]["parts"][0]["content"]
    assert "jane.doe@example.com" not in call["input_payload"] and call["redactions"] == 1
    assert call["output_text"] == "Done." and json.loads(call["output_payload"])[0]["finish_reason"] == "stop"
    assert call["payload_sampled"] and call["input_hash"] != 0 and call["output_hash"] != 0 and call["params_hash"] != 0
    # the text features text drift reads, as the collector's OpenAI receiver gives them: what was asked, redacted
    assert call["text_names"] == ["prompt", "completion"]
    assert call["text_values"][0].startswith("write to [redacted:email:") and call["text_values"][1] == "Done."


def test_per_message_events_become_the_input_in_order_and_choices_the_output_by_index(exported):
    call = exported["per-message"]
    messages = json.loads(call["input_payload"])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[0]["content"] == "You are a payments assistant."
    assert CARD not in call["input_payload"] and "[redacted:card:" in messages[1]["content"]
    assert messages[2]["tool_calls"][0]["function"]["name"] == "charge" and messages[3]["id"] == "call_1"
    choices = json.loads(call["output_payload"])
    assert [(c["index"], c["role"], c["finish_reason"]) for c in choices] == [
        (0, "assistant", "stop"),
        (1, "assistant", "length"),
    ]
    assert call["output_text"] == "Your card is charged.\nSecond" and call["redactions"] == 1
    assert call["text_names"] == ["prompt", "completion"]
    assert call["text_values"] == [messages[1]["content"], "Your card is charged.\nSecond"]


def test_the_oldest_content_events_are_read_too(exported):
    call = exported["content-events"]
    assert json.loads(call["input_payload"]) == [{"role": "user", "content": "2+2?"}]
    assert call["output_payload"] == "4" and call["output_text"] == "4"
    assert (call["text_names"], call["text_values"]) == (["prompt", "completion"], ["2+2?", "4"])


def test_attributes_win_over_events_and_a_span_without_content_stores_none(exported):
    call = exported["attributes-win"]
    assert call["output_text"] == "A" and "from the event" not in call["output_payload"]
    assert call["input_payload"] == "" and call["input_hash"] == 0
    bare = exported["no-content"]
    assert (bare["input_payload"], bare["output_payload"], bare["output_text"]) == ("", "", "")
    assert not bare["payload_sampled"] and bare["output_hash"] == 0 and bare["redactions"] == 0
    assert bare["text_names"] == [] and bare["text_values"] == []
    answer_only = exported["attributes-win"]  # an output and no input: the completion alone
    assert (answer_only["text_names"], answer_only["text_values"]) == (["completion"], ["A"])


def test_text_drift_finds_the_text_features_of_a_model_seen_only_through_spans(exported, store_client):
    import datetime as dt

    from driftwarden.detectors.drift import text
    from driftwarden.detectors.drift.sql import Source
    from driftwarden.detectors.window import Window

    now = dt.datetime.now(dt.UTC)
    window = Window(now - dt.timedelta(hours=1), now)
    assert text.discover(store_client, Source("events-llm", None), window) == ["completion", "prompt"]
