"""Serving the demo's model over the Open Inference Protocol (KServe v2).

First choice: MLServer with its scikit-learn runtime, started as ``mlserver start DIR``
on free loopback ports (HTTP, gRPC and its metrics port; parallel workers off, so it
starts in seconds). When MLServer is not installed, exits, or is not ready in time, a
built-in server answers the same ``/v2/models/{name}/infer`` requests with the same
estimator, and the reason is printed: the demo goes on either way.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

MLSERVER_READY_TIMEOUT_S = 90.0


class ModelServer:
    """A running model server: ``url`` is its base URL, ``kind`` says which one it is."""

    kind = "none"
    url = ""
    log_path: Path | None = None

    def stop(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class MLServerProcess(ModelServer):
    """``mlserver start DIR`` in a subprocess of its own process group, on loopback only."""

    kind = "MLServer"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.process: subprocess.Popen | None = None
        self.http_port = _free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log_path = directory / "mlserver.log"

    def launch(self) -> None:
        """Write ``settings.json`` and start the server; :meth:`wait_ready` waits for it."""
        executable = shutil.which("mlserver", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        if executable is None:
            raise RuntimeError("the `mlserver` command is not installed")
        settings = {
            "host": "127.0.0.1",
            "http_port": self.http_port,
            "grpc_port": _free_port(),
            "metrics_port": _free_port(),
            "parallel_workers": 0,  # inference in the server process: no worker pool to start
            "debug": False,
            "metrics_dir": str(self.directory / ".metrics"),
            "environments_dir": str(self.directory / ".envs"),
        }
        (self.directory / "settings.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child writes to it until it exits
        env = {**os.environ, "MLSERVER_METRICS_DIR": str(self.directory / ".metrics")}
        self.process = subprocess.Popen(
            [executable, "start", str(self.directory)],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal goes to the demo, which stops MLServer itself
            env=env,
        )
        log.close()

    def wait_ready(self, model: str, timeout_s: float = MLSERVER_READY_TIMEOUT_S) -> None:
        """Return when ``model`` answers ready; RuntimeError with the reason when it will not."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"MLServer exited with status {self.process.returncode}: {self._last_log_line()}")
            try:
                if httpx.get(f"{self.url}/v2/models/{model}/ready", timeout=1, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"MLServer was not ready within {timeout_s:.0f} s: {self._last_log_line()}")

    def _last_log_line(self) -> str:
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        return lines[-1][:300] if lines else "no output"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


class BuiltinServer(ModelServer):
    """A minimal Open Inference Protocol server for one scikit-learn estimator (aiohttp, own thread).

    It implements what the demo uses: ``GET /v2/health/ready``, ``GET /v2/models/{name}/ready``
    and ``POST /v2/models/{name}/infer`` with one FP64 tensor of shape ``[rows, features]``,
    answering an FP64 output ``predict`` of shape ``[rows, 1]`` as MLServer does.
    """

    kind = "built-in Open Inference Protocol server"

    def __init__(self, estimator: Any, model: str, version: str) -> None:
        self.estimator = estimator
        self.model = model
        self.version = version
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._runner = None

    def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/v2/health/ready", self._ready)
        app.router.add_get("/v2/models/{name}/ready", self._ready)
        app.router.add_post("/v2/models/{name}/infer", self._infer)
        started = threading.Event()
        port: list[int] = []

        async def bring_up() -> None:
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            port.append(site._server.sockets[0].getsockname()[1])

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(bring_up())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="dw-demo-model", daemon=True)
        self._thread.start()
        started.wait(10)
        self.url = f"http://127.0.0.1:{port[0]}"

    async def _ready(self, request):
        from aiohttp import web

        name = request.match_info.get("name")
        return web.json_response({}, status=200 if name in (None, self.model) else 404)

    async def _infer(self, request):
        from aiohttp import web

        if request.match_info["name"] != self.model:
            return web.json_response({"error": f"Model {request.match_info['name']} not found"}, status=404)
        try:
            body = await request.json()
            tensor = body["inputs"][0]
            x = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        y = self.estimator.predict(x)
        answer = {
            "model_name": self.model,
            "model_version": self.version,
            "id": body.get("id") or "",
            "parameters": {},
            "outputs": [{"name": "predict", "shape": [len(y), 1], "datatype": "FP64", "data": y.tolist()}],
        }
        return web.json_response(answer)

    def stop(self) -> None:
        if self._thread is None:
            return

        async def wind_down() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(wind_down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def _free_port() -> int:
    """A free loopback port (MLServer takes port numbers, not sockets)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
