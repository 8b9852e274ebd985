"""End to end with real peers: MLServer (scikit-learn runtime) called with tritonclient, and the openai SDK.

* MLServer serves a regression model trained here on the Capital Bikeshare
  data; ``driftwarden collector`` runs as a subprocess in front of it with its
  own embedded store, and ``tritonclient.http`` sends batches through it.
  After SIGTERM the store must hold one row per inference row, with the
  features and the predictions MLServer returned.
* An OpenAI-compatible upstream written here streams server-sent events with
  delays; the ``openai`` SDK goes through an in-process collector.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from aiohttp import web

from tests.collector_harness import (
    AppServer,
    CollectorProcess,
    InProcessCollector,
    module_store_url,
    query_store,
    wait_for,
)

FEATURES = ["hr", "temp", "atemp", "hum", "windspeed", "workingday"]


def _bikeshare() -> pd.DataFrame:
    spec = importlib.util.find_spec("ISLP")
    assert spec is not None and spec.submodule_search_locations, "the islp package (data only) is not installed"
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "Bikeshare.csv"
    frame = pd.read_csv(path)
    frame["hr"] = frame["hr"].astype(float)
    return frame


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bikeshare() -> pd.DataFrame:
    return _bikeshare()


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory, bikeshare):
    """``mlserver start`` serving a scikit-learn model trained on January, on free ports."""
    import joblib
    from sklearn.ensemble import GradientBoostingRegressor

    root = tmp_path_factory.mktemp("mlserver")
    model_dir = root / "bikes"
    model_dir.mkdir()
    january = bikeshare[bikeshare["mnth"] == "Jan"]
    model = GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0)
    model.fit(january[FEATURES].to_numpy(dtype=float), january["bikers"].to_numpy())
    joblib.dump(model, model_dir / "model.joblib")
    (model_dir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "bikes",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
            }
        )
    )
    http_port = _free_port()
    env = {
        **os.environ,
        "MLSERVER_HTTP_PORT": str(http_port),
        "MLSERVER_GRPC_PORT": str(_free_port()),
        "MLSERVER_METRICS_PORT": str(_free_port()),
        "MLSERVER_PARALLEL_WORKERS": "0",
        "MLSERVER_DEBUG": "false",
    }
    log = open(root / "mlserver.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlserver"), "start", str(root)],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{http_port}"

    def ready() -> bool:
        try:
            return httpx.get(url + "/v2/models/bikes/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    if not wait_for(ready, bool, timeout=90) or proc.poll() is not None:
        proc.kill()
        log.close()
        pytest.fail("MLServer did not become ready:\n" + (root / "mlserver.log").read_text()[-3000:])
    yield {"url": url, "model": model}
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _infer_body(rows: np.ndarray, request_id: str) -> dict:
    return {
        "id": request_id,
        "inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}],
    }


@pytest.mark.timeout(180)
def test_tritonclient_through_the_collector_matches_direct_calls_and_stores_one_row_per_inference(
    mlserver, bikeshare, tmp_path
):
    import tritonclient.http as triton

    store_dir = tmp_path / "store"
    config = tmp_path / "collector.yaml"
    config.write_text(f"oip:\n  columns:\n    input-0: {json.dumps(FEATURES)}\n")
    collector = CollectorProcess(
        "--upstream",
        mlserver["url"],
        "--model",
        "bikes",
        "--model-version",
        "v1",
        "--store",
        f"chdb://{store_dir}",
        "--config",
        str(config),
    )
    february = bikeshare[bikeshare["mnth"] == "Feb"][FEATURES].to_numpy(dtype=float)
    batches = [february[0:1], february[1:5], february[5:13]]  # 1 + 4 + 8 = 13 rows
    sent_rows: list[np.ndarray] = []
    predictions: list[float] = []
    try:
        # Raw bytes: the same request straight to MLServer and through the collector gives the same response.
        with httpx.Client(timeout=30) as client:
            body = json.dumps(_infer_body(february[20:23], "same-id")).encode()
            direct = client.post(mlserver["url"] + "/v2/models/bikes/infer", content=body)
            proxied = client.post(collector.url + "/v2/models/bikes/infer", content=body)
            assert direct.status_code == proxied.status_code == 200
            assert proxied.content == direct.content
            sent_rows.append(february[20:23])
            predictions += json.loads(direct.content)["outputs"][0]["data"]

        host = collector.url.removeprefix("http://")
        client = triton.InferenceServerClient(url=host)
        assert client.is_model_ready("bikes")
        for i, batch in enumerate(batches):
            tensor = triton.InferInput("input-0", list(batch.shape), "FP64")
            tensor.set_data_from_numpy(batch, binary_data=False)
            result = client.infer(
                "bikes",
                [tensor],
                outputs=[triton.InferRequestedOutput("predict", binary_data=False)],
                request_id=f"r{i}",
            )
            got = result.as_numpy("predict").ravel()
            np.testing.assert_allclose(got, mlserver["model"].predict(batch))
            sent_rows.append(batch)
            predictions += got.tolist()
        client.close()
    finally:
        status, err = collector.stop()
    assert status == 0, err
    assert "written 16" in err  # 3 + 1 + 4 + 8 rows, flushed on SIGTERM

    rows = query_store(
        store_dir,
        "SELECT num_names, num_values, prediction, model_version, protocol, error_class, payload_sampled, "
        "deterministic FROM inferences FINAL WHERE model = 'bikes' ORDER BY ts, prediction",
    )
    assert len(rows) == 16
    assert {r["model_version"] for r in rows} == {"v1"}
    assert {(r["protocol"], r["error_class"], r["payload_sampled"], r["deterministic"]) for r in rows} == {
        ("oip", "", True, True)
    }
    assert all(r["num_names"] == FEATURES for r in rows)
    stored = sorted((tuple(r["num_values"]), r["prediction"]) for r in rows)
    expected = sorted(zip(map(tuple, np.vstack(sent_rows).tolist()), predictions, strict=True))
    assert stored == expected


# -- OpenAI-compatible -------------------------------------------------------------------------------

TOKENS = ["The", " bikes", " are", " busy", " today", "."]
FIRST_TOKEN_DELAY = 0.3
TOKEN_GAP = 0.1


class _LLM:
    """A small OpenAI-compatible server: chat (streamed or not), completions, embeddings."""

    def __init__(self) -> None:
        self.stream_finished_at: float | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        return app

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        usage = {"prompt_tokens": 11, "completion_tokens": len(TOKENS), "total_tokens": 11 + len(TOKENS)}
        base = {"id": "chatcmpl-1", "created": 1700000000, "model": "tiny-llm-1.0"}
        if not body.get("stream"):
            await asyncio.sleep(FIRST_TOKEN_DELAY)
            message = {"role": "assistant", "content": "".join(TOKENS)}
            return web.json_response(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": usage,
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(choices: list, **extra) -> None:
            chunk = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        await asyncio.sleep(FIRST_TOKEN_DELAY)
        for token in TOKENS:
            await send([{"index": 0, "delta": {"content": token}, "finish_reason": None}])
            await asyncio.sleep(TOKEN_GAP)
        await send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], usage=usage)
        await response.write(b"data: [DONE]\n\n")
        self.stream_finished_at = time.perf_counter()
        await response.write_eof()
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response(
            {
                "object": "list",
                "model": "tiny-embed",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, len(body["input"])]}],
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            }
        )


@pytest.fixture(scope="module")
def llm():
    server = _LLM()
    app = AppServer(server.app())
    server.url = app.url
    yield server
    app.close()


@pytest.fixture(scope="module")
def llm_collector(llm, engine_dir):
    store_url = module_store_url(engine_dir, "collector_e2e_openai")
    collector = InProcessCollector(store_url, upstream=llm.url, model="chatbot")
    collector.store_url = store_url
    yield collector
    collector.close()


def _events(collector, where: str, expected: int) -> list[dict]:
    from driftwarden import storage

    db = storage.connect(collector.store_url)
    sql = f"SELECT * FROM inferences FINAL WHERE model = 'chatbot' AND {where} ORDER BY ts"

    def fetch():
        result = db.query(sql)
        return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

    return wait_for(fetch, lambda rows: len(rows) >= expected)


@pytest.mark.timeout(60)
def test_openai_sdk_stream_arrives_incrementally_and_is_recorded_with_text_tokens_and_ttft(llm, llm_collector):
    from openai import OpenAI

    client = OpenAI(base_url=llm_collector.url + "/v1", api_key="not-used", max_retries=0)
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model="tiny-llm",
        messages=[{"role": "user", "content": "How busy are the bikes?"}],
        stream=True,
        stream_options={"include_usage": True},
        temperature=0,
        user="stream-test",
    )
    pieces, first_content_at = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first_content_at = first_content_at or time.perf_counter()
            pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == "".join(TOKENS)
    assert llm.stream_finished_at is not None
    # The first token reached the client while the upstream was still generating the rest.
    assert first_content_at < llm.stream_finished_at - (len(TOKENS) - 2) * TOKEN_GAP

    (event,) = _events(llm_collector, "output_text != '' AND ttft_ms IS NOT NULL", 1)
    assert event["output_text"] == "".join(TOKENS)
    assert (event["prompt_tokens"], event["completion_tokens"]) == (11, len(TOKENS))
    assert event["finish_reason"] == "stop" and event["deterministic"]
    assert FIRST_TOKEN_DELAY * 1000 <= event["ttft_ms"] < (first_content_at - started) * 1000 + 50
    assert event["latency_ms"] >= (FIRST_TOKEN_DELAY + (len(TOKENS) - 1) * TOKEN_GAP) * 1000
    assert event["model_version"] == "tiny-llm-1.0" and event["protocol"] == "openai"
    assert "How busy are the bikes?" in event["input_payload"] and "[DONE]" in event["output_payload"]


@pytest.mark.timeout(60)
def test_openai_sdk_plain_chat_and_embeddings_are_recorded(llm, llm_collector):
    from openai import OpenAI

    client = OpenAI(base_url=llm_collector.url + "/v1", api_key="not-used", max_retries=0)
    reply = client.chat.completions.create(
        model="tiny-llm", messages=[{"role": "user", "content": "plain please"}], temperature=0.8, max_tokens=32
    )
    assert reply.choices[0].message.content == "".join(TOKENS)
    assert reply.usage.completion_tokens == len(TOKENS)
    vectors = client.embeddings.create(model="tiny-embed", input="four")
    assert vectors.data[0].embedding == [0.1, 0.2, 4.0]

    (chat,) = _events(llm_collector, "input_payload LIKE '%plain please%'", 1)
    assert chat["output_text"] == "".join(TOKENS) and chat["ttft_ms"] is None
    assert not chat["deterministic"] and chat["completion_tokens"] == len(TOKENS)
    assert dict(zip(chat["num_names"], chat["num_values"], strict=True))["max_tokens"] == 32.0
    (embedding,) = _events(llm_collector, "endpoint = '/v1/embeddings'", 1)
    assert embedding["prompt_tokens"] == 4 and embedding["output_hash"] != 0 and embedding["error_class"] == ""


# -- the whole pipeline through the proxy, with the sink going away ------------------------------------


def _metric(admin_url: str, name: str, model: str) -> float:
    text = httpx.get(admin_url + "/metrics", timeout=5).text
    prefix = f'driftwarden_collector_{name}{{model="{model}"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


@pytest.mark.timeout(400)
def test_every_proxied_inference_is_stored_exactly_once_when_the_hub_goes_down_and_comes_back(tmp_path):
    from tests.hub_process import Hub
    from tests.hub_process import query_store as query_hub

    async def infer(request: web.Request) -> web.Response:
        doc = await request.json()
        x = doc["inputs"][0]["data"][0]
        return web.json_response({"outputs": [{"name": "y", "shape": [1], "datatype": "FP64", "data": [2 * x]}]})

    app = web.Application()
    app.router.add_post("/v2/models/fault/infer", infer)
    upstream = AppServer(app)
    hub = Hub(tmp_path / "hub-store").start()
    config = tmp_path / "collector.yaml"
    config.write_text("batch_events: 50\nflush_interval_ms: 20\n")
    collector = CollectorProcess(
        *("--upstream", upstream.url, "--model", "fault-proxy", "--hub", hub.url),
        *("--spool-dir", str(tmp_path / "spool"), "--config", str(config)),
    )
    try:
        with httpx.Client(timeout=10) as client:

            def send(first: int, last: int) -> None:
                for i in range(first, last):
                    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [float(i)]}]}
                    r = client.post(collector.url + "/v2/models/fault/infer", json=body)
                    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [2.0 * i]

            send(0, 600)
            assert wait_for(
                lambda: _metric(collector.admin_url, "events_written_total", "fault-proxy"), lambda n: n >= 600
            )
            hub.stop()
            send(600, 1400)  # the hub is down: inference is unaffected, events go to the spool
            assert wait_for(lambda: _metric(collector.admin_url, "spool_bytes", "fault-proxy"), lambda n: n > 0)
            hub.start()
            send(1400, 2000)
            written = wait_for(
                lambda: _metric(collector.admin_url, "events_written_total", "fault-proxy"), lambda n: n >= 2000, 180
            )  # against a hang only: replays back off up to 5 s per attempt, and a loaded machine is slow
            assert written == 2000
    finally:
        status, err = collector.stop()
        hub.stop()
        upstream.close()
    assert status == 0, err
    rows = query_hub(
        hub.store_url,
        "SELECT count(), uniqExact(event_id), uniqExact(num_values[1]), min(num_values[1]), max(num_values[1]), "
        "countIf(prediction = 2 * num_values[1]) FROM inferences FINAL WHERE model = 'fault-proxy'",
    )
    assert rows == [[2000, 2000, 2000, 0.0, 1999.0, 2000]]


@pytest.mark.timeout(180)
def test_a_collector_killed_with_sigkill_and_restarted_on_its_spool_duplicates_nothing(tmp_path):
    from tests.hub_process import Hub
    from tests.hub_process import query_store as query_hub

    async def infer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"outputs": [{"name": "y", "shape": [1], "datatype": "FP64", "data": [1.0]}]})

    app = web.Application()
    app.router.add_post("/v2/models/kill/infer", infer)
    upstream = AppServer(app)
    hub = Hub(tmp_path / "hub-store").start()
    config = tmp_path / "collector.yaml"
    batch = 50
    config.write_text(f"batch_events: {batch}\nflush_interval_ms: 20\n")
    args = (
        "--upstream",
        upstream.url,
        "--model",
        "kill-proxy",
        "--hub",
        hub.url,
        "--spool-dir",
        str(tmp_path / "spool"),
    )
    args += ("--config", str(config))

    def send(collector: CollectorProcess, first: int, last: int) -> None:
        with httpx.Client(timeout=10) as client:
            for i in range(first, last):
                body = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [float(i)]}]}
                assert client.post(collector.url + "/v2/models/kill/infer", json=body).status_code == 200

    try:
        first = CollectorProcess(*args)
        send(first, 0, 500)
        first.kill()  # what the writer had not acknowledged is in the journal (in the spool directory)
        second = CollectorProcess(*args)  # captures the journal's exchanges again and replays the spool
        send(second, 500, 1000)
        status, err = second.stop()
        assert status == 0, err
    finally:
        hub.stop()
        upstream.close()
    ((rows, ids, xs, after_restart),) = query_hub(
        hub.store_url,
        "SELECT count(), uniqExact(event_id), uniqExact(num_values[1]), countIf(num_values[1] >= 500) "
        "FROM inferences FINAL WHERE model = 'kill-proxy'",
    )
    assert rows == ids == xs  # nothing stored twice
    assert after_restart == 500  # the second run was flushed on SIGTERM
    assert rows == 1000  # every answered inference: the journal had the ones the kill caught in memory
