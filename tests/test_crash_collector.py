"""Fault injection: a collector SIGKILLed under load loses no answered inference and stores none twice.

The load: several clients sending Open Inference Protocol requests through a real collector
process, each request with its own value ``x``; a request counts as *answered* once its whole
response arrived. The collector is killed (SIGKILL: no flush, no goodbye) while the load runs,
restarted on the same spool directory (its write-ahead journal lives there), and stopped with
SIGTERM. The hub's store must then hold every answered ``x`` exactly once: nothing lost,
nothing duplicated. Requests cut off by the kill may be stored or not (their clients got no answer).
"""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from tests.collector_harness import AppServer, CollectorProcess, wait_for
from tests.hub_process import ROOT, Hub
from tests.hub_process import query_store as query_hub

CLIENTS = 6
KILL_AFTER = 400  # answered requests before the kill


def _metric(admin_url: str, name: str, model: str) -> float:
    text = httpx.get(admin_url + "/metrics", timeout=5).text
    prefix = f'driftwarden_collector_{name}{{model="{model}"}} '
    return next((float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)), 0.0)


class Load:
    """Clients sending requests with unique values until the collector dies; records what was answered."""

    def __init__(self, url: str, first: int, path: str = "/v2/models/crash/infer") -> None:
        self.url = url
        self.path = path
        self.next_x = itertools.count(first)
        self.answered: set[int] = set()
        self.sent: set[int] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(CLIENTS)]

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def _client(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                with self.lock:
                    x = next(self.next_x)
                    self.sent.add(x)
                body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [float(x)]}]}
                try:
                    response = client.post(self.url + self.path, json=body)
                    answered = response.status_code == 200 and response.json()["outputs"][0]["data"] == [2.0 * x]
                except (httpx.HTTPError, ValueError):
                    return  # the collector is gone
                if answered:
                    with self.lock:
                        self.answered.add(x)

    def answered_count(self) -> int:
        with self.lock:
            return len(self.answered)


@pytest.fixture
def upstream():
    async def infer(request: web.Request) -> web.Response:
        doc = await request.json()
        x = doc["inputs"][0]["data"][0]
        return web.json_response({"outputs": [{"name": "y", "shape": [1], "datatype": "FP64", "data": [2 * x]}]})

    app = web.Application()
    app.router.add_post("/v2/models/crash/infer", infer)
    server = AppServer(app)
    yield server
    server.close()


def _kill_under_load(args: tuple[str, ...], first: int) -> Load:
    collector = CollectorProcess(*args)
    with Load(collector.url, first) as load:
        assert wait_for(load.answered_count, lambda n: n >= KILL_AFTER, timeout=60) >= KILL_AFTER
        collector.kill()
    return load


def _stored(hub: Hub, model: str) -> tuple[int, int, list[int]]:
    ((rows, ids, xs),) = query_hub(
        hub.store_url,
        "SELECT count(), uniqExact(event_id), groupArray(toInt64(num_values[1])) "
        f"FROM inferences FINAL WHERE model = '{model}'",
    )
    return rows, ids, xs


@pytest.mark.timeout(300)
def test_a_collector_killed_under_load_loses_no_answered_event_and_duplicates_none(tmp_path, upstream):
    hub = Hub(tmp_path / "hub-store").start()
    spool = tmp_path / "spool"
    config = tmp_path / "collector.yaml"
    config.write_text("batch_events: 100\nflush_interval_ms: 50\n")
    args = ("--upstream", upstream.url, "--model", "crash", "--hub", hub.url)
    args += ("--spool-dir", str(spool), "--config", str(config))
    try:
        # 1. the hub (the store) is up: the kill lands between batches, with some in flight to the hub
        up = _kill_under_load(args, first=0)
        # 2. the hub is down during the kill: acknowledged batches are in the spool, the rest in the journal
        hub.stop()
        down = _kill_under_load(args, first=1_000_000)
        hub.start()
        # 3. a restart on the same spool captures what the journal holds, replays the spool, and stops cleanly
        collector = CollectorProcess(*args)
        assert wait_for(lambda: _metric(collector.admin_url, "spool_bytes", "crash"), lambda n: n == 0, 60) == 0
        status, err = collector.stop()
        assert status == 0, err
    finally:
        hub.stop()
    rows, ids, xs = _stored(hub, "crash")
    stored = set(xs)
    answered = up.answered | down.answered
    sent = up.sent | down.sent
    print(f"answered {len(up.answered)} (hub up) + {len(down.answered)} (hub down), sent {len(sent)}, stored {rows}")
    assert len(up.answered) >= KILL_AFTER and len(down.answered) >= KILL_AFTER
    assert answered - stored == set(), "every answered inference is stored"
    assert rows == ids == len(stored), "no inference is stored twice"
    assert stored <= sent
    assert not list(spool.glob("segment-*.spool")) and not list((spool / "journal").glob("journal-*.log"))


def _start_up(config: Path, store: str) -> tuple[subprocess.Popen, str]:
    errors = config.with_suffix(".stderr")
    with errors.open("a") as stderr:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "driftwarden", "up", "--config", str(config), "--store", store],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=ROOT,
        )
    url = ""
    assert process.stdout is not None
    for line in process.stdout:
        if found := re.search(r"collector crash-up: (http://\S+) ->", line):
            url = found.group(1)
        if "driftwarden up: ready" in line:
            return process, url
    raise AssertionError(f"driftwarden up exited before it was ready:\n{errors.read_text()[-3000:]}")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_driftwarden_up_killed_under_load_loses_no_answered_event_and_duplicates_none(tmp_path, upstream):
    store_dir = tmp_path / "store"
    config = tmp_path / "up.yaml"
    config.write_text(
        "schedule: {every: 1h}\n"
        "models:\n  - name: crash-up\n    features: {discover: true}\n"
        "collectors:\n"
        f"  - {{model: crash-up, upstream: '{upstream.url}', listen: '127.0.0.1:0', protocol: oip, "
        "batch_events: 100, flush_interval_ms: 50}\n"
        "api: {listen: '127.0.0.1:0'}\n"
    )
    process, url = _start_up(config, f"chdb://{store_dir}")  # no spool_dir: up puts one beside the store
    try:
        with Load(url, first=0, path="/v2/models/crash/infer") as load:
            assert wait_for(load.answered_count, lambda n: n >= KILL_AFTER, timeout=60) >= KILL_AFTER
            process.kill()
            process.wait(30)
        process, _ = _start_up(config, f"chdb://{store_dir}")  # captures what the journal held
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    ((rows, ids, xs),) = query_hub(
        f"chdb://{store_dir}",
        "SELECT count(), uniqExact(event_id), groupArray(toInt64(num_values[1])) "
        "FROM inferences FINAL WHERE model = 'crash-up'",
    )
    print(f"up: answered {len(load.answered)}, sent {len(load.sent)}, stored {rows}")
    assert load.answered - set(xs) == set(), "every answered inference is stored"
    assert rows == ids == len(set(xs)), "no inference is stored twice"
