"""The reports JSON API and pages over a store filled with Capital Bikeshare 2011 by the real detectors.

The app is the hub's FastAPI app (``collector.hub_app.create_app``) with the reports router added,
called in-process through httpx (``TestClient``); the store is the session's embedded ClickHouse.
"""

from __future__ import annotations

import datetime as dt
import filecmp
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from driftwarden.auth import TokenConfig
from driftwarden.cli import main as cli_main
from driftwarden.collector.hub_app import close_ingest, create_app
from driftwarden.detectors.api import ApiSettings, create_router
from driftwarden.detectors.drift import compute_drift
from driftwarden.detectors.window import Window
from tests.api_data import CURRENT, EMPTY, REFERENCE, populated_store
from tests.drift_data import bikeshare

TOKEN = "ops-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPORT_QUERY = {"reference": REFERENCE, "current": CURRENT}

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def populated(engine_dir: Path):
    return populated_store(engine_dir)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reports")


@pytest.fixture(scope="module")
def http(populated, cache_dir: Path) -> Iterator[TestClient]:
    client, _, _ = populated
    app = create_app(client)
    settings = ApiSettings(
        tokens=[TokenConfig(name="ops", token=TOKEN)], report_cache_dir=str(cache_dir), report_sample_size=400
    )
    app.include_router(create_router(settings))
    yield TestClient(app)
    close_ingest(app)


def _february_events(version: str) -> int:
    frame = bikeshare()
    frame = frame[frame["ts"] < "2011-03-01"]
    switch = frame["ts"] >= "2011-02-14"
    return int(switch.sum() if version == "v2" else (~switch).sum())


# -- JSON API -----------------------------------------------------------------------------------------


def test_models_lists_every_model_version_with_its_event_count(http):
    models = http.get("/api/v1/models", headers=AUTH).json()
    found = {(m["model"], m["model_version"]): m for m in models}
    assert set(found) == {("bikes", "v1"), ("bikes", "v2"), ("scooters", "v1")}
    assert found[("bikes", "v1")]["events"] == _february_events("v1")
    assert found[("bikes", "v2")]["events"] == _february_events("v2")
    assert found[("bikes", "v1")]["tenants"] == ["acme"]
    assert found[("bikes", "v2")]["last_event"].startswith("2011-02-28T23:00:00")


def test_latest_drift_in_a_february_week_flags_the_weather_and_not_the_season(http):
    window = "2011-02-03..2011-02-10"
    body = http.get("/api/v1/models/bikes/drift", params={"window": window}, headers=AUTH).json()
    assert body["current_start"].startswith("2011-02-03") and body["current_end"].startswith("2011-02-10")
    features = {f["feature"]: f for f in body["features"]}
    assert set(features) == {"temp", "atemp", "hum", "windspeed", "season", "weathersit", "workingday", "holiday"}
    for name in ("temp", "atemp", "hum"):
        assert features[name]["drifted"] and features[name]["verdict"] == "drift"
        assert features[name]["method"] == "ks" and features[name]["p_value"] < features[name]["threshold"]
    assert not features["season"]["drifted"] and features["season"]["verdict"] == "no drift"
    assert features["temp"]["reference_rows"] > 600 and features["temp"]["current_rows"] > 150
    # most drifted first: every drifted feature comes before every one that is not
    flags = [f["drifted"] for f in body["features"]]
    assert flags == sorted(flags, reverse=True)
    dataset = [d for d in body["dataset"] if d["feature"] == ""]
    assert dataset and dataset[0]["drifted"] and dataset[0]["method"] == "share"


def test_latest_drift_is_what_the_drift_detector_computes_for_that_window(http, populated):
    client, _, _ = populated
    report = compute_drift(
        client, "bikes", Window.parse(REFERENCE), Window.parse(CURRENT), features=None, model_version=None
    )
    expected = {f.feature: f for f in report.features}
    body = http.get("/api/v1/models/bikes/drift", params={"window": CURRENT}, headers=AUTH).json()
    for served in body["features"]:
        mine = expected[served["feature"]]
        assert served["statistic"] == pytest.approx(mine.statistic)
        assert served["method"] == mine.method and served["threshold"] == mine.threshold


