"""Segments on synthetic traffic where one region degrades: it ranks first, the others stay, the cap holds."""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from driftwarden.detectors.config import SegmentsConfig
from driftwarden.detectors.segments import compute_segments, write_segments
from driftwarden.detectors.window import Window
from tests.inference_rows import COLUMNS, event, insert_labels

UTC = dt.UTC
START = dt.datetime(2024, 5, 1, tzinfo=UTC)
REFERENCE = Window(START, START + dt.timedelta(days=1))
CURRENT = Window(START + dt.timedelta(days=1), START + dt.timedelta(days=2))
REGIONS = ["eu", "us", "apac"]


def traffic(store, *, tiny: int = 1, many: int = 0) -> None:
    """400 rows per region and window; in the current window `us` gets 3x the latency, 4x the error, x shifted.

    Plus a region `tiny` with ``tiny`` rows in each window, and ``many`` regions of 40 rows each.
    """
    rng = np.random.default_rng(0)
    rows, labels = [], []
    for window in (REFERENCE, CURRENT):
        later = window is CURRENT
        regions = [r for r in REGIONS for _ in range(400)] + ["tiny"] * tiny
        regions += [f"r{k:02d}" for k in range(many) for _ in range(40)]
        for i, region in enumerate(regions):
            bad = later and region == "us"
            truth = float(rng.normal(100, 10))
            error = float(rng.normal(0, 20 if bad else 5))
            row = event(
                "seg",
                window.start + dt.timedelta(seconds=20 * i),
                event_id=uuid.uuid4(),
                latency_ms=float(rng.gamma(4, 15 if bad else 5)),
                num_names=["x"],
                num_values=[float(rng.normal(2.0 if bad else 0.0, 1.0))],
                cat_names=["region"],
                cat_values=[region],
                prediction=truth + error,
            )
            rows.append(row)
            labels.append((row["event_id"], "", truth))
    store.insert("inferences", [[r[c] for c in COLUMNS] for r in rows], column_names=COLUMNS)
    insert_labels(store, "seg", labels, CURRENT.end)


def ranked(results, signal: str) -> list:
    return sorted((r for r in results if r.signal == signal and r.dimension == "feature:region"), key=lambda r: r.rank)


def test_the_degraded_region_ranks_first_on_every_signal(store):
    traffic(store)
    results = compute_segments(
        store, "seg", REFERENCE, CURRENT, SegmentsConfig(dimensions=["region"]), task="regression"
    )
    for signal, metric in (("latency", "p95_ms"), ("performance", "mae"), ("drift", "mean_shift")):
        top = ranked(results, signal)
        assert top[0].segment == "us" and top[0].flagged and top[0].metric == metric, signal
        assert not any(r.flagged for r in top[1:]), signal
    mae = ranked(results, "performance")[0]
    assert 2.5 < mae.value / mae.reference_value < 5.5  # the error's scale grew 4x
    assert ranked(results, "drift")[0].details["feature"] == "x"


def test_a_segment_with_one_row_gets_a_clear_message_and_no_value(store):
    traffic(store, tiny=1)
    results = compute_segments(store, "seg", REFERENCE, CURRENT, SegmentsConfig(dimensions=["region"]))
    tiny = [r for r in results if r.segment == "tiny"]
    assert tiny and all(r.value is None and r.degradation is None and not r.flagged for r in tiny)
    assert tiny[0].message == (
        "segment feature:region=tiny: 1 row in the current window and 1 row in the reference, "
        "below the minimum of 30: no value"
    )
    assert all(r.rank == max(x.rank for x in ranked(results, r.signal)) for r in tiny if r.signal != "drift")


def test_segments_beyond_the_cap_are_summed_into_other(store):
    traffic(store, tiny=0, many=12)
    config = SegmentsConfig(dimensions=["region", "model_version"], max_segments=5)
    results = compute_segments(store, "seg", REFERENCE, CURRENT, config)
    latency = ranked(results, "latency")
    assert {r.segment for r in latency} == {*REGIONS, "r00", "r01", "other"}  # 5 largest + other
    other = next(r for r in latency if r.segment == "other")
    assert other.current_rows == 10 * 40
    assert [r.segment for r in results if r.dimension == "model_version"] == ["v1"] * 2
    assert write_segments(store, results) == len(results)


