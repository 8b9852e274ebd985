"""Test helpers: a real hub (``driftwarden api``) in a subprocess owning its own embedded store.

The test process's engine is bound to the session's store directory, so a hub's store is
read by another short-lived subprocess (:func:`query_store`) after the hub stopped.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Hub:
    """``driftwarden api --listen 127.0.0.1:PORT --store chdb://DIR`` that can be stopped and started again."""

    def __init__(self, store_dir: Path, port: int | None = None) -> None:
        self.store_url = f"chdb://{store_dir}"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Hub:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "driftwarden",
                "api",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--store",
                self.store_url,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.process.kill()
            raise RuntimeError(f"the hub did not start: {line}{self.process.stderr.read()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("the hub did not answer /healthz")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def query_store(store_url: str, sql: str) -> list:
    """Rows of ``sql`` on a store this process cannot open (its engine is bound elsewhere)."""
    code = (
        "import json, sys, storage\n"
        "rows = storage.connect(sys.argv[1]).query(sys.argv[2]).result_rows\n"
        "print(json.dumps([list(r) for r in rows], default=str))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, store_url, sql],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout)


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return bool(value)
        time.sleep(interval)
