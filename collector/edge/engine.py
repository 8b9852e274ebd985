"""``driftwarden collector --engine nginx``: nginx answers, this process captures from its log.

Threads of the collector process: the main thread runs the admin port (``/metrics``,
``/healthz``, ``/readyz``) and the supervision of nginx on an event loop; the *capture* thread
reads the capture log and runs the same :class:`~driftwarden.collector.pipeline.Pipeline` the
Python proxy uses (receivers, hashes, sampling, redaction) into the same writer; the writer
has its threads. The capture thread waits while the writer holds more than
``MAX_PENDING_LINES`` unacknowledged lines (the log on disk is the buffer: nothing is dropped
for memory).

Start: the state directory ``<spool_dir>/nginx`` gets a fresh ``nginx.conf`` and ``capture.js``;
an nginx still running there from a previous collector (killed) is adopted and reloaded, else
one is started; lines a previous run did not acknowledge are captured first. Stop (SIGTERM or
SIGINT): ``/readyz`` turns 503, nginx stops gracefully (in-flight requests finish, up to
``grace_s``), the capture thread reads the log to its end, the writer flushes, the checkpoint
moves past everything written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from driftwarden.collector import metrics
from driftwarden.collector.admin import Admin, Readiness
from driftwarden.collector.config import CollectorConfig
from driftwarden.collector.edge.capture_log import CaptureLog, CaptureLogError, decode_line
from driftwarden.collector.edge.nginx_conf import render
from driftwarden.collector.edge.supervisor import Nginx, find_nginx
from driftwarden.collector.pipeline import Pipeline
from driftwarden.errors import UserError

log = logging.getLogger("driftwarden.collector")

MAX_PENDING_LINES = 50_000
POLL_S = 0.005  # the capture thread's sleep when the log has nothing new
SUPERVISE_S = 1.0


def state_dir(config: CollectorConfig) -> Path:
    assert config.spool_dir
    return Path(config.spool_dir) / "nginx"


class Capturer:
    """The capture thread: capture-log lines -> exchanges -> pipeline -> writer (tickets = line numbers)."""

    def __init__(self, config: CollectorConfig, capture_log: CaptureLog, pipeline: Pipeline) -> None:
        self.config = config
        self.log = capture_log
        self.pipeline = pipeline
        self.lines = 0
        self._stop = threading.Event()
        self._drain = False
        self._thread = threading.Thread(target=self._run, name="dw-nginx-capture", daemon=True)
        model, version = config.model, config.model_version
        self._observe = metrics.ExchangeMetrics(model, version).observe
        self._m_errors = metrics.events_dropped.labels(model, "capture_error")

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, drain: bool, timeout: float = 60.0) -> None:
        """Stop reading; with ``drain``, read the log to its end first (nginx must have stopped)."""
        self._drain = drain
        self._stop.set()
        self._thread.join(timeout)

    def capture_once(self, max_lines: int = 1000) -> int:
        """Read and capture up to ``max_lines`` lines; returns how many were read."""
        batch = self.log.read(max_lines)
        cfg = self.config
        for seq, line in batch:
            try:
                ex = decode_line(
                    line, default_tenant=cfg.default_tenant, trust_event_headers=cfg.trust_client_event_headers
                )
            except (ValueError, KeyError, TypeError) as exc:
                self._m_errors.inc()
                log.error("capture log line %d cannot be read (%s): skipped", seq, exc)
                self.log.release([seq])
                continue
            ex.journal_seq = seq
            self._observe(ex)
            self.pipeline.process(ex)
        self.lines += len(batch)
        return len(batch)

    def _run(self) -> None:
        while True:
            if self._stop.is_set() and not self._drain:
                return
            if self.log.pending > MAX_PENDING_LINES:
                time.sleep(POLL_S)
                continue
            try:
                got = self.capture_once()
            except Exception:  # keep capturing: one bad moment must not end capture for good
                log.exception("reading the capture log failed; retrying")
                time.sleep(0.5)
                continue
            if not got:
                if self._stop.is_set():
                    return  # drained
                time.sleep(POLL_S)


def yield_cpu(nice: int, idle: bool) -> None:
    """Lower this process's CPU priority below nginx's, so that answering comes first and capture catches up.

    nginx is started in this process's session, hence in the same scheduling autogroup
    (``/proc/sys/kernel/sched_autogroup_enabled``), where nice levels rank its tasks against these:
    capture yields to nginx, and the pair competes with the rest of the machine as one group.
    With ``idle``, the threads also take Linux's ``SCHED_IDLE`` policy: a task of any other policy that
    wakes up (an nginx worker with a request, the model server) preempts them at once, where a nice
    level only shrinks their share, and a capture burst holding a core for a few milliseconds is what
    makes nginx's slowest answers slow (BENCHMARKS.md: p99 added at 2,000 req/s, 2.8 -> 0.9 ms). They
    still run on an idle core and, at a small share, on a busy one; the log on disk holds what they
    have not read yet (``driftwarden_collector_capture_backlog_bytes``).
    Linux keeps both per thread: every thread of the process gets them (the capture and writer
    threads already run; threads they start later inherit them).
    """
    level = os.getpriority(os.PRIO_PROCESS, 0) + nice
    try:
        tasks = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tasks = [0]
    for tid in tasks:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(level, 19))
            if idle:
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass


def _port(config: CollectorConfig) -> int:
    host, port = config.listen_address
    if port:
        return port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:  # port 0: a free port now (nginx needs a number in its configuration)
        s.bind((host, 0))
        return s.getsockname()[1]


class NginxEngine:
    """nginx, the capture log and the capture thread of one collector; the writer is the caller's.

    ``run`` uses it under signal handling; tests start it in their own process.
    """

    def __init__(self, config: CollectorConfig, writer, *, binary: str | None = None) -> None:
        self.config = config
        self.writer = writer
        binary = find_nginx(binary)
        directory = state_dir(config)
        self.rendered = render(config, directory, _port(config), workers=config.nginx_workers)
        self.nginx = Nginx(self.rendered, binary)
        try:
            self.capture_log = CaptureLog(directory, reopen=self.nginx.reopen_logs)
        except CaptureLogError as exc:
            raise UserError(str(exc.strerror or exc)) from None
        writer.on_release = self.capture_log.release
        self.pipeline = Pipeline(config, writer)
        self.capturer = Capturer(config, self.capture_log, self.pipeline)
        metrics.capture_backlog_bytes.labels(config.model).set_function(self.capture_log.backlog_bytes)
        self.how = ""

    @property
    def address(self) -> tuple[str, int]:
        return self.config.listen_address[0], self.rendered.port

    def start(self) -> str:
        """Start (or adopt) nginx and the capture thread; returns "started" or "adopted"."""
        try:
            self.how = self.nginx.start_or_adopt()
        except BaseException:
            self.capture_log.close()
            raise
        self.capturer.start()
        return self.how

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop nginx gracefully, then capture what it logged to the end (the writer is closed after this)."""
        try:
            self.nginx.stop(grace_s)
        finally:
            self.capturer.stop(drain=True)

    def close(self) -> None:
        """After the writer's close: the checkpoint moves past what it acknowledged."""
        self.capture_log.close()


