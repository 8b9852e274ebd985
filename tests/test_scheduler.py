"""The detectors' scheduler and ``driftwarden detectors``: due windows, idempotency, failures, /metrics."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest
from sklearn.linear_model import LinearRegression

from driftwarden.cli import main
from driftwarden.detectors import config as detector_config
from driftwarden.detectors.exporter import Exporter
from driftwarden.detectors.scheduler import Scheduler, due_windows
from driftwarden.detectors.window import Window
from tests.conftest import ROOT, run_cli
from tests.inference_rows import event, insert_events, insert_labels

UTC = dt.UTC
DAY = dt.datetime(2026, 3, 10, tzinfo=UTC)
NOW = DAY + dt.timedelta(hours=6, minutes=5)  # six hourly windows of data have ended
FEATURES = ["temp", "hum", "windspeed"]


@cache
def _bikeshare() -> pd.DataFrame:
    base = importlib.util.find_spec("ISLP").submodule_search_locations[0]
    return pd.read_csv(os.path.join(base, "data", "Bikeshare.csv"))


@cache
def _model() -> LinearRegression:
    jan = _bikeshare()[lambda d: d["mnth"] == "Jan"]
    return LinearRegression().fit(jan[FEATURES].to_numpy(float), jan["bikers"].to_numpy(float))


class _OIPHandler(BaseHTTPRequestHandler):
    """A small real Open Inference Protocol server answering with the scikit-learn model."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        x = np.asarray(body["inputs"][0]["data"], dtype=float).reshape(-1, len(FEATURES))
        y = _model().predict(x)
        answer = {
            "model_name": "bikes",
            "id": str(uuid.uuid4()),
            "outputs": [{"name": "predict", "shape": [len(y), 1], "datatype": "FP64", "data": y.tolist()}],
        }
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def model_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OIPHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _populate(store, *, hours: int = 6, labelled_hours: int = 5, per_hour: int = 60, server: str | None = None):
    """Six hours of Bikeshare January traffic for model ``bikes``, as the collector records it."""
    data = _bikeshare()[lambda d: d["mnth"] == "Jan"].reset_index(drop=True)
    rows = []
    for h in range(hours):
        chunk = data.iloc[h * per_hour : (h + 1) * per_hour]
        for k, (_, r) in enumerate(chunk.iterrows()):
            x = [float(r[f]) for f in FEATURES]
            pred = float(_model().predict(np.asarray([x]))[0])
            extra = {}
            if server is not None and k < 3:  # a few payloads kept whole, as sampling would
                body = json.dumps({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [x]}]})
                answer = httpx.post(f"{server}/v2/models/bikes/infer", content=body).text
                extra = {"input_payload": body, "output_payload": answer, "payload_sampled": True}
            rows.append(
                event(
                    "bikes",
                    DAY + dt.timedelta(hours=h, seconds=k * 55 + 1),
                    endpoint="/v2/models/bikes/infer",
                    num_names=FEATURES,
                    num_values=x,
                    cat_names=["weathersit"],
                    cat_values=[str(r["weathersit"])],
                    prediction=pred,
                    latency_ms=float(5 + (k % 10) * 3),
                    status=503 if k == 0 else 200,
                    input_hash=k % 20,
                    output_hash=k % 20,
                    deterministic=True,
                    **extra,
                )
            )
    rows = insert_events(store, rows)
    labelled = [r for r in rows if r["ts"] < DAY + dt.timedelta(hours=labelled_hours)]
    truth = data["bikers"].to_numpy(float)
    insert_labels(store, "bikes", [(r["event_id"], "", float(truth[i])) for i, r in enumerate(labelled)], NOW)
    return rows


def _config(tmp_path: Path, replay_url: str | None = None) -> Path:
    replay = f"\n      replay: {{collector_url: {replay_url}, sample_size: 5, timeout: 2s}}" if replay_url else ""
    text = f"""
window: 1h
schedule: {{every: 30s, lag: 1m, catch_up: 6}}
slo: {{latency_ms: 25, percentile: 0.99, availability: 0.999}}
drift: {{min_samples: 10}}
models:
  - name: bikes
    features: {{discover: true}}
    performance: {{task: regression, label_horizon: 1d}}
    reproducibility:
      consistency: true{replay}
"""
    path = tmp_path / "detectors.yaml"
    path.write_text(text)
    return path


def _ok_runs(store) -> list[tuple]:
    return store.query(
        "SELECT detector, toUnixTimestamp64Micro(current_start), input_hash FROM detector_runs "
        "WHERE status = 'ok' ORDER BY detector, current_start, started_at"
    ).result_rows


