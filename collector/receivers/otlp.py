"""OTLP/HTTP trace receiver: ``POST /v1/traces``, per the OpenTelemetry Protocol specification.

Accepts an ``ExportTraceServiceRequest`` as ``application/x-protobuf`` (binary protobuf) or
``application/json`` (OTLP/JSON: the protobuf JSON mapping, with trace and span ids as hex
strings), optionally ``Content-Encoding: gzip``, decoded with the official messages of
``opentelemetry-proto``. Spans that follow the GenAI semantic conventions are stored as
language-model calls (``collector.receivers.genai_spans``); other spans are counted only.

Answers, in the content type of the request:

* 200 with an ``ExportTraceServiceResponse``; its ``partial_success`` gives the number of
  rejected spans and why, when some were (the others are stored): spans the mapping refuses
  (``genai_spans``), and, without a journal, calls the store refuses for what they hold (a
  constraint, a column it lacks), around which the others are inserted;
* 400 with a ``google.rpc.Status`` for a body that does not decode (truncated protobuf,
  invalid JSON, a gzip stream that does not inflate); nothing is stored;
* 413 for a body larger than ``genai.max_request_bytes`` (default 20 MiB, the OpenTelemetry
  Collector's default), compressed or once decompressed;
* 415 for another content type (answered in JSON) or content encoding;
* 503 when the store does not take the calls, or the journal is full: the exporter retries later.

With the hub's ingest journal (``app.state.otlp_journal``, ``collector.ingest_journal``: by default
beside an embedded store), a request is answered once its calls are ``fsync``'d there; a thread of the
journal inserts them, in large groups (calls the store refuses are set aside there and tried again). Without
it, the calls go through the hub's group-commit insert (``collector.ingest.insert_around``, the insert of
``persist`` that ``POST /v1/events`` goes through): requests that wait for the store at the same time are
written in one insert, each answered once its calls are stored; a request announces its calls while it
decodes them (``ingest.Arrival``), so that an insert about to start can wait briefly to take them too. Both
are guarded by the same ingest token (``collector.hub_app``). The GenAI metrics (``collector.genai_metrics``)
are observed once the calls are stored (or journaled). All of it (:func:`export`, shared with the OTLP/gRPC
receiver, ``collector.receivers.otlp_grpc``) runs on the thread pool, but for a journaled protobuf request of at most
:data:`INLINE_MAX_BYTES`, decoded, mapped and (while the journal's disk is quick) journaled on the event loop
(:func:`map_on_loop`); the protobuf is
decoded on protobuf's upb backend with ``opentelemetry-proto``'s descriptors, the span attributes as their
encoded ``KeyValue``, each distinct one decoded by ``opentelemetry-proto``'s class once
(``genai_spans.TRACES_VIEW``); an OTLP/JSON body with ``opentelemetry-proto``'s messages.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import zlib
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client import Counter, Histogram

from driftwarden.collector.genai_config import GenAIConfig
from driftwarden.collector.genai_metrics import GenAIRecorder
from driftwarden.collector.ingest import Arrival, insert_around, read_limited
from driftwarden.collector.ingest_journal import IngestJournal, JournalFull
from driftwarden.collector.metrics import LATENCY_BUCKETS, REGISTRY
from driftwarden.collector.processors.redaction import Redactor
from driftwarden.collector.receivers.genai_spans import TRACES_VIEW, SpanBatch, SpanMapper

log = logging.getLogger("driftwarden.otlp")

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_RPC_INVALID_ARGUMENT, _RPC_RESOURCE_EXHAUSTED, _RPC_UNAVAILABLE = 3, 8, 14

INLINE_MAX_BYTES = 1 << 20
"""A journaled protobuf trace export up to this size (about 2,000 spans without content: 10-25 ms of work) is decoded
and mapped column by column on the event loop, see :func:`map_on_loop`."""
INLINE_MAX_SYNC_S = 0.002
""":func:`map_on_loop` journals on the event loop too while the journal's ``fsync`` takes less than this lately
(``Spool.sync_seconds``; about 0.8 ms at the median on this machine's disk under load), else on the thread pool."""

router = APIRouter(tags=["otlp"])

spans_received = Counter(
    "driftwarden_otlp_spans",
    "Spans received on POST /v1/traces, by outcome: stored (GenAI), not_genai (counted only), rejected",
    ["outcome"],
    registry=REGISTRY,
)
requests_received = Counter(
    "driftwarden_otlp_requests",
    "OTLP export requests by HTTP status answered (an OTLP/gRPC answer: the HTTP status of the same meaning), "
    "transport (http | grpc) and signal (traces | logs)",
    ["status", "transport", "signal"],
    registry=REGISTRY,
)
request_duration = Histogram(
    "driftwarden_otlp_request_duration_seconds",
    "Time to decode, map and store (or journal) one OTLP export request, by signal (traces | logs)",
    ["signal"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)


class GenAIIngest:
    """What the GenAI receivers of one process share: configuration, redactor, span mapper, metrics recorder."""

    def __init__(self, config: GenAIConfig | None = None) -> None:
        import os

        from driftwarden.collector.config import RedactionConfig

        self.config = config or GenAIConfig()
        rc = RedactionConfig.model_validate(self.config.redaction)
        key = rc.key or os.environ.get("DRIFTWARDEN_REDACTION_KEY") or None
        self.redactor = Redactor(mode=rc.mode, key=key, fields=rc.fields, rules=rc.rules, patterns=rc.patterns)
        self.mapper = SpanMapper(self.config, self.redactor)
        self.recorder = GenAIRecorder(self.config)
        self._attacher: Any = None
        self._attacher_lock = threading.Lock()

    def content_attacher(self, store: Any) -> Any:
        """The thread that gives calls their content from log records (``collector.content_attacher``), started at
        the first use (the hub starts it with the app, so that what a previous run left is attached)."""
        with self._attacher_lock:
            if self._attacher is None:
                from driftwarden.collector.content_attacher import ContentAttacher

                self._attacher = ContentAttacher(store, self.config.max_content_bytes)
            return self._attacher

    def spans_stored(self, table: Any) -> None:
        """Calls just stored (an Arrow table with ``trace_id``, ``span_id``): the content attacher looks again at
        those it gave content lately, which a retried span may have replaced by a row without it."""
        attacher = self._attacher
        if attacher is not None:
            attacher.spans_stored(table)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the content attacher, after a last pass."""
        with self._attacher_lock:
            attacher, self._attacher = self._attacher, None
        if attacher is not None:
            attacher.close(timeout)


def genai_ingest(request: Request) -> GenAIIngest:
    """The app's :class:`GenAIIngest` (``app.state.genai``), made with defaults when the app has none."""
    state = request.app.state
    ingest = getattr(state, "genai", None)
    if ingest is None:
        ingest = state.genai = GenAIIngest()
    return ingest


class OTLPError(Exception):
    """An answer other than 200: HTTP status, gRPC status code, message."""

    def __init__(self, http_status: int, rpc_code: int, message: str) -> None:
        super().__init__(message)
        self.http_status, self.rpc_code, self.message = http_status, rpc_code, message


OTLP_RESPONSES: dict[int | str, dict] = {
    200: {"description": "ExportTraceServiceResponse; partial_success names rejected spans"},
    400: {"description": "google.rpc.Status: the body does not decode; nothing was stored"},
    401: {"description": "the ingest token is required"},
    413: {"description": "google.rpc.Status: the body is larger than genai.max_request_bytes"},
    415: {"description": "google.rpc.Status: another content type or content encoding"},
    503: {"description": "google.rpc.Status: the store did not take the calls; retry later"},
}
OTLP_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            JSON: {"schema": {"type": "object", "description": "OTLP/JSON ExportTraceServiceRequest"}},
        },
    }
}


