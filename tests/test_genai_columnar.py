"""The OTLP receiver's fast paths give what the plain paths give.

* ``SpanMapper.map`` builds a request's calls column by column and falls back to span by span
  (:func:`map_each`, the reference) for what the columnar way leaves to it: on requests with
  every kind of value a sender may put in a span, both give equal Arrow tables, calls, counts and
  ``partial_success`` messages, and the requests meant for the columnar way do take it.
* ``genai_spans.TRACES_VIEW`` (span attributes read as their encoded ``KeyValue``, each distinct one
  decoded by ``opentelemetry-proto`` once): the values read equal those read from the request decoded
  by ``opentelemetry-proto`` whole; a body decodes with one exactly when it decodes with the other;
  an attribute that does not decode gets the 400 of an undecodable body.
* ``collector.ingest.Arrival``: an insert about to start waits for an announced table and writes it
  in the same insert (one part); an announcement never fulfilled does not hold the insert back.
* The garbage collector paused during a mapping is running again afterwards, and one that was off
  before stays off.
"""

from __future__ import annotations

import gc
import math
import threading

import pyarrow as pa
import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from driftwarden import storage
from driftwarden.collector import ingest
from driftwarden.collector.genai_config import GenAIConfig
from driftwarden.collector.receivers import genai_spans
from driftwarden.collector.receivers.genai_content import value_of
from driftwarden.collector.receivers.genai_spans import _ATTRIBUTES, TRACES_VIEW, SpanBatch, table_of
from driftwarden.collector.receivers.otlp import GenAIIngest, OTLPError, _decode_and_map
from tests.collector_harness import module_store_url

START = 1_764_700_000_000_000_000


def any_value(value) -> AnyValue:
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(
            kvlist_value=KeyValueList(values=[KeyValue(key=k, value=any_value(v)) for k, v in value.items()])
        )
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if value is None:
        return AnyValue()
    return AnyValue(string_value=value)


def span(i: int, attributes: dict, *, start: int | None = None, duration: int = 800_000_000, **fields) -> Span:
    begin = START + i * 1_000 if start is None else start
    message = Span(
        trace_id=fields.pop("trace_id", (i + 1).to_bytes(16, "big")),
        span_id=fields.pop("span_id", (i + 1).to_bytes(8, "big")),
        parent_span_id=fields.pop("parent_span_id", (i + 9).to_bytes(8, "big")),
        name=fields.pop("name", "chat llama"),
        start_time_unix_nano=begin,
        end_time_unix_nano=begin + duration,
        attributes=[KeyValue(key=k, value=any_value(v)) for k, v in attributes.items()],
        **fields,
    )
    return message


def chat(i: int, **extra) -> dict:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "vllm",
        "gen_ai.request.model": "llama-3.1-8b",
        "gen_ai.response.model": "llama-3.1-8b-instruct",
        "gen_ai.usage.input_tokens": 100 + i % 900,
        "gen_ai.usage.output_tokens": 10 + i % 300,
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.request.temperature": 0.7,
        "gen_ai.request.max_tokens": 512,
        "server.address": "vllm.internal",
        "gen_ai.response.time_to_first_chunk": 0.12,
    }
    attributes.update(extra)
    return {k: v for k, v in attributes.items() if v is not _DROP}


_DROP = object()
MODEL, INPUT = "gen_ai.request.model", "gen_ai.usage.input_tokens"


