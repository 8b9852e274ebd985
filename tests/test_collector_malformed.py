"""Malformed HTTP at the collector: answered 400, logged as one rate-limited line per request, never a traceback."""

from __future__ import annotations

import logging
import re
import socket

import httpx
import pytest
from aiohttp import web

from driftwarden.collector import metrics
from driftwarden.collector.protocol_log import ProtocolLog
from tests.collector_harness import AppServer, InProcessCollector, module_store_url

MODEL = "malformed-tests"

MALFORMED = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "bad method": b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad version": b"GET / HTTP/9.Z\r\nHost: x\r\n\r\n",
    "control character in the target": b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n",
    "header without a colon": b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    "null byte in a header name": b"GET / HTTP/1.1\r\nHo\x00st: x\r\n\r\n",
    "non-numeric content length": b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "two content lengths": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "bad chunk size": b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n",
    "header line too long": b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 100_000 + b"\r\n\r\n",
    "a TLS client hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32) + b"\r\n\r\n",
}


async def _infer(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"outputs": [{"name": "y", "shape": [1], "datatype": "FP64", "data": [1.0]}]})


@pytest.fixture(scope="module")
def collector(engine_dir):
    app = web.Application()
    app.router.add_post("/v2/models/m/infer", _infer)
    upstream = AppServer(app)
    c = InProcessCollector(
        module_store_url(engine_dir, "collector_malformed_tests"), upstream=upstream.url, model=MODEL
    )
    yield c
    c.close()
    upstream.close()


def _raw(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _malformed_count() -> float:
    value = metrics.REGISTRY.get_sample_value("driftwarden_collector_malformed_requests_total", {"model": MODEL})
    return value or 0.0


@pytest.mark.timeout(120)
def test_malformed_requests_get_400_one_line_each_without_traceback_and_valid_traffic_goes_on(collector, caplog):
    before = _malformed_count()
    with caplog.at_level(logging.DEBUG):
        for name, data in MALFORMED.items():
            answer = _raw(collector.url, data)
            assert re.match(rb"HTTP/1\.[01] 400 ", answer), f"{name}: {answer[:200]!r}"
    assert _malformed_count() - before == len(MALFORMED), "every malformed request is counted"
    lines = [r for r in caplog.records if "malformed HTTP request" in r.getMessage()]
    assert 1 <= len(lines) <= len(MALFORMED)
    for record in caplog.records:
        assert record.exc_info is None and record.exc_text is None, record.getMessage()
        assert "\n" not in record.getMessage(), record.getMessage()
    assert "Traceback" not in caplog.text
    assert all(r.levelno == logging.WARNING and "answered 400" in r.getMessage() for r in lines)
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}
    assert httpx.post(collector.url + "/v2/models/m/infer", json=body, timeout=10).status_code == 200


def test_the_malformed_request_log_is_rate_limited_and_says_how_many_lines_it_held_back(caplog):
    logger = logging.getLogger("driftwarden.tests.protocol_log")
    log = ProtocolLog(logger, burst=3, interval_s=3600)
    from aiohttp.http_exceptions import BadHttpMessage

    with caplog.at_level(logging.INFO, logger=logger.name):
        for i in range(10):
            log.exception("Error handling request from %s", f"10.0.0.{i}", exc_info=BadHttpMessage("bad header"))
        log.interval_s = 0  # the next line opens a new window
        log.exception("Error handling request from %s", "10.0.0.99", exc_info=BadHttpMessage("bad header"))
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:3] == [f"malformed HTTP request from 10.0.0.{i} answered 400: bad header" for i in range(3)]
    assert messages[3] == (
        "malformed HTTP request from 10.0.0.99 answered 400: bad header (7 more since the last such line)"
    )
    assert len(messages) == 4 and all(r.exc_info is None for r in caplog.records)


def test_other_exceptions_in_the_http_server_keep_their_traceback(caplog):
    logger = logging.getLogger("driftwarden.tests.protocol_log")
    with caplog.at_level(logging.INFO, logger=logger.name):
        try:
            raise RuntimeError("a bug")
        except RuntimeError as exc:
            ProtocolLog(logger).exception("Error handling request from %s", "10.0.0.1", exc_info=exc)
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None
