"""OpenTelemetry spans that follow the GenAI semantic conventions, as stored language-model calls.

A span is a GenAI span when it has at least one ``gen_ai.*`` attribute; other spans are
counted and not stored. Each GenAI span becomes one :class:`~collector.event.Event`
(protocol ``otlp``), filling the same columns as the sidecar's OpenAI capture:

=====================================  =============================================================
span                                   event (``inferences`` column)
=====================================  =============================================================
start, end                             ``ts``, ``latency_ms`` (end - start); ``ended_at`` is derived
trace id, span id, parent span id      ``trace_id``, ``span_id``, ``parent_span_id`` (hex)
status code                            ``span_status`` (unset | ok | error)
``gen_ai.operation.name``              ``operation_name``
``gen_ai.provider.name``/``.system``   ``provider_name``
``gen_ai.request.model``               ``request_model``; the stored ``model`` unless ``service_models``
                                       maps the resource's ``service.name`` to a model
``gen_ai.response.model``              ``response_model``, ``model_version`` (else the request model)
``gen_ai.usage.input/output_tokens``   ``prompt_tokens``, ``completion_tokens`` (older
                                       ``prompt_tokens``/``completion_tokens`` attributes too)
``gen_ai.response.finish_reasons``     ``finish_reason`` (the first)
``gen_ai.request.temperature/top_p``   ``temperature``, ``top_p`` (and numeric features, for drift)
``gen_ai.request.max_tokens/seed``     ``max_tokens``, ``seed``
``gen_ai.response.time_to_first_chunk``  ``ttft_ms`` (also ``gen_ai.server.time_to_first_token``)
``error.type``                         ``error_class`` (``_OTHER`` for an error status without one)
``http.response.status_code``          ``status``; else 200, or 500 for a failed call, so that the
                                       latency and error detectors count span errors
``server.address``, ``service.name``   ``server_address``, ``service_name``
``gen_ai.input/output.messages``       ``input_payload``/``output_payload`` and ``output_text`` (the
                                       text parts), only when present, after redaction; read from
                                       the attributes or from the events that carry them
                                       (``gen_ai.client.inference.operation.details``,
                                       ``gen_ai.content.prompt``/``.completion``)
=====================================  =============================================================

The event id is derived from the trace and span ids, so a retried export is stored once
(the table deduplicates by event id). The model is the request model, else the response
model, else the service name.

A GenAI span is rejected (counted in ``partial_success``; the rest of the request is kept)
when its ids are not 16 and 8 bytes, it has no start time, it ends before it starts, a
token count is negative or above ``max_tokens_per_call``, or its model name is refused by
``driftwarden.names``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from driftwarden.collector.event import Event
from driftwarden.collector.genai_config import GenAIConfig
from driftwarden.collector.processors.hashing import canonical_hash
from driftwarden.collector.processors.redaction import Redactor
from driftwarden.collector.processors.truncation import cap_text
from driftwarden.names import model_name_problem

_STATUS = {0: "unset", 1: "ok", 2: "error"}
_SCALARS = frozenset({"string_value", "int_value", "double_value", "bool_value"})
_INPUT_KEYS = ("gen_ai.input.messages", "gen_ai.prompt")
_OUTPUT_KEYS = ("gen_ai.output.messages", "gen_ai.completion")
_CONTENT_EVENTS = frozenset(
    {"gen_ai.client.inference.operation.details", "gen_ai.content.prompt", "gen_ai.content.completion"}
)
_NUMERIC_FEATURES = ("temperature", "top_p", "max_tokens", "seed")


@dataclass
class SpanBatch:
    """What one OTLP request gave: the calls to store, and the counts of the other spans."""

    events: list[Event] = field(default_factory=list)
    not_genai: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.reasons[reason] += 1

    def message(self) -> str:
        """The ``partial_success.error_message``: every reason with its count."""
        return "; ".join(f"{n} span(s): {reason}" for reason, n in self.reasons.most_common())


def value_of(any_value: Any) -> Any:
    """An OTLP ``AnyValue`` as a Python value (lists and dicts for arrays and key-value lists)."""
    which = any_value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [value_of(v) for v in any_value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, which)


class SpanMapper:
    """Turns an ``ExportTraceServiceRequest`` into events; see the module docstring. Thread-safe."""

    def __init__(self, config: GenAIConfig, redactor: Redactor) -> None:
        self.config = config
        self.redactor = redactor
        self._max_tokens = config.max_tokens_per_call
        self._valid_names: dict[str, str | None] = {}

    def map(self, request: Any) -> SpanBatch:
        batch = SpanBatch()
        services = self.config.service_models
        for resource_spans in request.resource_spans:
            service = ""
            for kv in resource_spans.resource.attributes:
                if kv.key == "service.name":
                    service = str(value_of(kv.value) or "")
                    break
            mapped = services.get(service, "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attrs: dict[str, Any] = {}
                    genai = False
                    for kv in span.attributes:
                        key = kv.key
                        if key.startswith("gen_ai."):
                            genai = True
                        value = kv.value
                        which = value.WhichOneof("value")
                        if which in _SCALARS:  # most attributes: read the field without a call
                            attrs[key] = getattr(value, which)
                        elif which is not None:
                            attrs[key] = value_of(value)
                    if not genai:
                        batch.not_genai += 1
                        continue
                    event = self._event(span, attrs, service, mapped, batch)
                    if event is not None:
                        batch.events.append(event)
        return batch

    def _event(self, span: Any, attrs: dict[str, Any], service: str, mapped: str, batch: SpanBatch) -> Event | None:
        trace_id, span_id = span.trace_id, span.span_id
        if len(trace_id) != 16 or len(span_id) != 8:
            batch.reject("trace_id must be 16 bytes and span_id 8 bytes")
            return None
        start, end = span.start_time_unix_nano, span.end_time_unix_nano
        if not start:
            batch.reject("start_time_unix_nano is missing")
            return None
        if end < start:
            batch.reject("the span ends before it starts (negative duration)")
            return None
        input_tokens = attrs.get("gen_ai.usage.input_tokens", attrs.get("gen_ai.usage.prompt_tokens", 0))
        output_tokens = attrs.get("gen_ai.usage.output_tokens", attrs.get("gen_ai.usage.completion_tokens", 0))
        if not _count_ok(input_tokens, self._max_tokens) or not _count_ok(output_tokens, self._max_tokens):
            batch.reject(f"a token count is not an integer between 0 and {self._max_tokens} (max_tokens_per_call)")
            return None
        request_model = _text(attrs.get("gen_ai.request.model"))
        response_model = _text(attrs.get("gen_ai.response.model"))
        model = mapped or request_model or response_model or service
        if not model:
            batch.reject("no gen_ai.request.model, gen_ai.response.model or service.name to name the model")
            return None
        problem = self._name_problem(model)
        if problem:
            batch.reject(f"model name refused: {problem}")
            return None
        duration_ms = (end - start) / 1e6
        ttft = attrs.get("gen_ai.response.time_to_first_chunk", attrs.get("gen_ai.server.time_to_first_token"))
        ttft_ms = float(ttft) * 1000.0 if _is_number(ttft) and 0 <= ttft else None
        code = span.status.code
        error_type = _text(attrs.get("error.type"))
        if code == 2 and not error_type:
            error_type = "_OTHER"
        http_status = attrs.get("http.response.status_code")
        status = http_status if isinstance(http_status, int) and 100 <= http_status <= 599 else 0
        if not status:
            status = 500 if error_type else 200
        reasons = attrs.get("gen_ai.response.finish_reasons")
        if isinstance(reasons, list):
            finish = _text(reasons[0]) if reasons else ""
        else:
            finish = _text(reasons)
        temperature = _number(attrs.get("gen_ai.request.temperature"))
        top_p = _number(attrs.get("gen_ai.request.top_p"))
        max_tokens = attrs.get("gen_ai.request.max_tokens")
        max_tokens = max_tokens if isinstance(max_tokens, int) and 0 <= max_tokens < 2**32 else None
        seed = attrs.get("gen_ai.request.seed", attrs.get("gen_ai.openai.request.seed"))
        seed = seed if isinstance(seed, int) and -(2**63) <= seed < 2**63 else None
        trace_bytes = bytes(trace_id)
        span_bytes = bytes(span_id)
        event = Event(
            model=model,
            event_id=uuid.UUID(bytes=hashlib.blake2b(trace_bytes + span_bytes, digest_size=16).digest()),
            ts_us=start // 1000,
            model_version=response_model or request_model,
            protocol="otlp",
            endpoint=span.name[:200],
            status=status,
            latency_ms=duration_ms,
            ttft_ms=ttft_ms,
            prompt_tokens=input_tokens,
            completion_tokens=output_tokens,
            finish_reason=finish,
            error_class=error_type,
            trace_id=trace_bytes.hex(),
            deterministic=temperature == 0 or seed is not None,
            operation_name=_text(attrs.get("gen_ai.operation.name")),
            provider_name=_text(attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system")),
            request_model=request_model,
            response_model=response_model,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_tokens,
            seed=seed,
            server_address=_text(attrs.get("server.address")),
            service_name=service,
            span_id=span_bytes.hex(),
            parent_span_id=bytes(span.parent_span_id).hex() if len(span.parent_span_id) == 8 else "",
            span_status=_STATUS.get(code, "unset"),
        )
        params = {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens, "seed": seed}
        names = [k for k in _NUMERIC_FEATURES if params[k] is not None]
        if names:
            event.num_names = names
            event.num_values = [float(params[k]) for k in names]
        if request_model:
            event.cat_names = ["request_model"]
            event.cat_values = [request_model]
        if self.config.store_content:
            self._content(event, span, attrs, params)
        return event

    def _name_problem(self, model: str) -> str | None:
        try:
            return self._valid_names[model]
        except KeyError:
            problem = model_name_problem(model)
            if len(self._valid_names) < 10_000:
                self._valid_names[model] = problem
            return problem

    def _content(self, event: Event, span: Any, attrs: dict[str, Any], params: dict[str, Any]) -> None:
        """Message content from the attributes or the events that carry it, redacted and capped."""
        found_in = attrs.get(_INPUT_KEYS[0], attrs.get(_INPUT_KEYS[1]))
        found_out = attrs.get(_OUTPUT_KEYS[0], attrs.get(_OUTPUT_KEYS[1]))
        if (found_in is None or found_out is None) and span.events:
            for span_event in span.events:
                if span_event.name not in _CONTENT_EVENTS:
                    continue
                for kv in span_event.attributes:
                    if found_in is None and kv.key in _INPUT_KEYS:
                        found_in = value_of(kv.value)
                    elif found_out is None and kv.key in _OUTPUT_KEYS:
                        found_out = value_of(kv.value)
        if found_in is None and found_out is None:
            return
        counts: Counter[str] = Counter()
        cut = False
        limit = self.config.max_content_bytes
        if found_in is not None:
            parsed_in = _parsed(found_in)
            event.input_hash = canonical_hash(parsed_in)
            event.params_hash = canonical_hash(params)
            event.input_payload, cut_in = cap_text(self.redactor.payload(_as_text(found_in), parsed_in, counts), limit)
            cut = cut or cut_in
        if found_out is not None:
            parsed_out = _parsed(found_out)
            event.output_hash = canonical_hash(parsed_out)
            event.output_payload, cut_out = cap_text(
                self.redactor.payload(_as_text(found_out), parsed_out, counts), limit
            )
            text = _output_text(parsed_out)
            if text:
                event.output_text, cut_text = cap_text(self.redactor.text(text, counts), limit)
                cut = cut or cut_text
            cut = cut or cut_out
        event.payload_sampled = True
        event.payload_truncated = cut
        event.redactions = min(sum(counts.values()), 0xFFFF)


def _count_ok(value: Any, limit: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # not NaN


def _number(value: Any) -> float | None:
    return float(value) if _is_number(value) and abs(value) != float("inf") else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _parsed(value: Any) -> Any:
    """Content as structured data: JSON text parsed, structured attribute values as they are."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _output_text(messages: Any) -> str:
    """The text parts of output messages (GenAI conventions: ``[{"role", "parts": [{"type": "text", ...}]}]``)."""
    if isinstance(messages, str):
        return messages
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list):
        return ""
    pieces: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        parts = message.get("parts")
        if isinstance(parts, list):
            for part in parts:
                if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("content"), str):
                    pieces.append(part["content"])
        elif isinstance(message.get("content"), str):
            pieces.append(message["content"])
    return "\n".join(pieces)
