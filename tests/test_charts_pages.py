"""The analytics sections of the model page in Chromium: distributions, multivariate drift, quality, segments, trends.

Served over the session's populated store (``tests/api_data.py``: Bikeshare January as reference,
February's weeks analysed by the real scheduler, with the multivariate, data-quality and segment
detectors on). Screenshots of each section go to ``test-artifacts/`` for a person to look at;
the page must make no request beyond the service and log no console error (its CSP forbids inline
styles, so a chart that used one would log an error here).
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import pytest

from tests.test_pages_browser import ARTIFACTS, CHROMIUM, TOKEN, Visit, browser, service  # noqa: F401

pytestmark = [
    pytest.mark.timeout(480),
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed (scripts/install-test-deps.sh)"
    ),
]
WINDOW = "2011-02-03..2011-02-10"


@pytest.fixture
def page(browser, service):  # noqa: F811
    visit = Visit(browser, service)
    response = visit.open("/models/bikes?" + urlencode({"window": WINDOW}))
    assert response.status == 200
    yield visit
    visit.close()


def shot(visit: Visit, selector: str, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    visit.page.locator(selector).first.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_each_drifted_feature_has_its_reference_and_current_distribution(page):
    charts = page.page.locator("#distributions ~ div.charts").first.locator("svg.chart")
    assert charts.count() >= 3
    for feature in ("temp", "atemp", "hum"):
        chart = page.page.get_by_role("img", name=f"{feature}: reference vs current", exact=True)
        assert chart.count() == 1
        assert chart.locator("rect.reference").count() == 30 and chart.locator("rect.current").count() == 30
        box = chart.bounding_box()
        assert box["width"] >= 500 and box["height"] >= 200  # readable, not a thumbnail
    shot(page, "#distributions ~ div.charts", "model-bikes-distributions")
    assert page.errors == [] and page.foreign() == []


def test_multivariate_drift_is_shown_with_its_thresholds_drivers_and_trend(page):
    rows = page.page.locator("table.multivariate tbody tr")
    methods = {rows.nth(i).get_attribute("data-method") for i in range(rows.count())}
    assert methods == {"pca_reconstruction"}  # tests/api_data.py configures PCA only (the classifier is slower)
    assert page.page.get_by_role("img", name="PCA reconstruction error over time", exact=True).count() == 1
    shot(page, "#multivariate ~ div.charts", "model-bikes-multivariate")
    assert page.errors == []


def test_quality_segments_and_metrics_over_time_are_drawn(page):
    assert page.page.locator("table.quality tbody tr").count() >= 1
    segments = page.page.locator("#segments ~ div.charts").first.locator("svg.chart")
    assert segments.count() >= 2  # latency and drift by model_version and by weathersit
    over_time = page.page.locator("#over-time ~ div.charts").first.locator("svg.chart")
    names = [over_time.nth(i).locator("title").first.text_content() for i in range(over_time.count())]
    assert "Share of drifted features" in names and "Latency p95 (ms)" in names
    assert "Drift score of the most drifted features" in names
    shot(page, "#segments ~ div.charts", "model-bikes-segments")
    shot(page, "#over-time ~ div.charts", "model-bikes-over-time")
    page.screenshot("model-bikes-analytics")
    assert page.errors == [] and page.foreign() == []


def test_the_json_api_serves_multivariate_quality_and_segments(service):  # noqa: F811
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=service, headers=headers, timeout=60) as http:
        multivariate = http.get("/api/v1/models/bikes/multivariate", params={"window": WINDOW}).json()
        assert {m["method"] for m in multivariate} == {"pca_reconstruction"}
        assert all(m["drivers"] for m in multivariate if m["value"] is not None)
        quality = http.get("/api/v1/models/bikes/quality", params={"window": WINDOW}).json()
        assert {q["check_name"] for q in quality} >= {"missing", "out_of_range", "unseen_category", "malformed_rows"}
        segments = http.get("/api/v1/models/bikes/segments", params={"window": WINDOW}).json()
        assert {s["dimension"] for s in segments} == {"model_version", "feature:weathersit"}
        ranks = [s["rank"] for s in segments if s["dimension"] == "model_version" and s["signal"] == "latency"]
        assert sorted(ranks) == list(range(1, len(ranks) + 1))
        assert http.get("/api/v1/models/bikes/segments").status_code == 200
        assert http.get("/api/v1/models/nope/segments").status_code == 404
