"""Data-quality checks on synthetic windows whose every problem is planted and counted in advance."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from driftwarden.detectors.config import QualityConfig
from driftwarden.detectors.quality import compute_quality, write_quality
from driftwarden.detectors.window import Window
from tests.drift_data import insert, timestamps

UTC = dt.UTC
START = dt.datetime(2024, 3, 1, tzinfo=UTC)
REFERENCE = Window(START, START + dt.timedelta(days=1))
CURRENT = Window(START + dt.timedelta(days=1), START + dt.timedelta(days=2))
N = 1000
STEP = dt.timedelta(seconds=60)


def planted(store) -> None:
    """Reference: x in [0, 1], tier in {a, b}, mode in {on, off}, age present.

    Current (1000 rows): x has 100 missing (NaN) and 50 values above 1; tier has 80 values 'z' never seen;
    mode is constant 'on'; age is gone; a new feature `score` appears; 3 rows are malformed; `flag` was
    categorical in the reference and 20 rows send it as a number.
    """
    rng = np.random.default_rng(0)
    reference_x = rng.random(N)
    reference_x[:2] = [0.0, 1.0]  # the reference range is exactly [0, 1]
    insert(
        store,
        "q",
        timestamps(REFERENCE.start, N, STEP),
        {"x": reference_x, "age": rng.integers(18, 80, N).astype(float)},
        {"tier": rng.choice(["a", "b"], N), "mode": rng.choice(["on", "off"], N), "flag": rng.choice(["y", "n"], N)},
    )
    x = rng.random(N)
    x[:100] = np.nan
    x[100:150] = 1.5
    tier = rng.choice(["a", "b"], N).astype(object)
    tier[200:280] = "z"
    ts = timestamps(CURRENT.start, N, STEP)
    insert(store, "q", ts[20:], {"x": x[20:], "score": rng.random(N - 20)},
           {"tier": tier[20:], "mode": ["on"] * (N - 20), "flag": rng.choice(["y", "n"], N - 20)})  # fmt: skip
    insert(store, "q", ts[:20], {"x": x[:20], "score": rng.random(20), "flag": np.ones(20)},
           {"tier": tier[:20], "mode": ["on"] * 20})  # fmt: skip
    store.command(
        "INSERT INTO inferences (event_id, ts, model, model_version, num_names, num_values) "
        "SELECT generateUUIDv4(number), toDateTime64('2024-03-02 12:00:00', 6, 'UTC'), 'q', 'v1', "
        "['x', 'score'], [1.0] FROM numbers(3)"
    )


def by_check(results) -> dict[tuple[str, str], object]:
    return {(r.check_name, r.feature): r for r in results}


def test_each_planted_problem_is_found_with_its_count(store):
    planted(store)
    results = by_check(compute_quality(store, "q", REFERENCE, CURRENT))
    current_rows = N + 3

    missing = results["missing", "x"]
    assert missing.affected_rows == 100 + 3 and missing.failed  # NaN values and the malformed rows lack x
    assert missing.value == pytest.approx((100 + 3) / current_rows)
    out = results["out_of_range", "x"]
    assert out.affected_rows == 50 and out.failed
    assert out.value == pytest.approx(50 / 900)
    unseen = results["unseen_category", "tier"]
    assert unseen.affected_rows == 80 and unseen.failed and unseen.details["examples"] == ["z"]
    assert results["constant", "mode"].failed
    assert not results["constant", "tier"].failed
    assert results["feature_removed", "age"].failed
    assert results["feature_added", "score"].failed
    assert results["malformed_rows", ""].value == 3 and results["malformed_rows", ""].failed
    mismatch = results["type_mismatch", "flag"]
    assert mismatch.affected_rows == 20 and mismatch.failed and mismatch.feature_type == "categorical"
    assert ("feature_added", "flag") not in results  # a kind switch is a type mismatch, not a new feature
    assert all(r.current_rows == current_rows for r in results.values())


def test_a_clean_window_passes_every_check(store):
    rng = np.random.default_rng(1)
    for window in (REFERENCE, CURRENT):
        insert(
            store, "clean", timestamps(window.start, N, STEP), {"x": rng.random(N)}, {"tier": rng.choice(["a", "b"], N)}
        )
    results = compute_quality(store, "clean", REFERENCE, CURRENT)
    assert [r for r in results if r.failed] == []
    assert {r.check_name for r in results} == {"malformed_rows", "missing", "type_mismatch", "out_of_range",
                                               "unseen_category", "constant"}  # fmt: skip


def test_thresholds_come_from_the_configuration_and_results_are_stored(store):
    planted(store)
    lenient = QualityConfig(out_of_range=0.2, unseen_category=0.5, malformed_rows=5, schema_changes=False)
    results = by_check(compute_quality(store, "q", REFERENCE, CURRENT, config=lenient))
    assert not results["out_of_range", "x"].failed
    assert not results["unseen_category", "tier"].failed
    assert not results["malformed_rows", ""].failed
    assert not results["feature_added", "score"].failed
    written = write_quality(store, list(results.values()))
    stored = store.query("SELECT count(), countIf(failed) FROM quality_results FINAL WHERE model = 'q'").result_rows[0]
    assert stored == (written, sum(r.failed for r in results.values()))


def test_the_other_detectors_read_past_malformed_rows_instead_of_failing(store):
    """Rows whose name and value arrays differ are stored and counted here; drift, multivariate drift and
    segments leave them out (``detectors.rows.WELL_FORMED``) instead of failing ClickHouse's ARRAY JOIN."""
    from driftwarden.detectors.drift import compute_drift
    from driftwarden.detectors.multivariate import MultivariateSettings, compute_multivariate

    planted(store)
    report = compute_drift(store, "q", REFERENCE, CURRENT)
    assert report.current_rows == N  # the 3 malformed rows are left out (and counted by the quality checks)
    x = next(f for f in report.features if f.feature == "x")
    assert x.current_rows == N - 100  # every finite x of a well-formed row, none of the malformed rows' values
    pca_only = MultivariateSettings(methods=("pca_reconstruction",))
    (result,) = compute_multivariate(store, "q", REFERENCE, CURRENT, settings=pca_only)
    assert result.method == "pca_reconstruction"
