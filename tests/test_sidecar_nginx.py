"""The nginx data plane (``engine: nginx``): same rows as the Python proxy, no loss on a crash, rotation.

Real parts only: Debian's nginx with its njs module (``libnginx-mod-http-js``, installed by
scripts/install-test-deps.sh), real aiohttp upstreams, the real pipeline and writer into the
session's embedded ClickHouse, and ``python -m driftwarden collector --engine nginx`` as a process
for the crash test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from driftwarden import storage
from driftwarden.collector.config import CollectorConfig
from driftwarden.collector.edge.capture_log import _QUIET_S, CaptureLog, decode_line
from driftwarden.collector.edge.nginx_conf import LOG_FIELDS, render
from driftwarden.collector.edge.supervisor import Nginx, find_nginx
from tests.collector_harness import (
    AppServer,
    CollectorProcess,
    InProcessCollector,
    InProcessNginxCollector,
    module_store_url,
    query_store,
    wait_for,
)
from tests.conftest import run_cli
from tests.test_collector_e2e import _LLM, FIRST_TOKEN_DELAY
from tests.test_crash_collector import KILL_AFTER, Load

# Columns that differ by design between the engines: nginx's clock has millisecond resolution, and
# received_at is the store's own time of the insert.
TIMING = {"latency_ms", "upstream_latency_ms", "ttft_ms", "received_at"}


async def _infer(request: web.Request) -> web.Response:
    doc = await request.json()
    x = doc["inputs"][0]["data"][0]
    return web.json_response({"outputs": [{"name": "y", "shape": [1], "datatype": "FP64", "data": [2 * x]}]})


@pytest.fixture(scope="module")
def upstream():
    llm = _LLM()
    app = llm.app()
    app.router.add_post("/v2/models/crash/infer", _infer)
    app.router.add_post("/v2/models/parity/infer", _infer)
    server = AppServer(app)
    yield server
    server.close()


def _rows(store_url: str, model: str, expected: int) -> list[dict]:
    db = storage.connect(store_url)
    sql = f"SELECT * FROM inferences FINAL WHERE model = '{model}' ORDER BY event_id"

    def fetch():
        result = db.query(sql)
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    return wait_for(fetch, lambda rows: len(rows) >= expected, 60)


@pytest.mark.timeout(120)
def test_the_same_requests_through_both_engines_store_the_same_rows(upstream, engine_dir, tmp_path):
    config = {
        "upstream": upstream.url,
        "model": "parity",
        "trust_client_event_headers": True,  # same event ids and times through both engines
        "default_tenant": "acme",
        "payload": {"max_bytes": 4096},
        "redaction": {"key": "parity"},  # the same pseudonyms of redacted values
    }
    stores = {e: module_store_url(engine_dir, f"sidecar_parity_{e}") for e in ("python", "nginx")}
    collectors = {
        "python": InProcessCollector(stores["python"], **config),
        "nginx": InProcessNginxCollector(stores["nginx"], tmp_path / "spool", **config),
    }
    trace = uuid.uuid4().hex
    requests = [
        ("/v2/models/parity/infer", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [3.5]}]}),
        ("/v2/models/parity/infer", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": ["é"]}]}),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "mail me: a@b.example"}]}),
        ("/v1/chat/completions", {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/embeddings", {"model": "e", "input": "some text"}),
    ]
    try:
        answers: dict[str, list[bytes]] = {e: [] for e in collectors}
        for i, (path, body) in enumerate(requests):
            headers = {
                "X-Driftwarden-Event-Id": str(uuid.UUID(int=i + 1, version=4)),
                "X-Driftwarden-Timestamp": f"2026-12-01T10:00:0{i}Z",
                "traceparent": f"00-{trace}-00f067aa0ba902b7-01",
            }
            if i % 2:
                headers["X-Driftwarden-Tenant"] = "globex"
            for engine, collector in collectors.items():
                r = httpx.post(collector.url + path, json=body, headers=headers, timeout=30)
                assert r.status_code == 200, (engine, path, r.text)
                answers[engine].append(r.content)
        assert answers["python"] == answers["nginx"], "the clients got the same bodies"
        rows = {e: _rows(stores[e], "parity", len(requests)) for e in collectors}
    finally:
        for collector in collectors.values():
            collector.close()
    assert len(rows["python"]) == len(rows["nginx"]) == len(requests)
    for python_row, nginx_row in zip(rows["python"], rows["nginx"], strict=True):
        same = {k: v for k, v in python_row.items() if k not in TIMING}
        assert same == {k: v for k, v in nginx_row.items() if k not in TIMING}
        assert python_row["latency_ms"] > 0 and nginx_row["latency_ms"] >= 0
    streamed = [r for r in rows["nginx"] if (r["ttft_ms"] or 0) > 0]
    assert len(streamed) == 1 and streamed[0]["output_text"] == "The bikes are busy today."
    python_ttft = next(r["ttft_ms"] for r in rows["python"] if (r["ttft_ms"] or 0) > 0)
    # Time to first token from the first chunk's arrival: the upstream waits FIRST_TOKEN_DELAY before it.
    assert FIRST_TOKEN_DELAY * 1000 - 2 <= streamed[0]["ttft_ms"] <= python_ttft + 100
    assert streamed[0]["ttft_ms"] < streamed[0]["latency_ms"]


def test_a_capture_line_decodes_to_the_same_exchange_valid_utf8_or_not():
    """Lines are parsed by orjson when they are UTF-8 and by Python's parser otherwise (nginx logs body bytes as
    they passed): both give the request and response bodies byte for byte."""
    row = {key: "" for key in LOG_FIELDS}
    row.update(id=uuid.uuid4().hex, msec="1796289403.412", rt="0.002", urt="0.001", status="200", done="OK", m="POST")
    row.update(path="/v2/models/m/infer", cl="20", req='{"x": "caf\u00e9 \\n"}', resp='{"y": [1.5]}', bytes="12")
    line = json.dumps(row, ensure_ascii=False).encode()
    ex = decode_line(line)
    assert ex.request_body == '{"x": "caf\u00e9 \\n"}'.encode() and ex.response_body == b'{"y": [1.5]}'
    assert ex.exchange_id == uuid.UUID(row["id"]) and ex.status == 200 and ex.path == "/v2/models/m/infer"
    raw = line.replace("caf\u00e9".encode(), b"caf\xe9")  # Latin-1 in the body: not UTF-8
    assert decode_line(raw).request_body == b'{"x": "caf\xe9 \\n"}'


def _nginx_pid(spool: Path) -> int | None:
    try:
        return int((spool / "nginx" / "nginx.pid").read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.timeout(300)
def test_a_killed_collector_loses_nothing_nginx_answered_meanwhile(upstream, tmp_path):
    store_dir, spool = tmp_path / "store", tmp_path / "spool"
    config = tmp_path / "collector.yaml"
    config.write_text("batch_events: 100\nflush_interval_ms: 50\n")
    args = ("--upstream", upstream.url, "--model", "crash", "--store", f"chdb://{store_dir}")
    args += ("--spool-dir", str(spool), "--config", str(config), "--engine", "nginx")
    collector = CollectorProcess(*args)
    try:
        with Load(collector.url, first=0) as load:
            assert wait_for(load.answered_count, lambda n: n >= KILL_AFTER, timeout=60) >= KILL_AFTER
            collector.kill()  # SIGKILL: nginx keeps answering, into its log
            at_kill = load.answered_count()
            assert wait_for(load.answered_count, lambda n: n >= at_kill + KILL_AFTER, 60) >= at_kill + KILL_AFTER
        pid = _nginx_pid(spool)
        collector = CollectorProcess(*args)  # adopts the running nginx, captures the log from its checkpoint
        assert "nginx adopted" in (collector.line or "")
        assert _nginx_pid(spool) == pid
        status, err = collector.stop()
        assert status == 0, err
        assert wait_for(lambda: Path(f"/proc/{pid}").exists(), lambda alive: not alive, 15) is False
    finally:
        if collector.proc.poll() is None:
            collector.kill()
        leftover = _nginx_pid(spool)
        if leftover and Path(f"/proc/{leftover}").exists():
            os.kill(leftover, signal.SIGTERM)
    (found,) = query_store(
        store_dir,
        "SELECT count() AS n, uniqExact(event_id) AS ids, groupArray(toInt64(num_values[1])) AS xs "
        "FROM inferences FINAL WHERE model = 'crash'",
    )
    rows, ids, xs = int(found["n"]), int(found["ids"]), [int(x) for x in found["xs"]]
    stored = set(xs)
    print(
        f"nginx engine: answered {len(load.answered)} ({at_kill} before the kill), sent {len(load.sent)}, stored {rows}"
    )
    assert load.answered - stored == set(), "every answered inference is stored"
    assert rows == ids == len(stored), "no inference is stored twice"
    assert stored <= load.sent


@pytest.mark.timeout(120)
def test_capture_yields_the_cpu_to_nginx_and_exports_the_log_it_has_not_read(upstream, tmp_path):
    """Every thread of the collector runs under SCHED_IDLE at a higher nice level (nginx preempts capture at
    once); nginx keeps the policy and the priority it started with; /metrics says how far capture lags."""
    args = ("--upstream", upstream.url, "--model", "idle", "--store", f"chdb://{tmp_path / 'store'}")
    collector = CollectorProcess(*args, "--spool-dir", str(tmp_path / "spool"), "--engine", "nginx")
    try:
        r = httpx.post(collector.url + "/v2/models/parity/infer", json={"inputs": [{"data": [1.5]}]})
        assert r.status_code == 200
        tasks = [int(t) for t in os.listdir(f"/proc/{collector.proc.pid}/task")]
        assert tasks and {os.sched_getscheduler(t) for t in tasks} == {os.SCHED_IDLE}
        niced = min(os.getpriority(os.PRIO_PROCESS, 0) + 10, 19)  # capture_nice 10 above its start, at most 19
        assert {os.getpriority(os.PRIO_PROCESS, t) for t in tasks} == {niced}
        nginx = _nginx_pid(tmp_path / "spool")
        assert nginx and os.sched_getscheduler(nginx) == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, nginx) == os.getpriority(os.PRIO_PROCESS, 0)
        metrics = httpx.get(collector.admin_url + "/metrics").text
        assert 'driftwarden_collector_capture_backlog_bytes{model="idle"}' in metrics
    finally:
        status, err = collector.stop()
    assert status == 0, err


@pytest.mark.timeout(120)
def test_the_capture_log_rotates_and_resumes_without_losing_or_repeating_a_line(upstream, tmp_path):
    config = CollectorConfig(upstream=upstream.url, model="crash", listen="127.0.0.1:0", spool_dir=str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    directory = tmp_path / "nginx"
    nginx = Nginx(render(config, directory, port), find_nginx())
    reopened = []

    def reopen() -> None:
        reopened.append(1)
        nginx.reopen_logs()

    nginx.start_or_adopt()
    sent: list[int] = []
    seen: list[int] = []

    def send(first: int, n: int) -> None:
        with httpx.Client(timeout=10) as client:
            for x in range(first, first + n):
                body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [x]}]}
                assert client.post(f"http://127.0.0.1:{port}/v2/models/crash/infer", json=body).status_code == 200
                sent.append(x)

    def drain(log: CaptureLog, release: bool, expected: int) -> list[int]:
        """Read until ``expected`` lines came (or 30 s); the lines' x values."""
        read: list[int] = []
        deadline = time.monotonic() + 30
        while len(read) < expected and time.monotonic() < deadline:
            batch = log.read(50)
            for seq, line in batch:
                read.append(json.loads(decode_line(line).request_body)["inputs"][0]["data"][0])
                if release:
                    log.release([seq])
            if not batch:
                time.sleep(0.01)
        return read

    try:
        log = CaptureLog(directory, reopen=reopen, rotate_bytes=20_000)  # ~25 lines per file

        def send_in_bursts() -> None:  # a rotation waits a quiet second before the next file: a burst for each
            for first in (0, 100, 200):
                send(first, 100)
                time.sleep(_QUIET_S * 1.5)

        writer = threading.Thread(target=send_in_bursts)
        writer.start()
        seen += drain(log, release=True, expected=300)
        writer.join()
        assert sorted(seen) == sent == list(range(300)), "every line read once, across the rotations"
        assert len(reopened) >= 2
        assert len(list(directory.glob("capture-*.log"))) <= 1, "released files are deleted"
        # Lines read but not released are read again by the next reader (a crash between read and write).
        send(300, 40)
        unreleased = drain(log, release=False, expected=40)
        log.close()
        again = CaptureLog(directory, reopen=reopen, rotate_bytes=20_000)
        replayed = drain(again, release=True, expected=40)
        again.close()
        assert sorted(unreleased) == sorted(replayed) == list(range(300, 340))
    finally:
        nginx.stop(5)


@pytest.mark.timeout(60)
def test_the_nginx_engine_without_a_spool_directory_is_one_clear_line():
    r = run_cli("collector", "--engine", "nginx", "--upstream", "http://127.0.0.1:1", "--model", "m")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "engine nginx needs spool_dir" in r.stderr
