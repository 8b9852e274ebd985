"""The reverse proxy against a real upstream: transparency, streaming, faults, and what gets recorded.

The upstream is a real aiohttp server written here; the collector is the real
proxy, pipeline, admin server and writer, running in this process and writing
into a database of the session's embedded ClickHouse. Every test runs for both data planes
(``engine``): the Python proxy, and nginx with the njs capture hook whose log the same
pipeline reads (each engine with a database of its own, so that rows of one never count for the other).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import socket
import threading
import uuid

import httpx
import pytest
from aiohttp import web

from tests.collector_harness import (
    AppServer,
    InProcessCollector,
    InProcessNginxCollector,
    module_store_url,
    wait_for,
)
from tests.conftest import run_cli

MODEL = "proxy-tests"
BLOB = os.urandom(50_000)


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    doc = {
        "method": request.method,
        "raw_path": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_len": len(body),
    }
    response = web.json_response(doc, headers={"X-Upstream": "yes", "Cache-Control": "no-store"})
    response.set_cookie("a", "1")
    response.set_cookie("b", "2")
    return response


async def _blob(request: web.Request) -> web.Response:
    return web.Response(body=BLOB, content_type="application/octet-stream")


# Streams: the upstream writes its first part, then waits until the test's client has received that part
# (the client sets GO) before writing the rest, and says in its last part whether the client's go came. A proxy
# that buffered the stream would hold the first part back, the go would never come, and the last part says so.
GO = threading.Event()
GO_WAIT_S = 20.0  # against a hang only


async def _wait_for_go() -> bool:
    released = await asyncio.get_running_loop().run_in_executor(None, GO.wait, GO_WAIT_S)
    GO.clear()
    return released


async def _chunked(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    await response.write(b"part-0;")
    released = await _wait_for_go()
    for i in range(1, 4):
        await response.write(f"part-{i};".encode())
    await response.write(f"go={released};".encode())
    await response.write_eof()
    return response


async def _sse(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for i in range(40):
        await response.write(
            f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': str(i)}}]})}\n\n".encode()
        )
        if i == 0:
            released = await _wait_for_go()
    await response.write(f": go={released}\n\ndata: [DONE]\n\n".encode())  # an SSE comment, then the end
    return response


SLOW_FINISHED: set[str] = set()  # X-Slow of the /slow requests answered; per request: the upstream is shared by
# the python and nginx runs, and a handler of the previous run may still be sleeping when the next one starts


async def _slow(request: web.Request) -> web.Response:
    await request.read()
    await asyncio.sleep(3)
    SLOW_FINISHED.add(request.headers.get("X-Slow", ""))
    return web.Response(text="too late")


async def _gzip(request: web.Request) -> web.Response:
    payload = {"outputs": [{"name": "y", "shape": [1], "datatype": "FP64", "data": [42.0]}]}
    return web.Response(
        body=gzip.compress(json.dumps(payload).encode()),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )


async def _infer(request: web.Request) -> web.Response:
    body = await request.read()
    if len(body) > 1 << 20:  # answer at once: parsing 20 MB here would outlast the collector's 0.5 s timeout
        return web.json_response({"error": "request too large"}, status=400)
    try:
        doc = json.loads(body)
        data = doc["inputs"][0]["data"]
    except (ValueError, KeyError, IndexError, TypeError):
        return web.json_response({"error": "bad request"}, status=400)
    return web.json_response({"outputs": [{"name": "y", "shape": [len(data)], "datatype": "FP64", "data": data}]})


@pytest.fixture(scope="module")
def upstream():
    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/echo/{tail:.*}", _echo)
    app.router.add_get("/blob", _blob)
    app.router.add_get("/chunked", _chunked)
    app.router.add_post("/sse/v1/chat/completions", _sse)
    app.router.add_route("*", "/slow", _slow)
    app.router.add_post("/gzip/v2/models/g/infer", _gzip)
    app.router.add_post("/v2/models/m/infer", _infer)
    server = AppServer(app)
    yield server
    server.close()


@pytest.fixture(scope="module", params=["python", "nginx"])
def engine(request):
    return request.param


@pytest.fixture(scope="module")
def collector_store(engine_dir, engine):
    return module_store_url(engine_dir, f"collector_proxy_tests_{engine}")


@pytest.fixture(scope="module")
def make_collector(engine, tmp_path_factory):
    """A collector of this module's engine: ``make_collector(store_url, **config)``."""

    def make(store_url: str, **config):
        if engine == "nginx":
            return InProcessNginxCollector(store_url, tmp_path_factory.mktemp("nginx-engine"), **config)
        return InProcessCollector(store_url, **config)

    return make


