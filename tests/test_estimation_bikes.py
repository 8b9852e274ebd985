"""DLE agrees with NannyML's DLE on the bikes demo: the demo's model and Capital Bikeshare 2011, every week.

The demo's model (``driftwarden.demo.model``: a random forest trained on January 2011) predicts every
hour of January and February; both sides get the same predictions, inputs and outcomes. NannyML 0.13.1
(``nannyml.DLE``, LightGBM with its defaults) runs for real, its usage telemetry off. The reference is
the four whole ISO weeks of January (3 to 30 Jan, so NannyML's weekly periods and driftwarden's reference
chunks coincide); the analysis is the four weeks from Monday 31 January. Every week's MAE and RMSE
estimate must lie within max(3 sampling errors, 0.01) of NannyML's, with the same alerts.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings

import numpy as np
import pandas as pd
import pytest

from driftwarden.demo.model import FEATURES, TARGET, load_hours, train
from driftwarden.detectors.estimation.dle import METRICS, estimate_dle, fit_dle
from driftwarden.detectors.window import Window
from tests.inference_rows import event, insert_events, insert_labels

UTC = dt.UTC
WEEK = dt.timedelta(days=7)
REFERENCE = Window(dt.datetime(2011, 1, 3, tzinfo=UTC), dt.datetime(2011, 1, 31, tzinfo=UTC))
WEEKS = [dt.datetime(2011, 1, 31, tzinfo=UTC) + k * WEEK for k in range(4)]


def _demo_predictions(tmp_path) -> pd.DataFrame:
    hours = load_hours()
    trained = train(hours, tmp_path / "model")
    hours = hours.copy()
    hours["prediction"] = trained.estimator.predict(hours[list(FEATURES)].to_numpy(dtype=np.float64))
    hours["ts"] = pd.to_datetime(hours["ts"]).dt.tz_convert("UTC") if hours["ts"].dt.tz else hours["ts"]
    return hours


def _ingest(store, hours: pd.DataFrame) -> None:
    events, labels = [], []
    for row in hours.itertuples(index=False):
        ts = pd.Timestamp(row.ts)
        ts = (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()
        e = event(
            "bikes",
            ts,
            num_names=list(FEATURES),
            num_values=[float(getattr(row, f)) for f in FEATURES],
            prediction=float(row.prediction),
        )
        events.append(e)
        labels.append((e["event_id"], "", float(getattr(row, TARGET))))
    insert_events(store, events)
    insert_labels(store, "bikes", labels, dt.datetime(2011, 3, 1, tzinfo=UTC))


@pytest.mark.slow
def test_dle_agrees_with_nannyml_on_every_week_of_the_bikes_demo(store, tmp_path):
    os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"  # no usage analytics leave the machine
    import nannyml

    hours = _demo_predictions(tmp_path)
    _ingest(store, hours)
    naive = hours["ts"].dt.tz_localize(None) if hours["ts"].dt.tz is not None else hours["ts"]
    frame = hours.assign(timestamp=naive)
    start, end = (pd.Timestamp(w.replace(tzinfo=None)) for w in (REFERENCE.start, REFERENCE.end))
    reference = frame[(frame.timestamp >= start) & (frame.timestamp < end)]
    analysis = frame[(frame.timestamp >= end) & (frame.timestamp < end + pd.Timedelta(days=28))]

    estimator = nannyml.DLE(
        feature_column_names=list(FEATURES),
        y_pred="prediction",
        y_true=TARGET,
        timestamp_column_name="timestamp",
        metrics=list(METRICS),
        chunk_period="W",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(reference)
        expected = estimator.estimate(analysis.drop(columns=[TARGET])).filter(period="analysis").to_df()
    assert len(expected) == 4

    fit = fit_dle(store, "bikes", REFERENCE, WEEK)
    assert fit.chunks == 4
    compared, alerts = 0, 0
    for _, row in expected.iterrows():
        week = pd.Timestamp(row[("chunk", "start_date")]).tz_localize("UTC").to_pydatetime()
        assert week in WEEKS
        ours = {r.metric: r for r in estimate_dle(store, fit, Window(week, week + WEEK))}
        for metric in METRICS:
            theirs = row[metric]
            r = ours[metric]
            tolerance = max(3 * theirs["sampling_error"], 0.01)
            assert abs(r.estimated - theirs["value"]) <= tolerance, (week, metric, r.estimated, theirs["value"])
            assert r.alert == bool(theirs["alert"]), (week, metric, r.estimated, theirs["value"])
            assert r.sampling_error == pytest.approx(theirs["sampling_error"], rel=1e-6), (week, metric)
            assert r.lower_threshold == pytest.approx(theirs["lower_threshold"], abs=1e-9), metric
            assert r.upper_threshold == pytest.approx(theirs["upper_threshold"], abs=1e-9), metric
            compared += 1
            alerts += r.alert
    assert compared == 4 * len(METRICS)
