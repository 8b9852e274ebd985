"""OTLP/HTTP log receiver: ``POST /v1/logs``, for the message content GenAI instrumentations send as log records.

OpenTelemetry's GenAI instrumentations (OpenAI's ``openai-v2`` among them) send a call's prompt and answer as
log records ("events") emitted inside the call's span, so they carry its trace and span ids, not on the span:

* ``gen_ai.client.inference.operation.details`` (current conventions): ``gen_ai.input.messages``,
  ``gen_ai.output.messages``, ``gen_ai.system_instructions``; ``gen_ai.content.prompt`` / ``.completion``;
* one ``gen_ai.system.message`` / ``gen_ai.user.message`` / ``gen_ai.assistant.message`` /
  ``gen_ai.tool.message`` per input message, one ``gen_ai.choice`` per answer (previous conventions; the
  content in the record's body: ``{"content": ...}``, ``{"index", "finish_reason", "message": {...}}``).

The event name is the record's ``event_name``, or its ``event.name`` attribute (older SDKs); the fields are its
attributes and the keys of its body. Each such record with content becomes a row of ``genai_content_events``,
redacted and cut as the span path's content (``genai_content.event_piece``); the hub's
:class:`~driftwarden.collector.content_attacher.ContentAttacher` then writes the call's assembled content into
its row of ``inferences`` once the span is there (``content_source = 'logs'``), so the model page, text drift and
reproducibility see it as if the span had carried it. With ``genai.store_content: false`` nothing is stored.

Other log records are counted (``driftwarden_otlp_log_records_total{outcome="not_genai"}``) and not stored,
as spans without ``gen_ai.*`` attributes are; content events without content (an instrumentation with
content capture off sends them with an empty body) count as ``no_content``. A content event without the trace
and span ids of a span cannot be attached to a call: it is rejected, named in ``partial_success``.

The answers are those of ``POST /v1/traces`` (``collector.receivers.otlp``): protobuf or OTLP/JSON, gzip, 200 with
``ExportLogsServiceResponse`` (``partial_success.rejected_log_records``), 400, 413, 415, 503; the same ingest
token. The request is answered once its rows are inserted (no journal: log records of content are a few per
call, not the spans' volume). Over OTLP/gRPC: ``LogsService/Export`` (``collector.receivers.otlp_grpc``).
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from fastapi import APIRouter, Request, Response
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from prometheus_client import Counter

from driftwarden.collector.ingest import insert_around
from driftwarden.collector.metrics import REGISTRY
from driftwarden.collector.receivers.genai_content import CHOICE_EVENT, LOG_EVENTS, event_piece, value_of
from driftwarden.collector.receivers.otlp import (
    _RPC_INVALID_ARGUMENT,
    OTLP_BODY,
    OTLP_RESPONSES,
    GenAIIngest,
    OTLPError,
    decode_json,
    serve,
)

TABLE = "genai_content_events"
_LATEST_NS = 2**63
LOGS_JSON = (("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"), ("logRecords", "log_records"))
"""Where an OTLP/JSON log export holds its records."""

SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("span_id", pa.string()),
        ("ts", pa.timestamp("ns", tz="UTC")),
        ("seq", pa.uint32()),
        ("name", pa.string()),
        ("kind", pa.string()),
        ("choice_index", pa.int64()),
        ("input", pa.string()),
        ("output", pa.string()),
        ("output_text", pa.string()),
        ("input_hash", pa.uint64()),
        ("output_hash", pa.uint64()),
        ("redactions", pa.uint16()),
        ("truncated", pa.bool_()),
    ]
)

router = APIRouter(tags=["otlp"])

records_received = Counter(
    "driftwarden_otlp_log_records",
    "Log records received on POST /v1/logs (and LogsService/Export), by outcome: stored (GenAI content events), "
    "not_genai (counted only), no_content (content events without content, or genai.store_content off), rejected",
    ["outcome"],
    registry=REGISTRY,
)


@dataclass
class LogBatch:
    """The content events of one export request: rows of ``genai_content_events`` and what the rest became."""

    rows: list[tuple] = field(default_factory=list)
    not_genai: int = 0
    no_content: int = 0
    rejected: int = 0
    reasons: Tally[str] = field(default_factory=Tally)

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejected += n
        self.reasons[reason] += n

    def message(self) -> str:
        """The ``partial_success.error_message``: every reason with its count."""
        return "; ".join(f"{n} log record(s): {reason}" for reason, n in self.reasons.most_common())

    def table(self) -> pa.Table:
        columns = zip(*self.rows, strict=True)
        return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(columns, SCHEMA, strict=True)], schema=SCHEMA)

    def calls(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Each call's (trace id, span id) with the earliest and latest time of its records, in nanoseconds."""
        out: dict[tuple[str, str], tuple[int, int]] = {}
        for trace, span, ts, *_ in self.rows:
            nanos = int(ts)
            lo, hi = out.get((trace, span), (nanos, nanos))
            out[(trace, span)] = (min(lo, nanos), max(hi, nanos))
        return out