@pytest.fixture(scope="module")
def collector(upstream, collector_store, make_collector):
    c = make_collector(
        collector_store,
        upstream=upstream.url,
        model=MODEL,
        upstream_timeout_s=0.5,
        default_tenant="acme",
        payload={"max_bytes": 4096},
    )
    yield c
    c.close()


@pytest.fixture(scope="module")
def db(collector_store):
    from driftwarden import storage

    return storage.connect(collector_store)


def _rows(db, where: str, expected: int, timeout: float = 60.0) -> list[dict]:
    sql = f"SELECT * FROM inferences FINAL WHERE model = '{MODEL}' AND {where} ORDER BY ts"

    def fetch():
        result = db.query(sql)
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    return wait_for(fetch, lambda rows: len(rows) >= expected, timeout)


@pytest.mark.timeout(60)
def test_method_path_query_headers_and_body_reach_the_upstream_unchanged_except_hop_by_hop(collector, engine):
    body = os.urandom(3000)
    headers = [
        ("X-Custom", "one"),
        ("X-Custom", "two"),
        ("Authorization", "Bearer t"),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "per-connection"),
        ("TE", "trailers"),
        ("X-Driftwarden-Replay", str(uuid.uuid4())),
        ("Content-Type", "application/x-thing"),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ]
    with httpx.Client() as client:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            r = client.request(method, collector.url + "/echo/a%2Fb/c?x=1&x=2&y=%C3%A9", headers=headers, content=body)
            assert r.status_code == 200
            doc = r.json()
            assert doc["method"] == method
            assert doc["raw_path"] == "/echo/a%2Fb/c?x=1&x=2&y=%C3%A9"
            assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()
            sent = [(k.lower(), v) for k, v in doc["headers"]]
            assert ("x-custom", "one") in sent and ("x-custom", "two") in sent
            assert ("authorization", "Bearer t") in sent and ("content-type", "application/x-thing") in sent
            assert ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") in sent
            names = {k for k, _ in sent}
            assert not names & {"te", "x-driftwarden-replay", "keep-alive"}
            # nginx forwards headers that the client's Connection header names (a known difference, see
            # collector/README.md); the Python proxy drops them as RFC 7230 section 6.1 says.
            assert ("x-hop" in names) == (engine == "nginx")
            assert r.headers["X-Upstream"] == "yes" and r.headers["Cache-Control"] == "no-store"
            assert r.headers.get_list("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


@pytest.mark.timeout(60)
def test_response_bodies_are_byte_identical_to_direct_calls(collector, upstream):
    with httpx.Client() as client:
        direct = client.get(upstream.url + "/blob")
        proxied = client.get(collector.url + "/blob")
        assert proxied.status_code == direct.status_code == 200
        assert proxied.content == direct.content == BLOB
        head = client.head(collector.url + "/blob")
        assert head.status_code == 200 and head.headers["Content-Length"] == str(len(BLOB))
        missing = client.get(collector.url + "/nothing-here")
        assert missing.status_code == 404 and missing.content == client.get(upstream.url + "/nothing-here").content


@pytest.mark.timeout(120)
def test_chunked_and_event_streams_are_relayed_as_they_arrive(collector):
    GO.clear()
    with httpx.Client(timeout=60) as client:
        body = b""
        with client.stream("GET", collector.url + "/chunked") as r:
            for chunk in r.iter_raw():
                body += chunk
                GO.set()  # the first part arrived while the upstream still holds the rest
        assert body == b"part-0;part-1;part-2;part-3;go=True;"

        GO.clear()
        with client.stream("POST", collector.url + "/sse/v1/chat/completions", json={"messages": []}) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            text = b""
            for chunk in r.iter_raw():
                text += chunk
                GO.set()
        assert text.count(b"data: ") == 41 and text.endswith(b": go=True\n\ndata: [DONE]\n\n")


@pytest.mark.timeout(60)
def test_upstream_down_gives_502_and_timeout_gives_504_with_json_bodies(collector, collector_store, db, make_collector):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    down = make_collector(collector_store, upstream=f"http://127.0.0.1:{dead_port}", model=MODEL)
    try:
        r = httpx.post(down.url + "/v2/models/m/infer", json={"inputs": []}, headers={"X-Mark": "down"})
        assert r.status_code == 502
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.json()["error"] == "upstream_unreachable" and str(dead_port) in r.json()["message"]
    finally:
        down.close()
    mark = uuid.uuid4().hex
    r = httpx.post(collector.url + "/slow", content=b"x", timeout=10, headers={"X-Slow": mark})
    assert r.status_code == 504 and r.json()["error"] == "upstream_timeout"
    assert mark not in SLOW_FINISHED, "the collector's 0.5 s timeout answered, not the upstream's 3 s answer"
    rows = _rows(db, "endpoint IN ('/v2/models/m/infer', '/slow') AND status IN (502, 504)", 2)
    assert {(r["status"], r["error_class"]) for r in rows} == {(502, "upstream_unreachable"), (504, "upstream_timeout")}


@pytest.mark.timeout(90)
def test_bad_inputs_and_a_client_leaving_mid_stream_never_stop_the_collector(collector, db):
    good = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.5]}]}
    big = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [' + b"1," * (10 << 20) + b"1]}]}"
    assert len(big) > 20 << 20
    with httpx.Client(timeout=30) as client:

        def still_serving() -> None:
            r = client.post(collector.url + "/v2/models/m/infer", json=good)
            assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [1.5]

        r = client.post(collector.url + "/v2/models/m/infer", content=b'{"inputs": [1, 2', headers={"X-T": "bad"})
        assert r.status_code == 400  # the upstream's answer, passed through
        still_serving()
        r = client.post(collector.url + "/v2/models/m/infer", content=bytes(range(256)) * 40)
        assert r.status_code == 400
        still_serving()
        r = client.post(collector.url + "/v2/models/m/infer", content=big)
        assert r.status_code == 400  # the upstream rejects the shape; the 20 MB went through and back
        still_serving()
    # A client that reads one event of a stream and hangs up; only then does the upstream write the rest.
    GO.clear()
    with socket.create_connection(("127.0.0.1", int(collector.url.rsplit(":", 1)[1]))) as s:
        body = b'{"messages": []}'
        s.sendall(
            b"POST /sse/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while b"data: " not in received:
            received += s.recv(4096)
    GO.set()  # the client is gone: the upstream goes on writing, and the collector finds no one to write to
    with httpx.Client(timeout=30) as client:
        still_serving()

    rows = _rows(db, "endpoint = '/v2/models/m/infer' AND status = 400", 3)
    by_size = sorted(rows, key=lambda r: r["request_bytes"])
    # The 20 MB body is above the parse limit: recorded with its size and cut payload, not parsed.
    assert [r["error_class"] for r in by_size] == ["malformed_request", "malformed_request", "upstream_4xx"]
    assert by_size[-1]["request_bytes"] == len(big) and by_size[-1]["payload_truncated"]
    assert len(by_size[-1]["input_payload"].encode()) <= 4096
    gone = _rows(db, "endpoint = '/sse/v1/chat/completions' AND error_class = 'client_disconnected'", 1)
    assert gone and gone[0]["status"] == 200
    ok = _rows(db, "endpoint = '/v2/models/m/infer' AND status = 200 AND error_class = ''", 4)
    assert len(ok) >= 4 and all(r["num_values"] == [1.5] and r["prediction"] == 1.5 for r in ok)


@pytest.mark.timeout(60)
def test_trace_replay_and_tenant_headers_are_recorded(collector, db):
    trace = uuid.uuid4().hex
    replay_of = uuid.uuid4()
    good = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [7.0]}]}
    headers = {"traceparent": f"00-{trace}-00f067aa0ba902b7-01", "X-Driftwarden-Tenant": "globex"}
    r = httpx.post(collector.url + "/v2/models/m/infer", json=good, headers=headers)
    assert r.status_code == 200
    replay_headers = {"X-Driftwarden-Replay": str(replay_of)}
    r = httpx.post(collector.url + "/echo/v2/models/m/infer", json=good, headers=replay_headers)
    assert "x-driftwarden-replay" not in {k.lower() for k, _ in r.json()["headers"]}
    (traced,) = _rows(db, f"trace_id = '{trace}'", 1)
    assert traced["tenant"] == "globex" and not traced["is_replay"]
    (replayed,) = _rows(db, f"replay_of = '{replay_of}'", 1)
    assert replayed["is_replay"] and replayed["tenant"] == "acme"