def run(config: CollectorConfig, *, announce: Callable[[str], None] | None = None, grace_s: float = 10.0) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    from driftwarden.collector.service import _migrate_embedded_store, _new_loop, _open_writer

    find_nginx()  # a clear message before anything else starts
    store_client = _migrate_embedded_store(config)
    writer = _open_writer(config)
    try:
        engine = NginxEngine(config, writer)
    except BaseException:
        writer.close(timeout=10.0)
        raise
    writer.start()
    readiness = Readiness(writer_started=True)
    sys.setswitchinterval(0.001)
    try:
        engine.start()
        if config.capture_nice or config.capture_idle:
            yield_cpu(config.capture_nice, config.capture_idle)  # after nginx started: it keeps its priority
        loop = _new_loop()
        try:
            loop.run_until_complete(_serve(config, engine.nginx, readiness, announce or _print, engine.how))
        finally:
            loop.close()
        readiness.shutting_down = True
    finally:
        engine.stop(grace_s)
        stats = writer.close(timeout=10.0)
        pending = engine.capture_log.pending
        engine.close()
        print(
            f"driftwarden collector: stopped (nginx engine); lines captured {engine.capturer.lines}, events "
            f"submitted {stats.submitted}, written {stats.written}, spooled {stats.spooled}, dropped "
            f"{sum(stats.dropped.values())}, lines left for the next run {pending}",
            file=sys.stderr,
            flush=True,
        )
    del store_client
    return 0


async def _serve(config: CollectorConfig, nginx: Nginx, readiness: Readiness, announce, how: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    admin = Admin(readiness, config.upstream) if config.admin_address else None
    readiness.listener_up = True
    host, _ = config.listen_address
    line = (
        f"driftwarden collector: listening on http://{_hostport(host, nginx.rendered.port)} -> {config.upstream} "
        f"(nginx engine, nginx {how}, pid {nginx.pid})"
    )
    if admin is not None and config.admin_address is not None:
        admin_address = await admin.start(*config.admin_address)
        line += f"; admin on http://{_hostport(*admin_address)}"
    announce(line + f"; model {config.model}")
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), SUPERVISE_S)
            except TimeoutError:
                await loop.run_in_executor(None, nginx.check)
                readiness.listener_up = nginx.alive()
    finally:
        readiness.shutting_down = True
        if admin is not None:
            await admin.stop()


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _print(line: str) -> None:
    print(line, flush=True)
