"""The hub's ingest endpoints: batches from collectors and late ground truth, into the store.

``POST /v1/events``
    Body: one Arrow IPC stream (``content-type: application/vnd.apache.arrow.stream``) whose
    columns are a subset of the ``inferences`` table, with at least ``event_id``, ``ts`` and
    ``model`` (``collector.arrow.SCHEMA``; the writer's hub sink sends exactly that). UUID
    columns are ``fixed_size_binary(16)`` or UUID text. Answers ``{"inserted": N}``.
``POST /v1/ground-truth``
    Body: JSON lines (``application/x-ndjson``, ``application/jsonl``; a JSON array is accepted
    too) or an Arrow IPC stream, with ``event_id``, ``model``, optional ``ts`` (ISO-8601 or epoch
    seconds; default now) and ``label`` and/or ``value``. Answers ``{"inserted": N}``.

A body that cannot be used is refused whole, with nothing inserted: 415 for another
content type, 400 for a body that does not parse, 422 for a wrong schema or bad values,
413 above ``MAX_BATCH_BYTES`` (64 MiB; the collector's hub sink then sends its batch in
pieces), each with a ``detail`` that names what is wrong. A store that fails answers 503, which
the collector's writer treats as "retry later" (it spools the batch).

The store client comes from ``request.app.state.store`` (see ``collector.hub_app``).
Parsing and validation run on the event loop (Arrow reads are zero-copy); the insert runs
on the thread pool, and ``store_lock`` serialises use of the client.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from driftwarden.collector.arrow import GROUND_TRUTH_SCHEMA, REQUIRED, SCHEMA, from_ipc
from driftwarden.collector.sinks.store import refused_for_its_data, write_around_refusals
from driftwarden.errors import first_line
from driftwarden.names import model_name_problem

log = logging.getLogger(__name__)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
JSON_LINES = ("application/x-ndjson", "application/jsonl", "application/json-lines", "application/json")
UUID_PATTERN = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"

MAX_BATCH_BYTES = 64 << 20
"""Largest body of ``/v1/events`` and ``/v1/ground-truth`` (413 above): a collector's batch is a few MiB at most
(1,000 events, payloads cut at 64 KiB each), and JSON lines take several times their size in memory once parsed."""

router = APIRouter(tags=["ingest"])
store_lock = threading.Lock()
"""Serialises use of the store client (clickhouse-connect sessions refuse concurrent queries)."""


class BatchError(ValueError):
    """A batch that cannot be inserted as it is; the message says what to change."""


@router.post("/v1/events", summary="Insert a batch of inference events (Arrow IPC stream)")
async def post_events(request: Request) -> dict[str, int]:
    _require_content_type(request, (ARROW_STREAM,))
    table = _parse_arrow(await _body(request))
    try:
        table = conform(table, SCHEMA, REQUIRED, uuid_columns=("event_id", "replay_of"))
    except BatchError as exc:
        raise HTTPException(422, str(exc)) from None
    return {"inserted": await persist(request, "inferences", table)}


@router.post("/v1/ground-truth", summary="Insert late ground truth (JSON lines or Arrow IPC stream)")
async def post_ground_truth(request: Request) -> dict[str, int]:
    content_type = _require_content_type(request, (ARROW_STREAM, *JSON_LINES))
    body = await _body(request)
    try:
        if content_type == ARROW_STREAM:
            table = _parse_arrow(body)
        else:
            table = ground_truth_from_records(_parse_json_lines(body))
        table = conform_ground_truth(table)
    except BatchError as exc:
        raise HTTPException(422, str(exc)) from None
    return {"inserted": await persist(request, "ground_truth", table)}


# -- parsing -------------------------------------------------------------------------------------


def _require_content_type(request: Request, accepted: tuple[str, ...]) -> str:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in accepted:
        raise HTTPException(
            415,
            f"content-type {content_type or '(none)'!r} is not accepted here; send one of: {', '.join(accepted)}",
        )
    return content_type


async def _body(request: Request) -> bytes:
    """The request body; 413 once it is larger than ``MAX_BATCH_BYTES``."""
    too_large = HTTPException(
        413, f"the body is larger than {MAX_BATCH_BYTES} bytes; send it in batches of at most {MAX_BATCH_BYTES} bytes"
    )
    return await read_limited(request, MAX_BATCH_BYTES, too_large)


async def read_limited(request: Request, limit: int, too_large: Exception) -> bytes:
    """The request body as it was sent; ``too_large`` raised once it is larger than ``limit`` bytes, by its declared
    length or as it comes (a chunked body), before more of it is held in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_arrow(body: bytes) -> pa.Table:
    if not body:
        raise HTTPException(400, "the body is empty; send an Arrow IPC stream (schema message + record batches)")
    try:
        return from_ipc(body)
    except (pa.ArrowException, OSError) as exc:
        raise HTTPException(
            400, f"the body is not a valid Arrow IPC stream ({first_line(exc)}); send pyarrow.ipc.new_stream output"
        ) from None