@pytest.mark.timeout(60)
def test_compressed_responses_stay_compressed_for_the_client_and_are_read_for_capture(collector, db):
    good = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [3.0]}]}
    raw = httpx.post(collector.url + "/gzip/v2/models/g/infer", json=good, headers={"Accept-Encoding": "gzip"})
    assert raw.headers["Content-Encoding"] == "gzip"
    assert raw.json()["outputs"][0]["data"] == [42.0]  # httpx decompresses; the bytes on the wire were gzip
    (row,) = _rows(db, "endpoint = '/gzip/v2/models/g/infer'", 1)
    assert row["prediction"] == 42.0 and row["error_class"] == ""


def _requests_200(admin_url: str) -> float:
    name = f'driftwarden_collector_requests_total{{model="{MODEL}",model_version="",status="200"}} '
    lines = httpx.get(admin_url + "/metrics").text.splitlines()
    return next((float(line[len(name) :]) for line in lines if line.startswith(name)), 0.0)


@pytest.mark.timeout(60)
def test_admin_port_serves_health_readiness_and_metrics(collector):
    before = _requests_200(collector.admin_url)  # the registry is the process's: both engines count into it
    httpx.post(collector.url + "/v2/models/m/infer", json={"inputs": [{"name": "x", "data": [1], "shape": [1]}]})
    assert wait_for(lambda: _requests_200(collector.admin_url), lambda n: n >= before + 1) >= before + 1
    assert httpx.get(collector.admin_url + "/healthz").status_code == 200
    ready = httpx.get(collector.admin_url + "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "listener_up": True,
        "writer_started": True,
        "shutting_down": False,
        "upstream_reachable": True,
    }
    text = httpx.get(collector.admin_url + "/metrics").text
    assert f'driftwarden_collector_requests_total{{model="{MODEL}",model_version="",status="200"}}' in text
    assert "driftwarden_collector_request_duration_seconds_bucket" in text


