"""The store sink: one ``insert_arrow`` into ``inferences`` per batch, through clickhouse-connect."""

from __future__ import annotations

import threading

import pyarrow as pa

TABLE = "inferences"
# ``optimize_on_insert`` (on by default) would run ReplacingMergeTree's merge logic over every inserted block,
# sorting and collapsing rows by key before the part is written. A batch's event ids are unique, and FINAL
# readers collapse retried batches anyway: off, the insert costs about 0.6x the CPU (bench/capture_throughput.py).
INSERT_SETTINGS = {"optimize_on_insert": 0}


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