def test_due_windows_are_aligned_to_their_length_and_wait_for_the_lag():
    now = dt.datetime(2026, 3, 10, 6, 0, 30, tzinfo=UTC)
    hourly = due_windows(dt.timedelta(hours=1), now, dt.timedelta(minutes=1), 3)
    assert [(w.start.hour, w.end.hour) for w in hourly] == [(2, 3), (3, 4), (4, 5)]  # 05-06 ends < 1 min ago
    daily = due_windows(dt.timedelta(days=1), now, dt.timedelta(0), 1)
    assert daily == [Window(dt.datetime(2026, 3, 9, tzinfo=UTC), dt.datetime(2026, 3, 10, tzinfo=UTC))]
    assert due_windows(dt.timedelta(minutes=5), now, dt.timedelta(0), 1)[0].end == dt.datetime(
        2026, 3, 10, 6, 0, tzinfo=UTC
    )


@pytest.mark.timeout(120)
def test_detectors_once_computes_every_window_then_nothing_until_late_labels_arrive(store, store_url, tmp_path, capsys):
    _populate(store)
    config = _config(tmp_path)
    argv = ["detectors", "--config", str(config), "--once", "--store", store_url, "--now", NOW.isoformat()]

    assert main(argv) == 0
    first = _ok_runs(store)
    by_detector = {d: sum(1 for x in first if x[0] == d) for d, _, _ in first}
    # six windows; drift, multivariate drift and data quality against the previous window have no reference for
    # the first; five hours are labelled
    assert by_detector == {
        "latency": 6, "consistency": 6, "drift": 5, "prediction_drift": 5, "performance": 5,
        "multivariate_drift": 5, "data_quality": 5,
    }  # fmt: skip
    tables = {
        t: store.query(f"SELECT count() FROM {t} FINAL").result_rows[0][0]
        for t in ("latency_results", "performance_results", "reproducibility_results", "drift_results")
    }
    assert tables["latency_results"] == 6 and tables["performance_results"] == 5 * 3
    assert tables["reproducibility_results"] == 6 and tables["drift_results"] > 0
    capsys.readouterr()

    assert main(argv) == 0  # the same windows again: nothing new is computed
    assert _ok_runs(store) == first
    assert "0 runs, 0 failed (nothing was due)" in capsys.readouterr().out

    # Labels of the sixth hour arrive late: only that performance window is (re)computed.
    sixth = [
        r
        for r in store.query(
            "SELECT event_id FROM inferences WHERE model = 'bikes' AND ts >= {t:DateTime64(6, 'UTC')}",
            parameters={"t": DAY + dt.timedelta(hours=5)},
        ).result_rows
    ]
    insert_labels(store, "bikes", [(eid, "", 100.0) for (eid,) in sixth], NOW)
    assert main(argv) == 0
    third = _ok_runs(store)
    new = sorted(set(third) - set(first))
    assert [(d, s) for d, s, _ in new] == [("performance", int((DAY + dt.timedelta(hours=5)).timestamp() * 1e6))]
    labelled = store.query(
        "SELECT DISTINCT labelled FROM performance_results FINAL WHERE current_start = {t:DateTime64(6, 'UTC')}",
        parameters={"t": DAY + dt.timedelta(hours=5)},
    ).result_rows
    assert labelled == [(60,)]


@pytest.mark.timeout(120)
def test_a_failing_detector_is_recorded_counted_and_does_not_stop_the_others(
    store, store_url, tmp_path, capsys, model_server
):
    _populate(store, hours=2, labelled_hours=2, server=model_server)  # payloads recorded from a live model
    config = _config(tmp_path, replay_url="http://127.0.0.1:9")  # but replayed to where nothing listens
    argv = ["detectors", "--config", str(config), "--once", "--store", store_url, "--now", NOW.isoformat()]

    assert main(argv) == 1
    captured = capsys.readouterr()
    assert re.search(r"failed: replay for model bikes window 2026-03-10T00:00:00\+00:00\.\.", captured.err)
    runs = store.query("SELECT detector, status, error FROM detector_runs ORDER BY detector").result_rows
    failed = [(d, e) for d, s, e in runs if s == "error"]
    assert [d for d, _ in failed] == ["replay", "replay"]
    assert all("none of" in e and "127.0.0.1:9" in e for _, e in failed)
    ok = {d for d, s, _ in runs if s == "ok"}
    assert ok == {
        "latency",
        "consistency",
        "drift",
        "prediction_drift",
        "performance",
        "multivariate_drift",
        "data_quality",
    }


