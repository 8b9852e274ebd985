"""Model names: any name a model server or a span carries works everywhere; bad ones are refused at entry.

``org/model-name:tag`` (a Hugging Face id with a tag), ``<script>alert(1)</script>`` and a model
called ``x/report`` go through the real hub (ingest), the real detectors (drift results and
``/metrics``), the JSON API and the pages; control characters, empty and over-long names are
refused at every entry with the reason.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import uuid
from urllib.parse import quote, unquote, urlsplit

import httpx
import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from driftwarden.auth import TokenConfig
from driftwarden.collector import config as collector_config
from driftwarden.collector.arrow import to_ipc
from driftwarden.collector.hub_app import close_ingest, create_app
from driftwarden.detectors.api import ApiSettings, create_router
from driftwarden.detectors.config import parse
from driftwarden.detectors.exporter import Exporter
from driftwarden.detectors.scheduler import Scheduler
from driftwarden.errors import UserError
from driftwarden.names import MAX_LENGTH, check_model_name
from tests.inference_rows import COLUMNS, event

UTC = dt.UTC
HF = "org/model-name:tag"
XSS = "<script>alert(1)</script>"
SUFFIXED = "x/report"  # its page URL is also the report URL of a model "x" (which does not exist)
NAMES = [HF, XSS, SUFFIXED]
TOKEN = "names-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REFERENCE = "2011-01-01T00:00:00Z..2011-01-08T00:00:00Z"
CURRENT = "2011-01-13T00:00:00Z..2011-01-20T00:00:00Z"  # one scheduler week (weeks start on Thursdays)
NOW = dt.datetime(2011, 1, 21, tzinfo=UTC)

VALID = [
    HF,
    XSS,
    "meta-llama/Llama-3.1-8B-Instruct",
    "llama3:8b",
    "gpt-4o-2024-08-06",
    "fraud model v2",
    "модель/分类器:β",
    "emoji 🤖",
    "a" * MAX_LENGTH,
    "100% sure?#frag&x=y",
    "'; DROP TABLE inferences; --",
]
INVALID = {
    "": "must not be empty",
    "   ": "must not be empty",
    "a\nb": "control character (U+000A",
    "tab\there": "control character (U+0009",
    "\x1b[31mred": "control character (U+001B",
    "nul\x00": "control character (U+0000",
    "del\x7f": "control character (U+007F",
    "c1\x85": "control character (U+0085",
    "line\u2028sep": "line separator (U+2028",
    "a" * (MAX_LENGTH + 1): f"at most {MAX_LENGTH} characters, this one has {MAX_LENGTH + 1}",
    "org/../model": "'.' or '..' between slashes",
}


@pytest.mark.parametrize("name", VALID)
def test_names_that_model_servers_and_spans_carry_are_accepted(name):
    assert check_model_name(name) == name


@pytest.mark.parametrize(("name", "reason"), INVALID.items(), ids=[repr(n)[:20] for n in INVALID])
def test_bad_names_are_refused_with_the_reason_on_one_line(name, reason):
    with pytest.raises(UserError) as caught:
        check_model_name(name)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message and "\x1b" not in message and len(message) < 300


def test_the_collector_refuses_a_bad_model_name_naming_the_key():
    with pytest.raises(UserError, match=r"model = 'a\\nb': a model name must not contain a control character"):
        collector_config.load({"upstream": "http://127.0.0.1:8081", "model": "a\nb"})
    assert collector_config.load({"upstream": "http://127.0.0.1:8081", "model": HF}).model == HF


def test_the_detectors_configuration_refuses_a_bad_model_name_naming_the_key():
    text = "window: 1h\nmodels:\n  - name: " + json.dumps("x" * 300) + "\n"
    with pytest.raises(UserError, match=r"models\[0\]\.name.*at most 256 characters"):
        parse(text)
    assert parse("window: 1h\nmodels:\n  - name: " + json.dumps(HF) + "\n").models[0].name == HF


# -- the hub's ingest endpoints ----------------------------------------------------------------------


def _events_table(models: list[str]) -> pa.Table:
    now = dt.datetime.now(UTC)
    return pa.table(
        {
            "event_id": [str(uuid.uuid4()) for _ in models],
            "ts": pa.array([now] * len(models), pa.timestamp("us", tz="UTC")),
            "model": models,
        }
    )


def _count(client, table: str) -> int:
    return client.query(f"SELECT count() FROM {table}").result_rows[0][0]


def test_the_hub_refuses_a_batch_with_one_bad_model_name_naming_the_row_and_inserts_nothing(store, make_app):
    http = TestClient(make_app(store))
    body = to_ipc(_events_table([HF, HF, "evil\r\nX-Injected: 1", HF]))
    response = http.post("/v1/events", content=body, headers={"content-type": "application/vnd.apache.arrow.stream"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("row 3: model 'evil\\r\\nX-Injected: 1' is refused") and "control character" in detail
    assert _count(store, "inferences") == 0

    good = http.post(
        "/v1/events",
        content=to_ipc(_events_table([HF, XSS])),
        headers={"content-type": "application/vnd.apache.arrow.stream"},
    )
    assert good.status_code == 200 and good.json() == {"inserted": 2}
    stored = {m for (m,) in store.query("SELECT model FROM inferences").result_rows}
    assert stored == {HF, XSS}


def test_the_hub_refuses_ground_truth_with_a_bad_model_name_naming_the_row_and_inserts_nothing(store, make_app):
    http = TestClient(make_app(store))
    records = [
        {"event_id": str(uuid.uuid4()), "model": HF, "value": 1.0},
        {"event_id": str(uuid.uuid4()), "model": "x" * 257, "value": 2.0},
    ]
    body = "\n".join(json.dumps(r) for r in records)
    response = http.post("/v1/ground-truth", content=body, headers={"content-type": "application/x-ndjson"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("row 2: model 'xxxx")
    assert "at most 256 characters" in response.json()["detail"]
    assert _count(store, "ground_truth") == 0


# -- API, pages and /metrics with the names ----------------------------------------------------------


@pytest.fixture(scope="module")
def named_store(engine_dir):
    """A store where each of NAMES has drifted traffic and drift results from the real scheduler."""
    from driftwarden import storage

    url = f"chdb://{engine_dir}?database=model_names"
    client = storage.connect(url, create_database=True)
    storage.migrate(client, retention_days=30)
    rng = np.random.default_rng(7)
    rows = []
    start = dt.datetime(2011, 1, 1, tzinfo=UTC)
    for name in NAMES:
        for hour in range(20 * 24):
            ts = start + dt.timedelta(hours=hour)
            shift = 2.0 if ts >= dt.datetime(2011, 1, 13, tzinfo=UTC) else 0.0
            rows.append(
                event(
                    name,
                    ts,
                    num_names=["temp"],
                    num_values=[float(rng.normal(shift, 1.0))],
                    cat_names=["season"],
                    cat_values=["winter"],
                    prediction=float(rng.normal()),
                )
            )
    client.insert("inferences", [[r[c] for c in COLUMNS] for r in rows], column_names=COLUMNS)
    models = "".join(
        f"  - name: {json.dumps(n)}\n    features: {{numeric: [temp], categorical: [season]}}\n"
        "    detectors: [drift, latency]\n"
        for n in NAMES
    )
    config = parse(f'window: 7d\nreference: "{REFERENCE}"\nschedule: {{lag: 1m, catch_up: 2}}\nmodels:\n{models}')
    exporter = Exporter()
    made = Scheduler(client, config, exporter).run_once(now=NOW)
    assert made and all(r.status == "ok" for r in made), [(r.model, r.detector, r.error) for r in made]
    return client, exporter


@pytest.fixture(scope="module")
def http(named_store, tmp_path_factory):
    client, _ = named_store
    app = create_app(client)
    cache = tmp_path_factory.mktemp("name-reports")
    settings = ApiSettings(
        tokens=[TokenConfig(name="ops", token=TOKEN)], report_cache_dir=str(cache), report_sample_size=100
    )
    app.include_router(create_router(settings))
    yield TestClient(app)
    close_ingest(app)


def test_the_json_api_lists_the_names_as_they_were_sent(http):
    models = {m["model"] for m in http.get("/api/v1/models", headers=AUTH).json()}
    assert models == set(NAMES)
    status = {s["model"] for s in http.get("/api/v1/status", headers=AUTH).json()}
    assert status == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("encode", [True, False], ids=["percent-encoded", "as-is"])
def test_every_json_route_of_a_model_answers_for_its_name(http, name, encode):
    path = quote(name, safe="") if encode else quote(name, safe="/:")
    drift = http.get(f"/api/v1/models/{path}/drift", headers=AUTH)
    assert drift.status_code == 200, drift.text
    assert drift.json()["model"] == name
    assert {f["feature"] for f in drift.json()["features"]} == {"temp", "season"}
    assert any(f["drifted"] for f in drift.json()["features"] if f["feature"] == "temp")
    history = http.get(f"/api/v1/models/{path}/drift/history", headers=AUTH)
    assert history.status_code == 200 and {p["feature"] for p in history.json()} >= {"temp", "season"}
    for route in ("performance", "latency", "reproducibility", "runs"):
        response = http.get(f"/api/v1/models/{path}/{route}", headers=AUTH)
        assert response.status_code == 200, (route, response.text)
    runs = http.get(f"/api/v1/models/{path}/runs", headers=AUTH).json()
    assert {r["detector"] for r in runs} == {"drift", "latency"} and {r["status"] for r in runs} == {"ok"}


def test_a_prefix_of_a_name_is_not_the_model(http):
    response = http.get("/api/v1/models/org/drift", headers=AUTH)
    assert response.status_code == 404 and "'org' not found" in response.json()["detail"]


def test_a_name_no_model_can_have_is_not_found_with_the_reason(http):
    response = http.get("/api/v1/models/a%09b/drift", headers=AUTH)
    assert response.status_code == 404
    assert "no model can have this name" in response.json()["detail"]
    assert "control character (U+0009" in response.json()["detail"]


def _links(page: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'href="([^"]*/models/[^"]+)"', page)]


def test_the_overview_links_open_each_models_page_and_every_page_escapes_the_name(http):
    overview = http.get("/", headers=AUTH)
    assert overview.status_code == 200
    assert XSS not in overview.text and html.escape(XSS) in overview.text
    links = _links(overview.text)
    assert len(links) == len(NAMES)
    seen = set()
    for link in links:
        page = http.get(link, headers=AUTH)
        assert page.status_code == 200, (link, page.text[:300])
        heading = re.search(r"<h1>(.*?)</h1>", page.text).group(1)
        seen.add(html.unescape(heading))
        assert XSS not in page.text
        # the model page's links (window form, report) point at the same model
        for inner in _links(page.text):
            target = unquote(urlsplit(inner).path)
            assert target.startswith(f"/models/{html.unescape(heading)}"), inner
    assert seen == set(NAMES)


def test_a_model_named_like_a_sub_route_opens_its_own_page(http):
    page = http.get(f"/models/{SUFFIXED}", headers=AUTH)
    assert page.status_code == 200
    assert re.search(r"<h1>(.*?)</h1>", page.text).group(1) == SUFFIXED


@pytest.mark.parametrize("name", [HF, XSS])
def test_the_report_of_a_name_with_slashes_and_markup_opens_and_downloads(http, name):
    query = {"reference": REFERENCE, "current": CURRENT}
    page = http.get(f"/models/{quote(name, safe='/:')}/report", params=query, headers=AUTH)
    assert page.status_code == 200, page.text[:500]
    assert f"<h1>Report: {html.escape(name)}</h1>" in page.text and XSS not in page.text
    downloads = [link for link in _links(page.text) if "/report." in link]
    assert len(downloads) >= 2
    for link in downloads:
        response = http.get(link, headers=AUTH)
        assert response.status_code == 200, link
        disposition = response.headers["content-disposition"]
        assert "/" not in disposition.split("filename", 1)[1] and "<" not in disposition
    report = http.get(f"/models/{quote(name, safe='')}/report.json", params=query, headers=AUTH)
    assert report.status_code == 200 and isinstance(report.json(), dict)


def test_the_metrics_carry_each_name_as_a_label_value(named_store):
    _, exporter = named_store
    port = exporter.serve("127.0.0.1", 0)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        exporter.close()
    labelled: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "model" in sample.labels:
                labelled.setdefault(family.name, set()).add(sample.labels["model"])
    assert labelled["driftwarden_feature_drift_score"] == set(NAMES)
    assert labelled["driftwarden_detector_runs"] >= set(NAMES)
    assert labelled["driftwarden_model_events_total"] == set(NAMES)


def test_the_dashboards_links_percent_encode_the_model():
    from driftwarden.dashboards import render

    urls = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "url" and isinstance(value, str) and "/models/" in value:
                    urls.append(value)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for name in render.names():
        walk(render.model(name))
    assert urls
    assert all("/models/${model:percentencode}" in url for url in urls), urls
