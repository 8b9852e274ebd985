"""CBPE agrees with NannyML's CBPE on NannyML's own data: every weekly chunk, every metric, the same alerts.

NannyML 0.13.1 runs for real here (its optional dependencies are in the `agreement` extra of
pyproject.toml; its usage telemetry is switched off by NML_DISABLE_USAGE_LOGGING). Both sides get
the same reference (whole ISO weeks, so NannyML's weekly periods and driftwarden's reference chunks
coincide) and the same analysis weeks; driftwarden estimates each week as a current window.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from driftwarden.collector.ingest_file import predictions_and_labels
from driftwarden.detectors.estimation.cbpe import METRICS, estimate_cbpe, estimate_cbpe_windows, fit_cbpe
from driftwarden.detectors.window import Window

UTC = dt.UTC
WEEK = dt.timedelta(days=7)
DATA = Path(find_spec("nannyml").submodule_search_locations[0]) / "datasets" / "data"


def _nannyml():
    os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"  # no usage analytics leave the machine
    import nannyml

    return nannyml


def _ingest(store, frame: pd.DataFrame, model: str, scores: dict[str, str], truth: str) -> None:
    frame = frame.copy()
    frame["timestamp"] = frame["timestamp"].dt.tz_localize("UTC")
    inferences, labels = predictions_and_labels(
        pa.Table.from_pandas(frame, preserve_index=False),
        model=model,
        timestamp_column="timestamp",
        id_column="id",
        prediction_column="y_pred",
        label_column=truth,
        score_columns=scores,
    )
    store.insert_arrow("inferences", inferences)
    store.insert_arrow("ground_truth", labels)


def _compare(store, model: str, reference: Window, weeks: list[dt.datetime], expected: pd.DataFrame) -> None:
    fit = fit_cbpe(store, model, reference, WEEK)
    assert fit.chunks == (reference.end - reference.start) // WEEK
    # every week in one pass; one week on its own gives the same numbers
    ours = {
        (r.current_start, r.metric): r for r in estimate_cbpe_windows(store, fit, [Window(w, w + WEEK) for w in weeks])
    }
    alone = {r.metric: r.estimated for r in estimate_cbpe(store, fit, Window(weeks[-1], weeks[-1] + WEEK))}
    assert alone == pytest.approx({m: ours[(weeks[-1], m)].estimated for m in METRICS}, abs=1e-12)
    checked = 0
    for _, row in expected.iterrows():
        start = pd.Timestamp(row[("chunk", "start_date")]).tz_localize("UTC").to_pydatetime()
        assert start in weeks
        for metric in METRICS:
            theirs = row[metric]
            r = ours[(start, metric)]
            tolerance = max(3 * theirs["sampling_error"], 0.01)
            assert abs(r.estimated - theirs["value"]) <= tolerance, (start, metric, r.estimated, theirs["value"])
            assert r.alert == bool(theirs["alert"]), (start, metric)
            assert r.sampling_error == pytest.approx(theirs["sampling_error"], rel=0.05), (start, metric)
            assert r.lower_threshold == pytest.approx(theirs["lower_threshold"], abs=1e-9), metric
            assert r.upper_threshold == pytest.approx(theirs["upper_threshold"], abs=1e-9), metric
            checked += 1
    assert checked == len(weeks) * len(METRICS)


@pytest.mark.slow
def test_cbpe_binary_agrees_with_nannyml_on_every_weekly_chunk_of_the_car_loan_data(store):
    nml = _nannyml()
    reference = pd.read_csv(DATA / "synthetic_car_loan_reference.csv", parse_dates=["timestamp"])
    analysis = pd.read_csv(DATA / "synthetic_car_loan_analysis.csv", parse_dates=["timestamp"]).merge(
        pd.read_csv(DATA / "synthetic_car_loan_analysis_target.csv"), on="id"
    )
    reference = reference[reference.timestamp < "2018-10-29"]  # 43 whole weeks from Monday 2018-01-01
    first = dt.datetime(2018, 11, 5, tzinfo=UTC)
    weeks = [first + i * WEEK for i in range(40)]
    analysis = analysis[(analysis.timestamp >= "2018-11-05") & (analysis.timestamp < "2019-08-12")]
    _ingest(store, pd.concat([reference, analysis]), "car_loan", {"": "y_pred_proba"}, "repaid")

    estimator = nml.CBPE(
        y_pred_proba="y_pred_proba",
        y_pred="y_pred",
        y_true="repaid",
        timestamp_column_name="timestamp",
        metrics=list(METRICS),
        chunk_period="W",
        problem_type="classification_binary",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(reference)
        expected = estimator.estimate(analysis.drop(columns=["repaid"])).filter(period="analysis").to_df()
    assert len(expected) == 40
    assert expected[[(m, "alert") for m in METRICS]].to_numpy().any()  # the data set has a real drop
    _compare(
        store,
        "car_loan",
        Window(dt.datetime(2018, 1, 1, tzinfo=UTC), dt.datetime(2018, 10, 29, tzinfo=UTC)),
        weeks,
        expected,
    )


@pytest.mark.slow
def test_cbpe_multiclass_agrees_with_nannyml_on_every_weekly_chunk_of_the_credit_card_data(store):
    nml = _nannyml()
    classes = ["highstreet_card", "prepaid_card", "upmarket_card"]
    scores = {c: f"y_pred_proba_{c}" for c in classes}
    reference = pd.read_csv(DATA / "mc_reference.csv", parse_dates=["timestamp"])
    analysis = pd.read_csv(DATA / "mc_analysis.csv", parse_dates=["timestamp"]).merge(
        pd.read_csv(DATA / "mc_analysis_gt.csv"), on="id"
    )
    reference = reference[(reference.timestamp >= "2020-05-04") & (reference.timestamp < "2020-08-31")]
    first = dt.datetime(2020, 9, 7, tzinfo=UTC)
    weeks = [first + i * WEEK for i in range(16)]
    analysis = analysis[(analysis.timestamp >= "2020-09-07") & (analysis.timestamp < "2020-12-28")]
    _ingest(store, pd.concat([reference, analysis]), "cards", scores, "y_true")

    estimator = nml.CBPE(
        y_pred_proba=scores,
        y_pred="y_pred",
        y_true="y_true",
        timestamp_column_name="timestamp",
        metrics=list(METRICS),
        chunk_period="W",
        problem_type="classification_multiclass",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(reference)
        expected = estimator.estimate(analysis.drop(columns=["y_true"])).filter(period="analysis").to_df()
    assert len(expected) == 16
    _compare(
        store,
        "cards",
        Window(dt.datetime(2020, 5, 4, tzinfo=UTC), dt.datetime(2020, 8, 31, tzinfo=UTC)),
        weeks,
        expected,
    )
    assert np.isfinite(expected[("accuracy", "value")]).all()
