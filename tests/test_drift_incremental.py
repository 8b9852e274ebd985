"""Drift from partial profiles per hour (``detectors.drift.incremental``), against the full scan of the windows.

``hour_profiles_min_rows=0`` and ``exact_max_values=0`` send small windows through the hour profiles, so
every verdict and statistic can be checked against the exact path on the same data: windows whose edges
cut hours, late rows into an hour already profiled, duplicates and replays, a model-version filter, the
prediction target, the false-discovery-rate control, and the scheduler's refresh as data arrives.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from scipy.stats import ks_2samp

from driftwarden import storage
from driftwarden.detectors import config as detector_config
from driftwarden.detectors.drift import DriftSettings, FeatureSpec, compute_drift, incremental, incremental_compare, sql
from driftwarden.detectors.drift.incremental_statistics import cell_bounds
from driftwarden.detectors.exporter import Exporter
from driftwarden.detectors.scheduler import Scheduler
from driftwarden.detectors.window import Window
from driftwarden.storage.migrate import retention
from tests.drift_data import insert, timestamps

UTC = dt.UTC
T_REF = dt.datetime(2026, 1, 5, tzinfo=UTC)
T_CUR = dt.datetime(2026, 1, 6, tzinfo=UTC)
STEP = dt.timedelta(seconds=2)
ROWS = 9_000  # 5 hours of events, 2 s apart
# Edges that cut hours: 00:20..04:40 holds three complete hours and two partial ones.
REF = Window(T_REF + dt.timedelta(minutes=20), T_REF + dt.timedelta(hours=4, minutes=40))
CUR = Window(T_CUR + dt.timedelta(minutes=20), T_CUR + dt.timedelta(hours=4, minutes=40))
HOURS = DriftSettings(exact_max_values=0, hour_profiles_min_rows=0)
EXACT = DriftSettings()


def _load(store, seed: int = 0, version: str = "v1", shift: float = 0.3, profile: bool = True) -> None:
    """Five hours of events from T_REF and from T_CUR; with ``profile``, their hours profiled as the scheduler
    does while they arrive."""
    rng = np.random.default_rng(seed)
    for start, salt, delta in ((T_REF, 0, 0.0), (T_CUR, 1, shift)):
        insert(
            store,
            "m",
            timestamps(start, ROWS, STEP),
            {
                "shifted": rng.normal(delta, 1, ROWS),
                "same": rng.exponential(1.0, ROWS),
                "levels": rng.integers(0, 4 + salt, ROWS).astype(float),
            },
            {"colour": rng.choice(["red", "green", "blue"] if not salt else ["red", "green", "blue", "teal"], ROWS)},
            prediction=rng.normal(delta, 1, ROWS),
            prediction_label=rng.choice(["yes", "no"], ROWS, p=[0.5 + delta / 2, 0.5 - delta / 2]),
            model_version=version,
        )
    if profile:
        incremental.refresh(store, "m", T_CUR + dt.timedelta(days=1), dt.timedelta(days=3), dt.timedelta(0))


def _features(store, settings: DriftSettings, **kwargs) -> dict:
    report = compute_drift(store, "m", REF, CUR, settings=settings, **kwargs)
    return {f.feature: f for f in report.features}


def _assert_same_drift(hourly: dict, exact: dict) -> None:
    assert set(hourly) == set(exact)
    for name, f in hourly.items():
        e = exact[name]
        assert (f.method, f.drifted, f.verdict) == (e.method, e.drifted, e.verdict), name
        assert (f.reference_rows, f.current_rows) == (e.reference_rows, e.current_rows), name
        assert f.missing_share == e.missing_share, name
        if f.feature_type == "numeric":
            assert f.details["computation"] == "hour cells", name
            bound = f.details.get("error_bound", 0.0)
            assert abs(f.statistic - e.statistic) <= bound + 1e-9, (name, f.statistic, e.statistic, bound)
        else:  # counts per category add up exactly
            assert f.statistic == pytest.approx(e.statistic, rel=1e-12, abs=1e-15), name


def test_hour_profiles_give_the_verdicts_and_statistics_of_the_full_scan(store):
    _load(store)
    hourly = _features(store, HOURS)
    _assert_same_drift(hourly, _features(store, EXACT))
    assert hourly["shifted"].drifted and not hourly["same"].drifted and hourly["colour"].drifted
    assert hourly["levels"].new_categories == [] and hourly["levels"].details["mixed_cells"] == 0
    # each hour was profiled once: its stamp, each version's name list and features
    profiled = store.query(
        "SELECT countIf(feature = ''), countIf(feature = '/names'), uniqExact(hour) FROM drift_hour_profiles "
        "WHERE model = 'm'"
    ).result_rows[0]
    assert profiled == (10, 10, 10)  # 00:00 to 04:00 of both days; the windows' partial hours are read raw


def test_windows_never_profiled_take_the_per_window_path_and_leave_the_hours_to_the_scheduler(store):
    _load(store, profile=False)
    hourly = _features(store, HOURS)
    assert {f.details.get("computation") for f in hourly.values()} == {"cells", None}
    assert store.query("SELECT count() FROM drift_hour_profiles").result_rows == [(0,)]
    # once the hours are kept, the same run reads them, with the same verdicts
    incremental.refresh(store, "m", T_CUR + dt.timedelta(days=1), dt.timedelta(days=3), dt.timedelta(0))
    again = _features(store, HOURS)
    assert {f.details.get("computation") for f in again.values()} == {"hour cells", None}
    assert [f.drifted for f in again.values()] == [f.drifted for f in hourly.values()]


def test_a_second_run_reuses_the_hours_and_reports_the_same(store):
    _load(store)
    one = compute_drift(store, "m", REF, CUR, settings=HOURS)
    for window in (REF, CUR):
        assert incremental.window_hours(store, "m", window).hours_built == 0
    two = compute_drift(store, "m", REF, CUR, settings=HOURS)
    assert one.input_hash == two.input_hash
    assert [f.statistic for f in one.features] == [f.statistic for f in two.features]


def test_ks_on_hour_cells_brackets_scipy_and_keeps_the_fdr_verdicts(store):
    _load(store, shift=0.08)
    specs = [FeatureSpec("shifted", "numeric", "ks"), FeatureSpec("same", "numeric", "ks")]
    specs += [FeatureSpec("colour", "categorical", "chisquare"), FeatureSpec("levels", "numeric", "chisquare")]
    settings = DriftSettings(exact_max_values=0, hour_profiles_min_rows=0, fdr=True)
    hourly = _features(store, settings, features=specs)
    exact = _features(store, DriftSettings(fdr=True), features=specs)
    for name in ("shifted", "same", "colour", "levels"):
        f, e = hourly[name], exact[name]
        assert (f.drifted, f.details["p_value_adjusted"] < 0.05) == (e.drifted, e.details["p_value_adjusted"] < 0.05)
    ref, cur = _window_values(store, REF, "shifted"), _window_values(store, CUR, "shifted")
    d = ks_2samp(ref, cur).statistic
    ks = hourly["shifted"]
    assert ks.statistic - 1e-12 <= d <= ks.statistic + ks.details["error_bound"] + 1e-12
    assert hourly["shifted"].drifted and not hourly["same"].drifted


def _window_values(store, window: Window, feature: str) -> np.ndarray:
    rows = store.query(
        f"SELECT num_values[indexOf(num_names, {{f:String}})] FROM inferences FINAL "
        f"WHERE model = 'm' AND {window.sql()}",
        parameters={"f": feature},
    ).result_rows
    return np.array([r[0] for r in rows])


def test_late_rows_into_a_profiled_hour_are_counted_once(store):
    _load(store)
    compute_drift(store, "m", REF, CUR, settings=HOURS)
    late = T_REF + dt.timedelta(hours=2, minutes=30, milliseconds=500)  # between two events of a complete hour
    insert(store, "m", timestamps(late, 300, dt.timedelta(milliseconds=1)), {"shifted": [9.0] * 300})
    hourly = _features(store, HOURS)
    exact = _features(store, EXACT)
    _assert_same_drift(hourly, exact)
    assert hourly["shifted"].reference_rows == exact["shifted"].reference_rows
    # one rebuilt hour, replacing its profile; nothing else is rebuilt, and a third run rebuilds nothing
    assert incremental.window_hours(store, "m", REF).hours_built == 0
    stamps = store.query(
        "SELECT hour, count() FROM drift_hour_profiles WHERE model = 'm' AND feature = '' GROUP BY hour ORDER BY hour"
    ).result_rows
    assert [n for _, n in stamps] == [1, 1, 2, 1, 1] + [1] * 5  # two builds of 02:00 (FINAL keeps the newer)
    late_counts = store.query(
        "SELECT rows FROM drift_hour_profiles FINAL WHERE model = 'm' AND feature = 'feature/numeric/shifted' "
        "AND hour = toDateTime('2026-01-05 02:00:00', 'UTC')"
    ).result_rows
    assert late_counts == [(1800 + 300,)]


def test_duplicates_and_replays_do_not_change_the_counts(store):
    _load(store)
    before = _features(store, HOURS)
    hour = "ts >= '2026-01-05 01:00:00' AND ts < '2026-01-05 02:00:00'"
    store.command(f"INSERT INTO inferences SELECT * FROM inferences WHERE model = 'm' AND {hour}")  # the same events
    store.command(
        "INSERT INTO inferences (event_id, ts, model, model_version, num_names, num_values, cat_names, cat_values, "
        "is_replay) SELECT generateUUIDv4(), ts, model, model_version, num_names, arrayMap(x -> x + 50, num_values), "
        f"cat_names, cat_values, true FROM inferences WHERE model = 'm' AND {hour}"
    )
    after = _features(store, HOURS)
    for name, f in before.items():
        assert (after[name].statistic, after[name].reference_rows) == (f.statistic, f.reference_rows), name
    _assert_same_drift(after, _features(store, EXACT))


@pytest.mark.slow
def test_a_model_version_reads_only_its_own_hours(store):
    _load(store, seed=0, version="v1", shift=0.0)
    _load(store, seed=1, version="v2", shift=0.5)
    for version in ("v1", "v2", None):
        hourly = _features(store, HOURS, model_version=version)
        _assert_same_drift(hourly, _features(store, EXACT, model_version=version))
    assert not _features(store, HOURS, model_version="v1")["shifted"].drifted
    assert _features(store, HOURS, model_version="v2")["shifted"].drifted


def test_prediction_drift_from_hours_equals_the_full_scan(store):
    _load(store)
    hourly = _features(store, HOURS, target="prediction")
    _assert_same_drift(hourly, _features(store, EXACT, target="prediction"))
    assert set(hourly) == {"prediction", "prediction_label"} and hourly["prediction"].drifted


def test_a_feature_far_from_zero_for_its_spread_stays_on_window_cells(store):
    rng = np.random.default_rng(5)
    insert(store, "m", timestamps(T_REF, ROWS, STEP), {"far": 1000 + rng.normal(0, 0.01, ROWS)})
    insert(store, "m", timestamps(T_CUR, ROWS, STEP), {"far": 1000 + rng.normal(0, 0.01, ROWS)})
    f = _features(store, HOURS)["far"]
    assert f.details["computation"] == "cells"  # 2^-7 x 1000 is 780 standard deviations: the relative grid is no use
    assert not f.drifted


def test_refresh_profiles_completed_hours_as_data_arrives(store):
    _load(store, profile=False)
    now = T_REF + dt.timedelta(hours=3, minutes=10)  # 03:00 is still open
    lag = dt.timedelta(minutes=5)
    assert incremental.refresh(store, "m", now, dt.timedelta(days=1), lag) == 3
    assert incremental.refresh(store, "m", now, dt.timedelta(days=1), lag) == 0
    insert(store, "m", [T_REF + dt.timedelta(hours=1, seconds=1, milliseconds=3)], {"shifted": [0.5]})
    assert incremental.refresh(store, "m", now, dt.timedelta(days=1), lag) == 1
    later = T_REF + dt.timedelta(hours=5, minutes=10)
    assert incremental.refresh(store, "m", later, dt.timedelta(days=1), lag) == 2  # 03:00 and 04:00 completed since
    # a run over those hours builds nothing more
    assert incremental.window_hours(store, "m", Window(T_REF, T_REF + dt.timedelta(hours=5))).hours_built == 0


def test_hour_cells_are_ordered_like_the_values_and_hold_them(store):
    values = [-3.5, -1.0, -0.0, 0.0, 1e-300, 0.3, 0.75, 1.0, 1.0078125, 2.0, 123456.789, 1e300]
    rows = store.query(
        f"SELECT v, k, t FROM (SELECT arrayJoin({{values:Array(Float64)}}) + 0. AS v, {incremental.cell_columns('v')})",
        parameters={"values": values},
    ).result_rows
    keys = np.array([r[1] for r in rows], dtype=np.int64)
    assert list(keys) == sorted(keys) and len(set(keys)) == len(values) - 1  # -0.0 and 0.0 share a cell
    start, width = cell_bounds(keys)
    for (v, _, t), a, w in zip(rows, start, width, strict=True):
        # the offset ticks place the value within 2^-16 of its cell's width
        assert a + w * t / incremental.TICKS <= v <= a + w * (t + 1) / incremental.TICKS
        assert w <= max(abs(v), 1e-300) * 2.0**-incremental.MANTISSA_BITS or v == 0.0


@pytest.mark.slow
def test_the_scheduler_profiles_completed_hours_before_its_drift_runs(store):
    _load(store, profile=False)
    config = detector_config.parse(
        """
