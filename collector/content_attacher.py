"""Gives language-model calls the message content that arrived as log records (``POST /v1/logs``).

A call's span and its content events (``collector.receivers.otlp_logs``) travel separately: the SDK exports spans
and log records with processors of their own, in requests of their own, in either order, and a call's records
may be split over several requests. The events are stored as they come (``genai_content_events``); this thread
of the hub writes each call's assembled content (``genai_content.assemble``) into its row of ``inferences``: the
row read with ``FINAL`` and inserted again with the content columns replaced and ``content_source = 'logs'``
(the same sorting key: the ``ReplacingMergeTree`` keeps the later row). It does so once the call's row is there,
and again whenever more of the call's records arrive, or its span is stored again without content within
``REGIVE_S`` (:meth:`ContentAttacher.spans_stored`); a call whose span carried content itself keeps it.

The calls to attach are those whose records this process stored (:meth:`ContentAttacher.note`), and, at start,
those of the records received in the last ``HORIZON_S`` (a restart between the records and their span, or
before the attachment, loses nothing). A call whose span has not arrived within ``HORIZON_S`` of its records is
given up (``driftwarden_genai_content_unattached_total``); its records stay in ``genai_content_events``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import Counter, Gauge

from driftwarden.collector.ingest import coalesced_insert, store_lock
from driftwarden.collector.metrics import REGISTRY
from driftwarden.collector.receivers.genai_content import EventPiece, assemble
from driftwarden.errors import first_line

log = logging.getLogger("driftwarden.otlp")

HORIZON_S = 900.0
"""How long a call's content events wait for its span (and are looked for again at start)."""
FIRST_DELAY_S, MAX_DELAY_S = 0.5, 60.0
"""A waiting call is looked for again after 0.5 s, then twice as long after each miss, at most every minute (a
span that never comes, e.g. not sampled by the application, costs the store a query a minute)."""
BEFORE_NS, AFTER_NS = 1200 * 10**9, 60 * 10**9
"""A call's span starts at most this long before its content events (a long call, or records without a time, which
are given the time they arrived), and at most this long after them (clocks): the time range of ``inferences``
searched for it (the parts of other times are not read)."""

_CONTENT = (
    "input_payload", "output_payload", "output_text", "payload_truncated", "input_hash", "output_hash",
    "params_hash", "redactions", "text_names", "text_values",
)  # fmt: skip
_PARAMS = ("temperature", "top_p", "max_tokens", "seed")  # the request parameters hashed with the input
_KEYS = "concat(trace_id, span_id) IN (SELECT arrayJoin(splitByChar(',', {keys:String})))"
"""Calls by their trace and span ids (hex), given as one string (``_joined``): binding a list of tuples, each
formatted by clickhouse-connect, cost more than the rest of the query."""
CHUNK = 500
"""Calls looked for (and given content) per query: their keys are the query's parameters."""
REGIVE_S = 120.0
"""How long a call given content is watched for its span stored again without it (an exporter's retry of a span
whose first answer it missed, a journal replayed at start): :meth:`ContentAttacher.spans_stored`."""

attached = Counter(
    "driftwarden_genai_content_attached",
    "Language-model calls given (or given again) message content from log records (POST /v1/logs)",
    registry=REGISTRY,
)
unattached = Counter(
    "driftwarden_genai_content_unattached",
    "Calls whose content events waited for their span longer than the horizon (15 min) and were given up; the "
    "events stay in genai_content_events",
    registry=REGISTRY,
)
waiting = Gauge(
    "driftwarden_genai_content_waiting",
    "Calls whose content events wait for their span (or for the next pass)",
    registry=REGISTRY,
)


@dataclass
class _Waiting:
    """A call waiting: its records' first and last time (ns), when it was noted, when to look and the next delay."""

    first: int
    last: int
    noted: float
    due: float
    delay: float = FIRST_DELAY_S