@pytest.mark.timeout(120)
def test_metrics_endpoint_exposes_every_driftwarden_metric_over_http(store, tmp_path, model_server):
    _populate(store, server=model_server)
    text = _config(tmp_path, replay_url=model_server).read_text()
    exporter = Exporter()
    port = exporter.serve("127.0.0.1", 0)
    try:
        made = Scheduler(store, detector_config.parse(text), exporter).run_once(NOW)
        assert made and all(r.status == "ok" for r in made)
        # A detector failing at run time is counted: drift against a fixed reference window without events.
        pinned = text.replace(
            "features: {discover: true}", "features: {discover: true}\n    reference: 2020-01-01..2020-01-02"
        )
        last = {d: _last_success(exporter, d) for d in ("drift", "latency")}
        failed = Scheduler(store, detector_config.parse(pinned), exporter).run_once(NOW)
        assert {r.status for r in failed if r.detector == "drift"} == {"error"}
        assert _last_success(exporter, "drift") == last["drift"]  # a failing detector is not up to date
        assert _last_success(exporter, "latency") > last["latency"]  # nothing due, no failure: up to date
        body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        exporter.close()

    # After a restart the result gauges come back from the store as they were.
    restored = Exporter()
    restored.restore(store, ["bikes"])
    assert _result_lines(generate_latest(restored.registry)) == _result_lines(generate_latest(exporter.registry))

    samples = _samples(body)
    v = {"model": "bikes", "model_version": "v1"}
    every_version = {"model": "bikes", "model_version": ""}  # drift without a version filter spans all versions
    for name in ("driftwarden_dataset_drift_share", "driftwarden_dataset_drifted"):
        assert every_version in samples[name], name
    for name in ("driftwarden_error_ratio", "driftwarden_requests_per_second", "driftwarden_slo_attainment"):
        assert v in samples[name], name
    for name in (
        "driftwarden_feature_drift_score",
        "driftwarden_feature_drifted",
        "driftwarden_feature_drift_persistent",
    ):
        assert {s["feature"] for s in samples[name]} >= {"temp", "hum", "windspeed", "weathersit"}, name
        assert all(set(s) == {"model", "model_version", "feature", "method"} for s in samples[name])
    for name in ("driftwarden_prediction_drift_score", "driftwarden_prediction_drifted"):
        assert {tuple(sorted(s)) for s in samples[name]} == {("method", "model", "model_version")}, name
    assert {s["metric"] for s in samples["driftwarden_performance"]} == {"mae", "rmse", "mean_error"}
    assert {s["quantile"] for s in samples["driftwarden_latency_seconds"]} == {"0.5", "0.9", "0.95", "0.99"}
    assert {s["window"] for s in samples["driftwarden_slo_burn_rate"]} == {"1h", "6h", "24h", "30d"}
    assert {s["kind"] for s in samples["driftwarden_reproducibility_rate"]} == {"consistency", "replay"}
    for name in ("driftwarden_detector_last_success_timestamp_seconds", "driftwarden_detector_run_duration_seconds"):
        assert {s["detector"] for s in samples[name]} >= {"drift", "latency", "replay", "performance"}, name
    assert {"detector": "drift", "model": "bikes"} in samples["driftwarden_detector_errors_total"]
    assert {"detector": "drift", "model": "bikes", "status": "error"} in samples["driftwarden_detector_runs_total"]
    assert v in samples["driftwarden_model_events_total"]
    assert {"model": "bikes"} in samples["driftwarden_events_last_timestamp_seconds"]

    values = _values(body)
    assert values['driftwarden_reproducibility_rate{kind="replay",model="bikes",model_version="v1"}'] == 1.0
    assert values['driftwarden_detector_errors_total{detector="drift",model="bikes"}'] == 6.0  # one per window
    assert values['driftwarden_model_events_total{model="bikes",model_version="v1"}'] == 360.0
    newest = DAY + dt.timedelta(hours=5, seconds=59 * 55 + 1)
    assert values['driftwarden_events_last_timestamp_seconds{model="bikes"}'] == newest.timestamp()


@pytest.mark.timeout(90)
def test_the_detectors_command_serves_metrics_until_it_is_terminated(tmp_path):
    store = f"chdb://{tmp_path / 'store'}"
    assert run_cli("migrate", "--store", store).returncode == 0
    command = [sys.executable, "-m", "driftwarden", "detectors", "--config", str(_config(tmp_path))]
    proc = subprocess.Popen(
        [*command, "--store", store, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        line = proc.stdout.readline()
        match = re.search(r"serving metrics on (http://127\.0\.0\.1:\d+/metrics)", line)
        assert match, line + proc.stderr.read() if proc.poll() is not None else line
        body = httpx.get(match.group(1), timeout=10).text
        assert 'driftwarden_detector_runs_total{detector="latency",model="bikes",status="ok"} 0.0' in body
        assert 'driftwarden_detector_errors_total{detector="performance",model="bikes"} 0.0' in body
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _last_success(exporter: Exporter, detector: str) -> float:
    name = "driftwarden_detector_last_success_timestamp_seconds"
    return exporter.registry.get_sample_value(name, {"detector": detector, "model": "bikes"})


def _result_lines(exposition: bytes) -> set[str]:
    skip = ("#", "driftwarden_detector_", "driftwarden_model_events", "driftwarden_events_")
    lines = {line for line in exposition.decode().splitlines() if not line.startswith(skip)}
    assert len(lines) > 25
    return lines


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def _samples(body: str) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for line in body.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            out.setdefault(match.group(1), []).append(labels)
    return out


def _values(body: str) -> dict[str, float]:
    out = {}
    for line in body.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            labels = ",".join(sorted(re.findall(r'\w+="[^"]*"', match.group(2) or "")))
            out[match.group(1) + ("{" + labels + "}" if labels else "")] = float(match.group(3))
    return out
