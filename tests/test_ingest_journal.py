"""The hub's ingest journal: ``POST /v1/traces`` answers once the calls are on disk, and loses none of them.

Real parts throughout: the hub app under uvicorn (``tests.test_otlp.Served``) over a database of the
session's embedded store, or ``driftwarden api`` in a subprocess (``tests.hub_process.Hub``) killed with
SIGKILL. A store that refuses is a real refusal: the ``inferences`` table renamed away, then back.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import threading
import time

import httpx
import pyarrow as pa
import pytest
from fastapi import Response
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from driftwarden import storage
from driftwarden.collector.arrow import from_ipc
from driftwarden.collector.genai_config import GenAIConfig
from driftwarden.collector.hub_app import create_app
from driftwarden.collector.ingest_journal import IngestJournal, journal_directory
from driftwarden.collector.metrics import REGISTRY
from driftwarden.collector.receivers import otlp
from driftwarden.collector.receivers.otlp import JSON, GenAIIngest, decode_protobuf
from driftwarden.collector.spool import SET_ASIDE, SET_ASIDE_AFTER, Spool
from tests.collector_harness import module_store_url
from tests.hub_process import Hub, query_store, wait_for
from tests.test_otlp import Served, export_request, genai_span, post, samples

SPANS = 500


@pytest.fixture(scope="module")
def journal_store(engine_dir):
    return module_store_url(engine_dir, "ingest_journal")


def body(first: int, model: str, spans: int = SPANS) -> bytes:
    start = time.time_ns()
    return export_request([genai_span(first + i, model, start=start) for i in range(spans)]).SerializeToString()


def stored(client, model: str, table: str = "inferences") -> tuple[int, int]:
    """Rows of ``model`` in ``table`` (without FINAL) and distinct calls (trace and span ids)."""
    ((rows, calls),) = client.query(
        f"SELECT count(), uniqExact(trace_id, span_id) FROM {table} WHERE model = {{m:String}}", parameters={"m": model}
    ).result_rows
    return rows, calls


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_journal_directory_defaults_beside_an_embedded_store_and_not_for_a_server(tmp_path):
    store = f"chdb://{tmp_path / 'data'}"
    assert journal_directory(None, store) == tmp_path / "data-spool" / "otlp"
    assert journal_directory(GenAIConfig(), store + "?database=other") == tmp_path / "data-spool" / "otlp-other"
    assert journal_directory(GenAIConfig(), "http://clickhouse:8123/driftwarden") is None
    chosen = GenAIConfig(journal_dir=str(tmp_path / "j"))
    assert journal_directory(chosen, "http://clickhouse:8123/driftwarden") == tmp_path / "j"
    assert journal_directory(GenAIConfig(journal=False), store) is None


@pytest.mark.timeout(120)
def test_a_store_that_refuses_keeps_the_answered_calls_503_once_full_and_all_stored_when_it_is_back(
    journal_store, tmp_path
):
    client = storage.connect(journal_store)
    app = create_app(client, genai=GenAIConfig(journal_max_bytes=1 << 20), journal_dir=tmp_path / "journal")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    served = Served(app)
    failed_before = metric("driftwarden_ingest_journal_inserts_total", table="inferences", outcome="failed")
    client.command("RENAME TABLE inferences TO inferences_away")
    renamed = True
    try:
        answered, refused = [], None
        for n in range(40):  # about 200 KB of journal per request: full after a few
            answer = post(served.url, body(n * SPANS, "journal-full"))
            if answer.status_code == 503:
                refused = answer
                break
            assert answer.status_code == 200, answer.text
            answered.append(n)
        assert refused is not None, "the journal never filled up"
        message = status_pb2.Status.FromString(refused.content).message
        assert "ingest journal" in message and "journal_max_bytes" in message and "retry later" in message
        assert len(answered) >= 2
        waiting = app.state.otlp_journal.rows
        assert waiting == len(answered) * SPANS, "every answered call waits in the journal"
        assert samples(served.url, "driftwarden_ingest_journal_rows", table="inferences") == waiting
        assert samples(served.url, "driftwarden_ingest_journal_bytes", table="inferences") > 0
        assert wait_for(
            lambda: (
                metric("driftwarden_ingest_journal_inserts_total", table="inferences", outcome="failed") > failed_before
            ),
            timeout=10,
        ), "the refused insert is counted"
        client.command("RENAME TABLE inferences_away TO inferences")
        renamed = False
        assert app.state.otlp_journal.wait_empty(30), "the journal drains once the store is back"
        assert stored(client, "journal-full") == (len(answered) * SPANS, len(answered) * SPANS)
        assert samples(served.url, "driftwarden_ingest_journal_rows", table="inferences") == 0
        assert post(served.url, body(1_000_000, "journal-full")).status_code == 200, "room again"
    finally:
        if renamed:
            client.command("RENAME TABLE inferences_away TO inferences")
        served.close()
    assert stored(client, "journal-full")[1] == (len(answered) + 1) * SPANS
    assert not list((tmp_path / "journal").glob("segment-*")), "inserted segments are deleted"


@pytest.mark.timeout(120)
def test_small_journaled_protobuf_exports_are_mapped_on_the_event_loop_the_others_on_the_thread_pool_once(
    journal_store, tmp_path, monkeypatch
):
    """A journaled protobuf request up to ``INLINE_MAX_BYTES`` whose spans map column by column is mapped on the
    event loop, and journaled there while the journal's ``fsync`` is quick, else on the thread pool; content to redact
    or a rejected span sends it, mapped and counted once, to the thread pool, as JSON and larger bodies go."""
    mapped: list[tuple[bool, bool, bool]] = []  # (columnar only, on the event loop, left to the thread pool)
    appended: list[bool] = []  # on the event loop
    decode_and_map, append = otlp._decode_and_map, IngestJournal.append

    def on_loop() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def watched(body, as_json, ingest, columnar_only=False):
        batch = decode_and_map(body, as_json, ingest, columnar_only)
        mapped.append((columnar_only, on_loop(), batch is None))
        return batch

    def watched_append(journal, table):
        appended.append(on_loop())
        append(journal, table)

    monkeypatch.setattr(otlp, "_decode_and_map", watched)
    monkeypatch.setattr(IngestJournal, "append", watched_append)
    client = storage.connect(journal_store)
    app = create_app(client, journal_dir=tmp_path / "journal")
    served = Served(app)
    start = time.time_ns() - 10**10
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "mail jane.doe@example.com"}]}])
    stored_before = metric("driftwarden_otlp_spans_total", outcome="stored")

    def send(spans: list, content_type: str = "application/x-protobuf") -> ExportTraceServiceResponse:
        mapped.clear()
        appended.clear()
        request = export_request(spans)
        if content_type == JSON:  # OTLP/JSON: the ids in hex
            document = json_format.MessageToDict(request)
            for span in document["resourceSpans"][0]["scopeSpans"][0]["spans"]:
                span["traceId"], span["spanId"] = (base64.b64decode(span[k]).hex() for k in ("traceId", "spanId"))
            answer = post(served.url, json.dumps(document).encode(), JSON)
            assert answer.status_code == 200 and answer.json() == {}, answer.text
            return ExportTraceServiceResponse()
        answer = post(served.url, request.SerializeToString())
        assert answer.status_code == 200, answer.text
        return ExportTraceServiceResponse.FromString(answer.content)

    try:
        spool = app.state.otlp_journal.spool
        send([genai_span(9_000_000 + i, "inline-plain", start=start + i) for i in range(300)])
        assert mapped == [(True, True, False)], "mapped column by column on the event loop"
        assert appended == [True] and spool.sync_seconds > 0, "journaled there too, the fsync timed"
        spool.sync_seconds = 0.05  # a slow disk: the event loop maps the next request during its fsync
        send([genai_span(9_000_500 + i, "inline-plain", start=start + i) for i in range(10)])
        assert mapped == [(True, True, False)] and appended == [False]
        spool.sync_seconds = 0.0
        send([genai_span(9_001_000, "inline-content", start=start, **{"gen_ai.input.messages": messages})])
        assert mapped == [(True, True, True), (False, False, False)], "content is mapped on the thread pool"
        assert appended == [False]
        answer = send(
            [
                genai_span(9_002_000, "inline-rejected", start=start),
                genai_span(9_002_001, "inline-rejected", start=start, duration_ns=-5),
            ]
        )
        assert mapped == [(True, True, True), (False, False, False)]
        assert (
            answer.partial_success.rejected_spans == 1 and "negative duration" in answer.partial_success.error_message
        )
        send([genai_span(9_003_000, "inline-json", start=start)], JSON)
        assert mapped == [(False, False, False)], "OTLP/JSON goes to the thread pool"
        monkeypatch.setattr(otlp, "INLINE_MAX_BYTES", 1_000)
        send([genai_span(9_004_000 + i, "inline-large", start=start + i) for i in range(20)])
        assert mapped == [(False, False, False)], "a body over INLINE_MAX_BYTES goes to the thread pool"
        assert app.state.otlp_journal.wait_empty(30)
    finally:
        served.close()
    for model, calls in (("plain", 310), ("content", 1), ("rejected", 1), ("json", 1), ("large", 20)):
        assert stored(client, f"inline-{model}") == (calls, calls), model
    assert metric("driftwarden_otlp_spans_total", outcome="stored") - stored_before == 333, "each span counted once"
    ((payload,),) = client.query(
        "SELECT input_payload FROM inferences FINAL WHERE model = 'inline-content'"
    ).result_rows
    assert "[redacted:email:" in payload and "jane.doe@example.com" not in payload


@pytest.mark.timeout(120)
def test_rows_left_in_the_journal_at_shutdown_are_inserted_once_at_the_next_start(journal_store, tmp_path):
    client = storage.connect(journal_store)
    client.command("DROP TABLE IF EXISTS later")
    journal = IngestJournal(tmp_path / "journal", client, "later")  # no such table yet: every insert fails
    mapper = GenAIIngest().mapper  # the receiver's: the rows /v1/traces would journal
    tables = [mapper.map(decode_protobuf(body(n * 100, "journal-restart", 100))).table for n in range(3)]
    for table in tables:
        journal.append(table)
    journal.close(timeout=0.5)  # the store still refuses: the rows stay on disk
    assert list((tmp_path / "journal").glob("segment-*.spool")), "the records are kept"
    client.command("CREATE TABLE later AS inferences")
    reopened = IngestJournal(tmp_path / "journal", client, "later")
    try:
        assert reopened.rows == 300, "the records of the previous run are queued again"
        assert reopened.wait_empty(30)
        ((rows, calls),) = client.query("SELECT count(), uniqExact(trace_id, span_id) FROM later").result_rows
        assert (rows, calls) == (300, 300)
    finally:
        reopened.close()
    assert not list((tmp_path / "journal").glob("segment-*.spool")), "nothing is inserted twice at the next start"
    client.command("DROP TABLE later")


def _spans_table(mapper, first: int, model: str, spans: int = 100):
    """The rows ``POST /v1/traces`` would journal for ``spans`` GenAI spans."""
    return mapper.map(decode_protobuf(body(first, model, spans))).table


def _set_aside_rows(directory) -> list:
    spool = Spool(directory / SET_ASIDE)
    try:
        return [from_ipc(r.payload) for segment in spool.with_data() for r in spool.read(segment)]
    finally:
        spool.close()


@pytest.mark.timeout(120)
def test_records_the_store_refuses_for_what_they_hold_are_set_aside_the_rest_inserted_and_retried_at_next_start(
    journal_store, tmp_path
):
    client = storage.connect(journal_store)
    client.command("DROP TABLE IF EXISTS refusing")
    client.command("CREATE TABLE refusing AS inferences")
    client.command("ALTER TABLE refusing ADD CONSTRAINT timed CHECK latency_ms >= 0")
    mapper = GenAIIngest().mapper
    good = [_spans_table(mapper, n * 100, "set-aside") for n in (0, 3, 4)]
    # journaled before schema changes: a column the table no longer has (NO_SUCH_COLUMN_IN_TABLE: every row), and
    # among rows of the same columns as the others one that a constraint added since refuses (VIOLATED_CONSTRAINT)
    stale = _spans_table(mapper, 100, "set-aside").append_column("retired", pa.array(["x"] * 100))
    untimed = _spans_table(mapper, 200, "set-aside")
    latency = untimed.column("latency_ms").to_pylist()
    latency[37] = -1.0
    untimed = untimed.set_column(
        untimed.schema.get_field_index("latency_ms"), "latency_ms", pa.array(latency, pa.float64())
    )
    assert untimed.schema.equals(good[0].schema)  # inserted in one group with the good ones, at first
    set_aside_before = metric("driftwarden_ingest_journal_set_aside_rows_total", table="refusing")
    directory = tmp_path / "journal"
    journal = IngestJournal(directory, client, "refusing")
    try:
        for table in (good[0], stale, untimed, good[1], good[2]):
            journal.append(table)
        assert journal.wait_empty(60), "the records behind the refused ones are not held back"
        assert stored(client, "set-aside", "refusing") == (399, 399), "all but the refused rows are inserted"
        assert metric("driftwarden_ingest_journal_set_aside_rows_total", table="refusing") == set_aside_before + 101
        assert metric("driftwarden_ingest_journal_set_aside_bytes", table="refusing") > 0
    finally:
        journal.close()
    kept = sorted(_set_aside_rows(directory), key=lambda t: t.num_columns)
    assert kept == [untimed.slice(37, 1), stale], "the refused rows are kept whole, and only they"
    assert not list(directory.glob("segment-*.spool")), "the journal itself is empty"

    client.command("ALTER TABLE refusing ADD COLUMN retired String")  # the causes fixed
    client.command("ALTER TABLE refusing DROP CONSTRAINT timed")
    reopened = IngestJournal(directory, client, "refusing")
    try:
        assert reopened.wait_empty(30)
        assert stored(client, "set-aside", "refusing") == (500, 500), "retried at the start, inserted"
        assert metric("driftwarden_ingest_journal_set_aside_bytes", table="refusing") == 0
    finally:
        reopened.close()
    assert _set_aside_rows(directory) == []
    client.command("DROP TABLE refusing")


@pytest.mark.timeout(120)
def test_set_aside_rows_are_inserted_without_a_restart_once_the_store_takes_them_again(journal_store, tmp_path):
    """Tried again while running (every 0.5 s here, doubling while refused): refused, they stay aside and the
    journal goes on; once the constraint is gone, the next try inserts them, and the set-aside spool is empty."""
    client = storage.connect(journal_store)
    client.command("DROP TABLE IF EXISTS healing")
    client.command("CREATE TABLE healing AS inferences")
    client.command("ALTER TABLE healing ADD CONSTRAINT timed CHECK latency_ms >= 0")
    mapper = GenAIIngest().mapper
    untimed = _spans_table(mapper, 0, "healing")
    latency = untimed.column("latency_ms").to_pylist()
    latency[5] = -1.0
    untimed = untimed.set_column(
        untimed.schema.get_field_index("latency_ms"), "latency_ms", pa.array(latency, pa.float64())
    )
    directory = tmp_path / "journal"
    journal = IngestJournal(directory, client, "healing", set_aside_retry_s=0.5)
    try:
        journal.append(untimed)
        assert journal.wait_empty(60)
        assert stored(client, "healing", "healing") == (99, 99)
        time.sleep(2.0)  # tried at 0.5 s and 1.5 s: refused, kept aside, nothing lost
        journal.append(_spans_table(mapper, 100, "healing"))
        assert journal.wait_empty(30), "refused tries do not hold back what arrives"
        assert stored(client, "healing", "healing") == (199, 199)
        assert metric("driftwarden_ingest_journal_set_aside_bytes", table="healing") > 0
        client.command("ALTER TABLE healing DROP CONSTRAINT timed")  # the cause fixed, the journal still running
        assert wait_for(lambda: stored(client, "healing", "healing") == (200, 200), timeout=30)
        assert wait_for(lambda: metric("driftwarden_ingest_journal_set_aside_bytes", table="healing") == 0, 10)
    finally:
        journal.close()
        client.command("DROP TABLE IF EXISTS healing")
    assert _set_aside_rows(directory) == []


@pytest.mark.timeout(120)
def test_a_store_refusing_for_its_own_state_never_sets_a_record_aside(journal_store, tmp_path):
    client = storage.connect(journal_store)
    client.command("DROP TABLE IF EXISTS absent")
    mapper = GenAIIngest().mapper
    failed = metric("driftwarden_ingest_journal_inserts_total", table="absent", outcome="failed")
    journal = IngestJournal(tmp_path / "journal", client, "absent")  # no such table (UNKNOWN_TABLE): the store's state
    try:
        journal.append(_spans_table(mapper, 0, "never-aside"))
        journal.append(_spans_table(mapper, 100, "never-aside"))
        assert wait_for(
            lambda: (
                metric("driftwarden_ingest_journal_inserts_total", table="absent", outcome="failed")
                >= failed + 2 * SET_ASIDE_AFTER
            ),
            timeout=60,
        )
        assert journal.rows == 200, "every refused row waits in the journal"
        assert metric("driftwarden_ingest_journal_set_aside_rows_total", table="absent") == 0
        client.command("CREATE TABLE absent AS inferences")
        assert journal.wait_empty(30)
        ((rows,),) = client.query("SELECT count() FROM absent").result_rows
        assert rows == 200
    finally:
        journal.close()
        client.command("DROP TABLE IF EXISTS absent")
    assert _set_aside_rows(tmp_path / "journal") == []


class SpanSenders:
    """Threads posting 100-span OTLP requests with unique span ids until the hub dies; the ids of the 200s."""

    def __init__(self, url: str) -> None:
        self.url, self.numbers, self.ok, self.lock = url, itertools.count(), [], threading.Lock()
        self.threads = [threading.Thread(target=self._send, daemon=True) for _ in range(3)]
        for thread in self.threads:
            thread.start()

    def _send(self) -> None:
        with httpx.Client(timeout=30) as client:
            while True:
                with self.lock:
                    n = next(self.numbers)
                try:
                    answer = client.post(
                        self.url + "/v1/traces",
                        content=body(n * 100, "journal-kill", 100),
                        headers={"content-type": "application/x-protobuf"},
                    )
                except httpx.HTTPError:
                    return  # the hub is gone
                if answer.status_code == 200:
                    with self.lock:
                        self.ok.append(n)

    def answered(self) -> int:
        with self.lock:
            return len(self.ok)


@pytest.mark.timeout(240)
def test_every_span_answered_200_is_stored_after_a_sigkill_of_the_hub(tmp_path):
    hub = Hub(tmp_path / "store").start()
    senders = SpanSenders(hub.url)
    try:
        assert wait_for(lambda: senders.answered() >= 30, timeout=120), f"answered: {senders.answered()}"
        hub.process.kill()  # SIGKILL: no shutdown, nothing flushed by the hub
        hub.process.wait(30)
        for thread in senders.threads:
            thread.join(60)
        assert (tmp_path / "store-spool" / "otlp" / "LOCK").is_file(), "the journal is beside the store"
        hub.start()  # inserts what the journal held
        assert wait_for(
            lambda: samples(hub.url, "driftwarden_ingest_journal_rows", table="inferences") == 0, timeout=60
        )
    finally:
        hub.stop()
    numbers = ",".join(str(n) for n in senders.ok)
    ((calls, answered_calls),) = query_store(
        hub.store_url,
        "SELECT uniqExact(trace_id, span_id), "
        "uniqExactIf((trace_id, span_id), "
        f"intDiv(reinterpretAsUInt64(reverse(unhex(span_id))) - 1, 100) IN ({numbers})) "
        "FROM inferences WHERE model = 'journal-kill'",
    )
    print(f"answered {len(senders.ok)} requests of 100 spans; stored calls {calls}")
    assert answered_calls == len(senders.ok) * 100, "every span answered 200 is stored"
    assert calls >= answered_calls


def test_an_unusable_journal_directory_is_refused_with_what_to_set(journal_store, tmp_path):
    from driftwarden.collector.spool import SpoolError

    (tmp_path / "taken").write_text("a file, not a directory")
    expected = r"ingest journal of POST /v1/traces .*genai\.journal_dir.*genai\.journal: false"
    with pytest.raises(SpoolError, match=expected):
        create_app(storage.connect(journal_store), journal_dir=tmp_path / "taken")
