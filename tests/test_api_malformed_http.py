"""Malformed HTTP at the api: answered 400, logged as one line per request (rate-limited), never a traceback.

Raw bytes over a socket against a real ``driftwarden api`` process (uvicorn with the parser it
picks: httptools when installed), then the same requests against uvicorn's h11 parser in this
process; the rate limit on its own with a short interval.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from driftwarden.malformed_http import DEFAULT_BURST, MalformedRequestLog, protocol_class

ROOT = Path(__file__).resolve().parent.parent
MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX\x00Y: z\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    b"GET /models/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(64)),  # a TLS ClientHello on a plain port
    b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
]
TRACEBACK = re.compile(r"Traceback|^\s+File \"", re.MULTILINE)


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; the response's head (status line and headers), or b''."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):  # answered and closed before all was sent
            pass
        received = b""
        while b"\r\n\r\n" not in received:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
    return received


def status_of(response: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", response)
    return int(match.group(1)) if match else None


@pytest.fixture
def api_process(tmp_path):
    """A real ``driftwarden api`` on a free port over its own embedded store; yields (port, stderr reader)."""
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "driftwarden", "api", "--listen", "127.0.0.1:0", "--store", f"chdb://{tmp_path}/s"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")},
        )
    try:
        line = process.stdout.readline()
        match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        assert match, f"the api did not start: {line}{stderr_path.read_text()}"
        port = int(match.group(1))
        deadline = time.monotonic() + 60
        while httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the api did not answer /healthz"
            time.sleep(0.1)
        yield port, process, stderr_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.timeout(180)
def test_the_api_answers_malformed_requests_400_and_logs_one_line_each_without_traceback(api_process):
    port, process, stderr_path = api_process
    started = time.monotonic()
    for data in MALFORMED:
        response = exchange(port, data)
        assert status_of(response) == 400, (data[:60], response[:200])
    # the service is unharmed: valid requests are answered as before
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json() == {"status": "ok"}
    assert httpx.get(f"http://127.0.0.1:{port}/api/v1/models", timeout=10).status_code == 401
    elapsed = time.monotonic() - started
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    log = stderr_path.read_text(encoding="utf-8")
    assert not TRACEBACK.search(log), log
    assert "Invalid HTTP request received" not in log  # uvicorn's line is replaced by ours
    lines = re.findall(r"^.*malformed HTTP request.*$", log, re.MULTILINE)
    windows = int(elapsed // 10) + 1  # the limit counts per 10 s window
    assert 1 <= len(lines) <= min(len(MALFORMED), DEFAULT_BURST * windows), log
    assert all(re.search(r"malformed HTTP request from 127\.0\.0\.1:\d+ answered 400", line) for line in lines)


@pytest.mark.timeout(180)
def test_a_flood_of_malformed_requests_logs_at_most_the_burst_per_window(api_process):
    port, process, stderr_path = api_process
    started = time.monotonic()
    sent = 0
    while sent < 300 and time.monotonic() - started < 8:
        assert status_of(exchange(port, MALFORMED[sent % 8])) == 400
        sent += 1
    elapsed = time.monotonic() - started
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    log = stderr_path.read_text(encoding="utf-8")
    assert not TRACEBACK.search(log)
    lines = re.findall(r"^.*malformed HTTP request.*$", log, re.MULTILINE)
    assert sent > DEFAULT_BURST * 2
    assert DEFAULT_BURST <= len(lines) <= DEFAULT_BURST * (int(elapsed // 10) + 1), (sent, elapsed, lines)


def test_the_rate_limit_counts_the_suppressed_lines_in_the_next_one(caplog):
    log = MalformedRequestLog(logging.getLogger("test.malformed"), burst=3, interval_s=0.3)
    with caplog.at_level(logging.WARNING, logger="test.malformed"):
        for i in range(10):
            log.malformed(("10.0.0.7", 1000 + i))
        time.sleep(0.35)
        log.malformed(("10.0.0.8", 2000))
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:3] == [f"malformed HTTP request from 10.0.0.7:{1000 + i} answered 400" for i in range(3)]
    assert messages[3:] == ["malformed HTTP request from 10.0.0.8:2000 answered 400 (7 more since the last such line)"]
    assert log.total == 11


@pytest.mark.timeout(120)
def test_the_h11_parser_answers_400_and_logs_one_line_too(caplog):
    """uvicorn without httptools parses with h11: the same requests, the same answers and lines."""
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    logger = logging.getLogger("test.h11")
    log = MalformedRequestLog(logger, burst=100)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, http=protocol_class(log, base=H11Protocol))
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with caplog.at_level(logging.WARNING):
            for data in MALFORMED:
                assert status_of(exchange(port, data)) == 400, data[:60]
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
    assert log.total == len(MALFORMED)
    ours = [r for r in caplog.records if r.name == "test.h11"]
    assert len(ours) == len(MALFORMED) and all(r.exc_info is None for r in ours)
    assert not [r for r in caplog.records if "Invalid HTTP request received" in r.getMessage()]
    assert not [r for r in caplog.records if r.exc_info]