def _scored(store, model: str) -> None:
    """A binary classifier with calibrated scores in three regions; in the current window `us` becomes unsure.

    Scores ~ Beta(0.4, 0.4) everywhere in the labelled reference and in eu/apac later (expected accuracy
    E[max(p, 1 - p)] = 0.81), Beta(4, 4) in `us` later (0.63): its estimated accuracy drops by about 0.18
    while no label of the current window exists. `us` has 700 rows per window, apac and eu 600.
    """
    from driftwarden.collector.ingest_file import predictions_and_labels

    rng = np.random.default_rng(1)
    for window in (REFERENCE, CURRENT):
        later = window is CURRENT
        regions = ["us"] * 700 + ["apac"] * 600 + ["eu"] * 600
        a = np.array([4.0 if later and r == "us" else 0.4 for r in regions])
        score = rng.beta(a, a)
        frame = pd.DataFrame(
            {
                "id": [f"{'c' if later else 'r'}{i}" for i in range(len(regions))],
                "ts": [window.start + dt.timedelta(seconds=40 * i) for i in range(len(regions))],
                "region": regions,
                "score": score,
                "predicted": (score >= 0.5).astype(int),
            }
        )
        if not later:
            frame["truth"] = (rng.random(len(regions)) < score).astype(int)
        inferences, labels = predictions_and_labels(
            pa.Table.from_pandas(frame, preserve_index=False),
            model=model,
            timestamp_column="ts",
            id_column="id",
            prediction_column="predicted",
            label_column=None if later else "truth",
            score_columns={"": "score"},
        )
        store.insert_arrow("inferences", inferences)
        if labels is not None:
            store.insert_arrow("ground_truth", labels)


def test_estimated_performance_per_segment_ranks_the_unsure_region_first_without_labels(store, make_app):
    from driftwarden.detectors.estimation.cbpe import fit_cbpe

    _scored(store, "cls")
    fit = fit_cbpe(store, "cls", REFERENCE, CURRENT.end - CURRENT.start)
    config = SegmentsConfig(dimensions=["region"], max_segments=2)  # us and apac of their own, eu in `other`
    results = compute_segments(store, "cls", REFERENCE, CURRENT, config, estimator=fit)
    estimated = ranked(results, "estimated_performance")
    assert sorted(r.segment for r in estimated) == ["apac", "other", "us"]
    top = estimated[0]
    assert (top.segment, top.metric, top.flagged, top.current_rows) == ("us", "accuracy", True, 700)
    assert top.value == pytest.approx(0.63, abs=0.04)  # Beta(4, 4): E[max(p, 1 - p)], estimated without labels
    assert top.reference_value == pytest.approx(0.81, abs=0.05)  # realized in the labelled reference
    assert top.degradation == pytest.approx(top.reference_value - top.value) and top.degradation > 0.1
    assert top.details["method"] == "cbpe" and top.details["sampling_error"] > 0
    for r in estimated[1:]:  # apac and eu (as `other`) keep their accuracy
        assert not r.flagged and abs(r.degradation) < 0.05 and r.value == pytest.approx(0.81, abs=0.04), r
    assert next(r for r in estimated if r.segment == "other").current_rows == 600
    assert write_segments(store, results) == len(results)

    # the labelled metric, the API and the page's segment rankings carry it
    from fastapi.testclient import TestClient

    from driftwarden.auth import TokenConfig
    from driftwarden.detectors.api import ApiSettings, create_router
    from driftwarden.detectors.exporter import Exporter

    exporter = Exporter()
    exporter.observe_segments(results)
    labels = {"dimension": "feature:region", "segment": "us", "signal": "estimated_performance", "metric": "accuracy"}
    value = exporter.registry.get_sample_value(
        "driftwarden_segment_degradation", {"model": "cls", "model_version": "", **labels}
    )
    assert value == pytest.approx(top.degradation)
    app = make_app(store)
    app.include_router(create_router(ApiSettings(tokens=[TokenConfig(name="ops", token="t" * 24)])))
    http = TestClient(app)
    auth = {"Authorization": f"Bearer {'t' * 24}"}
    window = f"{CURRENT.start.isoformat()}..{CURRENT.end.isoformat()}"
    served = http.get("/api/v1/models/cls/segments", params={"window": window}, headers=auth).json()
    us = [r for r in served if r["signal"] == "estimated_performance" and r["segment"] == "us"]
    assert len(us) == 1 and us[0]["flagged"] and us[0]["metric"] == "accuracy" and us[0]["rank"] == 1, served
    page = http.get("/models/cls", params={"window": window}, headers=auth).text
    assert "estimated_performance · accuracy by feature:region" in page
