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


class BodyLimitProxy:
    """Debian's nginx as a reverse proxy to ``upstream`` with ``client_max_body_size limit`` (an ingress's limit; 1 MiB
    by default), logging the status of every answer."""

    CONF = """
{user}worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    log_format statuses '$status';
    access_log {dir}/access.log statuses;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size {limit};
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass {upstream}; }}
    }}
}}
"""

    def __init__(self, upstream: str, directory: Path, limit: str) -> None:
        import grp
        import pwd

        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstream = upstream
        directory.mkdir(parents=True, exist_ok=True)
        # started by root, nginx's workers would be nobody, who cannot write the temporary files of large bodies
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
        self._user = user if os.geteuid() == 0 else ""
        self._write_conf(limit)
        self.process: subprocess.Popen | None = None

    def _write_conf(self, limit: str) -> None:
        conf = self.CONF.format(
            user=self._user, dir=self.directory, port=self.port, limit=limit, upstream=self.upstream
        )
        (self.directory / "nginx.conf").write_text(conf)

    def change_limit(self, limit: str) -> None:
        """Restart with ``client_max_body_size limit`` on the same port (an ingress reconfigured)."""
        self.stop()
        self._write_conf(limit)
        self.start()

    def start(self) -> BodyLimitProxy:
        from driftwarden.collector.edge.supervisor import find_nginx

        self.process = subprocess.Popen(
            [find_nginx(), "-c", str(self.directory / "nginx.conf"), "-p", str(self.directory), "-g", "daemon off;"]
        )
        if not wait_for(lambda: _listening(self.port), timeout=20):
            raise RuntimeError(f"nginx did not start: {(self.directory / 'error.log').read_text()}")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)
            self.process = None

    def statuses(self) -> list[str]:
        """The status of every answer, in order."""
        return (self.directory / "access.log").read_text().split()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


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
