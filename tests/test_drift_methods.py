"""Each drift method, computed in ClickHouse, against scipy (and Evidently's binning) on synthetic data.

Synthetic samples with known answers go into ``inferences``; ``compute_drift`` with an
explicit method must return scipy's number (``ks_2samp``, ``wasserstein_distance``,
``chisquare``, ``jensenshannon``) to floating-point precision. The report's side
statistics (missing share, out-of-range share, new categories), the reuse of reference
profiles, provenance and determinism are checked on the same data.
"""

from __future__ import annotations

import datetime as dt
import doctest
import json
import math
import os

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chisquare, ks_2samp, norm, wasserstein_distance

import driftwarden.detectors.drift.fdr
import driftwarden.detectors.methods.chisquare
import driftwarden.detectors.methods.jensenshannon
import driftwarden.detectors.methods.ks
import driftwarden.detectors.methods.psi
import driftwarden.detectors.methods.wasserstein
import driftwarden.detectors.methods.ztest
from driftwarden.detectors.drift import DriftSettings, FeatureSpec, compute_drift, write_drift
from driftwarden.detectors.methods import Support, get_method
from driftwarden.detectors.window import Window
from tests.drift_data import insert, timestamps

os.environ["DO_NOT_TRACK"] = "1"  # evidently's legacy stattests are imported below: no telemetry
os.environ["EVIDENTLY_DISABLE_TELEMETRY"] = "1"
UTC = dt.UTC
T_REF = dt.datetime(2026, 1, 5, tzinfo=UTC)
T_CUR = dt.datetime(2026, 1, 6, tzinfo=UTC)
REF = Window(T_REF, T_REF + dt.timedelta(hours=12))
CUR = Window(T_CUR, T_CUR + dt.timedelta(hours=12))


def _load(store, ref_num, cur_num, ref_cat=None, cur_cat=None, model="synthetic"):
    insert(store, model, timestamps(T_REF, len(next(iter(ref_num.values())))), ref_num, ref_cat)
    insert(store, model, timestamps(T_CUR, len(next(iter(cur_num.values())))), cur_num, cur_cat)


def _one(store, spec: FeatureSpec, **kwargs):
    report = compute_drift(store, "synthetic", REF, CUR, features=[spec], **kwargs)
    (feature,) = report.features
    return feature


@pytest.mark.parametrize(
    "module",
    [
        driftwarden.detectors.methods.ks,
        driftwarden.detectors.methods.wasserstein,
        driftwarden.detectors.methods.psi,
        driftwarden.detectors.methods.jensenshannon,
        driftwarden.detectors.methods.chisquare,
        driftwarden.detectors.methods.ztest,
        driftwarden.detectors.drift.fdr,
    ],
)
def test_method_docstring_examples_run(module):
    result = doctest.testmod(module, raise_on_error=False)
    assert result.attempted > 0 and result.failed == 0


def test_in_memory_aggregates_give_scipy_numbers():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=300).round(1), rng.normal(0.3, 1.2, size=200).round(1)
    support = Support.from_samples(a, b)
    ks = get_method("ks").score(support)
    assert ks.statistic == pytest.approx(ks_2samp(a, b).statistic, abs=1e-15)
    assert ks.p_value == pytest.approx(ks_2samp(a, b).pvalue, rel=1e-12)
    assert support.wasserstein == pytest.approx(wasserstein_distance(a, b), rel=1e-12)


def test_ks_exact_and_asymptotic_p_values_equal_scipy(store):
    rng = np.random.default_rng(11)
    # rounded values: many ties, which the merged-support ECDF must count exactly as scipy does
    small_ref, small_cur = rng.normal(size=700).round(2), rng.normal(0.15, size=500).round(2)
    big_ref, big_cur = rng.normal(size=12_000), rng.normal(0.03, size=11_000)
    insert(store, "synthetic", timestamps(T_REF, 700), {"small": small_ref})
    insert(store, "synthetic", timestamps(T_CUR, 500), {"small": small_cur})
    insert(store, "synthetic", timestamps(T_REF + dt.timedelta(hours=1), 12_000), {"big": big_ref})
    insert(store, "synthetic", timestamps(T_CUR + dt.timedelta(hours=1), 11_000), {"big": big_cur})
    for name, ref, cur in (("small", small_ref, small_cur), ("big", big_ref, big_cur)):
        got = _one(store, FeatureSpec(name, "numeric", "ks"))
        want = ks_2samp(ref, cur)
        assert got.statistic == pytest.approx(want.statistic, abs=1e-12)
        assert got.p_value == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)
        assert got.reference_rows == len(ref) and got.current_rows == len(cur)
        assert got.missing_share == pytest.approx((11_000 if name == "small" else 500) / (11_500))


