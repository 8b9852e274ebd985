"""End to end: a real Prometheus evaluates ``alerts/rules`` and a real Alertmanager notifies a webhook.

The detectors' real exporter (``detectors.exporter.Exporter``, its gauges set by the test instead
of by a detector run) and the collector's real metrics registry are served on loopback.
Prometheus runs ``alerts/prometheus.yml`` with the targets pointed at them, and Alertmanager runs
``alerts/alertmanager.yml`` with every webhook pointed at an HTTP receiver in this test.

Three things are shortened so that the test takes seconds, not hours, and each is a copy, never
the shipped files: the scrape and evaluation intervals (1s), every rule's ``for`` (0s: the real
durations are covered by the promtool unit tests, here the point is the delivery path), and
Alertmanager's ``group_wait``/``group_interval`` (1s).
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import Gauge, start_http_server

from driftwarden.collector import metrics
from driftwarden.detectors.exporter import Exporter
from tests.test_alerts import ALERTS, RULE_FILES, tool

DRIFT_LABELS = {"model": "bikeshare", "model_version": "v1", "feature": "temp", "method": "psi"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float, what: str, logs: Sequence[Path] = ()) -> object:
    """Poll ``condition`` until it returns something truthy; fail with the processes' logs otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs if log.exists())
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tails}")


def ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Process:
    """A started server process with its log file, stopped on exit."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._out.close()


class Webhook:
    """An HTTP receiver that records every Alertmanager notification it gets."""

    def __init__(self) -> None:
        self.notifications: list[dict] = []
        self._lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with webhook._lock:
                    webhook.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def find(self, status: str, **labels: str) -> list[tuple[dict, dict]]:
        """(notification, alert) pairs whose alert has ``status`` and all of ``labels``."""
        with self._lock:
            notifications = list(self.notifications)
        return [
            (note, alert)
            for note in notifications
            for alert in note["alerts"]
            if alert["status"] == status and all(alert["labels"].get(k) == v for k, v in labels.items())
        ]


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory, webhook: Webhook) -> Iterator[str]:
    """The shipped Alertmanager configuration, webhooks pointed at the test's receiver, 1s timers."""
    tmp = tmp_path_factory.mktemp("alertmanager")
    config = yaml.safe_load((ALERTS / "alertmanager.yml").read_text())
    routes = [config["route"]]
    while routes:
        route = routes.pop()
        route["group_wait"] = route["group_interval"] = "1s"
        routes.extend(route.get("routes", []))
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook.url
    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = Process(
        [
            tool("prometheus-alertmanager"),
            f"--config.file={tmp / 'alertmanager.yml'}",
            f"--storage.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip: a single, private instance
        ],
        tmp / "alertmanager.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(f"{url}/-/ready"), 30, "Alertmanager to be ready", [process.log])
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def exporter() -> Iterator[tuple[Gauge, Gauge, str]]:
    """The detectors' real exporter (``detectors.exporter``), its drift gauges set by hand, on a free port."""
    detectors = Exporter()
    # Keyword labels: a label the rules use but the exporter does not define fails here.
    detectors.feature_drift_score.labels(**DRIFT_LABELS).set(0.05)
    detectors.feature_drift_persistent.labels(**DRIFT_LABELS).set(0)
    port = detectors.serve("127.0.0.1", 0)
    yield detectors.feature_drift_score, detectors.feature_drift_persistent, f"127.0.0.1:{port}"
    detectors.close()


@pytest.fixture(scope="module")
def collector_exporter() -> Iterator[str]:
    """The collector's real metrics registry (``collector.metrics``), on a free port."""
    metrics.spool_bytes.labels(model="bikeshare").set(0)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=metrics.REGISTRY)
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, alertmanager: str, exporter: tuple, collector_exporter: str
) -> Iterator[str]:
    """The shipped Prometheus configuration and rules: 1s intervals, ``for: 0s``, loopback targets."""
    tmp = tmp_path_factory.mktemp("prometheus")
    (tmp / "rules").mkdir()
    for path in RULE_FILES:
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "0s"
        (tmp / "rules" / path.name).write_text(yaml.safe_dump(rules))
    config = yaml.safe_load((ALERTS / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager.removeprefix("http://")]}]
    # Same jobs, target labels and options as shipped; only the addresses change. The collector
    # target must be up: a collector that is down would (rightly) inhibit the drift alert.
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert len(jobs["driftwarden-collector"]["static_configs"]) == 1
    jobs["driftwarden-collector"]["static_configs"][0]["targets"] = [collector_exporter]
    jobs["driftwarden-detectors"]["static_configs"] = [{"targets": [exporter[2]]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = Process(
        [
            tool("prometheus"),
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp / "prometheus.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: ready(f"{url}/-/ready"), 30, "Prometheus to be ready", [process.log])
        rules = httpx.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        assert sum(len(group["rules"]) for group in rules) == sum(
            len(group["rules"]) for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
        )
        yield url
    finally:
        process.stop()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_persistent_feature_drift_is_notified_to_the_ml_team_then_resolved(
    prometheus: str, webhook: Webhook, exporter: tuple
) -> None:
    score, persistent, _ = exporter
    assert webhook.find("firing", alertname="FeatureDrift", **DRIFT_LABELS) == []

    score.labels(**DRIFT_LABELS).set(0.42)
    persistent.labels(**DRIFT_LABELS).set(1)
    found = wait_for(
        lambda: webhook.find("firing", alertname="FeatureDrift", **DRIFT_LABELS), 45, "FeatureDrift firing"
    )
    note, alert = found[0]
    assert note["receiver"] == "ml"
    assert note["groupLabels"] == {"alertname": "FeatureDrift", "model": "bikeshare"}
    assert alert["labels"]["severity"] == "warning" and alert["labels"]["team"] == "ml"
    assert alert["annotations"]["runbook_url"] == "alerts/runbooks/feature-drift.md"
    assert "psi score 0.420" in alert["annotations"]["description"]

    persistent.labels(**DRIFT_LABELS).set(0)
    found = wait_for(
        lambda: webhook.find("resolved", alertname="FeatureDrift", **DRIFT_LABELS), 45, "FeatureDrift resolved"
    )
    assert found[0][0]["receiver"] == "ml"


def post_alert(alertmanager: str, **labels: str) -> None:
    now = datetime.now(UTC)
    alert = {
        "labels": labels,
        "annotations": {"summary": "posted by the test"},
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(minutes=5)).isoformat(),
    }
    response = httpx.post(f"{alertmanager}/api/v2/alerts", json=[alert], timeout=5)
    assert response.status_code == 200, response.text


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_collector_down_inhibits_the_drift_alerts_of_its_model_only(alertmanager: str, webhook: Webhook) -> None:
    post_alert(alertmanager, alertname="CollectorDown", model="inhibit-a", severity="critical", team="sre")
    time.sleep(0.5)  # the inhibitor must know the source before the targets arrive
    for model in ("inhibit-a", "inhibit-b"):
        post_alert(alertmanager, alertname="FeatureDrift", model=model, feature="temp", severity="warning", team="ml")

    # The CollectorDown page and the other model's drift alert are delivered...
    wait_for(lambda: webhook.find("firing", alertname="CollectorDown", model="inhibit-a"), 20, "CollectorDown")
    wait_for(lambda: webhook.find("firing", alertname="FeatureDrift", model="inhibit-b"), 20, "FeatureDrift b")
    pages = {note["receiver"] for note, _ in webhook.find("firing", alertname="CollectorDown", model="inhibit-a")}
    assert pages == {"page", "sre"}

    # ...the drift alert of the model whose collector is down is held back as inhibited.
    alerts = httpx.get(f"{alertmanager}/api/v2/alerts", params={"filter": 'alertname="FeatureDrift"'}, timeout=5)
    state = {alert["labels"]["model"]: alert["status"] for alert in alerts.json()}
    assert state["inhibit-a"]["state"] == "suppressed" and state["inhibit-a"]["inhibitedBy"]
    assert state["inhibit-b"]["state"] == "active"
    time.sleep(2)  # two group intervals: a notification for inhibit-a would have been sent by now
    assert webhook.find("firing", alertname="FeatureDrift", model="inhibit-a") == []


def instant_query(prometheus: str, query: str) -> list[dict]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["data"]["result"]


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_scrape_config_labels_collector_up_with_its_model_and_keeps_the_collectors_own_model_label(
    prometheus: str,
) -> None:
    up = wait_for(lambda: instant_query(prometheus, 'up{job="driftwarden-collector"} == 1'), 20, "collector scraped")
    assert up[0]["metric"]["model"] == "bikeshare"
    query = 'driftwarden_collector_spool_bytes{model="bikeshare"}'
    spool = wait_for(lambda: instant_query(prometheus, query), 20, "spool series")
    assert [series["metric"].get("exported_model") for series in spool] == [None] * len(spool)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_prometheus_evaluates_every_rule_without_error(prometheus: str) -> None:
    def health() -> dict[str, str] | None:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        states = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
        return None if "unknown" in states.values() else states

    states = wait_for(health, 20, "every rule to be evaluated")
    assert {name: state for name, state in states.items() if state != "ok"} == {}
