"""Latency, errors and SLO burn rates computed in ClickHouse, checked against numpy and hand counts."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from driftwarden.detectors.config import SLOConfig
from driftwarden.detectors.latency import compute_latency, write_latency
from driftwarden.detectors.window import Window
from tests.inference_rows import event, insert_events

UTC = dt.UTC
START = dt.datetime(2026, 3, 1, 10, tzinfo=UTC)
WINDOW = Window(START, START + dt.timedelta(hours=1))


def _spread(n: int, start: dt.datetime, span: dt.timedelta) -> list[dt.datetime]:
    return [start + span * (i + 0.5) / n for i in range(n)]


def test_latency_quantiles_errors_and_attainment_match_numpy_per_version(store):
    rng = np.random.default_rng(3)
    lat_v1 = rng.lognormal(3.0, 0.8, 3000)
    lat_v2 = rng.lognormal(4.0, 0.5, 800)
    ttft = rng.uniform(5, 50, 200)
    rows = [
        event("svc", t, latency_ms=float(x))
        for t, x in zip(_spread(3000, START, dt.timedelta(hours=1)), lat_v1, strict=True)
    ]
    for i in range(0, 3000, 100):
        rows[i]["status"] = 503  # 30 upstream errors
    for i in range(1, 3000, 150):
        rows[i].update(error_class="upstream_timeout", status=504)  # 20 collector errors (the collector answers 504)
    for i in range(200):
        rows[2 + 10 * i]["ttft_ms"] = float(ttft[i])
    rows += [
        event("svc", t, model_version="v2", latency_ms=float(x))
        for t, x in zip(_spread(800, START, dt.timedelta(hours=1)), lat_v2, strict=True)
    ]
    # Not traffic or not in the window: replays, another model, the window's end (half-open).
    rows += [event("svc", START + dt.timedelta(minutes=5), latency_ms=1e6, is_replay=True) for _ in range(50)]
    rows += [event("other", START + dt.timedelta(minutes=5), latency_ms=1e6) for _ in range(50)]
    rows += [event("svc", WINDOW.end, latency_ms=1e6), event("svc", START - dt.timedelta(microseconds=1))]
    insert_events(store, rows)

    slo = SLOConfig(latency_ms=40.0, percentile=0.99, availability=0.999)
    results = {r.model_version: r for r in compute_latency(store, "svc", WINDOW, slo)}
    assert set(results) == {"v1", "v2"}
    v1, v2 = results["v1"], results["v2"]

    assert v1.requests == 3000 and v2.requests == 800
    assert v1.throughput_rps == pytest.approx(3000 / 3600)
    assert (v1.upstream_errors, v1.collector_errors, v1.errors) == (30, 20, 50)
    assert v1.error_ratio == pytest.approx(50 / 3000)
    expected = np.percentile(lat_v1, [50, 90, 95, 99])
    got = [v1.latency_p50_ms, v1.latency_p90_ms, v1.latency_p95_ms, v1.latency_p99_ms]
    assert got == pytest.approx(expected, rel=1e-12)
    assert v1.latency_mean_ms == pytest.approx(lat_v1.mean(), rel=1e-12)
    assert [v2.latency_p50_ms, v2.latency_p99_ms] == pytest.approx(np.percentile(lat_v2, [50, 99]), rel=1e-12)
    assert [v1.ttft_p50_ms, v1.ttft_p95_ms] == pytest.approx(np.percentile(ttft, [50, 95]), rel=1e-12)
    assert v2.ttft_p50_ms is None and v2.ttft_p95_ms is None
    assert v1.slo_attainment == pytest.approx(np.mean(lat_v1 <= 40.0))
    assert v2.slo_attainment == pytest.approx(np.mean(lat_v2 <= 40.0))

    assert write_latency(store, list(results.values())) == 2
    stored = store.query(
        "SELECT model_version, requests, latency_p99_ms, input_hash FROM latency_results FINAL ORDER BY model_version"
    ).result_rows
    assert [(v, n) for v, n, _, _ in stored] == [("v1", 3000), ("v2", 800)]
    assert stored[0][2] == pytest.approx(expected[3], rel=1e-12)
    assert stored[0][3] == v1.input_hash


def test_burn_rates_over_each_lookback_follow_the_combined_error_budget(store):
    end = WINDOW.end
    hour = dt.timedelta(hours=1)
    rows = []

    def block(n_good: int, n_error: int, n_slow: int, start: dt.datetime, span: dt.timedelta) -> None:
        kinds = ["good"] * n_good + ["error"] * n_error + ["slow"] * n_slow
        for kind, t in zip(kinds, _spread(len(kinds), start, span), strict=True):
            status = 500 if kind == "error" else 200
            rows.append(event("svc", t, status=status, latency_ms=900.0 if kind == "slow" else 10.0))

    block(89, 5, 6, end - hour, hour)  # last hour: 100 requests, 11 bad
    block(500, 0, 0, end - 6 * hour, 5 * hour)  # 1h..6h: 500 good
    block(400, 0, 0, end - 24 * hour, 18 * hour)  # 6h..24h: 400 good
    block(989, 11, 0, end - dt.timedelta(days=10), hour)  # ten days earlier: 1000 requests, 11 bad
    block(0, 50, 0, end - dt.timedelta(days=31), hour)  # outside the 30-day lookback
    block(0, 50, 0, end, hour)  # after the window end
    insert_events(store, rows)

    slo = SLOConfig(latency_ms=500.0, percentile=0.99, availability=0.999)  # budget 0.011
    (result,) = compute_latency(store, "svc", WINDOW, slo)
    assert result.requests == 100
    assert result.burn_rate_1h == pytest.approx(11 / 100 / 0.011)
    assert result.burn_rate_6h == pytest.approx(11 / 600 / 0.011)
    assert result.burn_rate_24h == pytest.approx(11 / 1000 / 0.011)
    assert result.burn_rate_30d == pytest.approx(22 / 2000 / 0.011)
    assert result.slo_attainment == pytest.approx(94 / 100)
    assert result.error_ratio == pytest.approx(5 / 100)


def test_latency_of_a_window_without_requests_is_no_result(store):
    insert_events(store, [event("svc", START - dt.timedelta(hours=2))])
    assert compute_latency(store, "svc", WINDOW, SLOConfig()) == []


def test_latency_rerun_on_the_same_window_gives_identical_numbers_and_input_hash(store):
    rng = np.random.default_rng(5)
    insert_events(
        store,
        [
            event("svc", t, latency_ms=float(x))
            for t, x in zip(_spread(500, START, WINDOW.end - START), rng.gamma(2, 9, 500), strict=True)
        ],
    )
    first = compute_latency(store, "svc", WINDOW, SLOConfig(latency_ms=20))
    second = compute_latency(store, "svc", WINDOW, SLOConfig(latency_ms=20))
    strip = ("run_id", "computed_at")
    assert [{k: v for k, v in vars(r).items() if k not in strip} for r in first] == [
        {k: v for k, v in vars(r).items() if k not in strip} for r in second
    ]
    assert first[0].input_hash == second[0].input_hash
    insert_events(store, [event("svc", START + dt.timedelta(minutes=1), latency_ms=5.0)])
    assert compute_latency(store, "svc", WINDOW, SLOConfig(latency_ms=20))[0].input_hash != first[0].input_hash