def _parse_json_lines(body: bytes) -> list[dict[str, Any]]:
    text = body.decode("utf-8", errors="replace").strip()
    if not text:
        raise HTTPException(400, "the body is empty; send one JSON object per line")
    if text.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HTTPException(400, f"the body is not valid JSON: {exc}") from None
    else:
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise HTTPException(400, f"line {number} is not valid JSON: {exc}") from None
    bad = next((i for i, r in enumerate(records, start=1) if not isinstance(r, dict)), None)
    if bad is not None:
        raise HTTPException(400, f"record {bad} is not a JSON object; send one object per line")
    return records


# -- validation ----------------------------------------------------------------------------------


def conform(
    table: pa.Table, schema: pa.Schema, required: tuple[str, ...], *, uuid_columns: tuple[str, ...] = ()
) -> pa.Table:
    """``table`` cast to the types of ``schema``; :class:`BatchError` naming the first problem.

    Checks: no unknown column, every required column present and without nulls, every
    column castable to its type (strings to numbers are not accepted), UUID columns hold UUIDs,
    model names are valid (``driftwarden.names``).
    """
    names = table.column_names
    unknown = [n for n in names if schema.get_field_index(n) < 0]
    if unknown:
        raise BatchError(f"unknown column(s) {', '.join(unknown)}; the accepted columns are: {', '.join(schema.names)}")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise BatchError(f"column(s) {', '.join(duplicated)} appear more than once")
    missing = [n for n in required if n not in names]
    if missing:
        raise BatchError(f"missing required column(s) {', '.join(missing)} (have: {', '.join(names) or 'none'})")
    if table.num_rows == 0:
        raise BatchError("the batch has no rows")
    fields, columns = [], []
    for name in names:
        field = schema.field(name)
        column = table.column(name)
        if name in uuid_columns:
            column = _uuid_column(name, column)
        elif column.type != field.type:
            column = _cast(name, column, field.type)
        if name in required and column.null_count:
            raise BatchError(f"column {name} has {column.null_count} null value(s); it is required in every row")
        fields.append(field.with_type(column.type))
        columns.append(column)
    if "model" in names:
        _check_model_names(columns[names.index("model")])
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _check_model_names(column: pa.ChunkedArray) -> None:
    """:class:`BatchError` naming the first row whose model name is refused (see ``driftwarden.names``)."""
    for value in pc.unique(column).to_pylist():
        if value is None:
            continue
        problem = model_name_problem(value)
        if problem:
            row = pc.index(column, value).as_py() + 1
            shown = repr(value) if len(value) <= 80 else repr(value[:60]) + "…"
            raise BatchError(f"row {row}: model {shown} is refused: {problem}")