@pytest.mark.timeout(60)
def test_bad_configuration_is_one_line_naming_the_key_value_and_what_is_accepted(tmp_path):
    r = run_cli("collector", "--upstream", "ftp://x", "--model", "m", "--listen", "127.0.0.1:0")
    assert r.returncode == 2
    assert "upstream = 'ftp://x'" in r.stderr and "http://" in r.stderr and "Traceback" not in r.stderr
    config = tmp_path / "collector.yaml"
    config.write_text("upstream: http://127.0.0.1:1\nmodel: m\nredaction:\n  mode: scramble\n  colour: red\n")
    r = run_cli("collector", "--config", str(config), "--listen", "127.0.0.1:0")
    assert r.returncode == 2
    assert "redaction.mode = 'scramble'" in r.stderr and "'hash' or 'mask'" in r.stderr
    assert "unknown key redaction.colour" in r.stderr and "patterns" in r.stderr


@pytest.mark.timeout(60)
def test_client_event_id_and_timestamp_headers_count_only_where_trusted(
    collector, collector_store, upstream, db, make_collector
):
    good = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [3.0]}]}

    def send(url: str, trace: str, event_id: uuid.UUID) -> None:
        headers = {
            "traceparent": f"00-{trace}-00f067aa0ba902b7-01",
            "X-Driftwarden-Event-Id": str(event_id),
            "X-Driftwarden-Timestamp": "2011-02-17T13:00:00Z",
        }
        answer = httpx.post(url + "/echo/v2/models/m/infer", json=good, headers=headers)
        assert answer.status_code == 200
        forwarded = {k.lower() for k, _ in answer.json()["headers"]}
        assert not forwarded & {"x-driftwarden-event-id", "x-driftwarden-timestamp"}

    untrusted_trace, chosen = uuid.uuid4().hex, uuid.uuid4()
    send(collector.url, untrusted_trace, chosen)
    (untrusted,) = _rows(db, f"trace_id = '{untrusted_trace}'", 1)
    assert untrusted["event_id"] != chosen and untrusted["ts"].year > 2011

    trusting = make_collector(collector_store, upstream=upstream.url, model=MODEL, trust_client_event_headers=True)
    try:
        trusted_trace, chosen = uuid.uuid4().hex, uuid.uuid4()
        send(trusting.url, trusted_trace, chosen)
        (trusted,) = _rows(db, f"trace_id = '{trusted_trace}'", 1)
        assert trusted["event_id"] == chosen
        assert (trusted["ts"].year, trusted["ts"].month, trusted["ts"].day, trusted["ts"].hour) == (2011, 2, 17, 13)
    finally:
        trusting.close()