def test_wasserstein_equals_scipy_divided_by_reference_std(store):
    rng = np.random.default_rng(5)
    ref, cur = rng.gamma(2.0, 3.0, 4000), rng.gamma(2.2, 3.0, 3000)
    _load(store, {"x": ref}, {"x": cur})
    got = _one(store, FeatureSpec("x", "numeric", "wasserstein"))
    want = wasserstein_distance(ref, cur) / np.std(ref)
    assert got.statistic == pytest.approx(want, rel=1e-10)
    assert got.drifted == (want >= 0.1)
    assert got.out_of_range_share == pytest.approx(np.mean((cur < ref.min()) | (cur > ref.max())))


def test_psi_and_jensenshannon_use_evidentlys_sturges_bins(store):
    from evidently.legacy.calculations.stattests.jensenshannon import _jensenshannon
    from evidently.legacy.calculations.stattests.psi import _psi
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(8)
    ref, cur = rng.normal(size=1024), rng.normal(0.2, 1.1, size=1024)  # 2048 rows: log2 exact, a bin edge case
    _load(store, {"x": ref}, {"x": cur})
    psi = _one(store, FeatureSpec("x", "numeric", "psi"))
    js = _one(store, FeatureSpec("x", "numeric", "jensenshannon"))
    import pandas as pd

    want_psi = _psi(pd.Series(ref), pd.Series(cur), ColumnType.Numerical, 0.1)[0]
    want_js = _jensenshannon(pd.Series(ref), pd.Series(cur), ColumnType.Numerical, 0.1)[0]
    assert len(psi.details["bin_edges"]) - 1 == len(np.histogram_bin_edges(np.concatenate([ref, cur]), "sturges")) - 1
    assert psi.details["bin_edges"] == list(np.histogram_bin_edges(np.concatenate([ref, cur]), "sturges"))
    assert psi.statistic == pytest.approx(want_psi, rel=1e-12)
    assert js.statistic == pytest.approx(want_js, rel=1e-12)
    assert js.statistic == pytest.approx(
        jensenshannon(
            *np.histogram(ref, psi.details["bin_edges"])[0:1], np.histogram(cur, psi.details["bin_edges"])[0]
        ),
        rel=1e-12,
    )


def test_chisquare_jensenshannon_psi_on_categories_equal_scipy_and_report_new_categories(store):
    rng = np.random.default_rng(2)
    ref = rng.choice(["a", "b", "c", "d"], 900, p=[0.4, 0.3, 0.2, 0.1])
    cur = rng.choice(["a", "b", "c", "d", "e"], 800, p=[0.35, 0.3, 0.2, 0.1, 0.05])
    _load(store, {"n": np.zeros(900)}, {"n": np.zeros(800)}, {"c": ref}, {"c": cur})
    keys = sorted(set(ref) | set(cur))
    r = np.array([np.sum(ref == k) for k in keys], dtype=float)
    c = np.array([np.sum(cur == k) for k in keys], dtype=float)
    chi = _one(store, FeatureSpec("c", "categorical", "chisquare"))
    with np.errstate(divide="ignore"):
        assert chi.p_value == chisquare(c, r * c.sum() / r.sum()).pvalue == 0.0  # 'e' is new: expected 0
    assert chi.new_categories == ["e"]
    assert chi.out_of_range_share == pytest.approx(np.mean(cur == "e"))
    js = _one(store, FeatureSpec("c", "categorical", "jensenshannon"))
    assert js.statistic == pytest.approx(jensenshannon(r / r.sum(), c / c.sum()), rel=1e-12)
    # without the new category, chi-squared has a finite answer
    mask = cur != "e"
    store.command("TRUNCATE TABLE inferences")
    _load(store, {"n": np.zeros(900)}, {"n": np.zeros(mask.sum())}, {"c": ref}, {"c": cur[mask]})
    c2 = np.array([np.sum(cur[mask] == k) for k in keys[:-1]], dtype=float)
    chi = _one(store, FeatureSpec("c", "categorical", "chisquare"))
    assert chi.p_value == pytest.approx(chisquare(c2, r[:-1] * c2.sum() / r[:-1].sum()).pvalue, rel=1e-12)
    assert chi.statistic == pytest.approx(chisquare(c2, r[:-1] * c2.sum() / r[:-1].sum()).statistic, rel=1e-12)


def test_ztest_equals_the_two_proportion_formula(store):
    ref = np.array(["no"] * 400 + ["yes"] * 100)
    cur = np.array(["no"] * 330 + ["yes"] * 170)
    _load(store, {"n": np.zeros(500)}, {"n": np.zeros(500)}, {"b": ref}, {"b": cur})
    got = _one(store, FeatureSpec("b", "categorical", "ztest"))
    pooled = (100 + 170) / 1000
    z = (0.2 - 0.34) / math.sqrt(pooled * (1 - pooled) * (2 / 500))
    assert got.statistic == pytest.approx(z, rel=1e-12)
    assert got.p_value == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)
    assert got.drifted


