"""False positives: no drift beyond the nominal rate on samples of one distribution, and the controls.

Data is generated inside ClickHouse (deterministic hash-based normals, see
``tests.drift_data.insert_synthetic``): 200 independent pairs of windows of the same
distribution, 500 reference and 400 current rows each (KS and chi-squared at p < 0.05).
Measured here: the share of false alarms per feature stays at the nominal 5 % (KS, and
chi-squared as a two-sample homogeneity test); Evidently's chi-squared, a goodness of fit
against the reference shares taken as exact, is far above it at these sizes; the share of
runs with any false alarm (about 1 - 0.95^k for k features) falls to about 5 % with
Benjamini–Hochberg; persistence over 2 windows removes almost all of them.
"""

from __future__ import annotations

import datetime as dt

import pytest

from driftwarden.detectors.drift import DriftSettings, FeatureSpec, compute_drift, write_drift
from driftwarden.detectors.window import Window
from tests.drift_data import insert_synthetic

UTC = dt.UTC
T0 = dt.datetime(2026, 2, 1, tzinfo=UTC)
SEEDS = 200
REF_ROWS, CUR_ROWS = 500, 400
FEATURES = [FeatureSpec(f"n{k:02d}", "numeric") for k in range(5)] + [FeatureSpec("c0", "categorical")]
MS = dt.timedelta(milliseconds=1)


def _windows(seed: int) -> tuple[Window, Window]:
    base = T0 + seed * (REF_ROWS + CUR_ROWS) * MS
    return Window(base, base + REF_ROWS * MS), Window(base + REF_ROWS * MS, base + (REF_ROWS + CUR_ROWS) * MS)


HOMOGENEITY = DriftSettings(chisquare_homogeneity=True)


@pytest.fixture(scope="module")
def runs(engine_dir):
    """Each seed's report with two-sample tests and Benjamini–Hochberg, and with Evidently's chi-squared."""
    from driftwarden import storage

    client = storage.connect(f"chdb://{engine_dir}?database=drift_fpr", create_database=True)
    storage.migrate(client, retention_days=20000)
    insert_synthetic(client, "null", T0, SEEDS * (REF_ROWS + CUR_ROWS), numeric=5, categorical=1)
    controlled, evidently_chi = [], []
    settings = DriftSettings(chisquare_homogeneity=True, fdr=True)
    for seed in range(SEEDS):
        reference, current = _windows(seed)
        controlled.append(compute_drift(client, "null", reference, current, features=FEATURES, settings=settings))
        evidently_chi.append(compute_drift(client, "null", reference, current, features=FEATURES[-1:]).features[0])
    return client, controlled, evidently_chi


def _uncontrolled(feature) -> bool:
    """The verdict of the test alone (recorded next to the controlled one)."""
    return feature.details["uncontrolled_verdict"] == "drift"


def test_same_distribution_false_alarm_rate_per_feature_is_at_most_nominal(runs):
    _, controlled, _ = runs
    verdicts = [f for r in controlled for f in r.features]
    assert {f.method for f in verdicts} == {"ks", "chisquare"}
    rate = sum(map(_uncontrolled, verdicts)) / len(verdicts)
    # 1200 tests at alpha 0.05: binomial sd 0.0063; 0.07 is three sd above nominal
    assert 0.02 <= rate <= 0.07, rate
    categorical = [f for f in verdicts if f.feature_type == "categorical"]
    assert sum(map(_uncontrolled, categorical)) / len(categorical) <= 0.09  # 200 tests: sd 0.015


def test_evidentlys_goodness_of_fit_chisquare_alarms_far_above_nominal_on_comparable_windows(runs):
    _, controlled, evidently_chi = runs
    evidently_rate = sum(f.drifted for f in evidently_chi) / SEEDS
    homogeneity_rate = sum(_uncontrolled(r.features[-1]) for r in controlled) / SEEDS
    assert evidently_rate >= 0.2, evidently_rate  # the reference's own noise counted as drift
    assert homogeneity_rate < evidently_rate / 2, (homogeneity_rate, evidently_rate)


