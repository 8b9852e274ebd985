"""Events to Arrow: the columnar batch that every sink writes and the spool stores.

``SCHEMA`` is the Arrow form of the ``inferences`` table (storage/migrations/0001):
``ts`` is ``timestamp('us', 'UTC')`` (ClickHouse ``DateTime64(6, 'UTC')``), UUIDs
travel as ``fixed_size_binary(16)`` in RFC 4122 byte order (``uuid.UUID.bytes``), which
ClickHouse's Arrow input reads into a ``UUID`` column as the same UUID (checked in
tests/test_collector_writer.py; 36-character UUID text works too, at 2.25x the bytes and
4x the cost to produce), and ``received_at`` is left out so that the store stamps it.

Built column by column: ``map`` of an ``attrgetter`` over the events (in C), then one
``pa.array`` per column: about 2 µs per event.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from operator import attrgetter

import numpy as np
import pyarrow as pa

from driftwarden.collector.event import Event

_STR = pa.string()
_F64 = pa.float64()
_UUID = pa.binary(16)

SCHEMA = pa.schema(
    [
        pa.field("event_id", _UUID, nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("model", _STR, nullable=False),
        pa.field("model_version", _STR),
        pa.field("model_digest", _STR),
        pa.field("protocol", _STR),
        pa.field("endpoint", _STR),
        pa.field("tenant", _STR),
        pa.field("status", pa.uint16()),
        pa.field("latency_ms", _F64),
        pa.field("upstream_latency_ms", _F64),
        pa.field("ttft_ms", _F64),
        pa.field("request_bytes", pa.uint32()),
        pa.field("response_bytes", pa.uint32()),
        pa.field("num_names", pa.list_(_STR)),
        pa.field("num_values", pa.list_(_F64)),
        pa.field("cat_names", pa.list_(_STR)),
        pa.field("cat_values", pa.list_(_STR)),
        pa.field("text_names", pa.list_(_STR)),
        pa.field("text_values", pa.list_(_STR)),
        pa.field("emb_names", pa.list_(_STR)),
        pa.field("emb_values", pa.list_(pa.list_(pa.float32()))),
        pa.field("prediction", _F64),
        pa.field("prediction_label", _STR),
        pa.field("output_names", pa.list_(_STR)),
        pa.field("output_values", pa.list_(_F64)),
        pa.field("output_text", _STR),
        pa.field("input_payload", _STR),
        pa.field("output_payload", _STR),
        pa.field("payload_sampled", pa.bool_()),
        pa.field("payload_truncated", pa.bool_()),
        pa.field("input_hash", pa.uint64()),
        pa.field("output_hash", pa.uint64()),
        pa.field("params_hash", pa.uint64()),
        pa.field("deterministic", pa.bool_()),
        pa.field("prompt_tokens", pa.uint32()),
        pa.field("completion_tokens", pa.uint32()),
        pa.field("finish_reason", _STR),
        pa.field("error_class", _STR),
        pa.field("trace_id", _STR),
        pa.field("is_replay", pa.bool_()),
        pa.field("replay_of", _UUID),
        pa.field("redactions", pa.uint16()),
        pa.field("operation_name", _STR),
        pa.field("provider_name", _STR),
        pa.field("request_model", _STR),
        pa.field("response_model", _STR),
        pa.field("temperature", _F64),
        pa.field("top_p", _F64),
        pa.field("max_tokens", pa.uint32()),
        pa.field("seed", pa.int64()),
        pa.field("server_address", _STR),
        pa.field("service_name", _STR),
        pa.field("span_id", _STR),
        pa.field("parent_span_id", _STR),
        pa.field("span_status", _STR),
        pa.field("cost", _F64),
    ]
)

REQUIRED = ("event_id", "ts", "model")
"""Columns a batch must carry; every other column has a default in the table."""

# One getter per column (attrgetter runs in C); the event attribute is named differently for ts.
_GETTERS = [(f, attrgetter("ts_us" if f.name == "ts" else f.name)) for f in SCHEMA]


CHUNK_EVENTS = 8192
"""A larger batch is built as record batches of this many events: each of the 58 passes over the events then
reads objects still in the CPU's cache (50,000 events: 4.8 -> 3.3 µs per event; BENCHMARKS.md, capture
throughput 2026-12-02 evening). The store squashes the record batches of one insert into one part."""


def to_table(events: Sequence[Event]) -> pa.Table:
    """The events as one Arrow table with ``SCHEMA`` (one record batch per ``CHUNK_EVENTS`` events).

    Raises ``pa.ArrowInvalid``/``TypeError``/``OverflowError`` for an event whose
    values do not fit the schema (e.g. a string in ``num_values``); the writer
    counts such a batch as dropped with reason ``encode_error``.
    """
    n = len(events)
    if n <= CHUNK_EVENTS:
        return _to_table(events)
    return pa.concat_tables([_to_table(events[i : i + CHUNK_EVENTS]) for i in range(0, n, CHUNK_EVENTS)])


def _to_table(events: Sequence[Event]) -> pa.Table:
    arrays = []
    n = len(events)
    constant = _class_columns(events)
    for f, get in _GETTERS:
        if f.name in constant:  # held by the events' class: one value for every row, no per-event read
            arrays.append(_constant(constant[f.name], f.type, n))
            continue
        if f.name == "event_id":
            # 16 bytes per id, joined in C: a FixedSizeBinary buffer as is (pa.array would visit each bytes object).
            packed = constant and hasattr(type(events[0]), "event_id_int")  # capture()'s events keep the int
            ids = map(_ID_INT, events) if packed else map(_UUID_INT, map(_EVENT_ID, events))
            data = b"".join(map(int.to_bytes, ids, repeat(16)))
            arrays.append(pa.FixedSizeBinaryArray.from_buffers(_UUID, n, [None, pa.py_buffer(data)]))
            continue
        if f.name == "replay_of":
            values = [None if e.replay_of is None else e.replay_of.bytes for e in events]
        else:
            values = list(map(get, events))
        arrays.append(_column(values, f.type, n))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


_EVENT_ID = attrgetter("event_id")
_ID_INT = attrgetter("event_id_int")
_UUID_INT = attrgetter("int")


def _class_columns(events: Sequence[Event]) -> dict:
    """Columns whose value the events' class fixes for every instance (its ``CLASS_COLUMNS``), when all the
    events are of one such class: ``capture()``'s events fill 17 columns and take the other 41 from their
    class (slots, so an instance cannot override them). Empty for ``Event`` and for mixed batches."""
    if not events:
        return {}
    kind = type(events[0])
    columns = getattr(kind, "CLASS_COLUMNS", None)
    if columns is None or len(set(map(type, events))) != 1:
        return {}
    return columns


def _column(values: list, kind: pa.DataType, n: int) -> pa.Array:
    """One column. Most columns of a batch hold a single value (a default, or the same feature names
    in every row): those are built from that one value in C instead of converting n Python objects."""
    if n > 1 and values.count(values[0]) == n:
        return _constant(values[0], kind, n)
    return pa.array(values, type=kind)


def _constant(value, kind: pa.DataType, n: int) -> pa.Array:
    """``n`` rows of ``value``."""
    if pa.types.is_list(kind):
        return _repeated_list(value, kind, n)
    return pa.repeat(pa.scalar(value, type=kind), n)


def _repeated_list(items: list, kind: pa.ListType, n: int) -> pa.Array:
    """``n`` copies of the list ``items``: one offsets buffer and a ``take`` of the items."""
    k = len(items)
    if k == 0:
        return pa.ListArray.from_arrays(
            pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], kind.value_type), type=kind
        )
    offsets = pa.array(np.arange(0, k * (n + 1), k, dtype=np.int32))
    one = pa.array(items, kind.value_type)
    return pa.ListArray.from_arrays(offsets, one.take(pa.array(np.tile(np.arange(k, dtype=np.int32), n))), type=kind)


def to_ipc(table: pa.Table) -> bytes:
    """The table as one self-contained Arrow IPC stream (schema + record batches)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes | memoryview) -> pa.Table:
    """Read a table written by :func:`to_ipc`; raises ``pa.ArrowInvalid`` on malformed input."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


GROUND_TRUTH_SCHEMA = pa.schema(
    [
        pa.field("event_id", _UUID, nullable=False),
        pa.field("model", _STR, nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("label", _STR),
        pa.field("value", _F64),
    ]
)
"""The Arrow form of the ``ground_truth`` table (``received_at`` is stamped by the store).
The hub also accepts ``event_id`` as UUID text."""