@router.post(
    "/v1/traces",
    summary="OTLP/HTTP trace export (protobuf or JSON); GenAI spans become LLM calls",
    responses=OTLP_RESPONSES,
    openapi_extra=OTLP_BODY,
)
async def post_traces(request: Request) -> Response:
    return await serve(request, "traces", export, map_on_loop)


async def map_on_loop(
    body: bytes, as_json: bool, ingest: GenAIIngest, journal: IngestJournal | None
) -> ExportTraceServiceResponse | None:
    """A journaled protobuf request of at most :data:`INLINE_MAX_BYTES` decoded and mapped column by column on the
    event loop, and journaled there too while the journal's disk is quick (:data:`INLINE_MAX_SYNC_S`), else on the
    thread pool, so that the event loop maps the next request during a slow ``fsync``; None,
    having done nothing, for the others, which :func:`export` takes whole on the thread pool: larger ones, OTLP/JSON
    (decoded in pure Python), requests without a journal (they wait for their insert), and those whose spans need the
    span-by-span mapping (message content to redact, a rejected span: ``SpanMapper.map``'s ``columnar_only``).
    Request threads mapping beside the event loop take the interpreter lock from it and from each other by turns,
    which costs more than the work: the p99 of a 1,000-span request at 50,000 spans/s fell from 62-99 ms to 31-49 ms
    in alternated runs (BENCHMARKS.md, 2026-12-04 evening)."""
    if journal is None or as_json or len(body) > INLINE_MAX_BYTES:
        return None
    batch = _decode_and_map(body, as_json, ingest, columnar_only=True)
    if batch is None:
        return None
    if journal.spool.sync_seconds < INLINE_MAX_SYNC_S:
        return _journaled(batch, ingest, journal)
    return await run_in_threadpool(_journaled, batch, ingest, journal)