window: 1h
schedule: {every: 30s, lag: 1m, catch_up: 3}
drift: {hour_profiles_min_rows: 0, exact_max_values: 0}
models:
  - name: m
    features: {discover: true}
"""
    )
    now = T_CUR + dt.timedelta(hours=4, minutes=30)  # windows 01:00-02:00 .. 03:00-04:00 are due
    made = Scheduler(store, config, Exporter()).run_once(now)
    assert {r.status for r in made} == {"ok"}
    hours = store.query(
        "SELECT toHour(hour) FROM drift_hour_profiles FINAL WHERE model = 'm' AND feature = '' "
        "AND hour >= toDateTime('2026-01-06 00:00:00', 'UTC') ORDER BY hour"
    ).result_rows
    # the three due windows' hours and 00:00, the first one's reference; 04:00 is still open
    assert [h for (h,) in hours] == [0, 1, 2, 3]
    computations = store.query(
        "SELECT DISTINCT JSONExtractString(details, 'computation') FROM drift_results "
        "WHERE target = 'feature' AND feature_type = 'numeric'"
    ).result_rows
    assert computations == [("hour cells",)]


def test_hour_profiles_follow_the_retention_of_the_raw_data(store):
    assert retention(store, "drift_hour_profiles") == 30
    storage.migrate(store, retention_days=7)
    assert retention(store, "drift_hour_profiles") == retention(store, "inferences") == 7


@pytest.mark.parametrize("version", [None, "v2"])
def test_features_are_found_in_the_hour_name_lists_as_a_scan_finds_them(store, version):
    _load(store, version="v1", profile=False)
    _load(store, seed=2, version="v2", profile=False)
    # a feature with no finite value (no cells) in a profiled hour, and names seen only at the window's edges
    insert(store, "m", [T_REF + dt.timedelta(hours=2, milliseconds=500)], {"never_finite": [math.nan]})
    edge = T_REF + dt.timedelta(minutes=25, milliseconds=500)
    insert(store, "m", [edge], {"edge_only": [1.0]}, {"edge_colour": ["x"]}, model_version="v2")
    incremental.refresh(store, "m", T_REF + dt.timedelta(days=1), dt.timedelta(days=2), dt.timedelta(0))
    source = sql.Source("m", version)
    rows = store.query(sql.window_rows(source, REF), parameters=source.parameters()).result_rows[0][0]
    found = incremental_compare.discover(store, source, REF, rows, HOURS)
    numeric, categorical, predictions, labels = store.query(
        sql.discover(source, REF), parameters=source.parameters()
    ).result_rows[0]
    assert found == (list(numeric), list(categorical), int(predictions > 0), int(labels > 0))
    assert ("edge_only" in found[0]) == (version != "v1") and ("never_finite" in found[0]) == (version is None)
    # an hour changed since it was profiled: the names are scanned instead
    insert(store, "m", [T_REF + dt.timedelta(hours=3, milliseconds=700)], {"late": [1.0]}, model_version="v2")
    assert incremental_compare.discover(store, source, REF, rows, HOURS) is None
