"""Multivariate drift on synthetic data with known answers, and agreement with NannyML's PCA reconstruction.

The classic case for multivariate methods: two features whose correlation flips from +0.9 to
-0.9 while each keeps its N(0, 1) marginal. Feature-by-feature drift sees nothing; the PCA
reconstruction error and the domain classifier must both alert and name the two features.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from driftwarden.detectors.multivariate import MultivariateSettings, compute_multivariate, write_multivariate
from driftwarden.detectors.multivariate.classifier import sample
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


@pytest.mark.slow
def test_a_later_run_reads_the_stored_reference_fit_and_late_rows_make_it_stale(flipped):
    client, _, _ = flipped
    pca_only = MultivariateSettings(methods=("pca_reconstruction",))
    [fresh] = compute_multivariate(client, "m", REFERENCE, CURRENT, settings=pca_only, reuse=False)
    assert stored_fits(client) == []  # reuse=False neither reads nor writes a fit
    [first] = compute_multivariate(client, "m", REFERENCE, CURRENT, settings=pca_only)
    [(rows, doc)] = stored_fits(client)
    assert rows == 10 * ROWS_PER_DAY
    assert first.value == pytest.approx(fresh.value, rel=1e-9)
    assert first.upper_threshold == pytest.approx(fresh.upper_threshold, rel=1e-9)
    assert [d["feature"] for d in first.drivers] == [d["feature"] for d in fresh.drivers]

    # The second run takes its thresholds from the stored fit: a stored fit whose chunks were altered shows it.
    doc["chunk_values"] = [v * 2 for v in doc["chunk_values"]]
    resave(client, rows, doc)
    [second] = compute_multivariate(client, "m", REFERENCE, CURRENT, settings=pca_only)
    assert second.value == pytest.approx(first.value, rel=1e-9)
    assert second.upper_threshold == pytest.approx(2 * first.upper_threshold, rel=1e-9)

    # A late row in the reference window changes its row count: the fit is redone from the data.
    load(client, "m", frame(1, 0.9, 9), REFERENCE.start + dt.timedelta(seconds=1))
    [third] = compute_multivariate(client, "m", REFERENCE, CURRENT, settings=pca_only)
    assert third.reference_rows == 10 * ROWS_PER_DAY + 1
    assert third.upper_threshold == pytest.approx(fresh.upper_threshold, rel=0.05)
    assert max(r for r, _ in stored_fits(client)) == 10 * ROWS_PER_DAY + 1


@pytest.mark.slow
def test_classifier_drivers_come_from_held_out_rows_of_both_windows(store):
    """Windows large enough that a fold's test rows exceed the permutation sample: the shuffled rows must
    still hold both windows, or shuffling a feature changes nothing and every driver scores ~0."""
    rng = np.random.default_rng(11)
    rows = 11_000
    for start, shift in ((REFERENCE.start, 0.0), (CURRENT.start, 1.0)):
        insert(
            store,
            "wide",
            timestamps(start, rows, DAY / rows),
            {"a": rng.normal(shift, 1.0, rows), "b": rng.normal(size=rows), "c": rng.normal(size=rows)},
        )
    reference = Window(REFERENCE.start, REFERENCE.start + DAY)
    [dc] = compute_multivariate(
        store, "wide", reference, CURRENT, settings=MultivariateSettings(methods=("domain_classifier",))
    )
    assert dc.alert and dc.value > 0.65
    assert dc.drivers[0]["feature"] == "a" and dc.drivers[0]["score"] > 0.1
    assert all(d["score"] < 0.03 for d in dc.drivers[1:])
    assert dc.details["permutation_rows"] == 5000


def stored_fits(client) -> list[tuple[int, dict]]:
    rows = client.query(
        "SELECT reference_rows, fit FROM multivariate_references FINAL WHERE model = 'm' ORDER BY created_at"
    ).result_rows
    return [(int(r), json.loads(f)) for r, f in rows]


def resave(client, rows: int, doc: dict) -> None:
    (key,) = client.query("SELECT any(fit_key) FROM multivariate_references WHERE model = 'm'").result_rows[0]
    client.insert(
        "multivariate_references",
        [["m", "", REFERENCE.start, REFERENCE.end, key, rows, json.dumps(doc)]],
        column_names=["model", "model_version", "reference_start", "reference_end", "fit_key", "reference_rows", "fit"],
    )


def test_the_classifier_sample_is_the_first_events_by_hash_with_or_without_the_hash_bound(flipped):
    client, _, _ = flipped
    numeric, categorical = ["x1", "x2", "x3"], ["colour"]
    matrix, labels = sample(client, "m", REFERENCE, None, numeric, categorical, 500)  # 10,000 rows: bound used
    expected = client.query(
        "SELECT num_values, cat_values FROM inferences FINAL WHERE model = 'm' AND ts < {end:DateTime64(6)} "
        "ORDER BY cityHash64(event_id), event_id LIMIT 500",
        parameters={"end": REFERENCE.end},
    ).result_rows
    assert matrix.shape == (500, 3)
    assert matrix.tolist() == [list(values) for values, _ in expected]
    assert labels == [list(values) for _, values in expected]