def _uuid_column(name: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A UUID column as 16-byte binaries (any value is a UUID) or as validated UUID text.

    ClickHouse reads both into a UUID column; text is kept as text, not converted in Python.
    """
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_fixed_size_binary(kind) and kind.byte_width == 16:
        return column
    if pa.types.is_large_string(kind):
        column, kind = column.cast(pa.string()), pa.string()
    if not pa.types.is_string(kind):
        raise BatchError(f"column {name} has type {kind}; send UUIDs as fixed_size_binary(16) or as UUID text")
    ok = pc.match_substring_regex(column, UUID_PATTERN)
    bad = pc.sum(pc.invert(ok)).as_py() or 0  # nulls (allowed where optional) are not counted
    if bad:
        first = column.filter(pc.invert(pc.fill_null(ok, True)))[0].as_py()
        raise BatchError(f"column {name} has {bad} value(s) that are not UUIDs, e.g. {first!r}")
    return column


def _cast(name: str, column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    source = column.type
    if pa.types.is_dictionary(source):
        column, source = column.cast(source.value_type), source.value_type
    if (pa.types.is_string(source) or pa.types.is_large_string(source)) and not (
        pa.types.is_string(target) or pa.types.is_timestamp(target)
    ):
        raise BatchError(f"column {name} has type {source}, expected {target}")
    if pa.types.is_timestamp(target) and not (pa.types.is_timestamp(source) or pa.types.is_string(source)):
        raise BatchError(f"column {name} has type {source}, expected {target} (an Arrow timestamp)")
    if pa.types.is_timestamp(target) and pa.types.is_timestamp(source) and source.tz is None:
        column = column.cast(pa.timestamp(source.unit, tz="UTC"))  # naive timestamps are read as UTC
    try:
        return column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise BatchError(f"column {name} has type {source}, expected {target}: {first_line(exc)}") from None


def conform_ground_truth(table: pa.Table) -> pa.Table:
    """Ground truth cast to ``GROUND_TRUTH_SCHEMA``, ``ts`` filled with now when absent."""
    names = table.column_names
    if "label" not in names and "value" not in names:
        raise BatchError(f"ground truth needs a label or a value column (have: {', '.join(names) or 'none'})")
    if "ts" not in names and table.num_rows:
        now = dt.datetime.now(dt.UTC)
        table = table.append_column(pa.field("ts", pa.timestamp("us", tz="UTC")), pa.array([now] * table.num_rows))
    table = conform(table, GROUND_TRUTH_SCHEMA, ("event_id", "model", "ts"), uuid_columns=("event_id",))
    if "label" in table.column_names:
        table = table.set_column(
            table.schema.get_field_index("label"), "label", pc.fill_null(table.column("label"), "")
        )
    return table


def ground_truth_from_records(records: list[dict[str, Any]]) -> pa.Table:
    """JSON records as a ground-truth table; ``ts`` as ISO-8601 text or epoch seconds."""
    if not records:
        raise BatchError("no records")
    names = list(dict.fromkeys(k for r in records for k in r))
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [r.get(name) for r in records]
        if name == "ts":
            columns[name] = pa.array(
                [_timestamp(v, i) for i, v in enumerate(values, start=1)], pa.timestamp("us", "UTC")
            )
            continue
        known = GROUND_TRUTH_SCHEMA.get_field_index(name) >= 0 and name != "event_id"  # ids stay text, checked later
        field = GROUND_TRUTH_SCHEMA.field(name) if known else None
        try:
            columns[name] = pa.array(values, type=field.type if field is not None else None)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            expected = field.type if field is not None else "one type"
            raise BatchError(f"field {name} must be {expected} in every record: {first_line(exc)}") from None
    return pa.table(columns)


def _timestamp(value: Any, record: int) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise BatchError(f"record {record}: ts must be an ISO-8601 time or epoch seconds, got {value!r}")
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BatchError(f"record {record}: ts {value!r} is not an ISO-8601 time (e.g. 2026-03-01T12:00:00Z)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


# -- writing -------------------------------------------------------------------------------------


SYNCHRONOUS_INSERT = {"async_insert": 0}
"""Insert settings of :func:`persist`: the insert returns once its rows are in the table's parts, never
from ClickHouse's asynchronous-insert buffer (which a kill of the server process would lose)."""


async def persist(
    request: Request, table_name: str, table: pa.Table, *, coalesce: bool = False, arrival: Arrival | None = None
) -> int:
    """Store ``table`` into ``table_name``; returns its row count once the rows survive a kill of this process.

    The one write path of every ingest endpoint that answers 2xx (``/v1/events``, ``/v1/ground-truth``,
    ``/v1/traces``, ``/v1/cloudevents``): answer 2xx only after it returned. The rows are inserted
    synchronously (``async_insert=0``) into ``request.app.state.store``: an embedded store has written
    them to its part files (the page cache, which a SIGKILL of this process does not lose), a ClickHouse
    server has committed them. What a power cut can cost is the store's own fsync policy (MergeTree's
    ``fsync_after_insert``, off by default). A store that fails raises ``HTTPException(503)``: nothing
    was stored, and the sender retries (the collector's writer spools the batch meanwhile).
    Runs the insert on the thread pool; ``store_lock`` serialises use of the client.

    With ``coalesce``, tables of the same columns that wait for the store at the same moment are
    written as one insert (a group commit: see :func:`_insert_coalesced`), and each caller returns
    once that insert did. An insert has a fixed cost in ClickHouse of about 20 ms of CPU in the
    embedded store, whatever its size (BENCHMARKS.md), so concurrent small requests are much
    cheaper together. Only for rows that the table deduplicates by key (``POST /v1/traces``: event
    ids derived from trace and span ids); ``/v1/events`` keeps one insert per batch, whose block
    hash also drops a batch re-sent whole (``non_replicated_deduplication_window``). ``arrival``, with
    ``coalesce``: the :class:`Arrival` that announced this table, ended once it is queued.
    """
    if coalesce:
        await run_in_threadpool(_insert_coalesced, request.app.state.store, table_name, table, arrival)
    else:
        await run_in_threadpool(_insert, request.app.state.store, table_name, table)
    return table.num_rows


def insert_around(
    client, table_name: str, table: pa.Table, *, arrival: Arrival | None = None
) -> tuple[pa.Table | None, str]:
    """The insert of :func:`persist` with ``coalesce``, blocking (call it off the event loop), for a request that
    can refuse some of its rows (an OTLP export: its ``partial_success``): when the store refuses the rows for what
    they hold (``sinks.store.refused_for_its_data``), the others are inserted around them
    (``sinks.store.write_around_refusals``). Returns the rows refused (None when none were) and the store's
    message; a store that fails for its own state raises ``HTTPException(503)``."""
    return _insert_coalesced(client, table_name, table, arrival, True)


def _insert(client, table_name: str, table: pa.Table) -> None:
    try:
        with store_lock:
            client.insert_arrow(table_name, table, settings=SYNCHRONOUS_INSERT)
    except Exception as exc:
        log.exception("inserting %d rows into %s failed", table.num_rows, table_name)
        raise _unavailable(exc) from None


def _unavailable(exc: BaseException) -> HTTPException:
    return HTTPException(503, f"the store did not take the batch ({first_line(exc)}); retry later")


COALESCED_INSERT = {**SYNCHRONOUS_INSERT, "insert_deduplicate": 0, "optimize_on_insert": 0}
"""Insert settings of a group commit: synchronous as every insert of :func:`persist`, and without the two steps
that only serve a batch re-sent whole, which a group never is (its tables wait together by chance): the block
hash kept for ``non_replicated_deduplication_window`` and the collapse of equal keys within the inserted block.
Coalesced rows are deduplicated by key (``ReplacingMergeTree``: at merge time and by ``FINAL``), as a retry sent
in another insert always was. The two steps cost about 40% of a 1,000-row insert's CPU in the embedded store
(BENCHMARKS.md, OTLP third pass). Use :func:`coalesced_insert`, which adds what the embedded engine needs."""


def coalesced_insert() -> dict[str, Any]:
    """:data:`COALESCED_INSERT` for one insert. In ClickHouse 26.9 (chdb) ``insert_deduplicate = 0`` no longer stops
    a non-replicated table from hashing the block and dropping it when a recent insert had the same one; an
    ``insert_deduplication_token`` of its own does (the token stands for the block's hash): 25,000-row inserts of
    GenAI calls cost 2.3-2.6 µs of CPU per row with it against 3.1-4.0 without (BENCHMARKS.md, 2026-12-04)."""
    return {**COALESCED_INSERT, "insert_deduplication_token": f"dw-{uuid.uuid4().hex}"}


COALESCE_MAX_ROWS = 50_000
"""Largest insert that :func:`_insert_coalesced` builds from waiting tables (its own table may be larger)."""


class _Waiting:
    """A table waiting in :func:`_insert_coalesced`; ``done`` and ``error`` are set by whoever inserted it."""

    __slots__ = ("client", "table_name", "table", "done", "error")

    def __init__(self, client, table_name: str, table: pa.Table) -> None:
        self.client, self.table_name, self.table = client, table_name, table
        self.done = False
        self.error: BaseException | None = None


_waiting: list[_Waiting] = []
_waiting_lock = threading.Lock()
_arrived = threading.Condition(_waiting_lock)  # notified when an announced table is queued or given up
_coming = 0  # announced tables (Arrival) not queued yet; guarded by _waiting_lock

COALESCE_LINGER = 0.02
"""Longest time (s) the holder of ``store_lock`` waits for announced tables (:class:`Arrival`) to join its insert."""
COALESCE_TARGET_ROWS = 8_000
"""Rows waiting at which the group commit stops waiting for announced tables: inserts this large cost about 3 µs of
the embedded store's CPU per row, against 15-20 µs for 1,000 rows alone (BENCHMARKS.md, OTLP third pass)."""


class Arrival:
    """A table on its way to ``persist(..., coalesce=True)`` (being decoded and mapped): announced so that an insert
    about to start waits for it briefly (at most ``COALESCE_LINGER``, and only while fewer than
    ``COALESCE_TARGET_ROWS`` rows wait) and takes it in the same insert, rather than leaving it for an insert of its
    own. Pass it to :func:`persist`, which ends the announcement when the table is queued; close it (or leave its
    ``with`` block) when the request ends without persisting. Closing twice is harmless."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        global _coming
        with _waiting_lock:
            _coming += 1
        self._open = True

    def close(self) -> None:
        with _waiting_lock:
            self._close_locked()

    def _close_locked(self) -> None:
        global _coming
        if self._open:
            self._open = False
            _coming -= 1
            _arrived.notify_all()

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _insert_coalesced(
    client, table_name: str, table: pa.Table, arrival: Arrival | None = None, around: bool = False
) -> tuple[pa.Table | None, str]:
    """Insert ``table``, together with the tables of the same client, target and columns that wait meanwhile.

    Group commit: each caller queues its table, then takes ``store_lock``; whoever holds it
    inserts every compatible waiting table (its own first, then in arrival order, up to
    ``COALESCE_MAX_ROWS`` rows) as one synchronous insert and marks them done, or failed with the
    insert's error. A caller whose table was inserted by another returns at once. Every caller
    returns only after an insert holding its rows returned (or raises 503 when it failed), so
    the durability of :func:`persist` is unchanged. While tables are announced (:class:`Arrival`)
    and fewer than ``COALESCE_TARGET_ROWS`` rows wait, the holder of ``store_lock`` first waits for
    them, at most ``COALESCE_LINGER``: it holds ``store_lock`` meanwhile, which delays nobody's rows
    (they would wait for this insert anyway), and the CPU goes to the requests being mapped.
    With ``around``, a group the store refused for what its rows hold is no failure of each caller's own: each
    inserts its table alone, and around the rows refused, which it returns (see :func:`insert_around`).
    """
    mine = _Waiting(client, table_name, table)
    with _waiting_lock:
        _waiting.append(mine)
        if arrival is not None:
            arrival._close_locked()
    with store_lock:
        if not mine.done:
            with _waiting_lock:
                if _coming:
                    deadline = time.monotonic() + COALESCE_LINGER
                    while _coming and sum(w.table.num_rows for w in _waiting) < COALESCE_TARGET_ROWS:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        _arrived.wait(remaining)
                group, rows = [mine], table.num_rows
                for other in _waiting:
                    if other is mine or other.client is not client or other.table_name != table_name:
                        continue
                    if rows + other.table.num_rows > COALESCE_MAX_ROWS or not other.table.schema.equals(table.schema):
                        continue
                    group.append(other)
                    rows += other.table.num_rows
                taken = set(map(id, group))
                _waiting[:] = [w for w in _waiting if id(w) not in taken]
            combined = table if len(group) == 1 else pa.concat_tables([w.table for w in group])
            try:
                client.insert_arrow(table_name, combined, settings=coalesced_insert())
            except Exception as exc:
                log.exception("inserting %d rows into %s failed", combined.num_rows, table_name)
                for waiting in group:
                    waiting.error = exc
            finally:
                for waiting in group:
                    waiting.done = True
    if mine.error is None:
        return None, ""
    if around and refused_for_its_data(mine.error):
        return _insert_around(client, table_name, table)
    raise _unavailable(mine.error) from None


def _insert_around(client, table_name: str, table: pa.Table) -> tuple[pa.Table | None, str]:
    """``table`` inserted alone, and if the store refuses it for what it holds, in halves around the rows it refuses;
    (those rows or None, the store's first refusal)."""

    def insert(part: pa.Table) -> None:
        with store_lock:
            client.insert_arrow(table_name, part, settings=coalesced_insert())

    refused: list[pa.Table] = []

    def keep(part: pa.Table) -> bool:  # answered as rejected: nothing to write to disk
        refused.append(part)
        return True

    try:
        try:
            insert(table)
            return None, ""
        except Exception as exc:
            if not refused_for_its_data(exc):
                raise
            refusal = first_line(exc)
        write_around_refusals(table, insert, keep)
    except Exception as exc:
        log.exception("inserting %d rows into %s around the rows the store refuses failed", table.num_rows, table_name)
        raise _unavailable(exc) from None
    return (pa.concat_tables(refused) if refused else None), refusal
