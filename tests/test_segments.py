"""Segments on synthetic traffic where one region degrades: it ranks first, the others stay, the cap holds."""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np

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