def test_absent_features_count_as_missing_not_as_zero(store):
    rng = np.random.default_rng(4)
    ref = rng.normal(5.0, 1.0, 600)
    insert(store, "synthetic", timestamps(T_REF, 600), {"x": ref})
    cur = rng.normal(5.0, 1.0, 300)
    insert(store, "synthetic", timestamps(T_CUR, 300), {"x": cur})
    insert(store, "synthetic", timestamps(T_CUR + dt.timedelta(minutes=30), 100), {"other": np.ones(100)})
    got = _one(store, FeatureSpec("x", "numeric", "ks"))
    assert got.missing_share == pytest.approx(100 / 400)
    assert got.current_rows == 300
    assert got.p_value == pytest.approx(ks_2samp(ref, cur).pvalue, rel=1e-9)  # no zeros were added
    absent = _one(store, FeatureSpec("never_sent", "numeric"))
    assert absent.verdict == "no verdict" and not absent.drifted and absent.missing_share == 1.0


def test_reference_profile_is_stored_once_and_reused_until_the_reference_changes(store):
    rng = np.random.default_rng(6)
    _load(store, {"x": rng.normal(size=500)}, {"x": rng.normal(size=400)}, {"c": ["a"] * 500}, {"c": ["b"] * 400})
    compute_drift(store, "synthetic", REF, CUR)
    profiles = "SELECT feature, created_at, profile_hash FROM reference_profiles WHERE feature_type != 'discovery'"
    first = store.query(profiles + " ORDER BY feature").result_rows
    assert [r[0] for r in first] == ["feature/categorical/c", "feature/numeric/x"]
    remembered = "SELECT rows, categories FROM reference_profiles FINAL WHERE feature = 'feature/discovered'"
    assert store.query(remembered).result_rows == [(500, ["numeric/x", "categorical/c"])]
    compute_drift(store, "synthetic", REF, Window(CUR.start, CUR.end + dt.timedelta(hours=1)))
    again = store.query(profiles + " ORDER BY feature").result_rows
    assert again == first  # reused: no new profile rows
    insert(
        store, "synthetic", timestamps(T_REF + dt.timedelta(hours=1), 10), {"x": np.full(10, 9.0)}, {"c": ["a"] * 10}
    )
    compute_drift(store, "synthetic", REF, CUR)
    latest = store.query(
        "SELECT feature, rows, profile_hash FROM reference_profiles FINAL WHERE feature_type != 'discovery' "
        "ORDER BY feature"
    ).result_rows
    assert [r[1] for r in latest] == [510, 510]
    assert store.query(remembered).result_rows == [(510, ["numeric/x", "categorical/c"])]  # found again
    assert {r[2] for r in latest}.isdisjoint({r[2] for r in first})


def test_same_inputs_give_identical_numbers_and_hash_and_other_data_another_hash(store):
    rng = np.random.default_rng(9)
    _load(
        store,
        {"x": rng.normal(size=2000), "y": rng.exponential(size=2000)},
        {"x": rng.normal(0.1, size=1500), "y": rng.exponential(1.1, size=1500)},
        {"c": rng.choice(list("abc"), 2000)},
        {"c": rng.choice(list("abcd"), 1500)},
    )
    one = compute_drift(store, "synthetic", REF, CUR).as_dict()
    two = compute_drift(store, "synthetic", REF, CUR).as_dict()
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)
    insert(store, "synthetic", timestamps(T_CUR + dt.timedelta(hours=2), 1), {"x": [0.5], "y": [1.0]}, {"c": ["a"]})
    three = compute_drift(store, "synthetic", REF, CUR).as_dict()
    assert three["provenance"]["input_hash"] != one["provenance"]["input_hash"]
    stricter = compute_drift(store, "synthetic", REF, CUR, settings=DriftSettings(min_rows=10)).as_dict()
    assert stricter["provenance"]["input_hash"] != three["provenance"]["input_hash"]


def test_write_drift_stores_one_row_per_feature_and_a_dataset_row_with_provenance(store):
    rng = np.random.default_rng(10)
    _load(store, {"x": rng.normal(size=800)}, {"x": rng.normal(1.0, size=600)}, {"c": ["a"] * 800}, {"c": ["a"] * 600})
    report = compute_drift(store, "synthetic", REF, CUR, model_version="v1")
    write_drift(store, report)
    rows = store.query(
        "SELECT target, feature, method, drifted, threshold, current_rows, code_version, schema_version, input_hash, "
        "reference_start, current_end, details FROM drift_results FINAL ORDER BY target, feature"
    ).result_rows
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("dataset", "", "share", True),  # 1 of 2 features: share 0.5 >= 0.5
        ("feature", "c", "ztest", False),
        ("feature", "x", "ks", True),
    ]
    assert rows[0][8] == report.input_hash and rows[0][4] == 0.5
    assert all(r[6] and r[7] >= 4 and len(r[8]) == 64 for r in rows)
    assert rows[2][9].replace(tzinfo=UTC) == REF.start and rows[2][10].replace(tzinfo=UTC) == CUR.end
    assert json.loads(rows[2][11])["verdict"] == "drift"
    assert len({r[8] for r in rows}) == 3


