"""Agreement with Evidently's DataDriftPreset on real data, both regimes of its default methods.

Real data: Capital Bikeshare 2011 (reference January, current each week of February;
reference January + February, current each week of March) and US census MA employment
(reference 2015 and an 800-row subsample of it, current chunks of 5,000 and 20,000 rows of
2016-2018, one across the known shift). The same rows go into ``inferences`` and, as
pandas frames, into Evidently; every feature's method and verdict must be equal and every
score within 1e-3 absolute or 1 % relative.
"""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest

from driftwarden import storage
from driftwarden.detectors.drift import compute_drift
from driftwarden.detectors.window import Window
from tests.drift_data import bikeshare, employment, evidently_drift, insert

UTC = dt.UTC
BIKE_NUMERIC = ["temp", "atemp", "hum", "windspeed"]
BIKE_CATEGORICAL = ["season", "weathersit", "workingday", "holiday", "weekday", "hr"]
EMPLOYMENT_NUMERIC = ["AGEP"]
EMPLOYMENT_CATEGORICAL = [
    "SCHL", "MAR", "RELP", "DIS", "ESP", "CIT", "MIG", "MIL", "ANC", "NATIVITY", "DEAR", "DEYE", "DREM", "SEX", "RAC1P",
]  # fmt: skip
T_REFERENCE = dt.datetime(2015, 1, 1, tzinfo=UTC)
T_ANALYSIS = dt.datetime(2016, 1, 1, tzinfo=UTC)


