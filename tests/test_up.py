"""``driftwarden up``: collectors, ingest, detectors and the API in one process over one store.

The example configuration (examples/up.yaml) runs with its addresses replaced by free
ports, in front of a real MLServer serving two scikit-learn models; traffic goes through
both collectors while the process is stopped with SIGTERM, and the store is read
afterwards from a subprocess.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from driftwarden.demo.model import FEATURES, load_hours
from driftwarden.demo.server import MLServerProcess
from tests.store_probe import query

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("bikes", "bikes-challenger")


@pytest.fixture(scope="module")
def mlserver(tmp_path_factory: pytest.TempPathFactory):
    """One MLServer serving both models of the example configuration."""
    import joblib
    from sklearn.ensemble import RandomForestRegressor

    root = tmp_path_factory.mktemp("models")
    hours = load_hours()
    x, y = hours[list(FEATURES)].to_numpy(dtype=np.float64), hours["bikers"].to_numpy(dtype=np.float64)
    for name, depth in zip(MODELS, (6, 3), strict=True):
        directory = root / name
        directory.mkdir()
        joblib.dump(RandomForestRegressor(5, max_depth=depth, random_state=0).fit(x, y), directory / "model.joblib")
        (directory / "model-settings.json").write_text(
            f'{{"name": "{name}", "implementation": "mlserver_sklearn.SKLearnModel", '
            '"parameters": {"uri": "./model.joblib"}}'
        )
    server = MLServerProcess(root)
    server.launch()
    try:
        for name in MODELS:
            server.wait_ready(name)
        yield server
    finally:
        server.stop()


def _example_config(tmp_path: Path, upstream: str) -> Path:
    """examples/up.yaml with free ports, the test's model server and spool directories under tmp_path."""
    data = yaml.safe_load((ROOT / "examples" / "up.yaml").read_text())
    for collector in data["collectors"]:
        collector["listen"] = "127.0.0.1:0"
        collector["upstream"] = upstream
        # the test names each request's event so it can find every accepted one in the store
        collector["trust_client_event_headers"] = True
        if "spool_dir" in collector:
            collector["spool_dir"] = str(tmp_path / f"spool-{collector['model']}")
    data["api"]["listen"] = "127.0.0.1:0"
    data["api"]["report_cache_dir"] = str(tmp_path / "reports")
    path = tmp_path / "up.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _start(config: Path, store: str) -> tuple[subprocess.Popen, dict[str, str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "driftwarden", "up", "--config", str(config), "--store", store],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    collectors: dict[str, str] = {}
    api = ""
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"driftwarden up exited early:\n{process.stderr.read() if process.stderr else ''}")
        if found := re.search(r"collector (\S+): (http://\S+) ->", line):
            collectors[found.group(1)] = found.group(2)
        if found := re.search(r"api: (http://\S+?)/ ", line):
            api = found.group(1)
        if "driftwarden up: ready" in line:
            return process, collectors, api
    process.kill()
    raise AssertionError("driftwarden up did not get ready within 60 s")


def _request(values: list[float], event_id: str) -> tuple[dict, dict]:
    body = {"inputs": [{"name": "features", "shape": [1, len(values)], "datatype": "FP64", "data": [values]}]}
    return body, {"X-Driftwarden-Event-Id": event_id}


