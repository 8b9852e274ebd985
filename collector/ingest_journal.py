"""The hub's write-ahead journal of ingested rows: answer once the rows are on disk, insert them behind.

``POST /v1/traces`` with a journal (``genai.journal_dir``; by default beside an embedded store)
answers 200 once the request's calls are appended to this journal and ``fsync``'d, and a
background thread inserts them into the store in large groups. The request no longer waits for
an insert (tens of milliseconds of the store's CPU, and for the insert before it), and the store
gets fewer, larger inserts, which cost it less per row and leave it fewer parts to merge
(BENCHMARKS.md, "OTLP ingest, fourth pass").

Durability is at least that of an answer given after the insert (``collector.ingest.persist``):
an appended record is ``fsync``'d, so it survives a SIGKILL of the process *and* a power cut, and
a record is deleted only once an insert holding its rows has returned. At start, the records
left by a previous run (a crash, or a store that stayed away until shutdown) are inserted again;
their rows keep their event ids (derived from trace and span ids), and ``inferences`` (a
``ReplacingMergeTree`` on ``event_id``) keeps a row inserted twice once.

The records are :class:`collector.spool.Spool` segments (one record per request: an Arrow IPC
stream of its rows). The rows are also kept in memory until inserted, so the journal is read only
at start; both are bounded by ``max_bytes``: an append that does not fit is refused
(:class:`JournalFull`), and ``/v1/traces`` answers 503, which OTLP exporters retry.

A store that fails is retried, oldest first, with a back-off of up to ``MAX_BACKOFF_S``; nothing is
dropped. A group whose insert fails is retried one record at a time, so that a record the store refuses
for what it holds (a column the table no longer has, a value it cannot convert:
``sinks.store.refused_for_its_data``) is found; refused so ``SET_ASIDE_AFTER`` times in a row, its rows are
inserted in halves around the refused ones (``sinks.store.write_around_refusals``), which are *set aside*:
appended, ``fsync``'d, to the spool ``set-aside/`` inside the journal directory; the records behind go on.
Set-aside rows are journaled again at every start, and while running once the store takes the oldest of
them again (tried ``SET_ASIDE_RETRY_S`` after they were set aside, then twice as long after each refusal, up to
6 hours: ``spool.RetryClock``), so once the cause is fixed (a migration, a column put back) they are inserted
without a restart; a store that is away, full or missing the table never sets anything aside.
The state is exported as ``driftwarden_ingest_journal_*`` metrics (``IngestJournalNotDraining``,
``IngestJournalRowsSetAside``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
from prometheus_client import Counter, Gauge

from driftwarden.collector.arrow import from_ipc, to_ipc
from driftwarden.collector.genai_config import JOURNAL_MAX_BYTES
from driftwarden.collector.ingest import coalesced_insert, store_lock
from driftwarden.collector.metrics import REGISTRY
from driftwarden.collector.sinks.store import keep_aside, refused_for_its_data, write_around_refusals
from driftwarden.collector.spool import (
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

SEGMENT_BYTES = 8 << 20
LINGER_S = 0.5
"""How long the oldest waiting table waits for more to join its insert (unless ``TARGET_ROWS`` wait): how stale the
store may be behind the answers, not how long a request waits. Larger inserts write fewer parts, which leave the
store fewer merges: 0.5 s rather than 0.2 s cut the merges' CPU from about 5 to 1 µs per span at 50,000 spans/s
(BENCHMARKS.md, OTLP fourth pass)."""
TARGET_ROWS = 40_000
"""Rows waiting at which the inserter stops lingering: an insert this large costs the embedded store about 3 µs of
CPU per row, against 10-20 µs for 1,000 rows alone (BENCHMARKS.md)."""
MAX_ROWS = 100_000
"""Largest insert the inserter builds from waiting tables (a single larger table goes alone)."""
MAX_BACKOFF_S = 10.0

journal_rows = Gauge(
    "driftwarden_ingest_journal_rows",
    "Rows answered and journaled on the hub, not yet inserted into the store",
    ["table"],
    registry=REGISTRY,
)
journal_bytes = Gauge(
    "driftwarden_ingest_journal_bytes",
    "Bytes of the hub's ingest journal on disk (records not yet inserted, and the segment being written)",
    ["table"],
    registry=REGISTRY,
)
journal_inserts = Counter(
    "driftwarden_ingest_journal_inserts",
    "Inserts of journaled rows into the store, by outcome (ok, failed: retried)",
    ["table", "outcome"],
    registry=REGISTRY,
)
journal_set_aside_rows = Counter(
    "driftwarden_ingest_journal_set_aside_rows",
    "Journaled rows the store refused for what they hold, set aside on disk (tried again while running and at start)",
    ["table"],
    registry=REGISTRY,
)
journal_set_aside_bytes = Gauge(
    "driftwarden_ingest_journal_set_aside_bytes",
    "Bytes of set-aside records in the ingest journal's set-aside/ directory (tried again while running and at start)",
    ["table"],
    registry=REGISTRY,
)


def journal_directory(genai, store_url: str | None) -> Path | None:
    """Where ``POST /v1/traces`` journals, for the ``genai:`` section ``genai`` and the store ``store_url``: its
    ``journal_dir``; else ``<store>-spool/otlp`` (``otlp-<database>`` for another database) beside an embedded store;
    None for a ClickHouse server without ``journal_dir``, or with ``journal: false`` (answers after the insert)."""
    from driftwarden.storage.url import DEFAULT_DATABASE, local_state_dir, parse, resolve

    if genai is not None and not genai.journal:
        return None
    if genai is not None and genai.journal_dir:
        return Path(genai.journal_dir)
    root = local_state_dir(store_url)
    if root is None:
        return None
    database = parse(resolve(store_url)).database
    return root / ("otlp" if database == DEFAULT_DATABASE else f"otlp-{database}")


def _name_native_thread(name: bytes) -> None:
    """The calling thread's name as the kernel shows it (``/proc/<pid>/task/<tid>/comm``), where Linux has one."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


