"""The admin port: ``/metrics`` (Prometheus), ``/healthz`` (liveness) and ``/readyz`` (readiness).

* ``/healthz`` answers 200 while the process's event loop runs.
* ``/readyz`` answers 200 once the proxy listener is bound and the writer has
  started, 503 before (and while shutting down). It does not require the
  upstream to be reachable: the model server has its own readiness probe, and a
  collector that went unready whenever the model restarts would take the
  whole pod out of rotation for longer than the model does. The JSON body
  reports ``upstream_reachable`` (a TCP connect, at most once a second) for
  people and dashboards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from driftwarden.collector.metrics import REGISTRY
from driftwarden.collector.protocol_log import ProtocolLog

_log = logging.getLogger("driftwarden.collector")


@dataclass
class Readiness:
    """What /readyz reports; flipped by the service as it starts and stops."""

    listener_up: bool = False
    writer_started: bool = False
    shutting_down: bool = False

    @property
    def ready(self) -> bool:
        return self.listener_up and self.writer_started and not self.shutting_down


class Admin:
    """The admin HTTP server."""

    def __init__(self, readiness: Readiness, upstream: str) -> None:
        self.readiness = readiness
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80))
        self._checked_at = 0.0
        self._reachable = False
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        return app

    async def start(self, host: str, port: int) -> tuple[str, int]:
        # Malformed HTTP on the admin port: one rate-limited line, no traceback (as on the proxy port).
        self._runner = web.AppRunner(self.app(), access_log=None, logger=ProtocolLog(_log))
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server  # the bound socket, for port 0
        sock = server.sockets[0] if server is not None and server.sockets else None
        self.address = (sock.getsockname()[0], sock.getsockname()[1]) if sock else (host, port)
        return self.address

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        r = self.readiness
        body = {
            "ready": r.ready,
            "listener_up": r.listener_up,
            "writer_started": r.writer_started,
            "shutting_down": r.shutting_down,
            "upstream_reachable": await self._upstream_reachable(),
        }
        return web.Response(text=json.dumps(body), status=200 if r.ready else 503, content_type="application/json")

    async def _upstream_reachable(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at < 1.0:
            return self._reachable
        self._checked_at = now
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(*self._upstream), timeout=1.0)
            writer.close()
            self._reachable = True
        except (OSError, TimeoutError):
            self._reachable = False
        return self._reachable