@router.post(
    "/v1/logs",
    summary="OTLP/HTTP log export (protobuf or JSON); GenAI content events give LLM calls their messages",
    responses={**OTLP_RESPONSES, 200: {"description": "ExportLogsServiceResponse; partial_success names rejected "
                                       "log records"}},
    openapi_extra=OTLP_BODY,
)  # fmt: skip
async def post_logs(request: Request) -> Response:
    return await serve(request, "logs", export_logs)


def export_logs(body: bytes, as_json: bool, ingest: GenAIIngest, store: Any, journal: Any = None) -> Any:
    """One log export request (``POST /v1/logs`` or OTLP/gRPC): its content events stored into ``store`` around
    those it refuses, their calls handed to the content attacher, the records counted; the answer, with
    ``partial_success`` when records were rejected. ``journal`` (the spans') is not used. Raises
    :class:`OTLPError` (a body that does not decode) or ``HTTPException`` (503). Blocking: run it off the event
    loop."""
    if as_json:
        request = decode_json(body, ExportLogsServiceRequest, LOGS_JSON)
    else:
        try:
            request = ExportLogsServiceRequest.FromString(body)
        except DecodeError as exc:
            raise OTLPError(
                400, _RPC_INVALID_ARGUMENT, f"the body is not a valid ExportLogsServiceRequest protobuf ({exc})"
            ) from None
    batch = map_records(request, ingest)
    stored = len(batch.rows)
    if stored:
        table = batch.table()
        refused, refusal = insert_around(store, TABLE, table)
        if refused is not None:
            batch.reject(f"the store refused them for what they hold ({refusal})", refused.num_rows)
            stored -= refused.num_rows
        ingest.content_attacher(store).note(batch.calls())
    records_received.labels("stored").inc(stored)
    records_received.labels("not_genai").inc(batch.not_genai)
    records_received.labels("no_content").inc(batch.no_content)
    records_received.labels("rejected").inc(batch.rejected)
    answer = ExportLogsServiceResponse()
    if batch.rejected:
        answer.partial_success.rejected_log_records = batch.rejected
        answer.partial_success.error_message = batch.message()
    return answer


def map_records(request: Any, ingest: GenAIIngest) -> LogBatch:
    """The request's GenAI content events as rows of ``genai_content_events`` (see the module docstring)."""
    batch = LogBatch()
    store_content = ingest.config.store_content
    limit = ingest.config.max_content_bytes
    redactor = ingest.redactor
    choices: Tally[tuple[bytes, bytes]] = Tally()  # per call: the choices seen, the index of one that gives none
    now = time.time_ns()
    seq = 0
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                seq += 1
                attributes = {kv.key: kv.value for kv in record.attributes}
                name = record.event_name
                if not name and "event.name" in attributes:
                    name = value_of(attributes["event.name"])
                if not isinstance(name, str) or name not in LOG_EVENTS:  # an event.name of another type too
                    batch.not_genai += 1
                    continue
                trace, span = record.trace_id, record.span_id
                if len(trace) != 16 or len(span) != 8 or not any(trace) or not any(span):
                    batch.reject(
                        f"a {name} event without the trace and span ids of its call's span (emit it inside the span)"
                    )
                    continue
                if not store_content:
                    batch.no_content += 1
                    continue
                fields = {key: value_of(value) for key, value in attributes.items()}
                body = value_of(record.body) if record.HasField("body") else None
                if isinstance(body, dict):
                    fields.update(body)
                elif body is not None:
                    fields["content"] = body
                position = choices[(trace, span)]
                if name == CHOICE_EVENT:
                    choices[(trace, span)] += 1
                piece = event_piece(name, fields, position, redactor, limit)
                if piece is None:
                    batch.no_content += 1
                    continue
                ts = record.time_unix_nano or record.observed_time_unix_nano
                if not 0 < ts < _LATEST_NS:  # unset, or beyond what a timestamp holds: the time it arrived
                    ts = now
                batch.rows.append(
                    (
                        trace.hex(), span.hex(), ts, seq, name, piece.kind, piece.choice_index, piece.input,
                        piece.output, piece.output_text, piece.input_hash, piece.output_hash, piece.redactions,
                        piece.truncated,
                    )
                )  # fmt: skip
    return batch