def test_benjamini_hochberg_brings_runs_with_any_false_alarm_down_to_about_alpha(runs):
    _, controlled, _ = runs
    any_plain = sum(any(map(_uncontrolled, r.features)) for r in controlled) / SEEDS
    any_bh = sum(any(f.drifted for f in r.features) for r in controlled) / SEEDS
    assert any_plain >= 0.15  # about 1 - 0.95^6 = 0.26 without correction
    assert any_bh <= 0.10 and any_bh < any_plain / 2, (any_plain, any_bh)
    assert all("p_value_adjusted" in f.details for r in controlled for f in r.features)
    assert sum(r.dataset_drifted for r in controlled) / SEEDS <= 0.02  # dataset drift needs 3 of 6 features


def test_persistence_over_two_windows_removes_most_false_alarms(runs):
    client, _, _ = runs
    settings = DriftSettings(persistence=2, chisquare_homogeneity=True)
    reference, _ = _windows(0)
    drifted = persistent = 0
    for seed in range(1, 61):  # 60 consecutive current windows against one reference
        _, current = _windows(seed)
        report = compute_drift(client, "null", reference, current, features=FEATURES, settings=settings)
        write_drift(client, report)
        drifted += sum(f.drifted for f in report.features)
        persistent += sum(f.persistent for f in report.features)
    assert drifted >= 5  # the single-window detector does raise false alarms here
    assert persistent <= drifted / 4, (drifted, persistent)


def test_persistence_flags_a_real_shift_from_the_second_window_on(engine_dir):
    from driftwarden import storage

    client = storage.connect(f"chdb://{engine_dir}?database=drift_persist", create_database=True)
    storage.migrate(client, retention_days=20000)
    insert_synthetic(client, "m", T0, 500, numeric=1, categorical=0)
    insert_synthetic(client, "m", T0 + dt.timedelta(hours=1), 1200, numeric=1, categorical=0, shift=0.5, salt=1)
    reference = Window(T0, T0 + 500 * MS)
    flags = []
    for i in range(3):
        start = T0 + dt.timedelta(hours=1) + i * 400 * MS
        report = compute_drift(
            client, "m", reference, Window(start, start + 400 * MS), settings=DriftSettings(persistence=2)
        )
        write_drift(client, report)
        flags.append((report.features[0].drifted, report.features[0].persistent))
    assert flags == [(True, False), (True, True), (True, True)]


def test_effect_size_floor_silences_significant_but_negligible_shifts(engine_dir):
    from driftwarden import storage

    client = storage.connect(f"chdb://{engine_dir}?database=drift_floor", create_database=True)
    storage.migrate(client, retention_days=20000)
    insert_synthetic(client, "m", T0, 900, numeric=1, categorical=0)
    insert_synthetic(client, "m", T0 + dt.timedelta(hours=1), 60_000, numeric=1, categorical=0, shift=0.2, salt=1)
    # a small reference (KS regime) against a large current window: tiny shifts become significant
    reference, current = Window(T0, T0 + 900 * MS), Window(T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2))
    plain = compute_drift(client, "m", reference, current).features[0]
    floored = compute_drift(client, "m", reference, current, settings=DriftSettings(effect_size_floor=0.1)).features[0]
    assert plain.method == "ks" and plain.drifted and plain.effect_size < 0.1
    assert not floored.drifted and "effect size" in floored.note
    assert floored.p_value == plain.p_value


def test_minimum_sample_size_gives_no_verdict_and_says_so(engine_dir):
    from driftwarden import storage

    client = storage.connect(f"chdb://{engine_dir}?database=drift_min_rows", create_database=True)
    storage.migrate(client, retention_days=20000)
    insert_synthetic(client, "m", T0, 500, numeric=2, categorical=1)
    insert_synthetic(client, "m", T0 + dt.timedelta(hours=1), 20, numeric=2, categorical=1, shift=3.0, salt=1)
    reference, current = Window(T0, T0 + 500 * MS), Window(T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2))
    default = compute_drift(client, "m", reference, current)
    assert all(f.drifted for f in default.features if f.feature_type == "numeric")
    strict = compute_drift(client, "m", reference, current, settings=DriftSettings(min_rows=30))
    assert [f.verdict for f in strict.features] == ["no verdict"] * 3
    assert not any(f.drifted for f in strict.features) and not strict.dataset_drifted
    assert all("below the minimum of 30" in f.note for f in strict.features)
