"""Numeric drift over large windows, on cells (``detectors.drift.cells``), against scipy and the exact path.

``exact_max_values=0`` sends every numeric feature through the cells path on samples small
enough to also compute exactly, so each statistic can be checked against scipy and against
its own reported error bound; the profile kept for a large reference, its reuse and the
side statistics are checked on the same data.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pytest
from scipy.stats import ks_2samp, wasserstein_distance

from driftwarden.detectors.drift import DriftSettings, FeatureSpec, compute_drift
from driftwarden.detectors.window import Window
from tests.drift_data import insert, timestamps

UTC = dt.UTC
T_REF = dt.datetime(2026, 1, 5, tzinfo=UTC)
T_CUR = dt.datetime(2026, 1, 6, tzinfo=UTC)
REF = Window(T_REF, T_REF + dt.timedelta(hours=12))
CUR = Window(T_CUR, T_CUR + dt.timedelta(hours=12))
CELLS = DriftSettings(exact_max_values=0)


def _load(store, ref: dict, cur: dict, ref_cat=None, cur_cat=None):
    insert(store, "m", timestamps(T_REF, len(next(iter(ref.values())))), ref, ref_cat)
    insert(store, "m", timestamps(T_CUR, len(next(iter(cur.values())))), cur, cur_cat)


def _features(store, settings, specs=None, **kwargs):
    report = compute_drift(store, "m", REF, CUR, features=specs, settings=settings, **kwargs)
    return {f.feature: f for f in report.features}


SHAPES = {
    "same normal": (lambda r: r.normal(0, 1, 20_000), lambda r: r.normal(0, 1, 15_000)),
    "shifted normal": (lambda r: r.normal(0, 1, 20_000), lambda r: r.normal(0.15, 1, 15_000)),
    "exponential, wider": (lambda r: r.exponential(1.0, 20_000), lambda r: r.exponential(1.3, 15_000)),
    "offset 1000, scale 0.01": (lambda r: 1000 + r.normal(0, 0.01, 20_000), lambda r: 1000 + r.normal(0, 0.01, 15_000)),
    "bimodal vs one mode": (
        lambda r: np.concatenate([r.normal(-3, 1, 10_000), r.normal(3, 1, 10_000)]),
        lambda r: r.normal(-3, 1, 15_000),
    ),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_wasserstein_and_ks_on_cells_agree_with_scipy_within_the_reported_bound(store, shape):
    rng = np.random.default_rng(sorted(SHAPES).index(shape))
    make_ref, make_cur = SHAPES[shape]
    ref, cur = make_ref(rng), make_cur(rng)
    _load(store, {"x": ref}, {"x": cur})
    specs = [FeatureSpec("x", "numeric", "wasserstein")]
    w = _features(store, CELLS, specs)["x"]
    k = _features(store, CELLS, [FeatureSpec("x", "numeric", "ks")])["x"]
    exact = wasserstein_distance(ref, cur) / max(np.std(ref), 0.001)
    d = ks_2samp(ref, cur).statistic

    assert w.details["computation"] == "cells" and k.details["computation"] == "cells"
    assert abs(w.statistic - exact) <= w.details["error_bound"] + 1e-12
    assert abs(w.statistic - exact) <= 1e-4  # the bound is a guarantee; the actual error is far smaller
    assert k.statistic <= d + 1e-12 <= k.statistic + k.details["error_bound"] + 2e-12
    assert w.drifted == (exact >= 0.1)
    # the exact path on the same data, for contrast
    exact_path = _features(store, DriftSettings(), specs)["x"]
    assert exact_path.details["computation"] == "exact"
    assert math.isclose(exact_path.statistic, exact, rel_tol=1e-9, abs_tol=1e-12)


def test_a_large_reference_is_profiled_on_cells_once_and_rebuilt_for_another_resolution(store):
    rng = np.random.default_rng(3)
    ref = 50 + 4 * rng.standard_normal(30_000)
    _load(store, {"x": ref}, {"x": 50 + 4 * rng.standard_normal(10_000)})
    settings = DriftSettings(exact_max_values=20_000)  # 30,000 reference rows: a cells profile
    first = _features(store, settings)["x"]
    query = (
        "SELECT mean, std, min, max, cell_width, length(cell_keys), arraySum(cell_counts), created_at "
        "FROM reference_profiles FINAL WHERE feature = 'feature/numeric/x'"
    )
    ((mean, std, lo, hi, width, cells, counted, created),) = store.query(query).result_rows
    assert counted == 30_000 and 0 < cells <= 30_000
    assert (lo, hi) == (ref.min(), ref.max())  # exact range
    assert math.isclose(mean, ref.mean(), rel_tol=1e-9) and math.isclose(std, np.std(ref), rel_tol=1e-6)
    assert math.isclose(width, 0.002 * 4, rel_tol=0.1)  # resolution x the sampled std, 3 significant digits

    again = _features(store, settings)["x"]
    assert store.query(query).result_rows[0][-1] == created  # reused, not rebuilt
    assert again.statistic == first.statistic and again.details == first.details

    _features(store, DriftSettings(exact_max_values=20_000, cell_resolution=0.01))
    ((_, _, _, _, coarser, fewer, _, rebuilt),) = store.query(query).result_rows
    assert rebuilt > created and math.isclose(coarser, 0.01 * 4, rel_tol=0.1) and fewer < cells


def test_discrete_and_categorical_features_on_cells_equal_the_exact_path(store):
    rng = np.random.default_rng(4)
    ref = {"flag": rng.integers(0, 2, 3000).astype(float), "grade": rng.integers(1, 5, 3000).astype(float)}
    cur = {"flag": (rng.random(2000) < 0.6).astype(float), "grade": rng.integers(1, 6, 2000).astype(float)}
    _load(store, ref, cur, {"c": rng.choice(list("abc"), 3000)}, {"c": rng.choice(list("abcd"), 2000)})
    on_cells = _features(store, CELLS)
    exact = _features(store, DriftSettings())
    for name in ("flag", "grade", "c"):
        a, b = on_cells[name], exact[name]
        assert (a.method, a.drifted, a.p_value) == (b.method, b.drifted, b.p_value), name
        assert a.statistic == pytest.approx(b.statistic, rel=1e-12, abs=1e-15), name
    assert on_cells["grade"].details["keys"] == exact["grade"].details["keys"]  # exact values, not cell centres
    assert on_cells["grade"].details["current_counts"] == exact["grade"].details["current_counts"]
    assert on_cells["grade"].details["mixed_cells"] == 0
    assert on_cells["grade"].out_of_range_share == exact["grade"].out_of_range_share > 0  # the new grade 5


def test_psi_on_cells_reports_the_share_of_values_near_a_bin_edge(store):
    rng = np.random.default_rng(5)
    _load(store, {"x": rng.normal(0, 1, 20_000)}, {"x": rng.normal(0.3, 1.2, 15_000)})
    specs = [FeatureSpec("x", "numeric", "psi")]
    a, b = _features(store, CELLS, specs)["x"], _features(store, DriftSettings(), specs)["x"]
    assert a.drifted == b.drifted
    assert len(a.details["bin_edges"]) == len(b.details["bin_edges"])
    assert a.details["bin_edges"][0] == b.details["bin_edges"][0]
    assert 0 <= a.details["straddling_share"] < 0.05
    assert a.statistic == pytest.approx(b.statistic, rel=0.05)


def test_values_beyond_the_cell_range_are_clamped_with_an_unbounded_error(store):
    rng = np.random.default_rng(6)
    cur = rng.normal(0, 1, 2000)
    cur[0] = 1e300
    ref = rng.normal(0, 1, 3000)
    _load(store, {"x": ref}, {"x": cur})
    f = _features(store, CELLS, [FeatureSpec("x", "numeric", "wasserstein")])["x"]
    assert f.details["error_bound"] == math.inf and "clamped" in f.details["clamped"]
    assert f.drifted  # the clamped value alone moves the distribution by far more than the threshold
    assert f.out_of_range_share == np.mean((cur < ref.min()) | (cur > ref.max())) > 0


def test_cells_give_identical_numbers_and_hash_on_the_same_data(store):
    rng = np.random.default_rng(7)
    _load(
        store,
        {"x": rng.normal(size=8000), "y": rng.exponential(size=8000)},
        {"x": rng.normal(size=6000), "y": rng.exponential(size=6000)},
    )
    one = compute_drift(store, "m", REF, CUR, settings=CELLS).as_dict()
    two = compute_drift(store, "m", REF, CUR, settings=CELLS).as_dict()
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)
    insert(store, "m", timestamps(T_CUR + dt.timedelta(hours=3), 1), {"x": [0.5], "y": [1.0]})
    three = compute_drift(store, "m", REF, CUR, settings=CELLS).as_dict()
    assert three["provenance"]["input_hash"] != one["provenance"]["input_hash"]


def test_a_profile_hash_changes_with_each_column_of_its_cells(store):
    """One reference value changed, the window's rows and cell grid kept, changes the profile's hash even where only
    one column of the cells changes: a cell's largest value (``cell_max``), its smallest (``cell_min``), its offset
    sums (``cell_ticks``, ``cell_ticks2``), or which cells hold values (``cell_keys``, with the counts and sums)."""
    ref = np.random.default_rng(12).normal(size=4000)
    cur = np.random.default_rng(13).normal(size=3000)
    columns = "cell_origin, cell_width, cell_keys, cell_counts, cell_ticks, cell_ticks2, cell_min, cell_max"

    def profile(values):
        store.command("TRUNCATE TABLE inferences")
        store.command("TRUNCATE TABLE reference_profiles")
        _load(store, {"x": values}, {"x": cur})
        compute_drift(store, "m", REF, CUR, settings=CELLS)
        ((digest, *cells),) = store.query(
            f"SELECT profile_hash, {columns} FROM reference_profiles FINAL WHERE feature = 'feature/numeric/x'"
        ).result_rows
        return digest, dict(zip(columns.split(", "), cells, strict=True))

    digest, base = profile(ref)
    origin, width = base["cell_origin"], base["cell_width"]
    cell = np.floor((ref - origin) / width)
    # a cell of three values or more: its largest, smallest and a middle value, in value order
    keys, counts = np.unique(cell, return_counts=True)
    crowded = np.flatnonzero(cell == keys[np.argmax(counts)])
    low, middle, high = crowded[np.argsort(ref[crowded])][[0, 1, -1]]
    tiny = width * 1e-9  # far below a 2^-16 cell tick
    variants = {
        "cell_max": (high, ref[high] + tiny, {"cell_max"}),
        "cell_min": (low, ref[low] - tiny, {"cell_min"}),
        "cell_ticks": (middle, (ref[low] + ref[middle]) / 2, {"cell_ticks", "cell_ticks2"}),
        "cell_keys": (middle, ref[middle] + 3.0, {"cell_keys", "cell_counts", "cell_ticks", "cell_ticks2", "cell_min",
                                                  "cell_max"}),
    }  # fmt: skip
    for changed, (index, value, expected) in variants.items():
        values = ref.copy()
        values[index] = value
        other, cells = profile(values)
        assert (cells["cell_origin"], cells["cell_width"]) == (origin, width), changed  # the same grid
        assert {c for c in cells if cells[c] != base[c]} == expected, changed
        assert other != digest, f"{changed} changed, the profile hash did not"


def test_prediction_drift_runs_on_cells(store):
    rng = np.random.default_rng(8)
    ref, cur = rng.normal(10, 2, 4000), rng.normal(11, 2, 3000)
    insert(store, "m", timestamps(T_REF, 4000), {"x": ref}, prediction=ref)
    insert(store, "m", timestamps(T_CUR, 3000), {"x": cur}, prediction=cur)
    f = _features(store, CELLS, target="prediction")["prediction"]
    assert f.details["computation"] == "cells" and f.method == "wasserstein"
    assert f.statistic == pytest.approx(wasserstein_distance(ref, cur) / np.std(ref), abs=1e-4)
    assert f.drifted


def test_scale_settings_are_validated_with_the_accepted_range():
    with pytest.raises(ValueError, match="cell_resolution must be in"):
        DriftSettings(cell_resolution=0.5)
    with pytest.raises(ValueError, match="exact_max_values must be >= 0"):
        DriftSettings(exact_max_values=-1)


def test_a_feature_the_first_events_lack_gets_cells_sized_from_the_whole_window(store):
    rng = np.random.default_rng(9)
    half_second = dt.timedelta(milliseconds=500)
    insert(store, "m", timestamps(T_REF, 66_000, half_second), {"x": rng.normal(size=66_000)})
    late = 100 * rng.normal(size=4000)
    start = T_REF + 66_000 * half_second
    insert(store, "m", timestamps(start, 4000, half_second), {"x": rng.normal(size=4000), "late": late})
    insert(store, "m", timestamps(T_CUR, 4000), {"x": rng.normal(size=4000), "late": 100 * rng.normal(size=4000)})
    settings = DriftSettings(exact_max_values=50_000)
    compute_drift(store, "m", REF, CUR, features=[FeatureSpec("late")], settings=settings)
    ((width,),) = store.query(
        "SELECT cell_width FROM reference_profiles FINAL WHERE feature = 'feature/numeric/late'"
    ).result_rows
    assert math.isclose(width, 0.002 * np.std(late), rel_tol=0.01)  # not 0.002 x the 0.001 floor


def test_a_far_outlier_after_the_first_events_keeps_the_reference_moments_exact(store):
    rng = np.random.default_rng(10)
    half_second = dt.timedelta(milliseconds=500)
    ref = np.append(rng.normal(size=66_000), 1e7)  # 5e9 cells of 0.002 from the origin fixed by the first events
    insert(store, "m", timestamps(T_REF, ref.size, half_second), {"x": ref})
    insert(store, "m", timestamps(T_CUR, 3000), {"x": rng.normal(size=3000)})
    f = compute_drift(store, "m", REF, CUR, settings=DriftSettings(exact_max_values=50_000)).features[0]
    ((mean, std, hi),) = store.query(
        "SELECT mean, std, max FROM reference_profiles FINAL WHERE feature = 'feature/numeric/x'"
    ).result_rows
    assert hi == 1e7
    assert math.isclose(mean, ref.mean(), rel_tol=1e-6) and math.isclose(std, np.std(ref), rel_tol=1e-6)
    assert f.details["computation"] == "cells" and math.isfinite(f.details["error_bound"])


def test_cells_from_sorted_values_equal_the_grouped_cells(store, monkeypatch):
    """The ways of counting a window into cells (each feature's sorted values, all features in one query or in
    batches of features; one GROUP BY over feature and cell) give the same profiles, statistics and hashes: stored
    cells profiles and cells derived from an exact profile's support, discrete values, missing values, a far
    outlier and PSI's bins included."""
    from driftwarden.detectors.drift import cells

    rng = np.random.default_rng(11)
    n_ref, n_cur = 12_000, 9_000
    ref = {
        "x": rng.normal(size=n_ref),
        "y": np.where(rng.random(n_ref) < 0.1, np.nan, rng.exponential(size=n_ref)),
        "d": rng.integers(0, 4, n_ref).astype(float),
        "o": np.append(rng.normal(size=n_ref - 1), 1e9),
    }
    cur = {
        "x": rng.normal(0.2, 1, n_cur),
        "y": rng.exponential(1.2, n_cur),
        "d": rng.integers(0, 5, n_cur).astype(float),
        "o": rng.normal(size=n_cur),
    }
    _load(store, ref, cur)
    specs = [
        FeatureSpec("x", "numeric", "wasserstein"),
        FeatureSpec("y", "numeric", "psi"),
        FeatureSpec("d", "numeric"),
        FeatureSpec("o", "numeric", "ks"),
    ]
    results = {}
    # all features in one query from sorted values; one GROUP BY; one feature per query from sorted values
    for path, limit, batched in (("sorted", cells.MAX_SORTED_VALUES, 200), ("grouped", 0, 200), ("batched", n_ref, 1)):
        monkeypatch.setattr(cells, "MAX_SORTED_VALUES", limit)
        monkeypatch.setattr(cells, "BATCHED_MIN_FEATURES", batched)
        assert cells.batch_size(4, n_ref) == {"sorted": 4, "grouped": 0, "batched": 1}[path]
        for name, settings in (("cells profile", CELLS), ("exact profile", DriftSettings(exact_max_values=15_000))):
            store.command("TRUNCATE TABLE reference_profiles")
            report = compute_drift(store, "m", REF, CUR, features=specs, settings=settings).as_dict()
            results[path, name] = json.dumps(report, sort_keys=True)
    for name in ("cells profile", "exact profile"):
        assert results["sorted", name] == results["grouped", name] == results["batched", name]
    computations = {f["details"]["computation"] for f in json.loads(results["sorted", "exact profile"])["features"]}
    assert computations == {"cells"}  # 12,000 + 9,000 values > 15,000: an exact profile compared on cells


def test_wide_windows_are_counted_in_the_fewest_even_batches_under_the_memory_bound():
    from driftwarden.detectors.drift import cells

    rows = 100_000
    per_query = cells.MAX_SORTED_VALUES // rows  # 600 features of 100,000 rows
    for features, sizes in ((500, [500]), (2_000, [500] * 4), (1_300, [434, 434, 432]), (601, [301, 300])):
        batches = cells.feature_batches([f"n{k}" for k in range(features)], rows)
        assert [len(b) for b, _ in batches] == sizes
        assert all(sorted_path for _, sorted_path in batches)
        assert len(batches) == -(-features // per_query)  # no more scans than the bound needs
        assert max(sizes) * rows <= cells.MAX_SORTED_VALUES
    # few features over many rows: one GROUP BY, whose memory grows with the cells only
    assert cells.feature_batches(["a", "b"], 50_000_000) == [(["a", "b"], False)]