def _frame_for_evidently(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    # Numbers as float and categories as text: the types they have in the store.
    out = pd.DataFrame({c: frame[c].astype(float) for c in numeric})
    for c in categorical:
        out[c] = frame[c].astype(str)
    return out.reset_index(drop=True)


@pytest.fixture(scope="module")
def client(engine_dir):
    client = storage.connect(f"chdb://{engine_dir}?database=drift_evidently", create_database=True)
    storage.migrate(client, retention_days=20000)
    bikes = bikeshare()
    insert(
        client,
        "bikes",
        [t.to_pydatetime() for t in bikes["ts"]],
        {c: bikes[c].astype(float) for c in BIKE_NUMERIC},
        {c: bikes[c].astype(str) for c in BIKE_CATEGORICAL},
        prediction=bikes["bikers"].astype(float),
        prediction_label=["busy" if b > 150 else "quiet" for b in bikes["bikers"]],
    )
    for part, start in (("reference", T_REFERENCE), ("analysis", T_ANALYSIS)):
        frame = employment(part)
        insert(
            client,
            "employment",
            [start + dt.timedelta(seconds=i) for i in range(len(frame))],
            {c: frame[c].astype(float) for c in EMPLOYMENT_NUMERIC},
            {c: frame[c].astype(str) for c in EMPLOYMENT_CATEGORICAL},
        )
    return client


def _assert_agrees(report, expected: dict, share: float) -> None:
    mismatches = []
    for feature in report.features:
        method, score, drifted = expected[feature.feature]
        ours = feature.score
        close = math.isclose(ours, score, abs_tol=1e-3) or math.isclose(ours, score, rel_tol=0.01)
        if feature.method != method or feature.drifted != drifted or not close:
            mismatches.append((feature.feature, (feature.method, ours, feature.drifted), (method, score, drifted)))
    assert not mismatches, f"differs from Evidently (ours, evidently): {mismatches}"
    assert {f.feature for f in report.features} == set(expected)
    assert report.dataset_drift_share == pytest.approx(share, abs=1e-12)
    assert report.dataset_drifted == (share >= 0.5)


def _window(start: dt.datetime, end: dt.datetime) -> Window:
    return Window(start, end)


BIKE_CASES = {
    # <= 1000 reference rows: KS, chi-squared, Z-test
    "january_vs_february_weeks": (
        ("2011-01-01", "2011-02-01"),
        [("2011-02-01", "2011-02-08"), ("2011-02-08", "2011-02-15"), ("2011-02-15", "2011-02-22"),
         ("2011-02-22", "2011-03-01")],
    ),
    # > 1000 reference rows: Wasserstein, Jensen-Shannon
    "january_february_vs_march_weeks": (
        ("2011-01-01", "2011-03-01"),
        [("2011-03-01", "2011-03-08"), ("2011-03-08", "2011-03-15"), ("2011-03-15", "2011-03-22"),
         ("2011-03-22", "2011-03-29")],
    ),
}  # fmt: skip


def _day(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize("case", sorted(BIKE_CASES))
@pytest.mark.parametrize("target", ["feature", "prediction"])
def test_bikeshare_verdicts_and_scores_equal_evidently(client, case, target):
    bikes = bikeshare()
    (ref_start, ref_end), currents = BIKE_CASES[case]
    if target == "feature":
        numeric, categorical, frame = BIKE_NUMERIC, BIKE_CATEGORICAL, bikes
    else:
        numeric, categorical = ["prediction"], ["prediction_label"]
        frame = pd.DataFrame(
            {"ts": bikes["ts"], "prediction": bikes["bikers"].astype(float),
             "prediction_label": ["busy" if b > 150 else "quiet" for b in bikes["bikers"]]}
        )  # fmt: skip
    reference = _window(_day(ref_start), _day(ref_end))
    ref_frame = frame[(frame.ts >= reference.start) & (frame.ts < reference.end)]
    assert (len(ref_frame) <= 1000) == case.startswith("january_vs")
    methods = set()
    for cur_start, cur_end in currents:
        current = _window(_day(cur_start), _day(cur_end))
        cur_frame = frame[(frame.ts >= current.start) & (frame.ts < current.end)]
        report = compute_drift(client, "bikes", reference, current, target=target)
        expected, share = evidently_drift(
            _frame_for_evidently(ref_frame, numeric, categorical),
            _frame_for_evidently(cur_frame, numeric, categorical),
            numeric,
            categorical,
        )
        _assert_agrees(report, expected, share)
        methods |= {f.method for f in report.features}
    if target == "feature":
        assert methods == ({"ks", "chisquare", "ztest"} if case.startswith("january_vs") else
                           {"wasserstein", "jensenshannon"})  # fmt: skip


EMPLOYMENT_CASES = {
    "reference_2015_vs_first_5000": (None, (0, 5_000)),
    "reference_2015_vs_20000_across_shift": (None, (130_000, 150_000)),
    "subsample_800_vs_first_5000": (800, (0, 5_000)),
    "subsample_800_vs_20000_across_shift": (800, (130_000, 150_000)),
}


@pytest.mark.parametrize("case", sorted(EMPLOYMENT_CASES))
def test_employment_verdicts_and_scores_equal_evidently(client, case):
    reference_rows, (lo, hi) = EMPLOYMENT_CASES[case]
    ref_all = employment("reference")
    ref_frame = ref_all if reference_rows is None else ref_all.iloc[:reference_rows]
    cur_frame = employment("analysis").iloc[lo:hi]
    reference = Window(T_REFERENCE, T_REFERENCE + dt.timedelta(seconds=len(ref_frame)))
    current = Window(T_ANALYSIS + dt.timedelta(seconds=lo), T_ANALYSIS + dt.timedelta(seconds=hi))
    report = compute_drift(client, "employment", reference, current)
    expected, share = evidently_drift(
        _frame_for_evidently(ref_frame, EMPLOYMENT_NUMERIC, EMPLOYMENT_CATEGORICAL),
        _frame_for_evidently(cur_frame, EMPLOYMENT_NUMERIC, EMPLOYMENT_CATEGORICAL),
        EMPLOYMENT_NUMERIC,
        EMPLOYMENT_CATEGORICAL,
    )
    _assert_agrees(report, expected, share)
    small = reference_rows is not None
    assert report.features[0].method == ("ks" if small else "wasserstein")
