"""The GenAI metrics and fields are the same whether a call comes through the sidecar or as a span.

A real OpenAI-compatible upstream (aiohttp, on loopback) streams chat completions with
delays; the ``openai`` SDK calls it through an in-process collector (real proxy, pipeline,
writer into a database of the session's embedded store), streaming with
``stream_options.include_usage``. The same call, described as an OpenTelemetry GenAI span,
is exported to the hub's ``POST /v1/traces``. Both land the same columns and the same
``gen_ai_*`` series on ``/metrics`` (the collector's admin port).
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from driftwarden import storage
from driftwarden.collector.genai_config import GenAIConfig, ModelPrice
from driftwarden.collector.genai_metrics import GenAIRecorder
from tests.collector_harness import AppServer, InProcessCollector, module_store_url, wait_for
from tests.test_otlp import Served, export_request, genai_span, hub_app, post, rows

TOKENS = ["Tokens", " are", " counted", " the", " same", " way", "."]
FIRST_TOKEN_DELAY = 0.25
TOKEN_GAP = 0.05
PROMPT_TOKENS = 13
PRICE = {"input": 0.4, "output": 1.6}


class Upstream:
    """An OpenAI-compatible chat server that streams one token per chunk, with usage when asked."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        base = {"id": "chatcmpl-9", "created": 1700000000, "model": body["model"] + "-served"}
        if body.get("model") == "broken-llm":
            return web.json_response({"error": {"message": "overloaded"}}, status=503)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(choices: list, **extra) -> None:
            chunk = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        await asyncio.sleep(FIRST_TOKEN_DELAY)
        for token in TOKENS:
            await send([{"index": 0, "delta": {"content": token}, "finish_reason": None}])
            await asyncio.sleep(TOKEN_GAP)
        await send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(TOKENS)}
            await send([], usage={**usage, "total_tokens": PROMPT_TOKENS + len(TOKENS)})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@pytest.fixture(scope="module")
def upstream():
    server = AppServer(Upstream().app())
    yield server
    server.close()


@pytest.fixture(scope="module")
def sidecar(upstream, engine_dir):
    store_url = module_store_url(engine_dir, "genai_sidecar")
    genai = {"prices": {"sidecar-llm": PRICE, "span-llm": PRICE}, "provider_name": "vllm"}
    collector = InProcessCollector(store_url, upstream=upstream.url, model="assistant", genai=genai)
    collector.store_url = store_url
    yield collector
    collector.close()


def series(url: str, model: str) -> dict[tuple, float]:
    """Every gen_ai / driftwarden_gen_ai sample of ``model`` on ``url``/metrics, keyed by name and labels."""
    out: dict[tuple, float] = {}
    text = httpx.get(url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "gen_ai" in sample.name and sample.labels.get("gen_ai_request_model") == model:
                labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "gen_ai_request_model"))
                out[(sample.name, labels)] = sample.value
    return out


def _stream_once(url: str, model: str) -> str:
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="not-used", max_retries=0)
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count my tokens"}],
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.2,
        top_p=0.95,
        max_tokens=64,
        seed=7,
    )
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


