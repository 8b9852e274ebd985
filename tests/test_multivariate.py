"""Multivariate drift on synthetic data with known answers, and agreement with NannyML's PCA reconstruction.

The classic case for multivariate methods: two features whose correlation flips from +0.9 to
-0.9 while each keeps its N(0, 1) marginal. Feature-by-feature drift sees nothing; the PCA
reconstruction error and the domain classifier must both alert and name the two features.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from driftwarden.detectors.multivariate import MultivariateSettings, compute_multivariate, write_multivariate
from driftwarden.detectors.window import Window
from tests.drift_data import insert, timestamps

UTC = dt.UTC
START = dt.datetime(2024, 1, 1, tzinfo=UTC)
DAY = dt.timedelta(days=1)
ROWS_PER_DAY = 1000
STEP = DAY / ROWS_PER_DAY
REFERENCE = Window(START, START + 10 * DAY)
CURRENT = Window(START + 10 * DAY, START + 11 * DAY)


def frame(rows: int, correlation: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=rows)
    b = correlation * a + np.sqrt(1 - correlation**2) * rng.normal(size=rows)
    return pd.DataFrame(
        {
            "x1": a,
            "x2": b,
            "x3": rng.normal(5.0, 2.0, size=rows),
            "colour": rng.choice(["red", "green", "blue"], p=[0.5, 0.3, 0.2], size=rows),
        }
    )


def load(client, model: str, data: pd.DataFrame, start: dt.datetime) -> None:
    insert(
        client,
        model,
        timestamps(start, len(data), STEP),
        {c: data[c].to_numpy() for c in ("x1", "x2", "x3")},
        {"colour": data["colour"].to_numpy()},
    )


@pytest.fixture
def flipped(store):
    """Reference: corr(x1, x2) = +0.9 for 10 days; current day: -0.9, every marginal unchanged."""
    reference, current = frame(10 * ROWS_PER_DAY, 0.9, 1), frame(ROWS_PER_DAY, -0.9, 2)
    load(store, "m", reference, REFERENCE.start)
    load(store, "m", current, CURRENT.start)
    return store, reference, current


@pytest.mark.slow
def test_a_correlation_flip_alerts_both_methods_and_names_the_two_features(flipped):
    client, _, _ = flipped
    results = {r.method: r for r in compute_multivariate(client, "m", REFERENCE, CURRENT)}
    pca, dc = results["pca_reconstruction"], results["domain_classifier"]

    assert pca.alert and pca.value > pca.upper_threshold
    assert pca.verdict == "drift"
    assert {d["feature"] for d in pca.drivers[:2]} == {"x1", "x2"}
    assert pca.details["n_components"] >= 1
    assert len(pca.details["reference_chunks"]) == 10  # one chunk per reference day

    assert dc.alert and dc.value > 0.65
    assert {d["feature"] for d in dc.drivers[:2]} == {"x1", "x2"}
    assert dc.drivers[0]["score"] > 0.05
    assert sorted(dc.features) == ["colour", "x1", "x2", "x3"]


@pytest.mark.slow
def test_the_same_distribution_gives_no_alert(store):
    load(store, "same", frame(10 * ROWS_PER_DAY, 0.9, 3), REFERENCE.start)
    load(store, "same", frame(ROWS_PER_DAY, 0.9, 4), CURRENT.start)
    results = {r.method: r for r in compute_multivariate(store, "same", REFERENCE, CURRENT)}
    pca, dc = results["pca_reconstruction"], results["domain_classifier"]
    assert not pca.alert and pca.lower_threshold < pca.value < pca.upper_threshold
    assert not dc.alert and 0.4 < dc.value < 0.6


@pytest.mark.slow
def test_pca_reconstruction_agrees_with_nannyml(flipped):
    nml = pytest.importorskip("nannyml", reason="nannyml (test extra, installed --no-deps) is not installed")
    client, reference, current = flipped
    # Missing values on both sides: NannyML imputes the mean (numeric) and the mode (categorical), as we do.
    [result] = compute_multivariate(
        client, "m", REFERENCE, CURRENT, settings=MultivariateSettings(methods=("pca_reconstruction",))
    )
    calculator = nml.DataReconstructionDriftCalculator(
        column_names=["x1", "x2", "x3", "colour"], chunk_size=ROWS_PER_DAY
    )
    calculator.fit(reference)
    expected = calculator.calculate(current).filter(period="analysis").to_df()
    value = expected[("reconstruction_error", "value")].iloc[0]
    assert result.value == pytest.approx(value, rel=1e-6)
    assert result.upper_threshold == pytest.approx(expected[("reconstruction_error", "upper_threshold")].iloc[0], 1e-6)
    assert result.lower_threshold == pytest.approx(expected[("reconstruction_error", "lower_threshold")].iloc[0], 1e-6)
    assert result.sampling_error == pytest.approx(expected[("reconstruction_error", "sampling_error")].iloc[0], 1e-6)
    assert bool(result.alert) == bool(expected[("reconstruction_error", "alert")].iloc[0])


@pytest.mark.slow
def test_missing_values_and_unseen_categories_are_imputed_and_encoded_like_nannyml(store):
    nml = pytest.importorskip("nannyml", reason="nannyml (test extra, installed --no-deps) is not installed")
    reference, current = frame(10 * ROWS_PER_DAY, 0.5, 5), frame(ROWS_PER_DAY, 0.5, 6)
    current.loc[::7, "colour"] = "purple"  # never seen in the reference
    for data in (reference, current):
        data.loc[::11, "x3"] = np.nan
    load(store, "gaps", reference, REFERENCE.start)
    load(store, "gaps", current, CURRENT.start)
    [result] = compute_multivariate(
        store, "gaps", REFERENCE, CURRENT, settings=MultivariateSettings(methods=("pca_reconstruction",))
    )
    calculator = nml.DataReconstructionDriftCalculator(column_names=["x1", "x2", "x3", "colour"], chunk_size=1000)
    calculator.fit(reference)
    expected = calculator.calculate(current).filter(period="analysis").to_df()
    # CountEncoder gives an unseen category 0 when normalised, as the encoding does.
    assert result.value == pytest.approx(expected[("reconstruction_error", "value")].iloc[0], rel=1e-6)


def test_too_few_rows_give_no_verdict_with_the_reason(store):
    load(store, "small", frame(50, 0.9, 7), REFERENCE.start)
    load(store, "small", frame(20, -0.9, 8), CURRENT.start)
    for result in compute_multivariate(store, "small", REFERENCE, CURRENT):
        assert result.value is None and not result.alert
        assert result.verdict == "no verdict"
        assert "below the minimum of 100" in result.message


def test_malformed_rows_are_left_out_without_crashing(flipped):
    client, _, _ = flipped
    client.command(
        "INSERT INTO inferences (event_id, ts, model, model_version, num_names, num_values) VALUES "
        "(generateUUIDv4(), '2024-01-11 00:00:01', 'm', 'v1', ['x1', 'x2'], [1.0])"
    )
    pca_only = MultivariateSettings(methods=("pca_reconstruction",))
    results = compute_multivariate(client, "m", REFERENCE, CURRENT, settings=pca_only)
    assert [r.current_rows for r in results] == [ROWS_PER_DAY]
    assert results[0].alert
    assert written(client, results) == 1


def written(client, results) -> int:
    write_multivariate(client, results)
    return int(client.query("SELECT count() FROM multivariate_results FINAL WHERE model = 'm'").result_rows[0][0])