def request_of(*groups: tuple[str, list[Span]]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for service, spans in groups:
        resource_spans = request.resource_spans.add()
        if service:
            resource_spans.resource.attributes.append(KeyValue(key="service.name", value=any_value(service)))
        resource_spans.scope_spans.add().spans.extend(spans)
    return request


# Requests the columnar way takes: varied, but nothing rejected, no content, one type per attribute.
COLUMNAR = {
    "uniform": [("agent", [span(i, chat(i)) for i in range(300)])],
    "models, services, prices and errors vary": [
        (
            "agent",
            [
                span(
                    i,
                    chat(
                        i,
                        **{
                            "gen_ai.request.model": ("llama-3.1-8b", "priced-model", "qwen2")[i % 3],
                            "gen_ai.response.model": _DROP if i % 4 == 0 else f"resp-{i % 5}",
                            "error.type": "timeout" if i % 7 == 0 else _DROP,
                            "http.response.status_code": 429 if i % 11 == 0 else _DROP,
                            "gen_ai.request.temperature": (0.0, 0.7, 1.5)[i % 3],
                            "gen_ai.request.top_p": 0.9 if i % 2 else _DROP,
                            "gen_ai.request.seed": 42 if i % 5 == 0 else _DROP,
                            "gen_ai.response.finish_reasons": (["stop"], ["length", "stop"], [])[i % 3],
                        },
                    ),
                    status=Status(code=(0, 1, 2)[i % 3]),
                    name="x" * (150 + i % 100),
                    parent_span_id=b"" if i % 6 == 0 else (i + 9).to_bytes(8, "big"),
                )
                for i in range(240)
            ],
        ),
        ("mapped-service", [span(1000 + i, chat(i)) for i in range(20)]),
        ("", [span(2000 + i, chat(i, **{"gen_ai.system": "openai", "gen_ai.provider.name": _DROP})) for i in range(9)]),
    ],
    "older names and missing values": [
        (
            "agent",
            [
                span(
                    i,
                    {
                        "gen_ai.operation.name": "text_completion",
                        "gen_ai.request.model": "old-model",
                        "gen_ai.usage.prompt_tokens": i,
                        "gen_ai.usage.completion_tokens": 2 * i,
                        "gen_ai.openai.request.seed": -5,
                        "gen_ai.server.time_to_first_token": 0.05 * (i % 4),
                        "gen_ai.response.finish_reasons": "stop",
                        "gen_ai.request.max_tokens": 2**40 if i % 2 else 64,
                        "gen_ai.request.top_p": math.inf if i % 3 == 0 else 0.5,
                    },
                )
                for i in range(50)
            ]
            + [span(100 + i, {"gen_ai.request.model": "bare", "http.url": f"/v1/{i}"}) for i in range(10)]
            + [span(200 + i, {"http.method": "GET"}) for i in range(5)],  # not GenAI: counted only
        )
    ],
    "NaN and infinite values": [
        (
            "agent",
            [span(i, chat(i, **{"gen_ai.request.temperature": (math.nan, math.inf, 0.3)[i % 3]})) for i in range(9)],
        )
    ],
    "an empty value and a duplicated key": [
        (
            "agent",
            [
                Span(
                    trace_id=(i + 1).to_bytes(16, "big"),
                    span_id=(i + 1).to_bytes(8, "big"),
                    start_time_unix_nano=START,
                    end_time_unix_nano=START + 5,
                    attributes=[
                        KeyValue(key="gen_ai.request.model", value=any_value("first")),
                        KeyValue(key="gen_ai.request.model", value=AnyValue()),
                        KeyValue(key="gen_ai.usage.input_tokens", value=any_value(3)),
                        KeyValue(key="gen_ai.usage.input_tokens", value=any_value(4)),
                    ],
                )
                for i in range(3)
            ],
        )
    ],
}

# Requests that go span by span, whole: a rejected span, content, an attribute with two types, and the like.
SPAN_BY_SPAN = {
    "a rejected span": [("agent", [span(i, chat(i)) for i in range(20)] + [span(99, chat(1), trace_id=b"short")])],
    "negative tokens": [
        ("agent", [span(i, chat(i, **{"gen_ai.usage.input_tokens": -1 if i == 3 else 5})) for i in range(9)])
    ],
    "a boolean token count": [("agent", [span(i, chat(i, **{"gen_ai.usage.output_tokens": True})) for i in range(4)])],
    "ends before it starts": [("agent", [span(i, chat(i), duration=-5 if i == 2 else 10) for i in range(5)])],
    "no start": [("agent", [span(i, chat(i), start=0 if i == 1 else None) for i in range(5)])],
    "a refused model name": [
        ("agent", [span(i, chat(i, **{"gen_ai.request.model": "bad\nname" if i else "ok"})) for i in range(4)])
    ],
    "no model at all": [
        ("", [span(i, chat(i, **{"gen_ai.request.model": _DROP, "gen_ai.response.model": _DROP})) for i in range(3)])
    ],
    "one attribute as int, float and bool": [
        ("agent", [span(i, chat(i, **{"gen_ai.request.max_tokens": (1, 1.0, True)[i % 3]})) for i in range(9)])
    ],
    "models as text and numbers": [
        ("agent", [span(i, chat(i, **{"gen_ai.request.model": ("7", 7)[i % 2]})) for i in range(6)])
    ],
    "finish reasons 1 and 1.0": [
        ("agent", [span(i, chat(i, **{"gen_ai.response.finish_reasons": ([1], [1.0])[i % 2]})) for i in range(6)])
    ],
    "a negative zero temperature": [
        ("agent", [span(i, chat(i, **{"gen_ai.request.temperature": (0.0, -0.0)[i % 2]})) for i in range(6)])
    ],
    "map and array values": [
        (
            "agent",
            [span(i, chat(i, **{"server.address": {"host": f"h{i % 2}"}, "error.type": ["a", i]})) for i in range(6)],
        )
    ],
    "content in attributes": [
        (
            "agent",
            [span(i, chat(i, **{"gen_ai.input.messages": '[{"role": "user", "content": "hi"}]'})) for i in range(3)]
            + [span(10 + i, chat(i)) for i in range(5)],
        )
    ],
    "content in events": [
        (
            "agent",
            [
                span(
                    i,
                    chat(i),
                    events=[
                        Span.Event(
                            name="gen_ai.user.message",
                            time_unix_nano=START,
                            attributes=[KeyValue(key="content", value=any_value(f"question {i}"))],
                        )
                    ],
                )
                for i in range(4)
            ],
        )
    ],
    "a huge duration": [("agent", [span(i, chat(i), duration=2**62 if i == 0 else 7) for i in range(3)])],
}


@pytest.fixture(scope="module")
def mapper():
    config = GenAIConfig.model_validate(
        {
            "service_models": {"mapped-service": "mapped-model"},
            "prices": {"priced-model": {"input": 0.15, "output": 0.6}, "resp-3": {"input": 1.0, "output": 2.0}},
        }
    )
    return GenAIIngest(config).mapper


def _same(fast: SpanBatch, reference: SpanBatch) -> None:
    assert (fast.stored, fast.not_genai, fast.rejected) == (reference.stored, reference.not_genai, reference.rejected)
    assert fast.message() == reference.message()
    assert vars(fast.calls) == vars(reference.calls)
    if reference.table is None:
        assert fast.table is None
        return
    assert fast.table.schema.equals(reference.table.schema)
    for name in reference.table.column_names:
        assert fast.table.column(name).equals(reference.table.column(name)), name


def map_each(mapper, request) -> SpanBatch:
    """``mapper.map`` done span by span, whatever the request: the reference the columnar way is checked against."""
    batch = SpanBatch()
    spans, attributes, origins = mapper._read(request, batch)
    built = mapper._rows(spans, attributes, origins, batch) if spans else None
    if built is not None:
        mapper._finish(batch, *built)
    return batch


@pytest.mark.parametrize("case", sorted(COLUMNAR))
def test_the_columnar_way_gives_the_span_by_span_table_and_is_taken(mapper, case):
    request = request_of(*COLUMNAR[case])
    _same(mapper.map(request), map_each(mapper, request))
    view = TRACES_VIEW.FromString(request.SerializeToString())
    assert mapper._columns(*mapper._read(view, SpanBatch())) is not None, "the columnar way was not taken"


@pytest.mark.parametrize("case", sorted(SPAN_BY_SPAN))
def test_what_the_columnar_way_leaves_goes_span_by_span_with_the_same_result(mapper, case):
    request = request_of(*SPAN_BY_SPAN[case])
    _same(mapper.map(request), map_each(mapper, request))
    view = TRACES_VIEW.FromString(request.SerializeToString())
    assert mapper._columns(*mapper._read(view, SpanBatch())) is None, "expected the span-by-span way"


def test_a_priced_call_costs_what_the_price_table_says(mapper):
    batch = mapper.map(request_of(("agent", [span(0, chat(0, **{"gen_ai.request.model": "priced-model"}))])))
    row = batch.table.to_pylist()[0]
    assert row["cost"] == pytest.approx((100 * 0.15 + 10 * 0.6) / 1e6)


def test_a_boolean_max_tokens_or_seed_is_stored_as_absent_not_a_failure(mapper):
    attributes = chat(0, **{"gen_ai.request.max_tokens": True, "gen_ai.request.seed": False})
    row = mapper.map(request_of(("agent", [span(0, attributes)]))).table.to_pylist()[0]
    assert row["max_tokens"] is None and row["seed"] is None and row["temperature"] == 0.7


def test_the_table_has_the_columns_set_and_leaves_the_others_to_the_store_defaults(mapper):
    table = mapper.map(request_of(*COLUMNAR["uniform"])).table
    assert {"event_id", "ts", "model", "trace_id", "cost"} <= set(table.column_names)
    assert not {"input_payload", "emb_values", "replay_of", "prediction"} & set(table.column_names)
    assert table_of({"model": "m", "ts": [1, 2]}, 2).column_names == ["ts", "model"]  # the order of the table
    with pytest.raises(ValueError, match="not columns"):
        table_of({"no_such_column": [1]}, 1)


# -- TRACES_VIEW -------------------------------------------------------------------------------------------------------


def _values_read_whole(request: ExportTraceServiceRequest) -> list[list]:
    """Each span's values by slot, read from the request decoded whole by opentelemetry-proto."""
    slots = {name: i for i, name in enumerate(_ATTRIBUTES)}
    found = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for one in scope_spans.spans:
                values = [None] * len(_ATTRIBUTES)
                for kv in one.attributes:
                    if kv.key in slots and kv.value.WhichOneof("value") is not None:
                        value = value_of(kv.value)
                        if kv.key == "gen_ai.response.finish_reasons" and isinstance(value, list):
                            value = value[:1]
                        values[slots[kv.key]] = value
                found.append(values)
    return found


def test_the_view_reads_the_values_that_the_whole_decoding_reads(mapper):
    genai_spans._ATTRIBUTE_CACHE.clear()
    for case in [*COLUMNAR.values(), *SPAN_BY_SPAN.values()]:
        request = request_of(*case)
        whole = _values_read_whole(request)
        for _ in range(2):  # decoded, then from the cache
            spans, attributes, _origins = mapper._read(TRACES_VIEW.FromString(request.SerializeToString()), SpanBatch())
            read = [[list(v) if isinstance(v, tuple) else v for v in values] for values in attributes]
            kept = [whole[i] for i, values in enumerate(whole) if _is_genai(request, i)]
            assert _normal(read) == _normal(kept)
            assert len(spans) == len(kept)


def _is_genai(request: ExportTraceServiceRequest, index: int) -> bool:
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    return any(kv.key.startswith("gen_ai.") for kv in spans[index].attributes)


def _normal(rows: list[list]) -> list[list]:
    """NaN as a string, so that equal rows compare equal."""
    return [[("nan" if isinstance(v, float) and v != v else v) for v in row] for row in rows]


@pytest.mark.parametrize(
    "body",
    [
        request_of(*COLUMNAR["uniform"]).SerializeToString(),
        request_of(*COLUMNAR["uniform"]).SerializeToString()[:-7],
        b"\x0a\x05\x12\x03\x0a\x01",
        b"garbage that is not protobuf \xff\xfe",
        b"",
    ],
    ids=["valid", "truncated", "cut inside", "garbage", "empty"],
)
def test_a_body_decodes_with_the_view_exactly_when_it_decodes_whole(body):
    try:
        ExportTraceServiceRequest.FromString(body)
        whole = True
    except DecodeError:
        whole = False
    try:
        TRACES_VIEW.FromString(body)
        view = True
    except DecodeError:
        view = False
    assert view == whole


def test_an_attribute_that_does_not_decode_is_an_undecodable_body(mapper):
    request = request_of(*COLUMNAR["uniform"])
    view = TRACES_VIEW.FromString(request.SerializeToString())
    view.resource_spans[0].scope_spans[0].spans[5].attributes.append(b"\x0a\x40short")  # a key longer than its bytes
    body = view.SerializeToString()
    with pytest.raises(DecodeError):
        ExportTraceServiceRequest.FromString(body)
    with pytest.raises(OTLPError) as raised:
        _decode_and_map(body, False, GenAIIngest())
    assert raised.value.http_status == 400 and "ExportTraceServiceRequest" in raised.value.message


def test_the_garbage_collector_runs_again_after_a_mapping_and_stays_off_when_it_was(mapper):
    request = request_of(*COLUMNAR["uniform"])
    assert gc.isenabled()
    mapper.map(request)
    assert gc.isenabled()
    gc.disable()
    try:
        mapper.map(request)
        assert not gc.isenabled()
    finally:
        gc.enable()


# -- Arrival -----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(engine_dir):
    return storage.connect(module_store_url(engine_dir, "genai_columnar"))


def _table(first: int, n: int) -> pa.Table:
    return table_of(
        {
            "event_id": pa.array([i.to_bytes(16, "big") for i in range(first, first + n)], pa.binary(16)),
            "ts": [1_700_000_000_000_000 + i for i in range(first, first + n)],
            "model": "arrival",
            "prompt_tokens": list(range(first, first + n)),
        },
        n,
    )


def _parts(client, table: str) -> int:
    return client.query(f"SELECT count() FROM system.parts WHERE table = '{table}' AND active").result_rows[0][0]


def test_an_insert_waits_for_an_announced_table_and_writes_it_in_the_same_insert(client, monkeypatch):
    monkeypatch.setattr(ingest, "COALESCE_LINGER", 30.0)  # long: only the arrival ends the wait
    client.command("CREATE TABLE arrival_probe AS inferences")
    client.command("SYSTEM STOP MERGES arrival_probe")
    announced = ingest.Arrival()
    first = threading.Thread(target=ingest._insert_coalesced, args=(client, "arrival_probe", _table(0, 50)))
    first.start()
    # the first caller now waits for the announced table; it arrives and both are one insert
    ingest._insert_coalesced(client, "arrival_probe", _table(50, 50), announced)
    first.join(30)
    assert not first.is_alive() and ingest._waiting == [] and ingest._coming == 0
    count, total = client.query("SELECT count(), sum(prompt_tokens) FROM arrival_probe").result_rows[0]
    assert (count, total) == (100, sum(range(100)))
    assert _parts(client, "arrival_probe") == 1


def test_an_announcement_never_fulfilled_does_not_hold_the_insert(client, monkeypatch):
    monkeypatch.setattr(ingest, "COALESCE_LINGER", 0.05)
    client.command("CREATE TABLE arrival_lost AS inferences")
    with ingest.Arrival():  # e.g. a request whose body turned out to hold no GenAI span
        done = threading.Thread(target=ingest._insert_coalesced, args=(client, "arrival_lost", _table(0, 10)))
        done.start()
        done.join(30)
        assert not done.is_alive()
    assert ingest._coming == 0
    assert client.query("SELECT count() FROM arrival_lost").result_rows[0][0] == 10
