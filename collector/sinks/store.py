"""The store sink: one ``insert_arrow`` into ``inferences`` per batch, through clickhouse-connect."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

import pyarrow as pa

from driftwarden.collector.arrow import to_ipc
from driftwarden.collector.sinks import RejectedBatch
from driftwarden.collector.spool import SET_ASIDE_AFTER, SET_ASIDE_RETRY_S, Spool

log = logging.getLogger(__name__)

TABLE = "inferences"
# ``optimize_on_insert`` (on by default) would run ReplacingMergeTree's merge logic over every inserted block,
# sorting and collapsing rows by key before the part is written. A batch's event ids are unique, and FINAL
# readers collapse retried batches anyway: off, the insert costs about 0.6x the CPU (bench/capture_throughput.py).
INSERT_SETTINGS = {"optimize_on_insert": 0}

# ClickHouse's error codes (src/Common/ErrorCodes.cpp) for an insert refused because of what its rows hold: inserting
# the same rows again fails again until the table or the rows change. The store's state (away, full, out of memory,
# too many parts, no such table, no access) is not among them: those pass once the store is fixed.
DATA_ERRORS = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        8,  # THERE_IS_NO_COLUMN
        10,  # NOT_FOUND_COLUMN_IN_BLOCK
        16,  # NO_SUCH_COLUMN_IN_TABLE
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        41,  # CANNOT_PARSE_DATETIME
        43,  # ILLEGAL_TYPE_OF_ARGUMENT
        44,  # ILLEGAL_COLUMN
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        128,  # TOO_LARGE_ARRAY_SIZE
        131,  # TOO_LARGE_STRING_SIZE
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        469,  # VIOLATED_CONSTRAINT
    }
)
_ERROR_CODE = re.compile(r"\bCode: (\d+)\.")


def write_around_refusals(
    table: pa.Table,
    write: Callable[[pa.Table], None],
    set_aside: Callable[[pa.Table], bool],
    max_writes: int = 64,
) -> bool:
    """Write ``table``, which the store refused as a whole for what it holds, around the rows it refuses: in halves
    with ``write``, depth first, splitting each refused half again down to single rows, for at most ``max_writes``
    writes; then the refused rows (single ones, or the pieces the budget left unsplit), in their order, go to
    ``set_aside`` as one table, which returns whether it kept them. One bad row among 50,000 costs 32 writes; rows
    that are all refused (a column the table no longer has) cost ``max_writes`` failed writes. A write that fails for
    another reason (the store went away) raises: the caller retries the whole table later, and the rows written twice
    are stored once (event ids)."""
    refused: list[pa.Table] = []
    budget = max_writes

    def around(piece: pa.Table) -> None:
        nonlocal budget
        if piece.num_rows == 1 or budget < 1:
            refused.append(piece)
            return
        half = piece.num_rows // 2
        for part in (piece.slice(0, half), piece.slice(half)):
            if budget < 1:
                refused.append(part)
                continue
            budget -= 1
            try:
                write(part)
            except Exception as exc:
                if not refused_for_its_data(exc):
                    raise
                around(part)

    around(table)
    return set_aside(pa.concat_tables(refused)) if refused else True


def keep_aside(spool: Spool, part: pa.Table, of: int, what: str, refusal: str, by: str = "store") -> bool:
    """Append ``part`` (``fsync``'d) to the set-aside ``spool`` and log how many of ``of`` rows ``by`` (the sink
    that refused them: ``store`` or ``hub``) refused, why, where and what to do; False (logged too) when the spool
    has no room or its disk fails: the rows then stay first, retried."""
    if not spool.append(to_ipc(part)):
        log.error(
            "%d %s refused by the %s (%s) cannot be set aside: %s is full or its disk fails; they stay first",
            part.num_rows,
            what,
            by,
            refusal,
            spool.directory,
        )
        return False
    log.error(
        "the %s refused %d of %d %s %d times for what they hold (%s): set aside in %s, the others are written. "
        "Fix what the message names (%s): set-aside rows are tried again while running (after %.0f s, then twice as "
        "long after each refusal) and at every start",
        by,
        part.num_rows,
        of,
        what,
        SET_ASIDE_AFTER,
        refusal,
        spool.directory,
        _FIXES.get(by, _FIXES["store"]),
        SET_ASIDE_RETRY_S,
    )
    return True


_FIXES = {
    "store": "`driftwarden migrate`, a column or constraint changed by hand",
    "hub": "a hub older than this collector: upgrade it; a value its checks refuse",
}


def refused_for_its_data(exc: BaseException | None) -> bool:
    """Whether the store refused an insert for what its rows hold (a column the table does not have, a value it
    cannot parse or convert: :data:`DATA_ERRORS`), as the ClickHouse message in ``exc`` says, embedded or server;
    or a sink's destination refused the batch's content (:class:`~driftwarden.collector.sinks.RejectedBatch`: a
    hub's 400, 413, 415 or 422)."""
    if isinstance(exc, RejectedBatch):
        return True
    found = _ERROR_CODE.search(str(exc))
    return found is not None and int(found.group(1)) in DATA_ERRORS


class StoreSink:
    """Writes batches into the store at ``url`` (``chdb://`` embedded or a ClickHouse server).

    The connection is opened on the first write, not at construction, so a
    collector starts (and spools) while its ClickHouse server is still down; a
    failed write drops the connection and the next one reconnects.
    Thread-safe: writes are serialised (clickhouse-connect sessions refuse
    concurrent queries).
    """

    name = "store"
    # A writer with a backlog sends it in inserts of whole batches up to this many events: an insert into the
    # embedded store costs a fixed ~8-10 ms of CPU (a new part of the 58-column table) plus ~1.5 µs per event,
    # and every part is merged later at a cost per part, so fewer, larger inserts cost less per event
    # (BENCHMARKS.md, capture throughput 2026-12-02 evening).
    max_insert_events = 50_000

    def __init__(self, url: str | None, *, client=None, timeout_s: float = 30.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._client = client
        self._owned = client is None
        self._lock = threading.Lock()

    def write(self, table: pa.Table) -> None:
        with self._lock:
            client = self._connect()
            try:
                client.insert_arrow(TABLE, table, settings=INSERT_SETTINGS)
            except Exception:
                if self._owned and not _embedded(self.url):
                    self._client = None
                raise

    def _connect(self):
        if self._client is None:
            from driftwarden import storage

            client = storage.connect(self.url)
            _bound_write_time(client, self.timeout_s)
            self._client = client
        return self._client

    def close(self) -> None:
        with self._lock:
            if self._owned and self._client is not None and not _embedded(self.url):
                self._client.close()
            self._client = None


def _bound_write_time(client, timeout_s: float) -> None:
    """A write to a hung server must fail in bounded time so that its batch goes to the spool.

    storage.connect gives server clients a 300 s read timeout (right for queries, too long
    for the writer); clickhouse-connect 1.x keeps it on its HTTP backend. The embedded
    engine has no network to hang on and no such attribute.
    """
    backend = getattr(client, "_backend", None)
    if backend is not None and hasattr(backend, "timeout"):
        from urllib3.util import Timeout

        backend.timeout = Timeout(connect=5, read=timeout_s)


def _embedded(url: str | None) -> bool:
    from driftwarden.storage.url import parse, resolve

    return parse(resolve(url)).embedded