def test_drift_history_has_one_point_per_analysed_week_oldest_first(http, populated):
    client, _, _ = populated
    points = http.get("/api/v1/models/bikes/drift/history", params={"feature": "temp"}, headers=AUTH).json()
    starts = [p["current_start"] for p in points]
    weeks = client.query(
        "SELECT count(DISTINCT current_start) FROM drift_results WHERE model = 'bikes' AND feature = 'temp'"
    ).result_rows[0][0]
    assert len(points) == weeks >= 8
    assert starts == sorted(starts)
    assert {p["feature"] for p in points} == {"temp"}


def test_performance_history_exists_where_labels_exist_and_is_empty_where_not(http):
    bikes = http.get("/api/v1/models/bikes/performance", headers=AUTH).json()
    assert {p["metric"] for p in bikes} >= {"mae", "rmse"}
    assert all(p["labelled"] == p["predictions"] > 0 for p in bikes)
    assert http.get("/api/v1/models/scooters/performance", headers=AUTH).json() == []


def test_latency_summary_adds_up_the_windows_and_judges_the_slo(http):
    body = http.get("/api/v1/models/bikes/latency", headers=AUTH).json()
    for summary in body["summary"]:
        windows = [w for w in body["windows"] if w["model_version"] == summary["model_version"]]
        assert summary["requests"] == sum(w["requests"] for w in windows)
        assert summary["errors"] == sum(w["errors"] for w in windows) > 0
        assert summary["slo_met"] == (summary["slo_attainment"] >= summary["slo_percentile"])
    assert sum(s["requests"] for s in body["summary"]) == _february_events("v1") + _february_events("v2")


def test_reproducibility_lists_consistency_checks_per_window(http):
    rows = http.get("/api/v1/models/bikes/reproducibility", headers=AUTH).json()
    assert rows and {r["kind"] for r in rows} == {"consistency"}
    assert all(0.0 <= r["rate"] <= 1.0 and r["checked"] >= r["mismatches"] for r in rows)


def test_detector_runs_show_failed_runs_with_their_error_message(http, populated):
    _, _, info = populated
    failed = http.get("/api/v1/models/scooters/runs", params={"status": "error"}, headers=AUTH).json()
    assert len(failed) == info.failed_runs > 0
    assert all(r["detector"] == "prediction_drift" and r["error"] for r in failed)
    ok = http.get("/api/v1/models/bikes/runs", params={"status": "ok", "limit": 5}, headers=AUTH).json()
    assert len(ok) == 5 and all(r["status"] == "ok" for r in ok)


def test_status_gives_each_model_drift_slo_and_reproducibility_at_a_glance(http):
    status = {s["model"]: s for s in http.get("/api/v1/status", headers=AUTH).json()}
    assert status["bikes"]["versions"] == ["v1", "v2"]
    assert status["bikes"]["drifted"] is True and status["bikes"]["reproducibility_rate"] == 1.0
    assert status["bikes"]["slo_met"] == (status["bikes"]["slo_attainment"] >= status["bikes"]["slo_percentile"])
    assert status["scooters"]["failed_runs"] > 0 and status["scooters"]["reproducibility_rate"] is None


def test_openapi_schema_documents_typed_responses_and_window_parameters(http):
    schema = http.get("/openapi.json").json()
    drift = schema["paths"]["/api/v1/models/{model}/drift"]["get"]
    assert drift["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/DriftStatus")
    assert any(p["name"] == "window" and "START..END" in p["description"] for p in drift["parameters"])
    assert {"FeatureDrift", "LatencySummary", "DetectorRun", "ReportProvenance"} <= set(schema["components"]["schemas"])


# -- bad input ---------------------------------------------------------------------------------------


def test_unknown_model_is_404_with_a_message(http):
    response = http.get("/api/v1/models/no-such-model/drift", headers=AUTH)
    assert response.status_code == 404
    assert "no-such-model" in response.json()["detail"]
    page = http.get("/models/no-such-model", headers=AUTH)
    assert page.status_code == 404 and "no-such-model" in page.text


def test_a_model_name_is_escaped_in_pages(http):
    page = http.get("/models/<img src=x onerror=alert(1)>", headers=AUTH)
    assert page.status_code == 404
    assert "<img" not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text


@pytest.mark.parametrize(
    ("window", "says"),
    [
        ("2011-02-10..2011-02-03", "empty or inverted"),
        ("2011-02-03..2011-02-03", "empty or inverted"),
        ("2011-02-03", "is not START..END"),
        ("2011-02-03..yesterday", "not an ISO-8601 timestamp"),
    ],
)
def test_a_bad_window_is_422_saying_what_is_wrong(http, window, says):
    response = http.get("/api/v1/models/bikes/drift", params={"window": window}, headers=AUTH)
    assert response.status_code == 422 and says in response.json()["detail"]
    page = http.get("/models/bikes", params={"window": window}, headers=AUTH)
    assert page.status_code == 422 and says in page.text


