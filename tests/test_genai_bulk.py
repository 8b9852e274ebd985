"""The OTLP receiver's bulk paths give what the one-call-at-a-time paths give.

* ``GenAIRecorder.observe_calls`` (a request's calls column by column, bucket counts added at
  once) against ``GenAIRecorder.observe`` (one ``Event`` at a time, as the sidecar does): the
  same calls under two model names, every series compared on the real prometheus-client registry.
* ``collector.ingest`` group commit: tables that wait for the store together are written as one
  insert into a real embedded store (one part), every caller answered; a failed insert fails
  every caller of its group with 503 and loses nothing silently.
"""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pytest
from fastapi import HTTPException

from driftwarden import storage
from driftwarden.collector import ingest
from driftwarden.collector.event import Event
from driftwarden.collector.genai_config import GenAIConfig, ModelPrice
from driftwarden.collector.genai_metrics import GenAIRecorder
from driftwarden.collector.metrics import REGISTRY
from driftwarden.collector.receivers.genai_spans import Calls, table_of
from tests.collector_harness import module_store_url


def _calls(model: str) -> list[Event]:
    """Calls with every case the metrics distinguish: streamed or not, errors, one output token, finish reasons."""
    events = []
    for i in range(300):
        streamed = i % 3 != 0
        events.append(
            Event(
                model=model,
                operation_name="chat" if i % 5 else "text_completion",
                provider_name="vllm",
                request_model=model,
                response_model=model + ("-a" if i % 2 else "-b"),
                error_class="timeout" if i % 17 == 0 else "",
                prompt_tokens=(i * 37) % 5000,
                completion_tokens=i % 7 if i % 11 else 1,
                latency_ms=5.0 + (i * 13.7) % 30_000,
                ttft_ms=(i * 3.1) % 900 if streamed else None,
                finish_reason=("stop", "length", "", "tool_calls")[i % 4],
            )
        )
    return events


def _series(model: str) -> dict[tuple, float]:
    """Every sample of the registry that carries ``model``, keyed without the model."""
    found = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            labels = dict(sample.labels)
            if labels.get("gen_ai_request_model") != model:
                continue
            labels.pop("gen_ai_request_model")
            found[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return found


def test_observe_calls_gives_the_same_series_as_observing_each_call():
    price = ModelPrice(input=0.5, output=2.0)
    config = GenAIConfig(prices={"bulk-a-a": price, "bulk-b-a": price})  # half the calls priced
    recorder = GenAIRecorder(config)
    one_by_one = _calls("bulk-a")
    recorder.observe(one_by_one)
    columns = Calls()
    for event in _calls("bulk-b"):
        columns.operation.append(event.operation_name)
        columns.provider.append(event.provider_name)
        columns.request_model.append(event.request_model)
        columns.response_model.append(event.response_model)
        columns.model.append(event.model)
        columns.error.append(event.error_class)
        columns.prompt_tokens.append(event.prompt_tokens)
        columns.completion_tokens.append(event.completion_tokens)
        columns.latency_ms.append(event.latency_ms)
        columns.ttft_ms.append(event.ttft_ms)
        columns.finish_reason.append(event.finish_reason)
    recorder.observe_calls(columns)
    single, bulk = _series("bulk-a"), _series("bulk-b")
    assert single.keys() == bulk.keys() and len(single) > 100
    names = {name for name, _ in single}
    assert {"gen_ai_server_time_per_output_token_seconds_bucket", "driftwarden_gen_ai_unpriced_calls_total"} <= names
    for key, value in single.items():
        assert bulk[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.fixture(scope="module")
def client(engine_dir):
    return storage.connect(module_store_url(engine_dir, "genai_bulk"))


def _table(first: int, n: int) -> pa.Table:
    return table_of(
        {
            "event_id": pa.array([i.to_bytes(16, "big") for i in range(first, first + n)], pa.binary(16)),
            "ts": [1_700_000_000_000_000 + i for i in range(first, first + n)],
            "model": "coalesced",
            "prompt_tokens": list(range(first, first + n)),
        },
        n,
    )


def _wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_tables_waiting_together_are_one_insert_and_every_caller_returns_after_it(client):
    client.command("CREATE TABLE coalesce_probe AS inferences")
    client.command("SYSTEM STOP MERGES coalesce_probe")  # so that the parts counted are the inserts
    errors: list[BaseException] = []

    def send(first: int) -> None:
        try:
            ingest._insert_coalesced(client, "coalesce_probe", _table(first, 100))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(k * 100,)) for k in range(5)]
    with ingest.store_lock:  # the store is busy: the five tables wait together
        for thread in threads:
            thread.start()
        _wait_until(lambda: len(ingest._waiting) == 5)
    for thread in threads:
        thread.join(30)
    assert errors == [] and ingest._waiting == []
    count, total = client.query("SELECT count(), sum(prompt_tokens) FROM coalesce_probe").result_rows[0]
    assert (count, total) == (500, sum(range(500)))
    parts = client.query("SELECT count() FROM system.parts WHERE table = 'coalesce_probe' AND active").result_rows
    assert parts[0][0] == 1


def test_a_failed_group_insert_answers_503_to_every_caller_of_the_group(client):
    failures: list[HTTPException] = []

    def send(first: int) -> None:
        try:
            ingest._insert_coalesced(client, "no_such_table", _table(first, 10))
        except HTTPException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(k * 10,)) for k in range(3)]
    with ingest.store_lock:
        for thread in threads:
            thread.start()
        _wait_until(lambda: len(ingest._waiting) == 3)
    for thread in threads:
        thread.join(30)
    assert len(failures) == 3 and {f.status_code for f in failures} == {503}
    assert all("retry later" in f.detail for f in failures) and ingest._waiting == []