async def serve(request: Request, signal: str, exporter: Any, on_loop: Any = None) -> Response:
    """An OTLP/HTTP export request of ``signal`` (traces, logs): checked, read, handed to ``on_loop`` (an async
    function of ``export``'s arguments but the store, for what it takes on the event loop; None for what it leaves)
    and else to ``exporter`` (``export``'s arguments) on the thread pool, answered and counted."""
    started = time.perf_counter()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    as_json = content_type != PROTOBUF  # answers to an unknown content type are JSON, readable by anyone
    try:
        if content_type not in (PROTOBUF, JSON):
            raise OTLPError(
                415,
                _RPC_INVALID_ARGUMENT,
                f"content-type {content_type or '(none)'!r} is not accepted; send {PROTOBUF} or {JSON} (OTLP/HTTP)",
            )
        ingest = genai_ingest(request)
        body = await read_body(request, ingest.config.max_request_bytes)
        state = request.app.state
        journal = state.otlp_journal
        answer = None if on_loop is None else await on_loop(body, as_json, ingest, journal)
        if answer is None:
            answer = await run_in_threadpool(exporter, body, as_json, ingest, state.store, journal)
        status, payload = 200, answer
    except OTLPError as exc:
        status, payload = exc.http_status, status_pb2.Status(code=exc.rpc_code, message=exc.message)
    except HTTPException as exc:  # from the ingest function: the store did not take the batch
        code = _RPC_UNAVAILABLE if exc.status_code >= 500 else _RPC_INVALID_ARGUMENT
        status, payload = exc.status_code, status_pb2.Status(code=code, message=str(exc.detail))
    requests_received.labels(str(status), "http", signal).inc()
    request_duration.labels(signal).observe(time.perf_counter() - started)
    return encode(payload, status, as_json)


def encode(message: Any, status: int, as_json: bool) -> Response:
    """A protobuf message as the response body, in the request's encoding."""
    if as_json:
        body = json_format.MessageToJson(message, indent=None).encode()
        return Response(body, status_code=status, media_type=JSON)
    return Response(message.SerializeToString(), status_code=status, media_type=PROTOBUF)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, gunzipped when it says so; :class:`OTLPError` 413/415/400 as the specification asks."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity", "gzip", "x-gzip"):
        raise OTLPError(415, _RPC_INVALID_ARGUMENT, f"content-encoding {encoding!r} is not accepted; send gzip or none")
    too_large = OTLPError(
        413,
        _RPC_RESOURCE_EXHAUSTED,
        f"the request body is larger than {limit} bytes (genai.max_request_bytes); export smaller batches",
    )
    body = await read_limited(request, limit, too_large)
    if encoding in ("gzip", "x-gzip") and body:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body, limit + 1)
        except zlib.error as exc:
            raise OTLPError(400, _RPC_INVALID_ARGUMENT, f"the gzip body does not inflate: {exc}") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise OTLPError(
                413,
                _RPC_RESOURCE_EXHAUSTED,
                f"the decompressed body is larger than {limit} bytes (genai.max_request_bytes)",
            )
        if not inflater.eof:
            raise OTLPError(400, _RPC_INVALID_ARGUMENT, "the gzip body is truncated")
    return body


def export(
    body: bytes, as_json: bool, ingest: GenAIIngest, store: Any, journal: IngestJournal | None
) -> ExportTraceServiceResponse:
    """One export request, whatever carried it (``POST /v1/traces``, or OTLP/gRPC: ``otlp_grpc``): its spans decoded
    and mapped, the calls journaled (``journal``) or stored into ``store`` around the ones it refuses, observed in
    the GenAI metrics, the spans counted; the answer, with ``partial_success`` when spans were rejected. Raises
    :class:`OTLPError` (a body that does not decode, a full journal) or ``HTTPException`` (503: the store did not
    take the calls). Blocking: run it off the event loop."""
    if journal is not None:  # answered once journaled; the journal's thread inserts (collector.ingest_journal)
        return _journaled(_decode_and_map(body, as_json, ingest), ingest, journal)
    with Arrival() as arrival:  # an insert about to start may wait for these calls (group commit)
        batch = _decode_and_map(body, as_json, ingest)
        if batch.stored:
            refused, refusal = insert_around(store, "inferences", batch.table, arrival=arrival)
            if refused is not None:  # the others are stored: these are answered as rejected
                batch.take_out(refused, f"the store refused them for what they hold ({refusal})")
            ingest.spans_stored(batch.table)
    return _answered(batch, ingest)