def test_report_without_windows_is_422_naming_the_missing_parameter(http):
    response = http.get("/models/bikes/report.json", params={"reference": REFERENCE}, headers=AUTH)
    assert response.status_code == 422 and "'current' is required" in response.text


def test_a_window_without_results_gives_a_page_that_says_so(http):
    page = http.get("/models/bikes", params={"window": EMPTY}, headers=AUTH)
    assert page.status_code == 200
    assert "No drift results for this model in" in page.text
    assert "No latency results in this range" in page.text


def test_a_report_of_a_window_without_events_says_so_instead_of_failing(http):
    page = http.get("/models/bikes/report", params={"reference": REFERENCE, "current": EMPTY}, headers=AUTH)
    assert page.status_code == 200
    assert "holds no events of model" in page.text and "nothing to report" in page.text


# -- pages and reports ---------------------------------------------------------------------------------


def test_overview_page_shows_each_versions_own_slo_attainment(http):
    windows = http.get("/api/v1/models/bikes/latency", headers=AUTH).json()["windows"]
    latest = {w["model_version"]: w for w in windows}  # oldest first: the last one per version wins
    page = http.get("/", headers=AUTH).text
    rows = {row.split("</td>")[1].split(">")[-1]: row for row in page.split("<tr>")[2:] if "/models/bikes" in row}
    for version in ("v1", "v2"):
        assert f"{latest[version]['slo_attainment'] * 100:.2f}% / 95.00%" in rows[version]
    assert "failed of" in page  # scooters' failing prediction drift runs


def test_model_page_lists_features_most_drifted_first_with_trend_charts(http):
    page = http.get("/models/bikes", params={"window": "2011-02-03..2011-02-10"}, headers=AUTH)
    assert page.status_code == 200
    text = page.text
    order = [text.index(f'data-feature="{name}"') for name in ("temp", "season")]
    assert order[0] < order[1]  # temp drifted, season did not
    assert text.count('<svg class="spark"') >= 8
    temp_row = text[text.index('data-feature="temp"') :].split("</tr>")[0]
    assert temp_row.count("<circle") == 6  # the trend: the six weeks analysed up to the chosen one
    for section in ("Prediction drift", "Performance", "Latency and errors", "Reproducibility", "Detector runs"):
        assert f"<h2>{section}</h2>" in text
    assert "/models/bikes/report?reference=" in text


def test_report_page_shows_provenance_sample_size_and_download_links(http):
    page = http.get("/models/bikes/report", params=REPORT_QUERY, headers=AUTH)
    assert page.status_code == 200
    for label in ("reference window", "current window", "rows (reference / current)", "input hash", "methods"):
        assert label in page.text
    assert "sample size 400" in page.text
    assert "/models/bikes/report.html?" in page.text and "/models/bikes/report.json?" in page.text


def test_report_html_is_self_contained_evidently_with_provenance(http):
    response = http.get("/models/bikes/report.html", params=REPORT_QUERY, headers=AUTH)
    assert response.status_code == 200
    text = response.text
    assert 'id="provenance"' in text and "drawDashboard" in text
    assert "<script src=" not in text and "<link" not in text  # nothing to fetch: bundle and font are inlined
    assert "connect-src 'self'" in response.headers["content-security-policy"]


def test_report_json_carries_provenance_and_evidently_metrics_matching_the_sample(http):
    body = http.get("/models/bikes/report.json", params=REPORT_QUERY, headers=AUTH).json()
    record = body["provenance"]
    assert record["sample_size"] == 400 and record["current_sampled"] == record["current_rows"] < 400
    assert record["reference_sampled"] == 400 < record["reference_rows"]
    assert record["methods"]["temp"].startswith("K-S") and record["thresholds"]["temp"] == 0.05
    assert {"temp", "hum", "prediction"} <= set(record["numeric_features"])
    assert "season" in record["categorical_features"]
    row_counts = [m for m in body["evidently"]["metrics"] if m["config"]["type"].endswith("RowCount")]
    assert row_counts and row_counts[0]["value"] == record["current_sampled"]