@pytest.mark.timeout(60)
def test_openai_sdk_streaming_through_the_sidecar_lands_the_same_metrics_as_the_equivalent_span(sidecar):
    assert _stream_once(sidecar.url, "sidecar-llm") == "".join(TOKENS)
    db = storage.connect(sidecar.store_url)
    (call,) = wait_for(lambda: rows(db, "request_model = 'sidecar-llm'"), lambda r: len(r) == 1)
    assert (call["operation_name"], call["provider_name"], call["protocol"]) == ("chat", "vllm", "openai")
    assert (call["response_model"], call["server_address"]) == ("sidecar-llm-served", "127.0.0.1")
    assert (call["temperature"], call["top_p"], call["max_tokens"], call["seed"]) == (0.2, 0.95, 64, 7)
    assert (call["prompt_tokens"], call["completion_tokens"]) == (PROMPT_TOKENS, len(TOKENS))
    assert call["cost"] == pytest.approx((PROMPT_TOKENS * 0.4 + len(TOKENS) * 1.6) / 1e6)
    assert call["ttft_ms"] >= FIRST_TOKEN_DELAY * 1000

    # The same call as a span, exported to the OTLP receiver of a hub over the same registry.
    hub = Served(hub_app(db, prices={"span-llm": ModelPrice(**PRICE)}))
    try:
        start = time.time_ns() - 5_000_000_000
        span = genai_span(
            4242,
            "span-llm",
            start=start,
            duration_ns=round(call["latency_ms"] * 1e6),
            tokens=(PROMPT_TOKENS, len(TOKENS)),
            **{
                "gen_ai.response.time_to_first_chunk": call["ttft_ms"] / 1000,
                "gen_ai.response.finish_reasons": ["stop"],
            },
        )
        assert post(hub.url, export_request([span]).SerializeToString()).status_code == 200
    finally:
        hub.close()
    (as_span,) = rows(db, "request_model = 'span-llm'")
    for column in ("operation_name", "provider_name", "prompt_tokens", "completion_tokens", "cost"):
        assert as_span[column] == pytest.approx(call[column]), column
    assert as_span["ttft_ms"] == pytest.approx(call["ttft_ms"])

    via_sidecar, via_span = series(sidecar.admin_url, "sidecar-llm"), series(sidecar.admin_url, "span-llm")
    assert via_sidecar.keys() == via_span.keys() and len(via_sidecar) > 40
    for key, value in via_sidecar.items():
        assert via_span[key] == pytest.approx(value, rel=1e-6), key
    names = {name for name, _ in via_sidecar}
    assert {
        "gen_ai_client_token_usage_sum",
        "gen_ai_client_operation_duration_seconds_count",
        "gen_ai_server_time_to_first_token_seconds_sum",
        "gen_ai_server_time_per_output_token_seconds_sum",
        "driftwarden_gen_ai_tokens_total",
        "driftwarden_gen_ai_cost_total",
    } <= names
    usage = dict(via_sidecar)
    operation = (("error_type", ""), ("gen_ai_operation_name", "chat"), ("gen_ai_provider_name", "vllm"))
    assert usage[("gen_ai_client_token_usage_sum", (*operation, ("gen_ai_token_type", "output")))] == len(TOKENS)


@pytest.mark.timeout(60)
def test_a_failed_call_through_the_sidecar_carries_error_type(sidecar):
    from openai import APIStatusError

    with pytest.raises(APIStatusError):
        _stream_once(sidecar.url, "broken-llm")
    found = wait_for(
        lambda: series(sidecar.admin_url, "broken-llm"),
        lambda s: any(name == "gen_ai_client_operation_duration_seconds_count" for name, _ in s),
    )
    counts = {
        labels: v for (name, labels), v in found.items() if name == "gen_ai_client_operation_duration_seconds_count"
    }
    assert [dict(labels)["error_type"] for labels in counts] == ["upstream_5xx"]


def test_cost_uses_the_response_model_then_the_request_model_then_the_model():
    from driftwarden.collector.event import Event

    recorder = GenAIRecorder(
        GenAIConfig(prices={"a": ModelPrice(input=1, output=2), "b": ModelPrice(input=10, output=0)})
    )
    call = Event(model="b", request_model="x", response_model="a", prompt_tokens=1_000_000, completion_tokens=500_000)
    assert recorder.price(call) == pytest.approx(2.0)
    call.response_model = "unknown"
    assert recorder.price(call) == pytest.approx(10.0)
    call.model = "nothing"
    assert recorder.price(call) == 0.0


def test_a_bad_price_table_is_refused_naming_the_key():
    from driftwarden.collector.genai_config import parse_section
    from driftwarden.errors import UserError

    with pytest.raises(UserError, match=r"genai.prices.m.input: value -1"):
        parse_section({"prices": {"m": {"input": -1, "output": 1}}}, "up.yaml")
    with pytest.raises(UserError, match="genai.currency"):
        parse_section({"currency": "dollars"}, "up.yaml")
    with pytest.raises(UserError, match="accepted keys"):
        parse_section({"price": {}}, "up.yaml")


def test_up_reads_the_genai_section_and_its_collectors_inherit_it_unless_they_have_their_own():
    from driftwarden import up
    from driftwarden.errors import UserError

    text = """
models: [{name: chat}]
genai:
  currency: EUR
  prices: {llama: {input: 0.1, output: 0.2}}
  daily_budget: 10
collectors:
  - {model: chat, upstream: "http://127.0.0.1:9", listen: "127.0.0.1:0"}
  - {model: other, upstream: "http://127.0.0.1:9", listen: "127.0.0.1:0", genai: {currency: USD}}
"""
    config = up.parse(text, source="up.yaml")
    assert config.genai.prices["llama"] == ModelPrice(input=0.1, output=0.2) and config.genai.daily_budget == 10
    assert config.collectors[0].genai == config.genai
    assert config.collectors[1].genai.currency == "USD" and not config.collectors[1].genai.prices
    with pytest.raises(UserError, match="genai.service_models"):
        up.parse('models: [{name: chat}]\ngenai: {service_models: {svc: "bad\\tname"}}\n', source="up.yaml")