def _journaled(batch: SpanBatch, ingest: GenAIIngest, journal: IngestJournal) -> ExportTraceServiceResponse:
    """The batch's calls journaled (``fsync``'d), then answered (:func:`_answered`); :class:`OTLPError` 503 when the
    journal is full."""
    if batch.stored:
        try:
            journal.append(batch.table)
        except JournalFull as exc:
            raise OTLPError(503, _RPC_UNAVAILABLE, str(exc)) from None
    return _answered(batch, ingest)


def _answered(batch: SpanBatch, ingest: GenAIIngest) -> ExportTraceServiceResponse:
    """The stored calls observed in the GenAI metrics, the spans counted; the answer, with ``partial_success`` when
    spans were rejected."""
    if batch.stored:
        ingest.recorder.observe_calls(batch.calls)
    spans_received.labels("stored").inc(batch.stored)
    spans_received.labels("not_genai").inc(batch.not_genai)
    spans_received.labels("rejected").inc(batch.rejected)
    answer = ExportTraceServiceResponse()
    if batch.rejected:
        answer.partial_success.rejected_spans = batch.rejected
        answer.partial_success.error_message = batch.message()
    return answer


def _decode_and_map(body: bytes, as_json: bool, ingest: GenAIIngest, columnar_only: bool = False) -> SpanBatch | None:
    """The request's spans as calls (priced), with their Arrow table when there are any (None: see
    ``SpanMapper.map``'s ``columnar_only``)."""
    message = decode_json(body) if as_json else decode_protobuf(body)
    try:
        return ingest.mapper.map(message, columnar_only)
    except DecodeError as exc:  # a span attribute (an encoded KeyValue, see genai_spans.TRACES_VIEW)
        raise _not_protobuf(exc) from None


def decode_protobuf(body: bytes) -> Any:
    """The body as ``genai_spans.TRACES_VIEW``: an ``ExportTraceServiceRequest`` whose span attributes the
    mapper decodes with ``opentelemetry-proto``'s ``KeyValue`` (each distinct one once)."""
    try:
        return TRACES_VIEW.FromString(body)
    except DecodeError as exc:
        raise _not_protobuf(exc) from None


def _not_protobuf(exc: DecodeError) -> OTLPError:
    return OTLPError(400, _RPC_INVALID_ARGUMENT, f"the body is not a valid ExportTraceServiceRequest protobuf ({exc})")


SPANS_JSON = (("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans",))
"""Where an OTLP/JSON trace export holds its spans (camelCase as the specification writes it, or the field names)."""


def decode_json(body: bytes, message: Any = ExportTraceServiceRequest, path: tuple = SPANS_JSON) -> Any:
    """OTLP/JSON: the protobuf JSON mapping of ``message``, except that trace and span ids are hex, not base64 (in
    the items found along ``path``, and in their ``links``)."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise OTLPError(400, _RPC_INVALID_ARGUMENT, f"the body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise OTLPError(400, _RPC_INVALID_ARGUMENT, f"the body must be a JSON object with {path[0][0]}")
    (resources, scopes, items) = path
    for resource in _items(document, *resources):
        for scope in _items(resource, *scopes):
            for item in _items(scope, *items):
                _hex_ids(item)
                for link in _items(item, "links"):
                    _hex_ids(link)
    try:
        return json_format.ParseDict(document, message(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        name = message.DESCRIPTOR.name
        raise OTLPError(400, _RPC_INVALID_ARGUMENT, f"the body is not a valid OTLP/JSON {name}: {exc}") from None


def _items(parent: Any, *keys: str) -> list:
    if not isinstance(parent, dict):
        return []
    for key in keys:
        value = parent.get(key)
        if isinstance(value, list):
            return value
    return []


def _hex_ids(span: Any) -> None:
    """Hex ids to the base64 the protobuf JSON mapping expects; an invalid id becomes empty (the span is rejected)."""
    if not isinstance(span, dict):
        return
    for key in ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"):
        value = span.get(key)
        if value is None:
            continue
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            raw = b""
        span[key] = base64.b64encode(raw).decode()