def test_report_is_cached_by_the_hash_of_its_inputs(http, cache_dir):
    first = http.get("/api/v1/models/bikes/report", params=REPORT_QUERY, headers=AUTH).json()
    files = sorted(p.name for p in cache_dir.iterdir())
    again = http.get("/api/v1/models/bikes/report", params=REPORT_QUERY, headers=AUTH).json()
    assert again["input_hash"] == first["input_hash"]
    assert sorted(p.name for p in cache_dir.iterdir()) == files
    assert f"{first['input_hash']}.html" in files
    page = http.get("/models/bikes/report", params=REPORT_QUERY, headers=AUTH)
    assert "from the cache" in page.text


def test_report_command_writes_the_same_file_as_the_api(http, populated, tmp_path, capsys):
    _, url, _ = populated
    served = http.get("/models/bikes/report.html", params=REPORT_QUERY, headers=AUTH).content
    out = tmp_path / "report.html"
    status = cli_main(
        [
            "report",
            "--store",
            url,
            "--model",
            "bikes",
            "--reference",
            REFERENCE,
            "--current",
            CURRENT,
            "--sample-size",
            "400",
            "--cache-dir",
            str(tmp_path / "fresh-cache"),  # regenerated, not copied from the API's cache
            "--out",
            str(out),
        ]
    )
    assert status == 0
    assert out.read_bytes() == served
    assert "input hash" in capsys.readouterr().out
    json_out = tmp_path / "report.json"
    assert (
        cli_main(
            [
                "report",
                "--store",
                url,
                "--model",
                "bikes",
                "--reference",
                REFERENCE,
                "--current",
                CURRENT,
                "--sample-size",
                "400",
                "--cache-dir",
                str(tmp_path / "fresh-cache"),
                "--out",
                str(json_out),
            ]
        )
        == 0
    )
    assert filecmp.cmp(
        json_out, tmp_path / "fresh-cache" / (json.loads(json_out.read_text())["provenance"]["input_hash"] + ".json")
    )


def test_report_command_rejects_an_unknown_model_and_an_empty_window_in_one_line(populated, tmp_path, capsys):
    _, url, _ = populated
    base = ["report", "--store", url, "--reference", REFERENCE, "--out", str(tmp_path / "r.html")]
    assert cli_main([*base, "--model", "nope", "--current", CURRENT]) == 2
    assert "model 'nope' has no events" in capsys.readouterr().err
    assert cli_main([*base, "--model", "bikes", "--current", EMPTY]) == 2
    err = capsys.readouterr().err
    assert "holds no events" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_sample_is_deterministic_for_a_seed_and_changes_with_it(populated):
    from driftwarden.auth import Principal
    from driftwarden.detectors.api import queries

    client, _, _ = populated
    everyone = Principal("test")
    window = Window.parse(REFERENCE)
    first = queries.sample(client, everyone, "bikes", window, 50, seed=7)
    again = queries.sample(client, everyone, "bikes", window, 50, seed=7)
    other = queries.sample(client, everyone, "bikes", window, 50, seed=8)
    assert first == again and len(first) == 50
    assert first != other


def test_report_dates_parse_as_utc(http):
    body = http.get("/api/v1/models/bikes/report", params=REPORT_QUERY, headers=AUTH).json()
    assert Window.parse(body["current"]).start == dt.datetime(2011, 2, 3, tzinfo=dt.UTC)


def test_evidently_telemetry_is_off_once_the_reports_module_is_loaded():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DO_NOT_TRACK", "EVIDENTLY_DISABLE_TELEMETRY")}
    probe = (
        "import os, detectors.api.reports; "
        "print(os.environ.get('DO_NOT_TRACK'), os.environ.get('EVIDENTLY_DISABLE_TELEMETRY'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["1", "1"], out.stderr
    from evidently.telemetry import event_logger  # reads DO_NOT_TRACK at every event

    assert not event_logger.is_enabled()


def test_report_command_migrates_an_embedded_store_without_schema_first(engine_dir, tmp_path, capsys):
    from driftwarden import storage
    from driftwarden.storage.migrate import applied

    url = f"chdb://{engine_dir}?database=api_not_migrated"
    client = storage.connect(url, create_database=True)
    args = ["report", "--store", url, "--model", "bikes", "--reference", REFERENCE, "--current", CURRENT]
    assert cli_main([*args, "--out", str(tmp_path / "r.html")]) == 2
    assert "model 'bikes' has no events" in capsys.readouterr().err
    assert storage.latest_version() in applied(client)
