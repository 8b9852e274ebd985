"""One captured inference: the record that every receiver produces and every sink writes.

The fields are the columns of the ``inferences`` table (storage/migrations).
Receivers fill what their protocol knows; the rest keep their defaults.
Not thread-safe by itself: an event is built by one request handler and then
handed over, never shared while it is being filled.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, fields


def _now_us() -> int:
    return time.time_ns() // 1000


@dataclass(slots=True)
class Event:
    model: str
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    ts_us: int = field(default_factory=_now_us)  # microseconds since the epoch, UTC (column ts)
    model_version: str = ""
    model_digest: str = ""
    protocol: str = "unknown"  # oip | openai | generic | python | ingest | unknown
    endpoint: str = ""
    tenant: str = ""
    status: int = 0
    latency_ms: float = 0.0
    upstream_latency_ms: float = 0.0
    ttft_ms: float | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    num_names: list[str] = field(default_factory=list)
    num_values: list[float] = field(default_factory=list)
    cat_names: list[str] = field(default_factory=list)
    cat_values: list[str] = field(default_factory=list)
    text_names: list[str] = field(default_factory=list)  # text features (prompts, documents), after redaction
    text_values: list[str] = field(default_factory=list)
    emb_names: list[str] = field(default_factory=list)  # embedding features: one vector per name
    emb_values: list[list[float]] = field(default_factory=list)
    prediction: float | None = None
    prediction_label: str = ""
    output_names: list[str] = field(default_factory=list)
    output_values: list[float] = field(default_factory=list)
    output_text: str = ""
    input_payload: str = ""
    output_payload: str = ""
    payload_sampled: bool = False
    payload_truncated: bool = False
    input_hash: int = 0
    output_hash: int = 0
    params_hash: int = 0
    deterministic: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""
    error_class: str = ""
    trace_id: str = ""
    is_replay: bool = False
    replay_of: uuid.UUID | None = None
    redactions: int = 0
    # Language-model calls (OpenTelemetry GenAI conventions, storage/migrations/0006_genai.sql).
    operation_name: str = ""  # gen_ai.operation.name: chat | text_completion | embeddings | ...
    provider_name: str = ""  # gen_ai.provider.name
    request_model: str = ""
    response_model: str = ""
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    server_address: str = ""
    service_name: str = ""
    span_id: str = ""
    parent_span_id: str = ""
    span_status: str = ""  # unset | ok | error for spans
    cost: float = 0.0  # from the configured price table


FIELD_NAMES = tuple(f.name for f in fields(Event))