class JournalFull(Exception):
    """The journal holds ``max_bytes`` already (the store is away or slower than the senders); retry later."""


class IngestJournal:
    """Rows for ``table_name`` appended durably by request handlers, inserted into ``client`` by a thread of its own.

    ``append`` (any thread) returns once the rows are ``fsync``'d; ``close`` stops the inserter after
    one last attempt to insert what waits (for at most ``timeout`` seconds) and keeps the rest on disk.
    ``on_inserted`` is called with the rows of each insert once the store took them (the content attacher's
    ``spans_stored``).
    """

    def __init__(
        self,
        directory: str | Path,
        client,
        table_name: str = "inferences",
        *,
        max_bytes: int = JOURNAL_MAX_BYTES,
        linger_s: float = LINGER_S,
        set_aside_retry_s: float = SET_ASIDE_RETRY_S,
        on_inserted: Callable[[pa.Table], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.client, self.table_name, self.linger_s = client, table_name, linger_s
        self._on_inserted = on_inserted
        try:
            self.spool = Spool(self.directory, segment_bytes=min(SEGMENT_BYTES, max_bytes), max_bytes=max_bytes)
            self.set_aside = Spool(
                self.directory / SET_ASIDE, segment_bytes=min(SEGMENT_BYTES, max_bytes), max_bytes=max_bytes
            )
        except SpoolError as exc:
            raise SpoolError(
                f"the ingest journal of POST /v1/traces cannot be opened: {exc} (set genai.journal_dir to a "
                "directory of this process's own, or genai.journal: false to answer after each insert)"
            ) from None
        self._cond = threading.Condition()
        self._queue: collections.deque[tuple[Path, pa.Table, float]] = collections.deque()  # segment, rows, arrival
        self._outstanding: collections.Counter[Path] = collections.Counter()  # tables not inserted, per segment
        self._rows = 0
        self._closing = False
        self._retry = RetryClock(set_aside_retry_s)  # used by the inserter's thread only
        self._gauge_rows = journal_rows.labels(table_name)
        self._gauge_bytes = journal_bytes.labels(table_name)
        self._gauge_set_aside = journal_set_aside_bytes.labels(table_name)
        self._recover()
        self._thread = threading.Thread(target=self._run, name=f"dw-journal-{table_name}", daemon=True)
        self._thread.start()

    # -- appending -----------------------------------------------------------------------------

    def append(self, table: pa.Table) -> None:
        """Journal ``table`` (``fsync``'d before this returns); :class:`JournalFull` when it does not fit."""
        payload = to_ipc(table)
        with self._cond:
            if self._closing:
                raise JournalFull("the ingest journal is closing (the process is stopping); retry later")
            if not self.spool.append(payload):
                raise JournalFull(
                    f"the ingest journal {self.directory} holds {self.spool.bytes} bytes, its limit is "
                    f"{self.spool.max_bytes} (genai.journal_max_bytes), or its disk refused the write: "
                    f"{self._rows} rows wait for the store; retry later"
                )
            self._queued(self.spool.active, table)
        self._gauge_bytes.set(self.spool.bytes)

    def _queued(self, segment: Path, table: pa.Table) -> None:
        self._queue.append((segment, table, time.monotonic()))
        self._outstanding[segment] += 1
        self._rows += table.num_rows
        self._gauge_rows.set(self._rows)
        self._cond.notify_all()

    @property
    def rows(self) -> int:
        """Rows journaled and not inserted (nor set aside) yet."""
        with self._cond:
            return self._rows

    def wait_empty(self, timeout: float) -> bool:
        """True once every journaled row is inserted or set aside (False when ``timeout`` passed first)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    # -- recovering ----------------------------------------------------------------------------

    def _recover(self) -> None:
        """Queue the records a previous run left (all its segments are sealed: this run has not appended yet)."""
        recovered = 0
        for segment in self.spool.with_data():
            for record in self.spool.read(segment):
                try:
                    table = from_ipc(record.payload)
                except (pa.ArrowException, OSError) as exc:  # a whole record with a good CRC: not expected
                    log.error("ingest journal: a record of %s is unreadable (%s); skipped", segment, exc)
                    continue
                with self._cond:
                    self._queued(segment, table)
                recovered += table.num_rows
            if not self._outstanding[segment]:
                self.spool.remove(segment)
        if recovered:
            log.warning(
                "ingest journal %s: %d rows answered by a previous run were not inserted yet; inserting them",
                self.directory,
                recovered,
            )
        self._retry_set_aside()
        self._gauge_bytes.set(self.spool.bytes)

    def _retry_set_aside(self) -> None:
        """Journal the set-aside records again: the cause may be fixed since; refused again, they are set aside
        again (a record journaled twice is stored once: event ids)."""
        retried = 0
        for payload in move_records(self.set_aside, self.spool):
            try:
                table = from_ipc(payload)
            except (pa.ArrowException, OSError) as exc:  # a whole record with a good CRC: not expected
                log.error("ingest journal: a set-aside record is unreadable (%s); skipped", exc)
                continue
            with self._cond:
                self._queued(self.spool.active, table)
            retried += table.num_rows
        if retried:
            log.warning("ingest journal %s: retrying %d rows set aside before", self.directory, retried)
        if not self.set_aside.empty():  # the journal had no room for them all: the rest are tried later
            self._retry.start()
        self._gauge_set_aside.set(self.set_aside.bytes)

    def _probe_set_aside(self) -> None:
        """Insert the oldest set-aside record again: taken, journal every set-aside record again (that one's rows are
        then inserted twice, stored once: event ids); refused, try again twice as long after (``spool.try_oldest``)."""

        def insert(payload: bytes) -> None:
            self._insert(from_ipc(payload))

        if try_oldest(self.set_aside, self._retry, insert, f"the set-aside rows of ingest journal {self.directory}"):
            self._retry_set_aside()

    # -- inserting -----------------------------------------------------------------------------

    def _run(self) -> None:
        _name_native_thread(b"dw-journal")  # its CPU (the insert runs in this thread) is told apart in top -H
        backoff, alone, refusals = 0.0, False, 0
        while True:
            group = self._next_group(backoff, alone)
            if group is None:
                return
            if not group:  # idle, and the set-aside rows are due for a try
                self._probe_set_aside()
                continue
            rows = sum(table.num_rows for _, table, _ in group)
            try:
                self._insert(group[0][1] if len(group) == 1 else pa.concat_tables([table for _, table, _ in group]))
            except Exception as exc:
                journal_inserts.labels(self.table_name, "failed").inc()
                # a group is retried a record at a time; a record alone that the store refuses for what it holds
                # is counted (it stays first in the queue), and once refused so SET_ASIDE_AFTER times its rows are
                # inserted around the ones refused, which are set aside
                refusals = refusals + 1 if len(group) == 1 and refused_for_its_data(exc) else 0
                alone = True
                if refusals >= SET_ASIDE_AFTER and self._insert_around(group[0], exc):
                    backoff, alone, refusals = 0.0, False, 0
                    continue
                backoff = min(MAX_BACKOFF_S, max(0.1, backoff * 2))
                log.error(
                    "inserting %d journaled rows into %s failed (%s); retrying in %.1f s, they stay in the journal",
                    rows,
                    self.table_name,
                    first_line(exc),
                    backoff,
                )
                with self._cond:
                    self._queue.extendleft(reversed(group))  # first again, in the same order
                continue
            backoff, alone, refusals = 0.0, False, 0
            journal_inserts.labels(self.table_name, "ok").inc()
            self._inserted(group, rows)

    def _insert(self, table: pa.Table) -> None:
        with store_lock:
            self.client.insert_arrow(self.table_name, table, settings=coalesced_insert())
        if self._on_inserted is not None:
            try:
                self._on_inserted(table)
            except Exception:  # the rows are in: what watches them must not make the journal insert them again
                log.exception("the hook after inserting %d journaled rows failed", table.num_rows)

    def _insert_around(self, entry: tuple[Path, pa.Table, float], exc: Exception) -> bool:
        """Insert a record the store keeps refusing for what it holds around its refused rows, which are set aside
        (``sinks.store.write_around_refusals``); False when that fails (the record then stays first)."""
        table = entry[1]
        refusal = first_line(exc)

        def put_aside(part: pa.Table) -> bool:
            if not keep_aside(self.set_aside, part, table.num_rows, f"journaled rows of {self.table_name}", refusal):
                return False
            self._retry.start()
            journal_set_aside_rows.labels(self.table_name).inc(part.num_rows)
            self._gauge_set_aside.set(self.set_aside.bytes)
            return True

        try:
            done = write_around_refusals(table, self._insert, put_aside)
        except Exception as failure:
            log.error("inserting a refused record's rows one part at a time failed (%s)", first_line(failure))
            return False
        if done:
            self._inserted([entry], table.num_rows)
        return done

    def _next_group(self, backoff: float, alone: bool = False) -> list[tuple[Path, pa.Table, float]] | None:
        """Tables of one schema to insert together, once the oldest waited ``linger_s`` or enough rows wait (only
        the oldest with ``alone``); None once closing (after a failed insert: at once, the rest stays on disk) and
        drained; an empty list when nothing waits and the set-aside rows are due for a try."""
        with self._cond:
            if backoff and self._cond.wait_for(lambda: self._closing, backoff):
                return None
            while not (self._queue or self._closing):
                remaining = self._retry.remaining()  # None: no try scheduled (only this thread schedules one)
                if remaining is not None and remaining <= 0:
                    return []
                self._cond.wait(remaining)
            if not self._queue:
                return None
            if alone:
                return [self._queue.popleft()]
            deadline = self._queue[0][2] + self.linger_s
            while not self._closing and self._rows < TARGET_ROWS:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            schema = self._queue[0][1].schema
            group, rows, rest = [], 0, collections.deque()
            for entry in self._queue:
                table = entry[1]
                if group and (rows + table.num_rows > MAX_ROWS or not table.schema.equals(schema)):
                    rest.append(entry)
                    continue
                group.append(entry)
                rows += table.num_rows
            self._queue = rest
            return group

    def _inserted(self, group: list[tuple[Path, pa.Table, float]], rows: int) -> None:
        with self._cond:
            for segment, _, _ in group:
                self._outstanding[segment] -= 1
            self._rows -= rows
            self._gauge_rows.set(self._rows)
            self._release_segments()
            self._cond.notify_all()
        self._gauge_bytes.set(self.spool.bytes)

    def _release_segments(self) -> None:
        """Delete the segments whose every table is inserted, the one being appended to included (the next append
        starts a new one): what the journal counts against ``max_bytes`` is only what waits for the store."""
        for segment in [s for s, n in self._outstanding.items() if n <= 0]:
            del self._outstanding[segment]
            try:
                self.spool.remove(segment)
            except OSError as exc:  # kept on disk: inserted again at the next start, stored once (event ids)
                log.warning("ingest journal: %s is inserted but cannot be deleted (%s)", segment, exc)

    # -- stopping ------------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Insert what waits (within ``timeout``), stop the inserter, release the directory; the rest stays on disk."""
        self.wait_empty(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:  # inserted segments are deleted as their last table is inserted (_release_segments)
            self.spool.close()
            self.set_aside.close()
        if self._rows:
            log.warning(
                "ingest journal %s: %d rows were not inserted before shutdown; the next start inserts them",
                self.directory,
                self._rows,
            )
