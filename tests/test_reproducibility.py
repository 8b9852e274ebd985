"""Reproducibility: consistency of deterministic requests in ClickHouse, and replay against a real MLServer."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from driftwarden.detectors.config import ReplayConfig
from driftwarden.detectors.reproducibility import compute_consistency, write_reproducibility
from driftwarden.detectors.reproducibility.replay import Recorded, compare, compute_replay
from driftwarden.detectors.window import Window
from tests.conftest import ROOT, run_cli
from tests.inference_rows import event, insert_events

UTC = dt.UTC
START = dt.datetime(2026, 3, 3, tzinfo=UTC)
WINDOW = Window(START, START + dt.timedelta(hours=1))
FEATURES = ["hr", "temp", "hum", "windspeed"]


def _at(i: int) -> dt.datetime:
    return START + dt.timedelta(seconds=10 * i + 1)


# -- consistency --------------------------------------------------------------------------------


def test_consistency_counts_deterministic_input_groups_with_more_than_one_output(store):
    rows = []
    i = 0

    def group(input_hash: int, outputs: list[int], **columns) -> None:
        nonlocal i
        for out in outputs:
            rows.append(
                event("llm", _at(i), input_hash=input_hash, output_hash=out, **{"deterministic": True, **columns})
            )
            i += 1

    for h in range(10):
        group(100 + h, [7, 7, 7])  # consistent
    group(200, [1, 2])  # inconsistent
    group(201, [1, 1, 3])  # inconsistent
    group(300, [5])  # a single request cannot be checked
    group(400, [1, 2, 3], deterministic=False)  # sampling asked for: not expected to repeat
    group(500, [1, 2], is_replay=True)  # replays are not traffic
    group(600, [1, 2], status=503)  # failures are not answers
    group(201, [9], params_hash=42)  # same input, other parameters: another group, single
    group(700, [1, 2], model_digest="sha256:other")  # another digest: its own row
    insert_events(store, rows)

    results = {r.model_digest: r for r in compute_consistency(store, "llm", WINDOW)}
    main, other = results["sha256:0"], results["sha256:other"]
    assert (main.checked, main.mismatches) == (12, 2)
    assert main.rate == pytest.approx(10 / 12)
    assert sorted(int(x["input_hash"]) for x in json.loads(main.details)["inconsistent"]) == [200, 201]
    assert (other.checked, other.mismatches, other.rate) == (1, 1, 0.0)
    assert write_reproducibility(store, list(results.values())) == 2
    stored = store.query(
        "SELECT kind, checked, mismatches, rate, input_hash, code_version, schema_version "
        "FROM reproducibility_results FINAL WHERE model_digest = 'sha256:0'"
    ).result_rows
    assert stored[0][:4] == ("consistency", 12, 2, pytest.approx(10 / 12))
    assert stored[0][4] == main.input_hash and stored[0][5] and stored[0][6] >= 1


def test_consistency_rerun_on_the_same_window_gives_identical_numbers_and_input_hash(store):
    insert_events(
        store,
        [event("llm", _at(k), input_hash=k % 7, output_hash=k % 5, deterministic=True) for k in range(60)],
    )
    first = compute_consistency(store, "llm", WINDOW)
    second = compute_consistency(store, "llm", WINDOW)
    key = [(r.checked, r.mismatches, r.rate, r.details, r.input_hash) for r in first]
    assert key == [(r.checked, r.mismatches, r.rate, r.details, r.input_hash) for r in second]
    assert first and first[0].checked == 7


# -- replay against a real model server ---------------------------------------------------------


def _bikeshare() -> pd.DataFrame:
    base = importlib.util.find_spec("ISLP").submodule_search_locations[0]
    return pd.read_csv(os.path.join(base, "data", "Bikeshare.csv"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_model(directory: Path, name: str, model, version: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, directory / "model.joblib")
    settings = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": version},
    }
    (directory / "model-settings.json").write_text(json.dumps(settings))


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory):
    """A real MLServer (scikit-learn runtime) serving a regressor and a classifier trained on Bikeshare."""
    data = _bikeshare()
    january = data[data["mnth"] == "Jan"]
    x, y = january[FEATURES].to_numpy(float), january["bikers"].to_numpy(float)
    root = tmp_path_factory.mktemp("mlserver")
    _write_model(root / "bikes", "bikes", LinearRegression().fit(x, y), "v1")
    busy = np.where(y > np.median(y), "busy", "quiet")
    _write_model(root / "busy", "busy", LogisticRegression(max_iter=500).fit(x, busy), "v1")
    (root / "settings.json").write_text(json.dumps({"parallel_workers": 0}))
    port = _free_port()
    env = {
        **os.environ,
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(port),
        "MLSERVER_GRPC_PORT": str(_free_port()),
        "MLSERVER_METRICS_PORT": str(_free_port()),
    }
    mlserver_bin = Path(sys.executable).parent / "mlserver"
    log = open(root / "mlserver.log", "w")  # noqa: SIM115 - closed in the teardown
    proc = subprocess.Popen([str(mlserver_bin), "start", str(root)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                ready = all(
                    httpx.get(f"{url}/v2/models/{m}/ready", timeout=1).status_code == 200 for m in ("bikes", "busy")
                )
            except httpx.HTTPError:
                ready = False
            if ready:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("MLServer did not start: " + (root / "mlserver.log").read_text()[-2000:])
            time.sleep(0.2)
        yield {"url": url, "root": root, "data": data}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _record(client, url: str, model: str, rows: np.ndarray, *, keep_response: bool) -> list[dict]:
    """Call the model as a client would and store each exchange as the collector records OIP events."""
    events = []
    for i, row in enumerate(rows):
        request = {"inputs": [{"name": "x", "shape": [1, len(FEATURES)], "datatype": "FP64", "data": [list(row)]}]}
        body = json.dumps(request)
        response = httpx.post(
            f"{url}/v2/models/{model}/infer", content=body, headers={"content-type": "application/json"}
        )
        response.raise_for_status()
        answer = response.json()
        first = answer["outputs"][0]["data"][0]
        numeric = isinstance(first, (int, float))
        events.append(
            event(
                model,
                _at(i),
                endpoint=f"/v2/models/{model}/infer",
                num_names=FEATURES,
                num_values=[float(v) for v in row],
                prediction=float(first) if numeric else None,
                prediction_label="" if numeric else str(first),
                output_names=["predict"] if numeric else [],
                output_values=[float(first)] if numeric else [],
                input_payload=body,
                output_payload=response.text if keep_response else "",
                payload_sampled=True,
            )
        )
    return insert_events(client, events)


@pytest.mark.timeout(120)
def test_replay_against_mlserver_reproduces_recorded_outputs_until_the_model_is_swapped(store, mlserver):
    url, data = mlserver["url"], mlserver["data"]
    february = data[data["mnth"] == "Feb"][FEATURES].to_numpy(float)
    bikes = _record(store, url, "bikes", february[:20], keep_response=True)
    bikes += _record(store, url, "bikes", february[20:30], keep_response=False)
    _record(store, url, "busy", february[:15], keep_response=True)
    settings = ReplayConfig(collector_url=url, sample_size=25, tolerance=1e-9)

    (result,) = compute_replay(store, "bikes", WINDOW, settings)
    assert (result.kind, result.checked, result.mismatches, result.rate) == ("replay", 25, 0, 1.0)
    (labels,) = compute_replay(store, "busy", WINDOW, settings)
    assert (labels.checked, labels.rate) == (15, 1.0)
    again = compute_replay(store, "bikes", WINDOW, settings)[0]
    assert (again.rate, again.input_hash) == (result.rate, result.input_hash)  # same sample, same numbers

    # Swap the model behind the same name for one trained on other data: predictions change.
    other = data[data["mnth"] == "July"]
    swapped = LinearRegression().fit(other[FEATURES].to_numpy(float), other["casual"].to_numpy(float))
    _write_model(mlserver["root"] / "bikes", "bikes", swapped, "v1")
    httpx.post(f"{url}/v2/repository/models/bikes/load", timeout=30).raise_for_status()

    (after,) = compute_replay(store, "bikes", WINDOW, settings)
    assert after.checked == 25
    assert after.mismatches == 25 and after.rate == 0.0
    details = json.loads(after.details)
    assert {m["event_id"] for m in details["mismatches"]} <= {str(e["event_id"]) for e in bikes}
    assert all("recorded" in m["reason"] and "replayed" in m["reason"] for m in details["mismatches"])


@pytest.mark.timeout(120)
def test_replay_through_the_real_collector_is_recorded_as_replays_of_the_sampled_events(store, mlserver, tmp_path):
    collector_store = f"chdb://{tmp_path / 'collector-store'}"
    assert run_cli("migrate", "--store", collector_store).returncode == 0
    port, admin = _free_port(), _free_port()
    log = open(tmp_path / "collector.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "driftwarden", "collector", "--upstream", mlserver["url"], "--model", "bikes"]
        + ["--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}", "--store", collector_store],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the collector did not start: " + (tmp_path / "collector.log").read_text()[-2000:])
            time.sleep(0.2)
        february = mlserver["data"][lambda d: d["mnth"] == "Feb"][FEATURES].to_numpy(float)
        recorded = _record(store, mlserver["url"], "bikes", february[40:48], keep_response=True)
        settings = ReplayConfig(collector_url=f"http://127.0.0.1:{port}", sample_size=8, tolerance=1e-9)
        (result,) = compute_replay(store, "bikes", WINDOW, settings)
        assert (result.checked, result.rate) == (8, 1.0)
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        log.close()
    query = (
        "import json, storage; c = storage.connect(" + repr(collector_store) + "); "
        "print(json.dumps(c.query('SELECT count(), countIf(is_replay), arraySort(groupArray(toString(replay_of))) "
        "FROM inferences FINAL').result_rows[0]))"
    )
    out = subprocess.run([sys.executable, "-c", query], capture_output=True, text=True, cwd=ROOT, timeout=60)
    count, replays, replay_of = json.loads(out.stdout.strip().splitlines()[-1])
    assert (count, replays) == (8, 8)
    assert replay_of == sorted(str(r["event_id"]) for r in recorded)


def test_replay_with_no_reachable_collector_fails_with_the_reason(store):
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP64", "data": [[1.0]]}]})
    insert_events(store, [event("bikes", _at(0), input_payload=body, payload_sampled=True, prediction=1.0)])
    settings = ReplayConfig(collector_url=f"http://127.0.0.1:{_free_port()}", sample_size=5, timeout="2s")
    with pytest.raises(RuntimeError, match="none of 1 replays"):
        compute_replay(store, "bikes", WINDOW, settings)


def _recorded(output_payload: str = "", **fields) -> Recorded:
    base = dict(
        event_id=uuid.uuid4(),
        model_version="v1",
        model_digest="",
        protocol="openai",
        endpoint="/v1/chat/completions",
        input_payload="{}",
        output_payload=output_payload,
        prediction=None,
        prediction_label="",
        output_values=(),
        output_text="",
    )
    return Recorded(**{**base, **fields})


def test_replay_comparison_uses_tolerance_for_numbers_exactness_for_labels_and_similarity_for_text():
    chat = {
        "id": "a",
        "created": 1,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "The bike demand is high today."}}],
    }
    recorded = _recorded(json.dumps(chat))
    similar = {**chat, "id": "b", "created": 2}
    similar["choices"] = [{"index": 0, "message": {"role": "assistant", "content": "The bike demand is high today!"}}]
    different = {**chat, "choices": [{"index": 0, "message": {"role": "assistant", "content": "No."}}]}
    assert compare(recorded, similar, 1e-6, 0.9) is None
    assert "similarity" in compare(recorded, different, 1e-6, 0.9)

    oip = {"id": "x", "outputs": [{"name": "predict", "datatype": "FP64", "shape": [1, 1], "data": [100.0]}]}
    numeric = _recorded(json.dumps(oip), protocol="oip")
    near = {"id": "y", "outputs": [{"name": "predict", "datatype": "FP64", "shape": [1, 1], "data": [100.00001]}]}
    assert compare(numeric, near, 1e-6, 0.9) is None
    assert compare(numeric, near, 1e-9, 0.9) is not None

    label = _recorded(protocol="oip", prediction_label="busy")
    assert compare(label, {"outputs": [{"name": "predict", "data": ["busy"]}]}, 0.0, 0.5) is None
    assert "recorded 'busy'" in compare(label, {"outputs": [{"name": "predict", "data": ["bust"]}]}, 0.0, 0.5)
