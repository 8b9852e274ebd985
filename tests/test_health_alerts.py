"""Alerts firing as a health signal: read from a real Alertmanager (Debian's prometheus-alertmanager).

An alert posted to Alertmanager for one model turns that model red with the alert named in the reason;
another model stays green; without a configured source the health says "alerts: not configured" instead
of green; an Alertmanager that does not answer is a warning, within the short timeout.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from driftwarden.detectors.health import NOT_CONFIGURED, AlertSource, model_health, models_health
from tests.test_alerts import tool
from tests.test_alerts_e2e import Process, free_port, ready, wait_for

UTC = dt.UTC
FEB = dt.datetime(2011, 2, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("alertmanager-health")
    config = {"route": {"receiver": "none", "group_wait": "1s"}, "receivers": [{"name": "none"}]}
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = Process(
        [
            tool("prometheus-alertmanager"),
            f"--config.file={tmp / 'alertmanager.yml'}",
            f"--storage.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        tmp / "alertmanager.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(f"{url}/-/ready"), 30, "Alertmanager to be ready", [process.log])
        yield url
    finally:
        process.stop()


def _post(url: str, **labels: str) -> None:
    now = dt.datetime.now(UTC)
    alert = {"labels": labels, "startsAt": now.isoformat(), "endsAt": (now + dt.timedelta(minutes=5)).isoformat()}
    assert httpx.post(f"{url}/api/v2/alerts", json=[alert], timeout=5).status_code == 200


def _latency(store, model: str, attainment: float) -> None:
    store.insert(
        "latency_results",
        [[model, "v1", FEB, FEB + dt.timedelta(days=7), 1000, attainment, 0.99]],
        column_names=[
            "model",
            "model_version",
            "current_start",
            "current_end",
            "requests",
            "slo_attainment",
            "slo_percentile",
        ],
    )


@pytest.mark.timeout(60)
def test_an_alert_firing_in_alertmanager_turns_its_model_red_and_names_the_alert(store, alertmanager):
    for model in ("bikes", "cars"):
        _latency(store, model, 0.999)  # every other signal is green
    _post(alertmanager, alertname="EstimatedPerformanceDrop", model="bikes", metric="mae", severity="warning")
    _post(alertmanager, alertname="FeatureDrift", model="bikes", feature="temp", severity="warning")
    _post(alertmanager, alertname="FeatureDrift", model="trucks", feature="x", severity="critical")
    source = AlertSource(alertmanager, timeout=2.0)

    def both_firing():
        health = models_health(store, ["bikes", "cars"], alerts=source, with_alerts=True)
        return health if health["bikes"].reason.count("firing") and "temp" in health["bikes"].reason else None

    health = wait_for(both_firing, 20, "the posted alerts to be active in Alertmanager")
    bikes, cars = health["bikes"], health["cars"]
    assert bikes.state == "bad"
    assert bikes.reason == "EstimatedPerformanceDrop and FeatureDrift (temp) firing"
    signal = next(s for s in bikes.signals if s.name == "alerts firing")
    assert (signal.state, signal.value, signal.threshold) == ("bad", 2.0, "none firing")
    # another model's alert (trucks) is not bikes' nor cars'
    assert (cars.state, cars.reason) == ("ok", "every signal within its reference")
    assert next(s for s in cars.signals if s.name == "alerts firing").reason.startswith("no alert firing")


def test_without_an_alert_source_the_health_says_not_configured_rather_than_green(store):
    _latency(store, "bikes", 0.999)
    health = model_health(store, "bikes", alerts=None, with_alerts=True)
    assert health.state == "ok" and health.reason == f"every signal within its reference ({NOT_CONFIGURED})"
    signal = next(s for s in health.signals if s.name == "alerts firing")
    assert (signal.state, signal.reason) == ("unknown", NOT_CONFIGURED)


def test_an_alertmanager_that_does_not_answer_is_a_warning_within_the_timeout(store):
    _latency(store, "bikes", 0.999)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    health = model_health(store, "bikes", alerts=AlertSource(url, timeout=0.5), with_alerts=True)
    assert time.monotonic() - started < 10
    assert health.state == "warn"
    assert health.reason.startswith(f"alerts: Alertmanager at {url} did not answer within 0.5s")


@pytest.mark.timeout(60)
def test_the_model_page_and_the_list_show_the_alert_from_the_configured_alertmanager(store, alertmanager, make_app):
    from fastapi.testclient import TestClient

    from driftwarden.auth import TokenConfig
    from driftwarden.detectors.api import ApiSettings, create_router
    from tests.inference_rows import event, insert_events

    insert_events(store, [event("vans", FEB, prediction=1.0)])
    _latency(store, "vans", 0.999)
    _post(alertmanager, alertname="LatencySLOBreach", model="vans", severity="critical")
    settings = ApiSettings(tokens=[TokenConfig(name="ops", token="t" * 24)], alertmanager_url=alertmanager)
    app = make_app(store)
    app.include_router(create_router(settings))
    http = TestClient(app)
    auth = {"Authorization": f"Bearer {'t' * 24}"}

    def page():
        text = http.get("/models/vans", headers=auth).text
        return text if "LatencySLOBreach firing" in text else None

    text = wait_for(page, 20, "the page to show the firing alert")
    top = text[text.index("<h1>vans</h1>") : text.index("<h2>")]
    assert "needs attention" in top and "LatencySLOBreach firing" in top
    row = next(r for r in http.get("/", headers=auth).text.split("<tr>") if "/models/vans" in r)
    assert '<span class="badge bad">needs attention</span>' in row and "LatencySLOBreach firing" in row


def test_the_alert_source_comes_from_the_api_settings_or_the_environment(tmp_path):
    from driftwarden.detectors.api.health_section import alert_source
    from driftwarden.detectors.api.settings import load_settings
    from driftwarden.errors import UserError

    assert alert_source(load_settings(env={})) is None
    found = alert_source(load_settings(env={"DRIFTWARDEN_ALERTMANAGER_URL": "http://alertmanager:9093"}))
    assert found == AlertSource("http://alertmanager:9093", "alertmanager", 1.0)
    path = tmp_path / "api.yaml"
    path.write_text("api:\n  prometheus_url: http://127.0.0.1:9090\n  alerts_timeout_s: 0.5\n")
    assert alert_source(load_settings(path, env={})) == AlertSource("http://127.0.0.1:9090", "prometheus", 0.5)
    path.write_text("api:\n  alertmanager_url: alertmanager:9093\n")
    with pytest.raises(UserError, match="api.alertmanager_url"):
        load_settings(path, env={})
