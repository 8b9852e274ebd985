"""``GET /api/v1/models/{model}/llm``: the language-model figures of the model page, as JSON.

Calls arrive as OTLP GenAI spans on the hub's ``POST /v1/traces`` (uvicorn on loopback, a
database of the session's embedded store); the route is read with a bearer token like every
route of the JSON API, and its answers are compared with what was sent.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from driftwarden import storage
from driftwarden.collector.genai_config import ModelPrice
from tests.collector_harness import module_store_url
from tests.test_otlp import API_TOKEN, Served, export_request, genai_span, hub_app, kv, post

MODEL = "api-llm"
PRICE = ModelPrice(input=1.0, output=4.0)
HEADERS = {"authorization": f"Bearer {API_TOKEN}"}
T0 = (time.time_ns() // 60_000_000_000 - 120) * 60_000_000_000  # two hours ago, on a whole minute


@pytest.fixture(scope="module")
def hub(engine_dir):
    client = storage.connect(module_store_url(engine_dir, "otlp_api"))
    served = Served(hub_app(client, prices={MODEL: PRICE}))
    spans = []
    for i in range(20):
        spans.append(
            genai_span(
                5000 + i,
                MODEL,
                start=T0 + i * 60_000_000_000,
                duration_ns=(300 + 10 * i) * 1_000_000 if i != 4 else 9_000_000_000,
                tokens=(100 + i, 20 if i != 11 else 3000),
                **{
                    "gen_ai.response.finish_reasons": ["length" if i % 5 == 0 else "stop"],
                    **({"gen_ai.response.time_to_first_chunk": 0.1 + i / 100} if i % 2 else {}),
                },
            )
        )
    answer = [{"role": "assistant", "parts": [{"type": "text", "content": "a long answer"}]}]
    spans[11].attributes.append(kv("gen_ai.output.messages", json.dumps(answer)))
    assert post(served.url, export_request(spans, service="api-svc").SerializeToString()).status_code == 200
    yield served, spans
    served.close()


def get(url: str, model: str = MODEL, **params: str) -> httpx.Response:
    return httpx.get(f"{url}/api/v1/models/{model}/llm", params=params, headers=HEADERS, timeout=60)


def test_the_route_gives_tokens_cost_ttft_and_latency_over_time_and_finish_reasons(hub):
    served, _spans = hub
    answer = get(served.url)
    assert answer.status_code == 200
    figures = answer.json()
    summary = figures["summary"]
    input_tokens, output_tokens = sum(100 + i for i in range(20)), 19 * 20 + 3000
    assert (summary["calls"], summary["errors"]) == (20, 0)
    assert (summary["input_tokens"], summary["output_tokens"]) == (input_tokens, output_tokens)
    assert summary["spend"] == pytest.approx((input_tokens * 1.0 + output_tokens * 4.0) / 1e6)
    assert 100 <= summary["ttft_p50_ms"] <= 300 and summary["ttft_p95_ms"] >= summary["ttft_p50_ms"]
    assert summary["latency_p95_ms"] > summary["latency_p50_ms"] >= 300
    series = figures["series"]
    assert figures["bucket_seconds"] == 7 * 24 * 3600 // 60  # the 7 days up to the latest call, in 60 points
    assert sum(p["calls"] for p in series) == 20 and sum(p["output_tokens"] for p in series) == output_tokens
    assert [p["t"] for p in series] == sorted(p["t"] for p in series)
    assert all(p["ttft_p50_ms"] is None or p["ttft_p50_ms"] >= 100 for p in series)
    reasons = figures["finish_reasons"]
    assert reasons == [{"finish_reason": "stop", "calls": 16}, {"finish_reason": "length", "calls": 4}]


def test_the_slowest_and_costliest_calls_come_with_their_trace_ids(hub):
    served, spans = hub
    figures = get(served.url).json()
    slowest = figures["slowest"]
    assert slowest[0]["trace_id"] == spans[4].trace_id.hex() and slowest[0]["latency_ms"] == pytest.approx(9000)
    assert slowest[1]["trace_id"] == spans[19].trace_id.hex() and len(slowest) == 10
    assert [c["latency_ms"] for c in slowest] == sorted((c["latency_ms"] for c in slowest), reverse=True)
    costliest = figures["most_expensive"][0]
    assert costliest["trace_id"] == spans[11].trace_id.hex() and costliest["span_id"] == spans[11].span_id.hex()
    assert costliest["output_tokens"] == 3000 and costliest["output_text"] == "a long answer"
    assert costliest["service_name"] == "api-svc" and costliest["finish_reason"] == "stop"
    assert all(c["output_text"] == "" for c in figures["most_expensive"][1:])


def test_a_window_selects_the_calls_that_start_in_it(hub):
    served, _spans = hub
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 / 1e9))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 / 1e9 + 600))
    figures = get(served.url, window=f"{start}..{end}").json()
    assert figures["summary"]["calls"] == 10 and figures["summary"]["input_tokens"] == sum(100 + i for i in range(10))
    assert figures["bucket_seconds"] == 60 and [p["calls"] for p in figures["series"]] == [1] * 10  # one a minute
    assert figures["series"][1]["ttft_p50_ms"] == pytest.approx(110) and figures["series"][0]["ttft_p50_ms"] is None
    empty = get(served.url, window="2001-01-01..2001-01-02").json()
    assert empty["summary"]["calls"] == 0 and empty["series"] == [] and empty["slowest"] == []
    assert empty["summary"]["ttft_p50_ms"] is None
    assert get(served.url, window="yesterday").status_code == 422


def test_an_unknown_model_gets_404_with_a_message_and_no_token_gets_401(hub):
    served, _spans = hub
    answer = get(served.url, model="no-such-llm")
    assert answer.status_code == 404 and "no-such-llm" in answer.json()["detail"]
    assert "not found" in answer.json()["detail"]
    anonymous = httpx.get(f"{served.url}/api/v1/models/{MODEL}/llm", timeout=30)
    assert anonymous.status_code == 401
    schema = httpx.get(f"{served.url}/openapi.json", timeout=30).json()
    route = schema["paths"]["/api/v1/models/{model}/llm"]["get"]
    assert route["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/LLMFigures")
