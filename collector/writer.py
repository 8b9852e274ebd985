"""The batching writer: takes captured events off the inference path and exports them.

    writer = open_writer(model="bikes", store="chdb:///var/lib/dw", spool_dir="/var/spool/dw")
    writer.start()
    writer.submit(event)          # never blocks, never raises; thread-safe
    writer.close(timeout=10.0)    # SIGTERM path: flush memory to the sink, or to the spool

Path of an event:

1. ``submit`` appends it to an in-memory buffer under a lock and returns (about a
   microsecond). The buffer is bounded by ``max_buffer_events``: when it is full
   (sink and spool both slower than the traffic) the event is dropped and counted
   in ``events_dropped{reason="memory_full"}``.
2. The flusher thread swaps the buffer out every ``batch_events`` events or every
   ``flush_interval_ms``, builds one Arrow table (``collector.arrow``) and writes it
   to the sink as one insert: the store (clickhouse-connect ``insert_arrow``) or a
   hub (``POST /v1/events``, Arrow IPC). A backlog of several full batches goes as one
   write of whole batches: up to the sink's ``max_insert_events`` (the store: 50,000), else
   ``MAX_COALESCED_BATCHES`` batches.
3. A failed write (error or timeout) sends the batch to the on-disk spool
   (``collector.spool``, fsync'd). While the spool holds data, new batches go to the
   spool too, so the sink receives batches in order and a down sink is not hit
   once per batch.
4. The replayer thread writes spooled batches to the sink, oldest first, with
   exponential backoff while it fails, and deletes each segment once written. At
   start it replays what a previous run left in the same spool directory.
5. A spooled batch the store refuses for what it holds (a column the table no longer
   has, a value it cannot convert: ``sinks.store.refused_for_its_data``) ``SET_ASIDE_AFTER``
   times in a row is written in halves around the refused events
   (``sinks.store.write_around_refusals``), which are *set aside* to ``<spool>/set-aside``
   (fsync'd); the batches behind it go on. Set-aside events go back into the spool at the
   next start, and while running once the sink takes the oldest of them again
   (``spool.RetryClock``: tried after 10 minutes, then twice as long after each refusal).

Exactly-once in the store: every event carries its ``event_id``; ``inferences`` is a
ReplacingMergeTree on it and identical re-sent blocks are dropped by insert
deduplication, so a batch written twice (a replay after a crash between the write
and the segment deletion) is counted once by ``FINAL`` readers.

Durability bound: an event is *acknowledged* once it is in the sink or fsync'd in
the spool. ``kill -9`` loses only unacknowledged events: the buffer plus the batch
being written, i.e. at most ``2 * max(batch_events, rate * flush_interval_ms)``
events in steady state (measured in tests/test_collector_writer.py).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from driftwarden.collector import metrics
from driftwarden.collector.arrow import from_ipc, to_ipc, to_table
from driftwarden.collector.event import Event
from driftwarden.collector.sinks import RejectedBatch
from driftwarden.collector.sinks.store import keep_aside, refused_for_its_data, write_around_refusals
from driftwarden.collector.spool import (
    DEFAULT_MAX_BYTES,
    DEFAULT_SEGMENT_BYTES,
    SET_ASIDE,
    SET_ASIDE_AFTER,
    SET_ASIDE_RETRY_S,
    RetryClock,
    Spool,
    SpoolError,
    move_records,
    try_oldest,
)
from driftwarden.errors import first_line

log = logging.getLogger(__name__)

DEFAULT_BATCH_EVENTS = 1000
DEFAULT_FLUSH_INTERVAL_MS = 500
DEFAULT_MAX_BUFFER_EVENTS = 100_000
MAX_COALESCED_BATCHES = 4  # a backlog goes to a sink in writes of up to this many full batches (see _flush_once)
MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0


class Sink(Protocol):
    """A destination for batches (see ``collector.sinks``)."""

    name: str

    def write(self, table: pa.Table) -> None: ...

    def close(self) -> None: ...


@dataclass
class WriterStats:
    """Counts since the writer started (the Prometheus metrics carry the same, per process)."""

    submitted: int = 0  # events given to submit()
    acknowledged: int = 0  # events that reached the sink or were fsync'd into the spool
    written: int = 0  # events written to the sink, directly or replayed
    spooled: int = 0  # events appended to the spool
    replayed: int = 0  # events written to the sink from the spool
    set_aside: int = 0  # events of spooled batches the store refused for what they hold, kept in <spool>/set-aside
    dropped: dict[str, int] = field(default_factory=dict)  # by reason
    buffered: int = 0  # events in memory now
    spool_bytes: int = 0
    spool_segments: int = 0
    sink_errors: int = 0
    sink_healthy: bool = True


class Writer:
    """Batches events in memory and exports them to ``sink``, spooling what the sink cannot take.

    Thread safety: ``submit`` may be called from any thread (and event loop) at once;
    ``start`` and ``close`` once each, from the owner.
    """

    def __init__(
        self,
        model: str,
        sink: Sink | None,
        spool: Spool | None = None,
        *,
        batch_events: int = DEFAULT_BATCH_EVENTS,
        flush_interval_ms: float = DEFAULT_FLUSH_INTERVAL_MS,
        max_buffer_events: int = DEFAULT_MAX_BUFFER_EVENTS,
        set_aside_retry_s: float = SET_ASIDE_RETRY_S,
    ) -> None:
        if batch_events < 1:
            raise ValueError(f"batch_events must be at least 1, got {batch_events}")
        if flush_interval_ms <= 0:
            raise ValueError(f"flush_interval_ms must be positive, got {flush_interval_ms}")
        self.model = model
        self.sink = sink
        self.spool = spool
        self.batch_events = batch_events
        self.flush_interval_s = flush_interval_ms / 1000.0
        self.max_buffer_events = max(max_buffer_events, batch_events)
        self._buffer: list[Event] = []
        self._lock = threading.Lock()
        self._wake_flusher = threading.Condition(self._lock)
        self._wake_replayer = threading.Event()  # set by each spool append and by close
        self._stop_replayer = threading.Event()  # set by close only: backoff sleeps ignore spool appends
        self._stopping = False
        self._closed = False
        self._flusher: threading.Thread | None = None
        self._replayer: threading.Thread | None = None
        self._counts: Counter[str] = Counter()  # guarded by _lock
        # Journal tickets: (events enqueued when the exchange's last event was, journal seq), in order; a
        # ticket is released once the flusher has exported (acknowledged or dropped) that many events.
        self._tickets: collections.deque[tuple[int, int]] = collections.deque()  # guarded by _lock
        self._enqueued = 0  # events appended to the buffer so far; guarded by _lock
        self._exported = 0  # of those, events whose batch the flusher has finished; guarded by _lock
        self.on_release: Callable[[list[int]], None] | None = None  # e.g. collector.journal.Journal.release
        self._sink_healthy = True
        self._last_sink_error: Exception | None = None  # of the last failed write (flusher: spool empty; replayer: not)
        self._refusals: tuple[tuple | None, int] = (None, 0)  # spool position of a batch refused for its data, times
        self._set_aside: Spool | None = None  # <spool>/set-aside, opened when it exists or is needed
        self._retry = RetryClock(set_aside_retry_s)  # when to try set-aside batches again; the replayer's only
        self._aside_what = f"the set-aside events of model {model}"
        sink_name = sink.name if sink is not None else "none"
        # Children resolved once: labels() costs a dict lookup and a lock per call.
        self._m_captured = metrics.events_captured.labels(model)
        self._m_written = metrics.events_written.labels(model)
        self._m_spool_bytes = metrics.spool_bytes.labels(model)
        self._m_spool_segments = metrics.spool_segments.labels(model)
        self._m_sink_duration = metrics.sink_write_duration.labels(model, sink_name)
        self._m_sink_errors = metrics.sink_errors.labels(model, sink_name)
        self._m_batch = metrics.batch_size.labels(model)
        self._m_set_aside_bytes = metrics.set_aside_bytes.labels(model)
        self._update_spool_gauges()

    # -- the inference path --------------------------------------------------------------------

    def submit(self, event: Event) -> None:
        """Queue one event for writing. Never blocks on I/O and never raises."""
        try:
            with self._lock:
                self._counts["submitted"] += 1
                buffer = self._buffer
                if not self._closed and len(buffer) < self.max_buffer_events:
                    buffer.append(event)
                    self._enqueued += 1
                    if len(buffer) == self.batch_events:
                        self._wake_flusher.notify()
                    return  # events_captured is counted by the flusher, per batch: no second lock here
                dropped = "closed" if self._closed else "memory_full"
                self._counts[f"dropped_{dropped}"] += 1
            metrics.events_dropped.labels(self.model, dropped).inc()
        except Exception:  # the inference path must never fail because of monitoring
            log.exception("dropping an event that could not be queued")

    def submit_many(self, events: list[Event], ticket: int) -> None:
        """Queue the events of one journaled exchange; ``on_release([ticket])`` follows once all are exported.

        Exported means acknowledged (in the sink, or fsync'd in the spool) or dropped for a counted
        reason. An exchange without events is released at once. Never blocks, never raises.
        """
        try:
            accepted = dropped = 0
            reason = ""
            released = False
            with self._lock:
                self._counts["submitted"] += len(events)
                for event in events:
                    if self._closed:
                        reason = "closed"
                    elif len(self._buffer) >= self.max_buffer_events:
                        reason = "memory_full"
                    else:
                        self._buffer.append(event)
                        accepted += 1
                        continue
                    dropped += 1
                if dropped:
                    self._counts[f"dropped_{reason}"] += dropped
                if accepted:
                    self._enqueued += accepted
                    if len(self._buffer) >= self.batch_events:
                        self._wake_flusher.notify()
                if self._enqueued <= self._exported and not self._tickets:
                    released = True
                else:
                    self._tickets.append((self._enqueued, ticket))
            if dropped:
                metrics.events_dropped.labels(self.model, reason).inc(dropped)
            if released and self.on_release is not None:
                self.on_release([ticket])
        except Exception:  # the inference path must never fail because of monitoring
            log.exception("dropping the events of an exchange that could not be queued")

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Writer:
        """Start the flusher and the replayer threads (the replayer first replays a previous run's spool)."""
        if self._flusher is not None:
            return self
        self._retry_set_aside()
        self._flusher = threading.Thread(target=self._flush_loop, name=f"dw-writer-{self.model}", daemon=True)
        self._flusher.start()
        if self.spool is not None and self.sink is not None:
            self._replayer = threading.Thread(target=self._replay_loop, name=f"dw-replay-{self.model}", daemon=True)
            self._replayer.start()
        return self

    def close(self, timeout: float = 10.0) -> WriterStats:
        """Flush the buffer to the sink (or the spool if the sink is down), stop the threads, return the stats.

        Spooled batches that the sink takes within ``timeout`` are replayed; the rest
        stay in the spool for the next start. Events submitted after close are dropped
        (reason ``closed``).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._closed:
                return self.stats()
            self._closed = True
            self._stopping = True
            self._wake_flusher.notify()
        self._wake_replayer.set()
        self._stop_replayer.set()
        if self._flusher is not None:
            self._flusher.join(max(0.0, deadline - time.monotonic()))
        else:
            while self._flush_once():  # never started: still write what was submitted
                pass
        if self._replayer is not None:
            self._stop_replayer.set()
            self._wake_replayer.set()  # again: it may have gone back to sleep while the flusher finished
            self._replayer.join(max(0.0, deadline - time.monotonic()))
        if self.sink is not None:
            try:
                self.sink.close()
            except Exception:
                log.exception("closing the sink failed")
        if self.spool is not None:
            self.spool.close()
            self._update_spool_gauges()
        if self._set_aside is not None:
            self._set_aside.close()
        return self.stats()

    def __enter__(self) -> Writer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> WriterStats:
        """A snapshot of the counts."""
        with self._lock:
            c = dict(self._counts)
            buffered = len(self._buffer)
        dropped = {k.removeprefix("dropped_"): v for k, v in c.items() if k.startswith("dropped_")}
        return WriterStats(
            submitted=c.get("submitted", 0),
            acknowledged=c.get("written_direct", 0) + c.get("spooled", 0),
            written=c.get("written_direct", 0) + c.get("replayed", 0),
            spooled=c.get("spooled", 0),
            replayed=c.get("replayed", 0),
            set_aside=c.get("set_aside", 0),
            dropped=dropped,
            buffered=buffered,
            spool_bytes=self.spool.bytes if self.spool is not None else 0,
            spool_segments=self.spool.segments if self.spool is not None else 0,
            sink_errors=c.get("sink_errors", 0),
            sink_healthy=self._sink_healthy,
        )

    # -- flusher -------------------------------------------------------------------------------

    def _flush_loop(self) -> None:
        try:  # pyarrow's first conversion takes ~0.2 s; pay it now rather than with the first batch
            to_ipc(to_table([Event(model=self.model)]))
        except Exception:
            log.exception("warming up the Arrow conversion failed")
        next_flush = time.monotonic() + self.flush_interval_s
        while True:
            with self._lock:
                while not self._stopping and len(self._buffer) < self.batch_events:
                    remaining = next_flush - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake_flusher.wait(remaining)
                stopping = self._stopping
            while self._flush_once(full_only=True):  # full batches as soon as they fill
                pass
            if stopping:
                while self._flush_once():
                    pass
                return
            if time.monotonic() >= next_flush:  # the remainder once the interval is up
                self._flush_once()
                next_flush = time.monotonic() + self.flush_interval_s

    def _flush_once(self, full_only: bool = False) -> bool:
        """Write up to batch_events buffered events as one batch; False when there was nothing to write.

        When the batch will go to the spool (it holds a backlog), the whole buffer goes as one
        record instead: one fsync for all of it, so a slow disk does not leave the spool behind.
        When the buffer holds several full batches (the sink fell behind) and the sink is
        healthy, they go as one write of up to the sink's ``max_insert_events`` events (the store sink's; other
        sinks: ``MAX_COALESCED_BATCHES`` batches): an insert into the embedded
        store costs a fixed ~8-10 ms of CPU (a part of the 58-column table, whatever its codecs and settings)
        plus ~1.5 µs per event (BENCHMARKS.md, capture throughput 2026-12-02 evening), so a backlog drains at a
        lower cost per event. Whole batches only: what is short of a batch still waits for the flush interval.
        """
        to_spool = self.spool is not None and (self.sink is None or not self.spool.empty())
        with self._lock:
            if not self._buffer or (full_only and len(self._buffer) < self.batch_events):
                return False
            if to_spool or len(self._buffer) <= self.batch_events:
                batch, self._buffer = self._buffer, []
            else:
                # Coalesce only into a sink that works: while it fails, batches keep their size for the spool.
                cap = getattr(self.sink, "max_insert_events", None)
                most = max(1, cap // self.batch_events) if cap else MAX_COALESCED_BATCHES
                coalesce = most if self._sink_healthy else 1
                take = self.batch_events * min(len(self._buffer) // self.batch_events, coalesce)
                batch, self._buffer = self._buffer[:take], self._buffer[take:]
        self._m_captured.inc(len(batch))
        try:
            self._export(batch)
        except Exception:  # a bug here must not kill the thread and stop all writing
            log.exception("writing a batch of %d events failed", len(batch))
            self._count("dropped_internal_error", len(batch))
            metrics.events_dropped.labels(self.model, "internal_error").inc(len(batch))
        self._mark_exported(len(batch))
        return True

    def _mark_exported(self, n: int) -> None:
        """The flusher finished ``n`` more events (in buffer order): release the tickets they complete."""
        done: list[int] = []
        with self._lock:
            self._exported += n
            tickets = self._tickets
            while tickets and tickets[0][0] <= self._exported:
                done.append(tickets.popleft()[1])
        if done and self.on_release is not None:
            try:
                self.on_release(done)
            except Exception:
                log.exception("releasing %d journaled exchanges failed", len(done))

    def _export(self, batch: list[Event]) -> None:
        n = len(batch)
        try:
            table = to_table(batch)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            self._encode_error(batch, exc)
            return
        self._m_batch.observe(n)
        if self.sink is not None and (self.spool is None or self.spool.empty()):
            written = self._write_to_sink(table)
            if written:
                self._count("written_direct", n)
                self._m_written.inc(n)
            if written is not False:  # written, or rejected (and counted as dropped)
                return
        self._to_spool(to_ipc(table), n, reason_if_none="sink_error")

    def _encode_error(self, batch: list[Event], exc: Exception) -> None:
        """Keep the good events of a batch that holds one the schema cannot take."""
        log.warning("an event of model %s does not fit the inferences schema: %s", self.model, exc)
        good: list[Event] = []
        bad = 0
        for event in batch:
            try:
                to_table([event])
                good.append(event)
            except Exception:
                bad += 1
        self._count("dropped_encode_error", bad)
        metrics.events_dropped.labels(self.model, "encode_error").inc(bad)
        if good:
            self._export(good)

    def _write_to_sink(self, table: pa.Table) -> bool | None:
        """Write one batch: True when written, False when it failed (retry later; a batch the sink refused for what
        it holds too: refused again, it is written around the events refused, see :meth:`_write_around`), None
        when the sink refused it and there is no spool to keep it (it is then counted as dropped)."""
        assert self.sink is not None
        started = time.perf_counter()
        try:
            self.sink.write(table)
        except Exception as exc:
            if isinstance(exc, RejectedBatch) and self.spool is None:  # with a spool: set aside (_write_around)
                log.error(
                    "the sink refused a batch of %d events and there is no spool, dropping it: %s", table.num_rows, exc
                )
                self._count("dropped_rejected", table.num_rows)
                metrics.events_dropped.labels(self.model, "rejected").inc(table.num_rows)
                return None
            self._last_sink_error = exc
            self._count("sink_errors", 1)
            self._m_sink_errors.inc()
            if self._sink_healthy and refused_for_its_data(exc):
                log.warning(
                    "the %s refused a batch of %d events for what it holds, spooling it (refused %d times in a row, "
                    "it is written around the events refused, which are set aside): %s",
                    self.sink.name,
                    table.num_rows,
                    SET_ASIDE_AFTER,
                    first_line(exc),
                )
            elif self._sink_healthy:
                log.warning("the %s sink failed, spooling until it is back: %s", self.sink.name, first_line(exc))
            self._sink_healthy = False
            return False
        self._m_sink_duration.observe(time.perf_counter() - started)
        if not self._sink_healthy and (self.spool is None or self.spool.empty()):
            log.info("the %s sink is back", self.sink.name)
            self._sink_healthy = True
        return True

    def _to_spool(self, payload: bytes, n: int, *, reason_if_none: str) -> None:
        if self.spool is None:
            self._count(f"dropped_{reason_if_none}", n)
            metrics.events_dropped.labels(self.model, reason_if_none).inc(n)
            return
        if self.spool.append(payload):
            self._count("spooled", n)
        else:
            self._count("dropped_spool_full", n)
            metrics.events_dropped.labels(self.model, "spool_full").inc(n)
        self._update_spool_gauges()
        self._wake_replayer.set()

    # -- replayer ------------------------------------------------------------------------------

    def _replay_loop(self) -> None:
        assert self.spool is not None
        backoff = MIN_BACKOFF_S
        position: tuple[os.PathLike, int] | None = None  # (segment, offset) already written
        while True:
            progressed, failed, position = self._replay_some(position)
            with self._lock:
                stopping = self._stopping
            # On close: stop at the first failure, or once the spool is drained and the flusher
            # (whose last batch may still go to the spool) has finished.
            flusher_done = self._flusher is None or not self._flusher.is_alive()
            if stopping and (failed or (not progressed and flusher_done)):
                return
            if failed:  # a down sink is retried on the backoff clock, not once per spooled batch
                self._stop_replayer.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            elif not progressed:
                backoff = MIN_BACKOFF_S
                if self._retry.due() and not stopping:
                    self._probe_set_aside()
                else:
                    self._wake_replayer.wait(1.0)
            self._wake_replayer.clear()

    def _replay_some(self, position):
        """Write the records of the oldest segment; return (progressed, failed, position)."""
        assert self.spool is not None and self.sink is not None
        segment = self.spool.oldest()
        if segment is None:
            return False, False, None
        offset = position[1] if position is not None and position[0] == segment else 0
        progressed = False
        try:
            records = list(self.spool.read(segment, offset))
        except OSError as exc:
            log.error("cannot read spool segment %s, skipping it: %s", segment, exc)
            self.spool.remove(segment)
            self._update_spool_gauges()
            return True, False, None
        for record in records:
            try:
                table = from_ipc(record.payload)
            except pa.ArrowException as exc:
                log.error("undecodable batch in spool segment %s, skipping it: %s", segment, exc)
                offset = record.end
                continue
            written = self._write_to_sink(table)
            if written is False:
                if not (self._refused_again((segment, offset)) and self._write_around(table)):
                    return progressed, True, (segment, offset)
            if written:
                self._count("replayed", table.num_rows)
                self._m_written.inc(table.num_rows)
            offset = record.end
            progressed = True
        self.spool.remove(segment)
        self._update_spool_gauges()
        if self.spool.empty() and not self._sink_healthy:
            self._sink_healthy = True
        return True, False, None

    # -- setting aside ---------------------------------------------------------------------------

    def _refused_again(self, where: tuple) -> bool:
        """Whether the spooled batch at ``where`` was just refused for what it holds (by the store, or by a hub:
        ``RejectedBatch``), ``SET_ASIDE_AFTER`` times in a row (a store that is away, full or missing the table, a
        hub that is away or refuses the token, never counts)."""
        if not refused_for_its_data(self._last_sink_error):
            self._refusals = (None, 0)
            return False
        times = self._refusals[1] + 1 if self._refusals[0] == where else 1
        self._refusals = (where, times)
        return times >= SET_ASIDE_AFTER

    def _write_around(self, table: pa.Table) -> bool:
        """Write a spooled batch the sink (the store, or a hub) keeps refusing for what it holds around its refused
        events, which are set aside (``sinks.store.write_around_refusals``); False when that fails (the batch then
        stays first)."""
        assert self.sink is not None and self.spool is not None
        refusal = first_line(self._last_sink_error) if self._last_sink_error is not None else ""
        by = self.sink.name
        written = 0  # counted once the batch is done: a write-around that fails half-way is done again whole

        def write(part: pa.Table) -> None:
            nonlocal written
            self.sink.write(part)  # type: ignore[union-attr]
            written += part.num_rows

        def put_aside(part: pa.Table) -> bool:
            try:
                if self._set_aside is None:
                    self._set_aside = Spool(self.spool.directory / SET_ASIDE, max_bytes=self.spool.max_bytes)
            except SpoolError as exc:
                log.error("cannot set aside events the %s refuses: %s; their batch stays first in the spool", by, exc)
                return False
            what = f"spooled events of model {self.model}"
            if not keep_aside(self._set_aside, part, table.num_rows, what, refusal, by=by):
                return False
            self._retry.start()
            self._count("set_aside", part.num_rows)
            metrics.events_set_aside.labels(self.model).inc(part.num_rows)
            self._m_set_aside_bytes.set(self._set_aside.bytes)
            return True

        try:
            done = write_around_refusals(table, write, put_aside)
        except Exception as exc:
            log.warning(
                "writing a spooled batch of %d events around the events the %s refuses failed, it stays first in the "
                "spool (the events written meanwhile are stored once): %s",
                table.num_rows,
                by,
                first_line(exc),
            )
            self._last_sink_error = exc
            return False
        self._refusals = (None, 0)
        if done:
            self._count("replayed", written)
            self._m_written.inc(written)
        return done

    def _retry_set_aside(self) -> None:
        """Move the set-aside batches back into the spool (at start, or once the sink took the oldest of them again:
        :meth:`_probe_set_aside`): the cause may be fixed since; refused again, they are set aside again."""
        if self.spool is None or not (self.spool.directory / SET_ASIDE).is_dir():
            return
        if self._set_aside is None:
            self._set_aside = Spool(self.spool.directory / SET_ASIDE, max_bytes=self.spool.max_bytes)
        moved = sum(1 for _ in move_records(self._set_aside, self.spool))
        if moved:
            log.warning("retrying %d set-aside batches of model %s", moved, self.model)
        if not self._set_aside.empty():  # the spool had no room for them all: the rest are tried later
            self._retry.start()
        self._m_set_aside_bytes.set(self._set_aside.bytes)
        self._update_spool_gauges()
        self._wake_replayer.set()

    def _probe_set_aside(self) -> None:
        """Write the oldest set-aside batch again: taken, move every set-aside batch back into the spool (that one's
        events are then written twice, stored once: event ids); refused, try again twice as long after
        (``spool.try_oldest``)."""
        sink = self.sink
        assert sink is not None
        if try_oldest(self._set_aside, self._retry, lambda payload: sink.write(from_ipc(payload)), self._aside_what):
            self._retry_set_aside()

    # -- helpers -------------------------------------------------------------------------------

    def _count(self, key: str, n: int) -> None:
        with self._lock:
            self._counts[key] += n

    def _update_spool_gauges(self) -> None:
        if self.spool is not None:
            self._m_spool_bytes.set(self.spool.bytes)
            self._m_spool_segments.set(self.spool.segments)


def open_writer(
    *,
    model: str,
    store: str | None = None,
    hub: str | None = None,
    spool_dir: str | os.PathLike | None = None,
    batch_events: int = DEFAULT_BATCH_EVENTS,
    flush_interval_ms: float = DEFAULT_FLUSH_INTERVAL_MS,
    max_buffer_events: int = DEFAULT_MAX_BUFFER_EVENTS,
    spool_max_bytes: int = DEFAULT_MAX_BYTES,
    spool_segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    sink_timeout_s: float = 10.0,
    set_aside_retry_s: float = SET_ASIDE_RETRY_S,
) -> Writer:
    """A writer for ``model`` exporting to a hub (``hub=URL``) or else the store (``store=URL``, default
    ``$DRIFTWARDEN_STORE``), spooling to ``spool_dir`` when given. Call ``start()`` on it.

    Raises ``driftwarden.errors.UserError`` for both ``store`` and ``hub``, or an unusable spool directory.
    """
    from driftwarden.errors import UserError

    if store and hub:
        raise UserError("give either a store URL or a hub URL, not both: a collector writes to one place")
    sink: Sink
    if hub:
        if not hub.startswith(("http://", "https://")):
            raise UserError(f"hub URL {hub!r} must start with http:// or https://, e.g. http://127.0.0.1:8000")
        from driftwarden.collector.sinks.hub import HubSink

        sink = HubSink(hub, timeout_s=sink_timeout_s)
    else:
        from driftwarden.collector.sinks.store import StoreSink
        from driftwarden.storage.url import parse, resolve

        parse(resolve(store))  # a malformed URL is the user's mistake, reported now rather than spooled
        sink = StoreSink(store, timeout_s=sink_timeout_s)
    spool = (
        Spool(spool_dir, max_bytes=spool_max_bytes, segment_bytes=spool_segment_bytes)
        if spool_dir is not None
        else None
    )
    return Writer(
        model,
        sink,
        spool,
        batch_events=batch_events,
        flush_interval_ms=flush_interval_ms,
        max_buffer_events=max_buffer_events,
        set_aside_retry_s=set_aside_retry_s,
    )