class ContentAttacher:
    """The thread that attaches content events to their calls in the store ``client`` (see the module docstring).

    ``limit`` is ``genai.max_content_bytes``."""

    def __init__(self, client: Any, limit: int, *, horizon_s: float = HORIZON_S) -> None:
        self._client = client
        self._limit = limit
        self._horizon_s = horizon_s
        self._pending: dict[tuple[str, str], _Waiting] = {}  # (trace id, span id) -> its wait
        self._given: dict[str, tuple[int, int, float]] = {}  # trace id + span id -> records' times, when given
        self._given_keys: pa.Array | None = None  # the keys of _given (oldest first) as Arrow, built when needed
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dw-content-attacher", daemon=True)
        self._thread.start()

    def note(self, calls: dict[tuple[str, str], tuple[int, int]]) -> None:
        """Calls (trace id, span id in hex) whose content events were just stored, with their records' first and
        last time (ns): looked for at the next pass."""
        now = time.monotonic()
        with self._lock:
            for key, (first, last) in calls.items():
                old = self._pending.get(key)
                if old is not None:
                    first, last = min(first, old.first), max(last, old.last)
                self._pending[key] = _Waiting(first, last, now if old is None else old.noted, now)
            waiting.set(len(self._pending))
        self._wake.set()

    def spans_stored(self, table: pa.Table) -> None:
        """Rows just stored into ``inferences`` (their ``trace_id``, ``span_id``): those of calls given content in the
        last ``REGIVE_S`` are looked at again, since a span stored again replaces the row with its content (the
        later row wins) by one without it. Costs nothing while no call was given content lately."""
        with self._lock:
            if not self._given:
                return
            if self._given_keys is None:
                self._given_keys = pa.array(list(self._given), pa.string())
            given = self._given_keys
        keys = pc.binary_join_element_wise(table["trace_id"], table["span_id"], "")
        again = pc.filter(keys, pc.is_in(keys, value_set=given)).to_pylist()
        if again:
            with self._lock:
                times = {key: self._given[key][:2] for key in again if key in self._given}
            self.note({(key[:32], key[32:]): span for key, span in times.items()})

    def close(self, timeout: float = 10.0) -> None:
        """One last pass for the calls waiting, then stop."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._recover()
        except Exception as exc:  # an unmigrated store, a store away: the calls noted from now on still attach
            log.warning("content events of the last %.0f s not looked at again: %s", self._horizon_s, first_line(exc))
        while True:
            stopping = self._stop.is_set()
            try:
                self.attach_waiting(everything=stopping)
            except Exception as exc:  # the store is away: the calls wait for the next pass
                log.warning("attaching content events to their calls failed (%s); retrying", first_line(exc))
                if not stopping:
                    self._stop.wait(5.0)
            if stopping:
                return
            with self._lock:
                due = min((w.due for w in self._pending.values()), default=None)
                self._wake.clear()
            self._wake.wait(None if due is None else max(0.0, due - time.monotonic()))

    def _recover(self) -> None:
        """The calls of the content events received in the last horizon, to attach (again) if they need it."""
        with store_lock:
            rows = self._client.query(
                f"""SELECT trace_id, span_id, toUnixTimestamp64Nano(min(ts)), toUnixTimestamp64Nano(max(ts))
                FROM genai_content_events WHERE received_at >= now64(3) - INTERVAL {int(self._horizon_s)} SECOND
                GROUP BY trace_id, span_id"""
            ).result_rows
        if rows:
            self.note({(trace, span): (first, last) for trace, span, first, last in rows})

    def attach_waiting(self, *, everything: bool = False) -> int:
        """One pass over the calls due (``everything``: all waiting): those whose rows are in the store get their
        content; returns how many did."""
        now = time.monotonic()
        with self._lock:
            due = {k: w for k, w in self._pending.items() if everything or w.due <= now}
        if not due:
            return 0
        found_keys: set[tuple[str, str]] = set()
        given: list[pa.Table] = []  # the calls' rows with their content, inserted together (an insert's cost is
        # mostly per insert at these sizes: 500 rows of inferences took about 60 ms, 5,000 not much more)
        keys = list(due)
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start : start + CHUNK]
            first = min(due[k].first for k in chunk) - BEFORE_NS
            last = max(due[k].last for k in chunk) + AFTER_NS
            with store_lock:  # without FINAL: the filter on the ids is applied as the columns are read
                found = self._client.query(
                    f"""SELECT model, toUnixTimestamp64Micro(min(ts)), toUnixTimestamp64Micro(max(ts)),
                        groupUniqArray((trace_id, span_id))
                    FROM inferences WHERE protocol = 'otlp' AND {_KEYS}
                        AND ts BETWEEN fromUnixTimestamp64Nano({{first:Int64}}, 'UTC')
                        AND fromUnixTimestamp64Nano({{last:Int64}}, 'UTC')
                    GROUP BY model""",
                    parameters={"first": max(first, 0), "last": last, "keys": _joined(chunk)},
                ).result_rows
            for model, lo, hi, calls in found:
                calls = [tuple(k) for k in calls]
                found_keys.update(calls)
                with store_lock:  # FINAL (the latest row of each call) over the few moments the calls started at
                    rows = self._client.query_arrow(
                        f"""SELECT * FROM inferences FINAL WHERE model = {{model:String}}
                            AND ts BETWEEN fromUnixTimestamp64Micro({{lo:Int64}}, 'UTC')
                            AND fromUnixTimestamp64Micro({{hi:Int64}}, 'UTC')
                            AND {_KEYS} AND (NOT payload_sampled OR content_source = 'logs')""",
                        parameters={"model": model, "lo": lo, "hi": hi, "keys": _joined(calls)},
                    )
                if rows.num_rows:  # a call whose span carried content keeps it; one given content from log
                    given.append(self._with_content(rows))  # records is given it again, with what came since
        given_calls: list[tuple[str, str]] = []
        if given:
            table = pa.concat_tables(given)
            # with a deduplication token of its own: the same content given again (after a span stored again replaced
            # it) is the same block as before, which the store would otherwise drop as a repeated insert
            with store_lock:
                self._client.insert_arrow("inferences", table, settings=coalesced_insert())
            given_calls = list(zip(table["trace_id"].to_pylist(), table["span_id"].to_pylist(), strict=True))
            attached.inc(len(given_calls))
        now = time.monotonic()
        with self._lock:
            for trace, span in given_calls:
                wait = due[(trace, span)]
                self._given.pop(trace + span, None)  # to the end: the oldest given stay first
                self._given[trace + span] = (wait.first, wait.last, now)
                self._given_keys = None
            while self._given:
                key, (_, _, at) = next(iter(self._given.items()))
                if now - at <= REGIVE_S:
                    break
                del self._given[key]
                self._given_keys = None
            for key, wait in due.items():
                if self._pending.get(key) is not wait:
                    continue  # more records came during the pass: the call is looked at again
                if key in found_keys:
                    del self._pending[key]
                elif now - wait.noted > self._horizon_s:
                    del self._pending[key]
                    unattached.inc()
                else:
                    wait.due, wait.delay = now + wait.delay, min(wait.delay * 2, MAX_DELAY_S)
            waiting.set(len(self._pending))
        return len(given_calls)

    def _with_content(self, calls: pa.Table) -> pa.Table:
        """The rows ``calls`` (of ``inferences``, whole) with the content columns assembled from their records."""
        given = list(zip(calls["trace_id"].to_pylist(), calls["span_id"].to_pylist(), strict=True))
        with store_lock:
            events = self._client.query(
                f"""SELECT trace_id, span_id, kind, choice_index, input, output, output_text, input_hash,
                    output_hash, redactions, truncated
                FROM genai_content_events FINAL WHERE {_KEYS}
                    AND trace_id IN (SELECT substring(arrayJoin(splitByChar(',', {{keys:String}})), 1, 32))
                ORDER BY trace_id, span_id, ts, seq""",
                parameters={"keys": _joined(given)},
            ).result_rows
        pieces: dict[tuple[str, str], list[EventPiece]] = {}
        for trace, span, *piece in events:
            pieces.setdefault((trace, span), []).append(EventPiece(*piece))
        params = zip(*(calls[name].to_pylist() for name in _PARAMS), strict=True)
        contents = [
            assemble(pieces.get(key, []), dict(zip(_PARAMS, values, strict=True)), self._limit)
            for key, values in zip(given, params, strict=True)
        ]
        n = calls.num_rows
        replaced = {name: [getattr(c, name) for c in contents] for name in _CONTENT}
        replaced["payload_sampled"], replaced["content_source"] = [True] * n, ["logs"] * n
        for name, values in replaced.items():
            i = calls.schema.get_field_index(name)
            calls = calls.set_column(i, calls.schema.field(i), pa.array(values, calls.schema.field(i).type))
        return calls


def _joined(keys: list[tuple[str, str]]) -> str:
    return ",".join(trace + span for trace, span in keys)
