"""Server-side SVG charts: well-formed, accessible, escaped, drawing what their data says.

The structural tests parse each chart as XML; the browser test renders a sheet of every
chart in Debian's Chromium (no request leaves the page) and saves a screenshot to
``test-artifacts/charts.png`` for a person to look at.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from driftwarden.detectors.api.charts import (
    Band,
    Bar,
    Series,
    Threshold,
    category_chart,
    ecdf_chart,
    histogram_chart,
    line_chart,
    nice_ticks,
    ranking_chart,
)

SVG = "{http://www.w3.org/2000/svg}"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
DAY = dt.timedelta(days=1)
START = dt.datetime(2011, 2, 1, tzinfo=dt.UTC)


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    assert root.get("role") == "img"
    title_id, desc_id = root.get("aria-labelledby"), root.get("aria-describedby")
    assert root.find(f"{SVG}title").get("id") == title_id
    assert root.find(f"{SVG}desc").get("id") == desc_id
    return root


def weekly(values: list[float | None]) -> list[tuple[dt.datetime, float | None]]:
    return [(START + i * 7 * DAY, v) for i, v in enumerate(values)]


def estimated_vs_realized() -> str:
    return line_chart(
        [
            Series(
                "estimated ROC AUC", weekly([0.91, 0.9, 0.86, 0.8, 0.78]), flagged=[False, False, False, True, True]
            ),
            Series("realized ROC AUC", weekly([0.92, 0.89, 0.85, None, None]), dashed=True),
        ],
        title="ROC AUC: estimated vs realized",
        subtitle="reference 2011-01; one point per week",
        y_label="ROC AUC",
        thresholds=[Threshold(0.84, "lower threshold 0.84")],
        band=Band(0.84, 0.97, "expected range"),
    )


def test_line_chart_places_every_point_and_marks_the_alerts():
    root = parse(estimated_vs_realized())
    groups = root.findall(f".//{SVG}g[@class='series']")
    assert [g.get("data-series") for g in groups] == ["estimated ROC AUC", "realized ROC AUC"]
    estimated, realized = groups
    assert len(estimated.findall(f"{SVG}circle")) == 5
    assert len(estimated.findall(f"{SVG}circle[@class='alert']")) == 2
    assert len(realized.findall(f"{SVG}circle")) == 3  # the missing weeks are gaps, not zeros
    assert realized.find(f"{SVG}polyline").get("stroke-dasharray")
    # A higher value is drawn higher: y decreases as the value grows.
    ys = [float(c.get("cy")) for c in estimated.findall(f"{SVG}circle")]
    assert ys == sorted(ys)
    threshold = root.find(f".//{SVG}line[@class='threshold']")
    assert threshold.find(f"{SVG}title").text == "lower threshold 0.84"
    # The threshold line sits between the points above and below it.
    ty = float(threshold.get("y1"))
    assert ys[2] < ty < ys[3]
    desc = root.find(f"{SVG}desc").text
    assert "latest 0.78" in desc and "2 with an alert" in desc and "lower threshold 0.84" in desc


def test_line_chart_labels_dates_on_the_x_axis_and_round_ticks_on_y():
    svg = estimated_vs_realized()
    assert "Feb 01" in svg and "Mar 01" in svg
    texts = [t.text for t in parse(svg).iter(f"{SVG}text")]
    assert "0.85" in texts or "0.9" in texts


def test_line_chart_without_data_says_so():
    root = parse(line_chart([Series("mae", [])], title="MAE"))
    assert any(t.text == "no data in this range" for t in root.iter(f"{SVG}text"))


def test_labels_are_escaped_and_long_ones_shortened_with_the_full_text_kept():
    hostile = '<script>alert("x")</script> & a very long segment name that does not fit the plot at all'
    svg = ranking_chart([Bar(hostile, 0.4, flagged=True), Bar("ok", 0.1)], title="Segments <worst>")
    assert "<script>" not in svg
    root = parse(svg)
    assert root.find(f"{SVG}title").text == "Segments <worst>"
    bar = root.find(f".//{SVG}g[@data-label='{hostile}']")
    assert bar.find(f"{SVG}title").text.startswith(hostile)
    shown = bar.find(f"{SVG}text").text
    assert shown.endswith("…") and len(shown) <= 30


def test_ranking_chart_orders_by_value_and_colours_flagged_bars():
    bars = [Bar("eu", 0.05), Bar("us", 0.42, flagged=True, note="MAE 3.1x"), Bar("apac", 0.2), Bar("latam", -0.1)]
    root = parse(ranking_chart(bars, title="MAE ratio by region", threshold=Threshold(0.3, "alert at 0.3")))
    groups = root.findall(f".//{SVG}g[@data-label]")
    labels = [g.get("data-label") for g in groups]
    assert labels == ["us", "apac", "eu", "latam"]
    assert "flagged" in groups[labels.index("us")].get("class")
    widths = {g.get("data-label"): float(g.find(f"{SVG}rect").get("width")) for g in groups}
    assert widths["us"] > widths["apac"] > widths["eu"]
    assert root.find(f".//{SVG}line[@class='threshold']") is not None


def test_ranking_chart_says_how_many_bars_it_left_out():
    svg = ranking_chart([Bar(f"s{i}", float(i)) for i in range(20)], title="many", max_bars=5)
    assert "15 more not shown" in svg
    assert len(parse(svg).findall(f".//{SVG}g[@data-label]")) == 5


def test_histogram_heights_are_shares_and_unequal_bins_are_densities():
    edges = [0.0, 1.0, 2.0, 4.0]
    root = parse(histogram_chart(edges, [50, 30, 20], [10, 10, 80], title="temp"))
    ref = root.findall(f".//{SVG}rect[@class='reference']")
    cur = root.findall(f".//{SVG}rect[@class='current']")
    assert len(ref) == len(cur) == 3
    h = [float(r.get("height")) for r in ref]
    # Shares 0.5, 0.3, 0.2 over widths 1, 1, 2: densities 0.5, 0.3, 0.1.
    assert math.isclose(h[0] / h[1], 0.5 / 0.3, rel_tol=0.02)
    assert math.isclose(h[0] / h[2], 0.5 / 0.1, rel_tol=0.02)
    # The third bin is twice as wide as the first.
    w = [float(r.get("width")) for r in cur]
    assert math.isclose(w[2] / w[0], 2.0, rel_tol=0.05)
    desc = root.find(f"{SVG}desc").text
    assert "60% of the mass moved" in desc  # total variation distance: (40 + 20 + 60) / 2 %


def test_histogram_refuses_mismatched_bins():
    with pytest.raises(ValueError, match="edges"):
        histogram_chart([0.0, 1.0], [1, 2], [1, 2], title="x")
    with pytest.raises(ValueError, match="increasing"):
        histogram_chart([0.0, 0.0, 1.0], [1, 2], [1, 2], title="x")


def test_ecdf_chart_marks_the_kolmogorov_smirnov_gap():
    reference = [(float(v), 1) for v in range(10)]
    current = [(float(v) + 3, 1) for v in range(10)]
    root = parse(ecdf_chart(reference, current, title="hum"))
    assert len(root.findall(f".//{SVG}path[@class='ecdf']")) == 2
    gap = root.find(f".//{SVG}line[@class='ks-gap']")
    assert gap.find(f"{SVG}title").text.startswith("D = 0.3 ")  # the shift of 3 out of 10 values


def test_category_chart_keeps_the_largest_changes_and_sums_the_rest_into_other():
    cats = [f"c{i}" for i in range(30)] + ["brand-new"]
    ref = [10] * 30 + [0]
    cur = [10] * 29 + [0, 100]
    root = parse(category_chart(cats, ref, cur, title="weather", max_categories=6))
    rows = [g.get("data-category") for g in root.findall(f".//{SVG}g[@class='category']")]
    assert len(rows) == 6
    assert rows[0] == "brand-new"  # the largest change of share comes first
    assert rows[-1] == "other (26 categories)"
    first = root.find(f".//{SVG}g[@data-category='brand-new']")
    assert "not in the reference" in first.find(f"{SVG}title").text
    assert first.find(f"{SVG}text").text.endswith("new")


@pytest.mark.parametrize(("lo", "hi"), [(0.0, 1.0), (0.83, 0.97), (-3.2, 41.0), (1e-5, 3e-5), (5.0, 5.0)])
def test_nice_ticks_cover_the_range_with_round_steps(lo, hi):
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi
    steps = {round(b - a, 12) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1
    mantissa = float(re.sub(r"e.*", "", f"{steps.pop():e}"))
    assert mantissa in (1.0, 2.0, 2.5, 5.0)


@pytest.mark.timeout(120)
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (scripts/install-test-deps.sh)")
def test_every_chart_renders_in_chromium_without_requests_and_is_screenshotted():
    from playwright.sync_api import sync_playwright

    charts = [
        estimated_vs_realized(),
        histogram_chart(
            [float(v) for v in range(0, 42, 2)],
            [int(200 * math.exp(-((v - 12) ** 2) / 40)) for v in range(0, 40, 2)],
            [int(200 * math.exp(-((v - 24) ** 2) / 50)) for v in range(0, 40, 2)],
            title="temp: reference vs current",
            subtitle="ks 0.52 > threshold 0.1 · drift",
            x_label="temp (°C)",
        ),
        ecdf_chart([(float(v), 1) for v in range(100)], [(float(v) * 1.3, 1) for v in range(100)], title="hum (ECDF)"),
        category_chart(
            ["clear", "mist", "light rain", "heavy rain"], [600, 300, 90, 10], [300, 400, 250, 50], title="weather"
        ),
        ranking_chart(
            [Bar("region=us", 3.1, True, "MAE 6.0 vs 1.9"), Bar("region=eu", 1.2), Bar("region=other", 0.9)],
            title="Segments that degrade most",
            value_label="MAE / reference MAE",
            threshold=Threshold(1.5, "alert at 1.5x"),
        ),
    ]
    page_html = "<!DOCTYPE html><html><body style='margin:16px'>" + "".join(
        f"<div style='margin-bottom:12px'>{c}</div>" for c in charts
    )
    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.set_content(page_html)
            assert page.locator("svg.chart").count() == len(charts)
            for i in range(len(charts)):
                box = page.locator("svg.chart").nth(i).bounding_box()
                assert 700 <= box["width"] <= 770 and box["height"] > 100  # laptop-sized, not squeezed
            assert page.get_by_role("img", name="temp: reference vs current").count() == 1
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "charts.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert [u for u in requests if not u.startswith(("data:", "about:"))] == []