@pytest.mark.timeout(180)
def test_up_runs_both_collectors_refuses_a_second_process_and_loses_no_event_on_sigterm(
    mlserver: MLServerProcess, tmp_path: Path
) -> None:
    store = f"chdb://{tmp_path}/store"
    config = _example_config(tmp_path, mlserver.url)
    process, collectors, api = _start(config, store)
    accepted: dict[str, list[str]] = {name: [] for name in MODELS}
    rows = load_hours()[list(FEATURES)].to_numpy(dtype=np.float64).tolist()
    stop = threading.Event()

    def traffic(model: str) -> None:
        with httpx.Client(timeout=10, trust_env=False) as client:
            for i in range(100_000):
                if stop.is_set():
                    return
                event_id = str(uuid.uuid4())
                body, headers = _request(rows[i % len(rows)], event_id)
                try:
                    answer = client.post(f"{collectors[model]}/v2/models/{model}/infer", json=body, headers=headers)
                except httpx.HTTPError:
                    return  # the collector stopped accepting: later requests are not accepted events
                if answer.is_success:
                    accepted[model].append(event_id)

    try:
        assert sorted(collectors) == sorted(MODELS) and api
        # A second process on the same embedded store fails at once with one plain line.
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "driftwarden", "up", "--config", str(config), "--store", store],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert second.returncode == 2
        assert time.monotonic() - started < 30  # a held lock must not be waited for
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "in use by another process" in lines[0], second.stderr

        metrics = httpx.get(f"{api}/metrics", trust_env=False).text
        assert "driftwarden_collector_requests_total" in metrics  # the collectors' registry
        assert "driftwarden_detector_runs_total" in metrics  # and the detectors', in one exposition

        threads = [threading.Thread(target=traffic, args=(m,)) for m in MODELS]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        assert all(accepted[m] for m in MODELS), "no traffic got through a collector"
        process.send_signal(signal.SIGTERM)  # during traffic
        assert process.wait(60) == 0, process.stderr.read() if process.stderr else ""
    finally:
        stop.set()
        if process.poll() is None:
            process.kill()
    for thread in threads:
        thread.join(30)

    found = query(
        store,
        {
            m: f"SELECT toString(event_id) FROM inferences FINAL WHERE model = '{m}' AND status BETWEEN 200 AND 299"
            for m in MODELS
        },
    )
    for model in MODELS:
        stored = {row[0] for row in found[model]}
        missing = set(accepted[model]) - stored
        assert not missing, f"{len(missing)} of {len(accepted[model])} answered requests of {model} have no event"


def test_up_configuration_reports_every_bad_key_on_its_own_line() -> None:
    from driftwarden.errors import UserError
    from driftwarden.up import parse

    text = (
        "models:\n  - name: bikes\n    features: {numeric: [temp]}\n"
        "collectors:\n"
        "  - {model: bikes, upstream: 'ftp://x', store: 'chdb://elsewhere'}\n"
        "  - {model: a, upstream: 'http://127.0.0.1:1', listen: '127.0.0.1:9999'}\n"
        "  - {model: b, upstream: 'http://127.0.0.1:1', listen: '127.0.0.1:9999'}\n"
        "api: {listen: nope, colour: red}\n"
    )
    with pytest.raises(UserError) as caught:
        parse(text, source="up.yaml", env={})
    lines = str(caught.value).splitlines()
    assert lines[0] == "up.yaml: 5 problems:"
    assert any(line.strip().startswith("collectors[0].store: not accepted here") for line in lines)
    assert any(line.strip().startswith("collectors[0].upstream: value 'ftp://x'") for line in lines)
    assert any("collectors[2].listen" in line and "collectors[1] listens there" in line for line in lines)
    assert any(line.strip().startswith("api.listen: value 'nope'") for line in lines)
    assert any(line.strip().startswith("api.colour:") and "accepted keys here: listen" in line for line in lines)


def test_up_reads_the_api_settings_the_environment_gives_as_the_api_command_does() -> None:
    from driftwarden.up import parse

    text = "models:\n  - name: bikes\n    features: {numeric: [temp]}\n"
    env = {"DRIFTWARDEN_ALERTMANAGER_URL": "http://alertmanager:9093", "DRIFTWARDEN_REPORT_CACHE": "/var/cache/dw"}
    settings = parse(text, env=env).api.settings
    assert (settings.alertmanager_url, str(settings.report_cache_dir)) == ("http://alertmanager:9093", "/var/cache/dw")
    # The file wins over the environment.
    text += "api: {alertmanager_url: 'http://am.example:9093'}\n"
    assert parse(text, env=env).api.settings.alertmanager_url == "http://am.example:9093"


def test_example_configuration_has_two_models_each_behind_a_collector() -> None:
    from driftwarden.up import load

    config = load(ROOT / "examples" / "up.yaml", env={"DRIFTWARDEN_API_TOKENS": "ops:0123456789abcdef0123"})
    assert [c.model for c in config.collectors] == [m.name for m in config.detectors.models] == list(MODELS)
    assert [t.name for t in config.api.settings.tokens] == ["ops"]
