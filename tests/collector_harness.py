"""Running real collectors and real upstream servers from the collector tests (not a fixture module).

* :class:`LoopThread` runs an event loop in a daemon thread, for aiohttp servers
  written in a test (an OpenAI-compatible upstream, an echo server) and for an
  in-process collector;
* :class:`InProcessCollector` is the collector's own ``Collector`` (proxy,
  pipeline, admin) with a real writer into a store database of the test
  session's embedded engine, so a test can query what it wrote;
* :class:`CollectorProcess` is ``python -m driftwarden collector`` as a
  subprocess that owns its embedded store; :func:`query_store` reads that store
  from another subprocess once the collector has exited.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

from driftwarden import storage
from driftwarden.collector.config import CollectorConfig
from driftwarden.collector.service import Collector
from driftwarden.collector.writer import open_writer

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on http://([\d.]+):(\d+) .*?(?:; admin on http://([\d.]+):(\d+))?; model ")


class LoopThread:
    """An event loop running in a daemon thread; ``run(coro)`` executes a coroutine on it."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


async def _start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


class AppServer:
    """A real aiohttp application on 127.0.0.1:<free port>, in its own loop thread."""

    def __init__(self, app: web.Application) -> None:
        self.thread = LoopThread()
        self._runner, self.port = self.thread.run(_start_app(app))
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.thread.run(self._runner.cleanup())
        self.thread.close()


def module_store_url(engine_dir: Path, name: str) -> str:
    """A fresh, migrated database in the session's embedded engine, for one test module."""
    url = f"chdb://{engine_dir}?database={name}"
    storage.migrate(storage.connect(url, create_database=True), retention_days=30)
    return url


class InProcessCollector:
    """A collector in this process: real proxy, pipeline, admin and writer; events land in ``store_url``."""

    def __init__(self, store_url: str, **config: Any) -> None:
        config.setdefault("listen", "127.0.0.1:0")
        config.setdefault("admin_listen", "127.0.0.1:0")
        self.config = CollectorConfig(store=store_url, **config)
        self.writer = open_writer(model=self.config.model, store=store_url, batch_events=1000, flush_interval_ms=50)
        self.writer.start()
        self.thread = LoopThread()
        self.collector = Collector(self.config, self.writer)
        self.thread.run(self.collector.start())
        host, port = self.collector.address  # type: ignore[misc]
        self.url = f"http://{host}:{port}"
        ahost, aport = self.collector.admin_address  # type: ignore[misc]
        self.admin_url = f"http://{ahost}:{aport}"

    def close(self) -> None:
        try:
            self.thread.run(self.collector.stop(2.0))
        finally:
            self.thread.close()
            self.writer.close(timeout=10.0)


class InProcessNginxCollector:
    """The nginx engine in this process: a real nginx (its own process), the capture log read by the real
    capture thread, pipeline and writer into ``store_url``; the admin port on a loop thread."""

    def __init__(self, store_url: str, spool_dir: str | Path, **config: Any) -> None:
        from driftwarden.collector.admin import Admin, Readiness
        from driftwarden.collector.edge.engine import NginxEngine

        config.setdefault("listen", "127.0.0.1:0")
        config.setdefault("admin_listen", "127.0.0.1:0")
        self.config = CollectorConfig(store=store_url, engine="nginx", spool_dir=str(spool_dir), **config)
        self.writer = open_writer(model=self.config.model, store=store_url, batch_events=1000, flush_interval_ms=50)
        self.engine = NginxEngine(self.config, self.writer)
        self.writer.start()
        self.engine.start()
        host, port = self.engine.address
        self.url = f"http://{host}:{port}"
        self.thread = LoopThread()
        self.admin = Admin(Readiness(listener_up=True, writer_started=True), self.config.upstream)
        ahost, aport = self.thread.run(self.admin.start(*self.config.admin_address))  # type: ignore[misc]
        self.admin_url = f"http://{ahost}:{aport}"

    def close(self) -> None:
        try:
            self.thread.run(self.admin.stop())
        finally:
            self.thread.close()
            self.engine.stop(2.0)
            self.writer.close(timeout=10.0)
            self.engine.close()


def wait_for(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 15.0) -> Any:
    """Call ``fetch`` until ``done(result)`` or the timeout; returns the last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = fetch()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


class CollectorProcess:
    """``python -m driftwarden collector ARGS --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0`` in a subprocess."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, startup_timeout: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "driftwarden", "collector", *args]
        cmd += ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = _read_line(self.proc, startup_timeout)
        self.line = line
        match = _LISTENING.search(line or "")
        if not match:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise RuntimeError(f"collector did not start: {line!r}\n{err}")
        self.url = f"http://{match.group(1)}:{match.group(2)}"
        self.admin_url = f"http://{match.group(3)}:{match.group(4)}"

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye."""
        self.proc.kill()
        self.proc.communicate(timeout=30)

    def stop(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGTERM, wait; returns (exit status, stderr)."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err


def _read_line(proc: subprocess.Popen, timeout: float) -> str | None:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return box[0] if box else None


def query_store(store_dir: Path, sql: str) -> list[dict[str, Any]]:
    """Rows of ``sql`` on the embedded store at ``store_dir``, read by a subprocess (it owns the engine)."""
    code = (
        "import json, sys\n"
        "from driftwarden import storage\n"
        "c = storage.connect(sys.argv[1])\n"
        "r = c.query(sys.argv[2])\n"
        "print(json.dumps([dict(zip(r.column_names, row)) for row in r.result_rows], default=str))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, f"chdb://{store_dir}", sql],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])
