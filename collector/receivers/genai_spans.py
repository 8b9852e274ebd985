"""OpenTelemetry spans that follow the GenAI semantic conventions, as stored language-model calls.

A span is a GenAI span when it has at least one ``gen_ai.*`` attribute; other spans are
counted and not stored. Each GenAI span becomes one row of the ``inferences`` table
(protocol ``otlp``), filling the same columns as the sidecar's OpenAI capture:

=====================================  =============================================================
span                                   ``inferences`` column
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
message content                        ``input_payload``/``output_payload`` and ``output_text`` (the
                                       text parts), only when present, after redaction (see
                                       :mod:`~driftwarden.collector.receivers.genai_content`)
=====================================  =============================================================

The event id is derived from the trace and span ids, so a retried export is stored once
(the table deduplicates by event id). The model is the request model, else the response
model, else the service name.

A GenAI span is rejected (counted in ``partial_success``; the rest of the request is kept)
when its ids are not 16 and 8 bytes, it has no start time, it ends before it starts, a
token count is negative or above ``max_tokens_per_call``, or its model name is refused by
``driftwarden.names``.

Columnar, in three steps (profiled at 1,000 spans per request: BENCHMARKS.md, OTLP third pass):

1. reading: the request is decoded as ``TRACES_VIEW`` (``opentelemetry-proto``'s descriptors, span
   attributes as their encoded ``KeyValue``); each distinct attribute is decoded once by
   ``opentelemetry-proto``'s ``KeyValue`` and then found by its bytes, into one slot per known key;
2. the calls, column by column: what depends on a span's attributes, service and status (model,
   price, error type, ...) is derived once per distinct combination, ids, times and token counts
   are checked and converted for the whole request at once (numpy); a request this leaves
   to the span-by-span reference (a rejected span, content, an attribute sent with two types)
   goes that way whole, with the same result (tests/test_genai_columnar.py);
3. the Arrow table of the columns the spans set (``collector.arrow.SCHEMA`` types): the store
   fills the others with their defaults.

Python's cyclic garbage collector is paused while a request is mapped (see ``_collector_paused``).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from hashlib import blake2b
from itertools import chain, count
from operator import attrgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from opentelemetry.proto.common.v1.common_pb2 import KeyValue as _KEY_VALUE

from driftwarden.collector.arrow import SCHEMA
from driftwarden.collector.genai_config import GenAIConfig
from driftwarden.collector.processors.redaction import Redactor
from driftwarden.collector.receivers.genai_content import SpanContent, read_content, value_of
from driftwarden.names import model_name_problem

_STATUS = ("unset", "ok", "error")
_SCALARS = frozenset({"string_value", "int_value", "double_value", "bool_value"})

# The attributes read from a span, by slot. Those before ERROR_TYPE are gen_ai.* attributes.
_ATTRIBUTES = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "gen_ai.response.finish_reasons",
    "gen_ai.request.temperature",
    "gen_ai.request.top_p",
    "gen_ai.request.max_tokens",
    "gen_ai.request.seed",
    "gen_ai.openai.request.seed",
    "gen_ai.response.time_to_first_chunk",
    "gen_ai.server.time_to_first_token",
    "gen_ai.input.messages",
    "gen_ai.prompt",
    "gen_ai.output.messages",
    "gen_ai.completion",
    "gen_ai.system_instructions",
    "error.type",
    "http.response.status_code",
    "server.address",
)
(
    OPERATION,
    PROVIDER,
    SYSTEM,
    REQUEST_MODEL,
    RESPONSE_MODEL,
    INPUT_TOKENS,
    PROMPT_TOKENS,
    OUTPUT_TOKENS,
    COMPLETION_TOKENS,
    FINISH_REASONS,
    TEMPERATURE,
    TOP_P,
    MAX_TOKENS,
    SEED,
    OPENAI_SEED,
    TIME_TO_FIRST_CHUNK,
    TIME_TO_FIRST_TOKEN,
    INPUT_MESSAGES,
    PROMPT,
    OUTPUT_MESSAGES,
    COMPLETION,
    SYSTEM_INSTRUCTIONS,
    ERROR_TYPE,
    HTTP_STATUS,
    SERVER_ADDRESS,
) = range(len(_ATTRIBUTES))
_SLOT = {name: slot for slot, name in enumerate(_ATTRIBUTES)}
_CONTENT_SLICE = slice(INPUT_MESSAGES, SYSTEM_INSTRUCTIONS + 1)  # the content attributes are adjacent slots
_NO_CONTENT = [None] * (SYSTEM_INSTRUCTIONS + 1 - INPUT_MESSAGES)
# num_names of a call by which of temperature, top_p, max_tokens, seed it has (bit 1, 2, 4, 8).
_NUM_NAMES = [
    tuple(name for bit, name in enumerate(("temperature", "top_p", "max_tokens", "seed")) if mask >> bit & 1)
    for mask in range(16)
]
_UUID = pa.binary(16)
_VARYING = (
    "event_id",
    "ts",
    "endpoint",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "trace_id",
    "span_id",
    "parent_span_id",
    "cost",
)
"""The values of a stored call that its span's ids, times, name and token counts give, in the order of a row of
``SpanMapper._rows`` (then come the ``_DERIVED``)."""
_DERIVED = (
    "model",
    "model_version",
    "status",
    "ttft_ms",
    "finish_reason",
    "error_class",
    "deterministic",
    "operation_name",
    "provider_name",
    "request_model",
    "response_model",
    "temperature",
    "top_p",
    "max_tokens",
    "seed",
    "server_address",
    "service_name",
    "span_status",
    "price",
    "num_names",
    "has_cat",
    "numbers",
)
"""What ``SpanMapper._derive`` gives from a span's attributes (but its token counts and content), service and
status code: columns of ``inferences``, and ``price`` (input, output per million tokens, or None), ``num_names``
(a tuple), ``has_cat`` (whether ``cat_names`` is ``["request_model"]``) and ``numbers`` (the ``num_values``)."""
_PRICE, _TEMPERATURE, _SEED = (_DERIVED.index(name) for name in ("price", "temperature", "seed"))
_KEY_SLOTS = tuple(
    slot
    for slot in range(len(_ATTRIBUTES))
    if slot not in (INPUT_TOKENS, PROMPT_TOKENS, OUTPUT_TOKENS, COMPLETION_TOKENS)
    and not INPUT_MESSAGES <= slot <= SYSTEM_INSTRUCTIONS
)
"""The attribute slots that ``SpanMapper._derive`` reads."""
_SPAN_FIELDS = attrgetter(
    "trace_id", "span_id", "parent_span_id", "start_time_unix_nano", "end_time_unix_nano", "name", "status.code"
)
_EVENTS = attrgetter("events")
_NONE = type(None)
_TIMESTAMP = SCHEMA.field("ts").type
_INT32 = 2**32
_INT64 = 2**63


@dataclass
class Calls:
    """The stored calls of one request, column by column: what the GenAI metrics are observed from."""

    operation: list[str] = field(default_factory=list)
    provider: list[str] = field(default_factory=list)
    request_model: list[str] = field(default_factory=list)
    response_model: list[str] = field(default_factory=list)
    model: list[str] = field(default_factory=list)
    error: list[str] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    ttft_ms: list[float | None] = field(default_factory=list)
    finish_reason: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.model)


@dataclass
class SpanBatch:
    """What one OTLP request gave: the calls to store (as an Arrow table), and the counts of the other spans."""

    calls: Calls = field(default_factory=Calls)
    table: pa.Table | None = None
    not_genai: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def stored(self) -> int:
        return len(self.calls)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.reasons[reason] += 1

    def take_out(self, refused: pa.Table, reason: str) -> None:
        """Take the calls of ``refused`` (rows of :attr:`table`, by event id) out of the batch, as rejected spans."""
        assert self.table is not None
        keep = pc.invert(pc.is_in(self.table.column("event_id"), value_set=refused.column("event_id").combine_chunks()))
        mask = np.asarray(keep)
        self.table = self.table.filter(keep)
        for name in Calls.__dataclass_fields__:
            values = getattr(self.calls, name)
            setattr(self.calls, name, [value for value, kept in zip(values, mask, strict=True) if kept])
        taken = len(mask) - int(mask.sum())
        self.rejected += taken
        self.reasons[reason] += taken

    def message(self) -> str:
        """The ``partial_success.error_message``: every reason with its count."""
        return "; ".join(f"{n} span(s): {reason}" for reason, n in self.reasons.most_common())


class SpanMapper:
    """Turns an ``ExportTraceServiceRequest`` into a table of calls; see the module docstring. Thread-safe."""

    def __init__(self, config: GenAIConfig, redactor: Redactor) -> None:
        self.config = config
        self.redactor = redactor
        self._max_tokens = config.max_tokens_per_call
        self._valid_names: dict[str, str | None] = {}

    def map(self, request: Any, columnar_only: bool = False) -> SpanBatch | None:
        """The request's spans as a :class:`SpanBatch`: each attribute read once (:meth:`_read`), then the calls
        built column by column (:meth:`_columns`), or span by span (:meth:`_rows`) for a request that has what
        the columnar way leaves to it (a rejected span, message content, an attribute sent with two types).
        Both ways give the same table (tests/test_genai_columnar.py). With ``columnar_only``, None for such a
        request: its span-by-span mapping (redacting message content: up to half a second a megabyte) is left
        to the caller. Runs with the cyclic garbage collector paused (:func:`_collector_paused`)."""
        batch = SpanBatch()
        with _collector_paused():
            spans, attributes, origins = self._read(request, batch)
            if not spans:
                return batch
            built = self._columns(spans, attributes, origins)
            if built is None:
                if columnar_only:
                    return None
                built = self._rows(spans, attributes, origins, batch)
            if built is not None:
                self._finish(batch, *built)
        return batch

    def _read(self, request: Any, batch: SpanBatch) -> tuple[list, list[list], list[tuple[str, str]]]:
        """The GenAI spans, their attribute values by slot of ``_ATTRIBUTES``, and their (service, mapped model);
        the other spans are counted in ``batch.not_genai``. ``request`` is a ``TRACES_VIEW`` (an
        ``ExportTraceServiceRequest`` of ``opentelemetry-proto`` is converted); a span attribute that does not
        decode raises ``DecodeError``, as decoding the whole request with ``opentelemetry-proto`` would."""
        if request.__class__ is not TRACES_VIEW:
            request = TRACES_VIEW.FromString(request.SerializeToString())
        services = self.config.service_models
        cache = _ATTRIBUTE_CACHE
        cached = cache.get
        none = [None] * len(_ATTRIBUTES)
        spans: list = []
        attributes: list[list] = []
        origins: list[tuple[str, str]] = []
        for resource_spans in request.resource_spans:
            service = ""
            for kv in resource_spans.resource.attributes:
                if kv.key == "service.name":
                    service = str(value_of(kv.value) or "")
                    break
            origin = (service, services.get(service, ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    values = none.copy()
                    genai = False
                    for raw in span.attributes:  # each KeyValue's bytes (see _trace_request_view)
                        found = cached(raw)
                        if found is None:
                            found = _attribute(raw)
                            if len(raw) <= _CACHED_BYTES and found[1].__class__ not in (list, dict):
                                if len(cache) >= _CACHED_ATTRIBUTES:
                                    cache.clear()
                                cache[raw] = found
                        slot, value, flag = found
                        if flag:
                            genai = True
                        if slot is not None:
                            values[slot] = value
                    if not genai:
                        batch.not_genai += 1
                        continue
                    spans.append(span)
                    attributes.append(values)
                    origins.append(origin)
        return spans, attributes, origins

    def _derive(self, values: list, service: str, mapped: str, code: int, price_of: dict) -> tuple | str:  # noqa: C901, PLR0912 - one span's fields, each checked as the module docstring says
        """What a call's attribute values, service and status code give (``_DERIVED``), or why the span is refused."""
        request_model = values[REQUEST_MODEL]
        request_model = request_model if request_model.__class__ is str else _text(request_model)
        response_model = values[RESPONSE_MODEL]
        response_model = response_model if response_model.__class__ is str else _text(response_model)
        model = mapped or request_model or response_model or service
        if not model:
            return "no gen_ai.request.model, gen_ai.response.model or service.name to name the model"
        problem = self._name_problem(model)
        if problem:
            return f"model name refused: {problem}"
        ttft = values[TIME_TO_FIRST_CHUNK]
        if ttft is None:
            ttft = values[TIME_TO_FIRST_TOKEN]
        ttft_ms = float(ttft) * 1000.0 if _is_number(ttft) and 0 <= ttft else None
        error_type = _text(values[ERROR_TYPE])
        if code == 2 and not error_type:
            error_type = "_OTHER"
        http_status = values[HTTP_STATUS]
        answer = http_status if isinstance(http_status, int) and 100 <= http_status <= 599 else 0
        if not answer:
            answer = 500 if error_type else 200
        reasons = values[FINISH_REASONS]
        if isinstance(reasons, (tuple, list)):
            finish = _text(reasons[0]) if reasons else ""
        else:
            finish = _text(reasons)
        temp = values[TEMPERATURE]  # a finite float as it is (x - x is 0.0 unless inf or NaN), else checked
        if temp is not None and not (temp.__class__ is float and temp - temp == 0.0):
            temp = _number(temp)
        nucleus = values[TOP_P]
        if nucleus is not None and not (nucleus.__class__ is float and nucleus - nucleus == 0.0):
            nucleus = _number(nucleus)
        limit = values[MAX_TOKENS]
        limit = limit if limit.__class__ is int and 0 <= limit < _INT32 else None  # not a bool: True is no limit
        fixed_seed = values[SEED]
        if fixed_seed is None:
            fixed_seed = values[OPENAI_SEED]
        fixed_seed = fixed_seed if fixed_seed.__class__ is int and -_INT64 <= fixed_seed < _INT64 else None
        key = (response_model, request_model, model)
        price = price_of.get(key, False)
        if price is False:
            found = self.config.price(*key)
            price = price_of[key] = None if found is None else (found.input, found.output)
        mask = (
            (temp is not None) | (nucleus is not None) << 1 | (limit is not None) << 2 | (fixed_seed is not None) << 3
        )
        numbers = tuple(
            float(v) for v in (temp, nucleus, limit, fixed_seed) if v is not None
        )  # the num_values of the call, in the order of num_names
        return (
            model,
            response_model or request_model,
            answer,
            ttft_ms,
            finish,
            error_type,
            temp == 0 or fixed_seed is not None,
            _text(values[OPERATION]),
            _text(values[PROVIDER] or values[SYSTEM]),
            request_model,
            response_model,
            temp,
            nucleus,
            limit,
            fixed_seed,
            _text(values[SERVER_ADDRESS]),
            service,
            _STATUS[code] if 0 <= code <= 2 else "unset",
            price,
            _NUM_NAMES[mask],
            bool(request_model),
            numbers,
        )

    def _rows(self, spans: list, attributes: list[list], origins: list, batch: SpanBatch) -> tuple | None:
        """The calls span by span: each span checked and rejected with its reason, content read where present."""
        store_content = self.config.store_content
        max_tokens_per_call = self._max_tokens
        rows: list[tuple] = []  # per stored call: its varying values, then its _derive tuple
        content: dict[int, SpanContent] = {}
        price_of: dict[tuple[str, str, str], tuple[float, float] | None] = {}
        for span, values, (service, mapped) in zip(spans, attributes, origins, strict=True):
            # -- validation: a rejected span is counted with its reason, the others are kept
            trace_id, span_id = span.trace_id, span.span_id
            if len(trace_id) != 16 or len(span_id) != 8:
                batch.reject("trace_id must be 16 bytes and span_id 8 bytes")
                continue
            start, end = span.start_time_unix_nano, span.end_time_unix_nano
            if not start:
                batch.reject("start_time_unix_nano is missing")
                continue
            if end < start:
                batch.reject("the span ends before it starts (negative duration)")
                continue
            input_tokens = values[INPUT_TOKENS]
            if input_tokens is None:
                input_tokens = values[PROMPT_TOKENS]
                if input_tokens is None:
                    input_tokens = 0
            output_tokens = values[OUTPUT_TOKENS]
            if output_tokens is None:
                output_tokens = values[COMPLETION_TOKENS]
                if output_tokens is None:
                    output_tokens = 0
            if not _count_ok(input_tokens, max_tokens_per_call) or not _count_ok(output_tokens, max_tokens_per_call):
                batch.reject(
                    f"a token count is not an integer between 0 and {max_tokens_per_call} (max_tokens_per_call)"
                )
                continue
            derived = self._derive(values, service, mapped, span.status.code, price_of)
            if derived.__class__ is str:
                batch.reject(derived)
                continue
            price = derived[_PRICE]
            trace_bytes = bytes(trace_id)
            span_bytes = bytes(span_id)
            parent = span.parent_span_id
            rows.append(
                (
                    blake2b(trace_bytes + span_bytes, digest_size=16).digest(),
                    start // 1000,
                    span.name[:200],
                    (end - start) / 1e6,
                    input_tokens,
                    output_tokens,
                    trace_bytes.hex(),
                    span_bytes.hex(),
                    bytes(parent).hex() if len(parent) == 8 else "",
                    0.0 if price is None else (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000,
                    *derived,
                )
            )
            if store_content and (values[_CONTENT_SLICE] != _NO_CONTENT or span.events):
                temp, nucleus, limit, fixed_seed = derived[_TEMPERATURE : _SEED + 1]
                params = {"temperature": temp, "top_p": nucleus, "max_tokens": limit, "seed": fixed_seed}
                found_content = read_content(
                    span, values[INPUT_MESSAGES], values[PROMPT], values[OUTPUT_MESSAGES],
                    values[COMPLETION], values[SYSTEM_INSTRUCTIONS], params, self.redactor,
                    self.config.max_content_bytes,
                )  # fmt: skip
                if found_content is not None:
                    content[len(rows) - 1] = found_content
        if not rows:
            return None
        column = dict(zip(_VARYING + _DERIVED, map(list, zip(*rows, strict=True)), strict=True))
        event_ids = b"".join(column.pop("event_id"))
        return column, event_ids, content

    def _columns(self, spans: list, attributes: list[list], origins: list) -> tuple | None:  # noqa: C901, PLR0911
        """The calls column by column, or None when a span of the request needs :meth:`_rows`.

        What depends only on a span's attributes, service and status code (``_DERIVED``) is computed once per
        distinct combination (a request's spans share most of them); ids, times and token counts are checked
        and converted for the whole request at once. Equal keys must mean equal values: an attribute sent with
        two types in one request (``1`` and ``1.0`` and ``True`` are equal), or a ``-0.0``, goes span by span."""
        n = len(spans)
        slots = list(zip(*attributes, strict=True))
        if self.config.store_content and (
            any(slots[slot].count(None) != n for slot in range(INPUT_MESSAGES, SYSTEM_INSTRUCTIONS + 1))
            or any(map(len, map(_EVENTS, spans)))
        ):
            return None
        values = [None] * len(_ATTRIBUTES)  # the slots of _KEY_SLOTS that hold one value in every span
        varying = []  # the others
        for slot in _KEY_SLOTS:
            found = slots[slot]
            first = found[0]
            if first is None and found.count(None) == n:
                continue
            kinds = set(map(type, found))
            kinds.discard(_NONE)
            if len(kinds) > 1 or list in kinds or dict in kinds:
                return None
            if float in kinds and 0.0 in found and any(math.copysign(1.0, v) < 0 for v in found if v == 0.0):
                return None
            if found.count(first) == n:
                values[slot] = first
            else:
                varying.append(slot)
        traces, span_ids, parents, starts, ends, names, codes = zip(*map(_SPAN_FIELDS, spans), strict=True)
        if set(map(len, traces)) != {16} or set(map(len, span_ids)) != {8}:
            return None
        start = np.fromiter(starts, np.uint64, n)
        end = np.fromiter(ends, np.uint64, n)
        if not start.all() or (end < start).any():
            return None
        took = end - start
        if took.max() >= 2**53:  # beyond a float's exact integers: the span-by-span division, exactly as before
            return None
        tokens = []
        for primary, older in ((INPUT_TOKENS, PROMPT_TOKENS), (OUTPUT_TOKENS, COMPLETION_TOKENS)):
            counts = slots[primary]
            if None in counts:
                counts = [
                    a if a is not None else (0 if b is None else b) for a, b in zip(counts, slots[older], strict=True)
                ]
            if set(map(type, counts)) != {int}:
                return None
            if min(counts) < 0 or max(counts) > self._max_tokens:
                return None
            tokens.append(list(counts))
        price_of: dict = {}
        if not varying and origins.count(origins[0]) == n and codes.count(codes[0]) == n:
            derived = self._derive(values, *origins[0], codes[0], price_of)
            if derived.__class__ is str:
                return None
            column = {name: [value] * n for name, value in zip(_DERIVED, derived, strict=True)}
        else:
            keys = zip(origins, codes, *(slots[slot] for slot in varying), strict=True)
            index: dict[tuple, int] = {}
            try:
                rows = list(map(index.setdefault, keys, count()))  # each span's key, numbered; hashed once
            except TypeError:  # a value that is not hashable
                return None
            derivations = {}
            for key, number in index.items():
                (service, mapped), code, *found = key
                for slot, value in zip(varying, found, strict=True):
                    values[slot] = value
                derived = self._derive(values, service, mapped, code, price_of)
                if derived.__class__ is str:
                    return None
                derivations[number] = derived
            column = dict(zip(_DERIVED, map(list, zip(*map(derivations.__getitem__, rows), strict=True)), strict=True))
        prices = column.pop("price")
        event_ids = b"".join([blake2b(t + s, digest_size=16).digest() for t, s in zip(traces, span_ids, strict=True)])
        column["ts"] = pa.array((start // 1000).astype(np.int64), _TIMESTAMP)
        column["endpoint"] = list(names) if max(map(len, names)) <= 200 else [name[:200] for name in names]
        column["latency_ms"] = took.astype(np.float64) / 1e6  # what (end - start) / 1e6 gives below 2**53
        column["prompt_tokens"], column["completion_tokens"] = tokens
        column["trace_id"] = list(map(bytes.hex, traces))
        column["span_id"] = list(map(bytes.hex, span_ids))
        if set(map(len, parents)) == {8}:
            column["parent_span_id"] = list(map(bytes.hex, parents))
        else:
            column["parent_span_id"] = [p.hex() if len(p) == 8 else "" for p in parents]
        if prices.count(None) == n:
            column["cost"] = [0.0] * n
        else:
            price_in = np.array([0.0 if p is None else p[0] for p in prices])
            price_out = np.array([0.0 if p is None else p[1] for p in prices])
            cost = (np.array(tokens[0], np.float64) * price_in + np.array(tokens[1], np.float64) * price_out) / 1e6
            column["cost"] = cost.tolist()
        return column, event_ids, {}

    def _finish(self, batch: SpanBatch, column: dict[str, Any], event_ids: bytes, content: dict) -> None:
        """The batch's calls and Arrow table from the columns of :meth:`_rows` or :meth:`_columns`."""
        calls = batch.calls
        n = len(column["model"])
        column.pop("price", None)
        latency = column["latency_ms"]
        calls.operation, calls.provider = column["operation_name"], column["provider_name"]
        calls.request_model, calls.response_model = column["request_model"], column["response_model"]
        calls.model, calls.error, calls.finish_reason = column["model"], column["error_class"], column["finish_reason"]
        calls.prompt_tokens, calls.completion_tokens = column["prompt_tokens"], column["completion_tokens"]
        calls.latency_ms = latency.tolist() if isinstance(latency, np.ndarray) else latency
        calls.ttft_ms = column["ttft_ms"]
        names = column.pop("num_names")
        has_cat = column.pop("has_cat")
        numbers = column.pop("numbers")
        column["event_id"] = pa.FixedSizeBinaryArray.from_buffers(_UUID, n, [None, pa.py_buffer(event_ids)])
        column["protocol"] = "otlp"
        column["num_names"], column["num_values"] = _lists(names, list(chain.from_iterable(numbers)), n)
        column["cat_names"] = _optional_one(has_cat, ["request_model"] * n)
        column["cat_values"] = _optional_one(has_cat, column["request_model"])
        if content:
            column.update(_content_columns(content, n))
        batch.table = table_of(column, n)

    def _name_problem(self, model: str) -> str | None:
        try:
            return self._valid_names[model]
        except KeyError:
            problem = model_name_problem(model)
            if len(self._valid_names) < 10_000:
                self._valid_names[model] = problem
            return problem


_paused = 0  # mappings running with the collector paused by _collector_paused
_paused_lock = threading.Lock()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a request's spans are mapped, then resumed.

    Mapping keeps a few containers per span alive (its attribute values, the spans), so a 1,000-span request
    triggers dozens of collections, and each older-generation one walks the whole heap of a server that has
    FastAPI, pyarrow and ClickHouse's client loaded: half of the mapping's CPU in the receiver (py-spy,
    BENCHMARKS.md OTLP third pass). Nothing is lost: the collector only frees reference cycles, which mapping
    makes none of, and it runs again when the last concurrent mapping ends (a counter, so that threads mapping at
    the same time do not resume it under each other). A collector that was already off stays off."""
    global _paused
    with _paused_lock:
        if _paused == 0:
            if not gc.isenabled():
                _paused = -1  # off before us: neither paused nor resumed here
            else:
                gc.disable()
        if _paused >= 0:
            _paused += 1
    try:
        yield
    finally:
        with _paused_lock:
            if _paused > 0:
                _paused -= 1
                if _paused == 0:
                    gc.enable()
            elif _paused == -1:
                _paused = 0


# -- reading the attributes ------------------------------------------------------------------------------------------


def _trace_request_view() -> type:
    """``ExportTraceServiceRequest`` of ``opentelemetry-proto`` with one change: ``Span.attributes`` is ``repeated
    bytes``, each item the encoded ``KeyValue``. Built from ``opentelemetry-proto``'s own file descriptors (the
    field changes type only; its number and the other fields are theirs) into a pool of its own, and decoded by
    protobuf (upb) as the original is: an embedded message and ``bytes`` have the same wire encoding, so every
    body decodes into both or into neither, but the attributes' encoded ``KeyValue``. Each distinct one is
    decoded by ``opentelemetry-proto``'s ``KeyValue`` (:func:`_attribute`) and cached by its bytes: a request's
    spans repeat most of their attributes (operation, provider, model, temperature, ...), and reading a
    ``KeyValue`` and its ``AnyValue`` out of upb costs about 0.6 µs from Python against 0.1 µs for a dictionary
    lookup of its bytes (BENCHMARKS.md, OTLP third pass)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    def file_of(module: Any) -> descriptor_pb2.FileDescriptorProto:
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        return proto

    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_of(common_pb2))
    pool.Add(file_of(resource_pb2))
    trace = file_of(trace_pb2)
    span = next(message for message in trace.message_type if message.name == "Span")
    attributes = next(f for f in span.field if f.name == "attributes")
    attributes.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
    attributes.ClearField("type_name")
    pool.Add(trace)
    pool.Add(file_of(trace_service_pb2))
    name = trace_service_pb2.ExportTraceServiceRequest.DESCRIPTOR.full_name
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


TRACES_VIEW = _trace_request_view()
"""The message class ``POST /v1/traces`` decodes protobuf bodies with (see :func:`_trace_request_view`)."""
_ATTRIBUTE_CACHE: dict[bytes, tuple[int | None, Any, bool]] = {}
_CACHED_ATTRIBUTES = 32_768  # entries (at most about 12 MiB), emptied when full; each use is one dict operation
_CACHED_BYTES = 256  # longer attributes (message content, long URLs) are decoded each time, not kept


def _attribute(raw: bytes) -> tuple[int | None, Any, bool]:
    """An encoded ``KeyValue`` as (slot in ``_ATTRIBUTES`` or None, its value, whether it makes the span a GenAI
    span): decoded by ``opentelemetry-proto``'s ``KeyValue``; ``DecodeError`` when it does not decode."""
    kv = _KEY_VALUE.FromString(raw)
    key = kv.key
    slot = _SLOT.get(key)
    if slot is None:
        return None, None, key.startswith("gen_ai.")
    value = kv.value
    which = value.WhichOneof("value")
    if which is None:  # an empty value: the attribute counts, the slot keeps what it had
        return None, None, slot < ERROR_TYPE
    if which in _SCALARS:
        found = getattr(value, which)
    elif which == "array_value" and slot == FINISH_REASONS:  # only the first is stored
        items = value.array_value.values
        if items:
            first = value_of(items[0])
            # a tuple (hashable) only for text: (1,) and (1.0,) are equal keys, "1" and "1.0" are not
            found = (first,) if first.__class__ is str else [first]
        else:
            found = ()
    else:
        found = value_of(value)
    return slot, found, slot < ERROR_TYPE


# -- Arrow -----------------------------------------------------------------------------------------------------------


def table_of(columns: dict[str, Any], n: int) -> pa.Table:
    """The ``n`` calls as a table of the given columns (each a list, an Arrow array, or one value for every row),
    with their types and order in ``collector.arrow.SCHEMA``. The columns not given are not sent: the store fills
    them with the table's defaults, the same values ``collector.arrow.to_table`` gives for events that leave them
    unset, at a fraction of the insert's cost (about half of ClickHouse's work per row at 57 columns against 28:
    BENCHMARKS.md, third pass)."""
    schema = _schema_of(tuple(columns))
    arrays = []
    for f in schema:
        values = columns[f.name]
        if isinstance(values, pa.Array):
            arrays.append(values)
        elif isinstance(values, list):
            arrays.append(_column(values, f.type, n))
        elif isinstance(values, np.ndarray):
            arrays.append(pa.array(values, type=f.type))
        else:
            arrays.append(pa.repeat(pa.scalar(values, type=f.type), n))
    return pa.Table.from_arrays(arrays, schema=schema)


@functools.lru_cache(maxsize=64)
def _schema_of(names: tuple[str, ...]) -> pa.Schema:
    """The fields of ``SCHEMA`` named in ``names``, in the order of ``SCHEMA``; ValueError for an unknown name."""
    unknown = set(names).difference(SCHEMA.names)
    if unknown:
        raise ValueError(f"not columns of collector.arrow.SCHEMA: {', '.join(sorted(unknown))}")
    wanted = set(names)
    return pa.schema([f for f in SCHEMA if f.name in wanted])


def _column(values: list, kind: pa.DataType, n: int) -> pa.Array:
    """One column; a column holding one value (a default, the same model in every row) is built from that value."""
    if n > 1 and values.count(values[0]) == n:
        return pa.repeat(pa.scalar(values[0], type=kind), n)
    return pa.array(values, type=kind)


def _lists(names: list[tuple[str, ...]], flat_values: list[float], n: int) -> tuple[pa.Array, pa.Array]:
    """``num_names`` and ``num_values``: the names of each row and its values, given flat."""
    lengths = np.fromiter(map(len, names), dtype=np.int32, count=n)
    offsets = pa.array(np.concatenate(([0], np.cumsum(lengths, dtype=np.int32))))
    values = pa.ListArray.from_arrays(offsets, pa.array(flat_values, pa.float64()))
    if names.count(names[0]) == n:
        one = pa.array(names[0], pa.string())
        k = len(names[0])
        flat_names = one.take(pa.array(np.tile(np.arange(k, dtype=np.int32), n))) if k else one
    else:
        flat_names = pa.array([name for row in names for name in row], pa.string())
    return pa.ListArray.from_arrays(offsets, flat_names), values


def _optional_one(present: list[bool], items: list[str]) -> pa.Array:
    """A list column holding ``[items[i]]`` where ``present[i]``, else ``[]``."""
    mask = np.fromiter(present, dtype=bool, count=len(present))
    offsets = pa.array(np.concatenate(([0], np.cumsum(mask, dtype=np.int32))))
    chosen = pa.array(items, pa.string()).filter(pa.array(mask)) if not mask.all() else pa.array(items, pa.string())
    return pa.ListArray.from_arrays(offsets, chosen)


def _content_columns(content: dict[int, SpanContent], n: int) -> dict[str, list]:
    """The content columns; rows without content keep the defaults."""
    defaults = SpanContent()
    names = tuple(SpanContent.__dataclass_fields__)
    columns: dict[str, list] = {name: [getattr(defaults, name)] * n for name in names}
    for row, found in content.items():
        for name in names:
            columns[name][row] = getattr(found, name)
    return columns


# -- values ----------------------------------------------------------------------------------------------------------


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