def test_prediction_drift_compares_the_model_outputs(store):
    rng = np.random.default_rng(12)
    ref, cur = rng.normal(10, 2, 900), rng.normal(11, 2, 700)
    insert(store, "synthetic", timestamps(T_REF, 900), {"x": ref}, prediction=ref, prediction_label=(ref > 10))
    insert(store, "synthetic", timestamps(T_CUR, 700), {"x": ref[:700]}, prediction=cur, prediction_label=(cur > 10))
    report = compute_drift(store, "synthetic", REF, CUR, target="prediction")
    assert [(f.feature, f.method) for f in report.features] == [("prediction", "ks"), ("prediction_label", "ztest")]
    assert report.features[0].p_value == pytest.approx(ks_2samp(ref, cur).pvalue, rel=1e-9)
    assert all(f.drifted for f in report.features)
    assert not compute_drift(store, "synthetic", REF, CUR).features[0].drifted  # the inputs did not move


def test_benjamini_hochberg_equals_scipy():
    from scipy.stats import false_discovery_control

    from driftwarden.detectors.drift.fdr import benjamini_hochberg

    p = np.random.default_rng(1).uniform(size=40) ** 3
    assert benjamini_hochberg(list(p)) == pytest.approx(list(false_discovery_control(p, method="bh")), rel=1e-12)


def test_numeric_features_with_few_values_use_counts_per_value(store):
    from evidently.legacy.calculations.stattests.psi import _psi
    from evidently.legacy.core import ColumnType

    rng = np.random.default_rng(13)
    ref3, cur3 = rng.choice([1.0, 2.5, 4.0], 700, p=[0.5, 0.3, 0.2]), rng.choice([1.0, 2.5, 4.0], 500)
    ref2, cur2 = rng.choice([0.0, 1.0], 700, p=[0.7, 0.3]), rng.choice([0.0, 1.0], 500, p=[0.6, 0.4])
    ref12, cur12 = rng.integers(0, 12, 700).astype(float), rng.integers(0, 13, 500).astype(float)
    _load(store, {"three": ref3, "two": ref2, "twelve": ref12}, {"three": cur3, "two": cur2, "twelve": cur12})
    report = compute_drift(
        store, "synthetic", REF, CUR,
        features=[FeatureSpec("three"), FeatureSpec("two"), FeatureSpec("twelve", method="psi")],
    )  # fmt: skip
    three, two, twelve = report.features
    counts = [np.array([np.sum(s == v) for v in (1.0, 2.5, 4.0)], dtype=float) for s in (ref3, cur3)]
    assert (three.method, two.method) == ("chisquare", "ztest")  # Evidently's choice for 3 and 2 values
    assert three.p_value == pytest.approx(chisquare(counts[1], counts[0] * 500 / 700).pvalue, rel=1e-12)
    assert three.details["keys"] == ["1.0", "2.5", "4.0"] and three.details["reference_counts"] == list(counts[0])
    p1, p2 = np.mean(ref2 == 1.0), np.mean(cur2 == 1.0)
    pooled = (p1 * 700 + p2 * 500) / 1200
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (1 / 700 + 1 / 500))
    assert two.p_value == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)
    import pandas as pd

    want = _psi(pd.Series(ref12), pd.Series(cur12), ColumnType.Numerical, 0.1)[0]
    assert twelve.statistic == pytest.approx(want, rel=1e-12)
    assert twelve.out_of_range_share == pytest.approx(np.mean(cur12 > 11))


def test_jensen_shannon_in_numpy_equals_scipys_also_on_empty_and_disjoint_bins():
    from driftwarden.detectors.methods.jensenshannon import jensenshannon as ours

    rng = np.random.default_rng(11)
    cases = [rng.integers(0, 50, size=(2, k)).astype(float) for k in (2, 5, 21, 200)]
    cases += [np.array([[1.0, 0.0, 3.0], [0.0, 2.0, 0.0]]), np.array([[5.0, 5.0], [5.0, 5.0]])]
    cases += [np.array([[0.0, 0.0], [1.0, 2.0]])]  # an empty window: NaN, as scipy
    for p, q in cases:
        with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 in both
            want, got = jensenshannon(p, q), ours(p, q)
        assert (np.isnan(got) and np.isnan(want)) or got == pytest.approx(want, rel=1e-12, abs=1e-15), (p, q)
