"""Running a collector: the writer, the capture pipeline, the proxy and the admin port in one process.

The proxy and the admin server share one uvloop event loop in the main thread;
the writer has its own threads. SIGTERM (or SIGINT) stops accepting, lets
in-flight requests finish (up to ``grace_s``), runs the captures still
scheduled, then ``writer.close`` flushes every event to the sink or the spool.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from driftwarden.collector.admin import Admin, Readiness
from driftwarden.collector.config import CollectorConfig
from driftwarden.collector.journal import Journal
from driftwarden.collector.pipeline import EventSink, Pipeline
from driftwarden.collector.proxy import Proxy
from driftwarden.errors import UserError

log = logging.getLogger("driftwarden.collector")


def run(config: CollectorConfig, *, announce: Callable[[str], None] | None = None, grace_s: float = 10.0) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status. ``announce`` gets the "listening" line."""
    store_client = _migrate_embedded_store(config)  # kept referenced: the engine closes with its last client
    writer = _open_writer(config)
    writer.start()
    readiness = Readiness(writer_started=True)
    # The writer (and the capture thread) share the GIL with the event loop: hand it back to the loop
    # after at most 1 ms instead of Python's default 5 ms.
    sys.setswitchinterval(0.001)
    loop = _new_loop()
    journal = open_journal(config)
    if journal is None:
        print(
            "driftwarden collector: no --spool-dir: captured events wait in memory until written, and a kill of "
            "this process loses them; give --spool-dir for the write-ahead journal and the spool",
            file=sys.stderr,
            flush=True,
        )
    try:
        loop.run_until_complete(_serve(config, writer, readiness, announce or _print, grace_s, journal))
    finally:
        loop.close()
        stats = writer.close(timeout=10.0)
        if journal is not None:
            journal.close()  # after the writer: what it acknowledged is released, the rest stays for the next run
        print(
            f"driftwarden collector: stopped; events submitted {stats.submitted}, written {stats.written}, "
            f"spooled {stats.spooled}, dropped {sum(stats.dropped.values())}",
            file=sys.stderr,
            flush=True,
        )
    del store_client
    return 0


def _open_writer(config: CollectorConfig):
    """The writer of the collector's events (not started), as the configuration says."""
    from driftwarden.collector.writer import open_writer

    return open_writer(
        model=config.model,
        store=config.store,
        hub=config.hub,
        spool_dir=config.spool_dir,
        batch_events=config.batch_events,
        flush_interval_ms=config.flush_interval_ms,
    )


def _migrate_embedded_store(config: CollectorConfig):
    """An embedded store belongs to this process alone, so the collector brings its schema up to date.

    A ClickHouse server's schema is the operator's (``driftwarden migrate``) and is not touched. The
    store keeps the retention it has: a collector's start never resets a TTL its operator set.
    """
    if config.hub:
        return None
    from driftwarden import storage
    from driftwarden.storage.url import parse, resolve

    if not parse(resolve(config.store)).embedded:
        return None
    return storage.open_store(config.store)


class Collector:
    """The proxy and the admin server of one collector, on the running event loop.

    ``run`` uses it under signal handling; tests start it on a loop of their
    own. The writer is the caller's: started before ``start`` and closed after
    ``stop``.
    """

    def __init__(
        self,
        config: CollectorConfig,
        writer: EventSink,
        readiness: Readiness | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.config = config
        self.readiness = readiness or Readiness(writer_started=True)
        self.pipeline = Pipeline(config, writer)
        self.journal = journal
        if journal is not None:
            writer.on_release = journal.release  # type: ignore[attr-defined]
        self.proxy = Proxy(config, self.pipeline, journal)
        self.admin = Admin(self.readiness, config.upstream) if config.admin_address else None
        self.address: tuple[str, int] | None = None
        self.admin_address: tuple[str, int] | None = None

    async def start(self) -> str:
        """Capture what a previous run journaled and did not deliver, bind the listeners; returns the listening line."""
        if self.journal is not None:
            recovered = self.journal.recover()
            for ex in recovered:
                self.pipeline.process(ex)
        self.address = await self.proxy.start()
        self.readiness.listener_up = True
        line = f"driftwarden collector: listening on http://{_hostport(*self.address)} -> {self.config.upstream}"
        if self.admin is not None and self.config.admin_address is not None:
            self.admin_address = await self.admin.start(*self.config.admin_address)
            line += f"; admin on http://{_hostport(*self.admin_address)}"
        return line + f"; model {self.config.model}"

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting, finish in-flight requests and the captures they scheduled."""
        self.readiness.shutting_down = True
        await self.proxy.stop(grace_s)
        await asyncio.sleep(0)  # captures scheduled with call_soon run before the writer is closed
        if self.admin is not None:
            await self.admin.stop()


def open_journal(config: CollectorConfig) -> Journal | None:
    """The write-ahead journal in ``spool_dir/journal`` (see ``collector.journal``); None without a spool directory.

    Raises :class:`driftwarden.errors.UserError` when the directory cannot be used.
    """
    if not config.spool_dir:
        return None
    from driftwarden.collector.journal import JournalError

    try:
        return Journal(
            Path(config.spool_dir) / "journal", fsync=config.fsync, fsync_interval_ms=config.fsync_interval_ms
        )
    except JournalError as exc:
        raise UserError(str(exc.strerror or exc)) from None


async def _serve(
    config: CollectorConfig, writer: EventSink, readiness: Readiness, announce, grace_s: float, journal
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    collector = Collector(config, writer, readiness, journal)
    announce(await collector.start())
    # Everything allocated so far lives as long as the process: keep it out of the cyclic collector's full
    # passes, whose pauses would otherwise land on the requests of that moment.
    gc.freeze()
    await stop.wait()
    await collector.stop(grace_s)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _print(line: str) -> None:
    print(line, flush=True)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # uvloop is an optional speed-up; asyncio's loop works the same
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
