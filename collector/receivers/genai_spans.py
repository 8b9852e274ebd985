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

Columnar: one pass over the spans appends each call's values to one Python list per column
(no object per call), each attribute is read once with one ``WhichOneof``, and the Arrow
table of the request is built from the lists (``collector.arrow.SCHEMA``, the same table the
sidecar's events give). Profiled at 1,000 spans per request (BENCHMARKS.md): reading the
attributes out of the decoded protobuf is most of what is left.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

import numpy as np
import pyarrow as pa

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
_ROW = (
    "event_id",
    "ts",
    "model",
    "model_version",
    "endpoint",
    "status",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
    "error_class",
    "trace_id",
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
    "span_id",
    "parent_span_id",
    "span_status",
    "cost",
    "num_names",
    "has_cat",
)
"""The values of a stored call, in the order ``SpanMapper.map`` puts them in a row: columns of ``inferences``, and
``num_names`` (a tuple) and ``has_cat`` (whether ``cat_names`` is ``["request_model"]``) that build list columns."""
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

    def map(self, request: Any) -> SpanBatch:  # noqa: C901, PLR0912, PLR0915 - one pass on purpose (module docstring)
        batch = SpanBatch()
        calls = batch.calls
        services = self.config.service_models
        store_content = self.config.store_content
        max_tokens_per_call = self._max_tokens
        slot_of = _SLOT.get
        scalars = _SCALARS
        none = [None] * len(_ATTRIBUTES)
        rows: list[tuple] = []  # one tuple per stored call, in the order of _ROW; transposed at the end
        num_values: list[float] = []
        content: dict[int, SpanContent] = {}
        price_of: dict[tuple[str, str, str], tuple[float, float] | None] = {}
        for resource_spans in request.resource_spans:
            service = ""
            for kv in resource_spans.resource.attributes:
                if kv.key == "service.name":
                    service = str(value_of(kv.value) or "")
                    break
            mapped = services.get(service, "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    values = none.copy()
                    genai = False
                    for kv in span.attributes:
                        key = kv.key
                        slot = slot_of(key)
                        if slot is None:
                            if not genai and key.startswith("gen_ai."):
                                genai = True
                            continue
                        if slot < ERROR_TYPE:
                            genai = True
                        value = kv.value
                        which = value.WhichOneof("value")
                        if which in scalars:
                            values[slot] = getattr(value, which)
                        elif which == "array_value" and slot == FINISH_REASONS:  # only the first is stored
                            items = value.array_value.values
                            values[slot] = [value_of(items[0])] if items else []
                        elif which is not None:
                            values[slot] = value_of(value)
                    if not genai:
                        batch.not_genai += 1
                        continue
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
                    if not _count_ok(input_tokens, max_tokens_per_call) or not _count_ok(
                        output_tokens, max_tokens_per_call
                    ):
                        batch.reject(
                            f"a token count is not an integer between 0 and {max_tokens_per_call} (max_tokens_per_call)"
                        )
                        continue
                    request_model = values[REQUEST_MODEL]
                    request_model = request_model if request_model.__class__ is str else _text(request_model)
                    response_model = values[RESPONSE_MODEL]
                    response_model = response_model if response_model.__class__ is str else _text(response_model)
                    model = mapped or request_model or response_model or service
                    if not model:
                        batch.reject("no gen_ai.request.model, gen_ai.response.model or service.name to name the model")
                        continue
                    problem = self._name_problem(model)
                    if problem:
                        batch.reject(f"model name refused: {problem}")
                        continue
                    # -- the call's values
                    ttft = values[TIME_TO_FIRST_CHUNK]
                    if ttft is None:
                        ttft = values[TIME_TO_FIRST_TOKEN]
                    ttft_ms = float(ttft) * 1000.0 if _is_number(ttft) and 0 <= ttft else None
                    code = span.status.code
                    error_type = _text(values[ERROR_TYPE])
                    if code == 2 and not error_type:
                        error_type = "_OTHER"
                    http_status = values[HTTP_STATUS]
                    answer = http_status if isinstance(http_status, int) and 100 <= http_status <= 599 else 0
                    if not answer:
                        answer = 500 if error_type else 200
                    reasons = values[FINISH_REASONS]
                    if isinstance(reasons, list):
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
                    limit = limit if isinstance(limit, int) and 0 <= limit < _INT32 else None
                    fixed_seed = values[SEED]
                    if fixed_seed is None:
                        fixed_seed = values[OPENAI_SEED]
                    fixed_seed = fixed_seed if isinstance(fixed_seed, int) and -_INT64 <= fixed_seed < _INT64 else None
                    key = (response_model, request_model, model)
                    price = price_of.get(key, False)
                    if price is False:
                        found = self.config.price(*key)
                        price = price_of[key] = None if found is None else (found.input, found.output)
                    trace_bytes = bytes(trace_id)
                    span_bytes = bytes(span_id)
                    parent = span.parent_span_id
                    mask = (
                        (temp is not None)
                        | (nucleus is not None) << 1
                        | (limit is not None) << 2
                        | (fixed_seed is not None) << 3
                    )
                    # -- one tuple per call (cheaper than one append per column), in the order of _ROW
                    rows.append(
                        (
                            blake2b(trace_bytes + span_bytes, digest_size=16).digest(),
                            start // 1000,
                            model,
                            response_model or request_model,
                            span.name[:200],
                            answer,
                            (end - start) / 1e6,
                            ttft_ms,
                            input_tokens,
                            output_tokens,
                            finish,
                            error_type,
                            trace_bytes.hex(),
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
                            span_bytes.hex(),
                            bytes(parent).hex() if len(parent) == 8 else "",
                            _STATUS[code] if 0 <= code <= 2 else "unset",
                            0.0 if price is None else (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000,
                            _NUM_NAMES[mask],
                            bool(request_model),
                        )
                    )
                    if mask:
                        if temp is not None:
                            num_values.append(temp)
                        if nucleus is not None:
                            num_values.append(nucleus)
                        if limit is not None:
                            num_values.append(float(limit))
                        if fixed_seed is not None:
                            num_values.append(float(fixed_seed))
                    if store_content and (values[_CONTENT_SLICE] != _NO_CONTENT or span.events):
                        params = {"temperature": temp, "top_p": nucleus, "max_tokens": limit, "seed": fixed_seed}
                        found_content = read_content(
                            span, values[INPUT_MESSAGES], values[PROMPT], values[OUTPUT_MESSAGES],
                            values[COMPLETION], values[SYSTEM_INSTRUCTIONS], params, self.redactor,
                            self.config.max_content_bytes,
                        )  # fmt: skip
                        if found_content is not None:
                            content[len(rows) - 1] = found_content
        n = len(rows)
        if not n:
            return batch
        column = dict(zip(_ROW, map(list, zip(*rows, strict=True)), strict=True))
        calls.operation, calls.provider = column["operation_name"], column["provider_name"]
        calls.request_model, calls.response_model = column["request_model"], column["response_model"]
        calls.model, calls.error, calls.finish_reason = column["model"], column["error_class"], column["finish_reason"]
        calls.prompt_tokens, calls.completion_tokens = column["prompt_tokens"], column["completion_tokens"]
        calls.latency_ms, calls.ttft_ms = column["latency_ms"], column["ttft_ms"]
        names = column.pop("num_names")
        has_cat = column.pop("has_cat")
        column["event_id"] = pa.FixedSizeBinaryArray.from_buffers(
            _UUID, n, [None, pa.py_buffer(b"".join(column["event_id"]))]
        )
        column["protocol"] = "otlp"
        column["num_names"], column["num_values"] = _lists(names, num_values, n)
        column["cat_names"] = _optional_one(has_cat, ["request_model"] * n)
        column["cat_values"] = _optional_one(has_cat, column["request_model"])
        if content:
            column.update(_content_columns(content, n))
        batch.table = table_of(column, n)
        return batch

    def _name_problem(self, model: str) -> str | None:
        try:
            return self._valid_names[model]
        except KeyError:
            problem = model_name_problem(model)
            if len(self._valid_names) < 10_000:
                self._valid_names[model] = problem
            return problem


# -- Arrow -----------------------------------------------------------------------------------------------------------


def table_of(columns: dict[str, Any], n: int) -> pa.Table:
    """The ``n`` calls as a table with ``collector.arrow.SCHEMA``: each given column (a list, an Arrow array,
    or one value for every row), every other column at the table's default, as ``collector.arrow.to_table``
    gives for events that leave it unset."""
    arrays = []
    for f in SCHEMA:
        values = columns.get(f.name, _UNSET)
        if values is _UNSET:
            arrays.append(_default(f, n))
        elif isinstance(values, pa.Array):
            arrays.append(values)
        elif isinstance(values, list):
            arrays.append(_column(values, f.type, n))
        else:
            arrays.append(pa.repeat(pa.scalar(values, type=f.type), n))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


_UNSET = object()
_NULL_DEFAULTS = frozenset({"ttft_ms", "prediction", "replay_of", "temperature", "top_p", "max_tokens", "seed"})


@functools.lru_cache(maxsize=512)
def _default(f: pa.Field, n: int) -> pa.Array:
    """The column ``f`` at its default for ``n`` rows (Arrow arrays are immutable: shared between tables)."""
    if f.name in _NULL_DEFAULTS:
        return pa.nulls(n, f.type)
    if pa.types.is_list(f.type):
        return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], f.type.value_type))
    if pa.types.is_string(f.type):
        return pa.repeat(pa.scalar("", type=f.type), n)
    if pa.types.is_boolean(f.type):
        return pa.repeat(pa.scalar(False, type=f.type), n)
    return pa.repeat(pa.scalar(0, type=f.type), n)


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
