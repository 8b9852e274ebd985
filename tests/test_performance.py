"""Performance drift in ClickHouse against scikit-learn's metrics, with labels arriving late."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sklearn import metrics as skm

from driftwarden.detectors.performance import compute_performance, label_state, write_performance
from driftwarden.detectors.window import Window
from tests.inference_rows import event, insert_events, insert_labels

UTC = dt.UTC
START = dt.datetime(2026, 3, 2, tzinfo=UTC)
WINDOW = Window(START, START + dt.timedelta(hours=1))


def _times(n: int) -> list[dt.datetime]:
    return [START + dt.timedelta(seconds=3600 * (i + 0.5) / n) for i in range(n)]


def _by_metric(results) -> dict[str, float]:
    return {r.metric: r.value for r in results}


def _stored(store) -> dict[str, tuple[float, int, int]]:
    rows = store.query(
        "SELECT metric, value, predictions, labelled FROM performance_results FINAL WHERE model = 'clf'"
    ).result_rows
    return {m: (v, p, n) for m, v, p, n in rows}


def test_binary_classification_metrics_match_sklearn_and_are_updated_when_late_labels_arrive(store):
    rng = np.random.default_rng(11)
    n = 400
    truth = rng.integers(0, 2, n)
    score = np.clip(truth * 0.35 + rng.normal(0.35, 0.25, n), 0, 1).round(3)  # ties on purpose
    predicted = (score >= 0.5).astype(int)
    rows = insert_events(
        store,
        [
            event("clf", t, prediction=float(s), prediction_label=str(p))
            for t, s, p in zip(_times(n), score, predicted, strict=True)
        ],
    )
    insert_events(store, [event("clf", START, prediction=0.9, prediction_label="1", is_replay=True)])
    ids = [r["event_id"] for r in rows]
    insert_labels(store, "clf", [(ids[i], str(truth[i]), None) for i in range(200)], START)
    before = label_state(store, "clf", WINDOW)

    first = compute_performance(store, "clf", WINDOW, "classification")
    write_performance(store, first)
    part = slice(0, 200)
    assert {(r.predictions, r.labelled) for r in first} == {(400, 200)}
    assert _by_metric(first) == pytest.approx(
        {
            "accuracy": skm.accuracy_score(truth[part], predicted[part]),
            "precision": skm.precision_score(truth[part], predicted[part]),
            "recall": skm.recall_score(truth[part], predicted[part]),
            "f1": skm.f1_score(truth[part], predicted[part]),
            "roc_auc": skm.roc_auc_score(truth[part], score[part]),
        },
        rel=1e-9,
    )

    # The rest of the labels arrive, and ten earlier labels are corrected.
    truth[:10] = 1 - truth[:10]
    insert_labels(store, "clf", [(ids[i], str(truth[i]), None) for i in [*range(10), *range(200, n)]], START)
    assert label_state(store, "clf", WINDOW) != before
    second = compute_performance(store, "clf", WINDOW, "classification")
    write_performance(store, second)
    expected = {
        "accuracy": skm.accuracy_score(truth, predicted),
        "precision": skm.precision_score(truth, predicted),
        "recall": skm.recall_score(truth, predicted),
        "f1": skm.f1_score(truth, predicted),
        "roc_auc": skm.roc_auc_score(truth, score),
    }
    assert _by_metric(second) == pytest.approx(expected, rel=1e-9)
    stored = _stored(store)
    assert set(stored) == set(expected)
    assert {m: v for m, (v, _, _) in stored.items()} == pytest.approx(expected, rel=1e-9)
    assert {(p, k) for _, p, k in stored.values()} == {(400, 400)}
    assert first[0].input_hash != second[0].input_hash


def test_multiclass_precision_recall_f1_are_macro_averages_as_in_sklearn(store):
    rng = np.random.default_rng(12)
    classes = np.array(["bus", "car", "bike"])
    truth = classes[rng.integers(0, 3, 300)]
    predicted = np.where(rng.random(300) < 0.7, truth, classes[rng.integers(0, 3, 300)])
    predicted[:5] = "tram"  # a class the labels never hold
    rows = insert_events(
        store, [event("clf", t, prediction_label=p) for t, p in zip(_times(300), predicted, strict=True)]
    )
    insert_labels(store, "clf", [(r["event_id"], t, None) for r, t in zip(rows, truth, strict=True)], START)

    got = _by_metric(compute_performance(store, "clf", WINDOW, "classification"))
    with np.errstate(all="ignore"):
        expected = {
            "accuracy": skm.accuracy_score(truth, predicted),
            "precision": skm.precision_score(truth, predicted, average="macro", zero_division=0),
            "recall": skm.recall_score(truth, predicted, average="macro", zero_division=0),
            "f1": skm.f1_score(truth, predicted, average="macro", zero_division=0),
        }
    assert got == pytest.approx(expected, rel=1e-9)


def test_regression_mae_rmse_and_mean_error_match_sklearn_per_model_version(store):
    rng = np.random.default_rng(13)
    truth = rng.gamma(3, 40, 500)
    pred_v1 = truth + rng.normal(5, 20, 500)
    pred_v2 = truth * 0.8
    rows = [event("reg", t, model_version="v1", prediction=float(p)) for t, p in zip(_times(500), pred_v1, strict=True)]
    rows += [
        event("reg", t, model_version="v2", prediction=float(p)) for t, p in zip(_times(500), pred_v2, strict=True)
    ]
    insert_events(store, rows)
    values = np.concatenate([truth, truth])
    insert_labels(store, "reg", [(r["event_id"], "", float(v)) for r, v in zip(rows, values, strict=True)], START)

    results = compute_performance(store, "reg", WINDOW, "regression")
    for version, pred in (("v1", pred_v1), ("v2", pred_v2)):
        got = {r.metric: r.value for r in results if r.model_version == version}
        assert got == pytest.approx(
            {
                "mae": skm.mean_absolute_error(truth, pred),
                "rmse": skm.root_mean_squared_error(truth, pred),
                "mean_error": float(np.mean(pred - truth)),
            },
            rel=1e-9,
        )


def test_a_window_without_labels_has_no_performance_rows(store):
    insert_events(store, [event("clf", t, prediction_label="1") for t in _times(10)])
    assert compute_performance(store, "clf", WINDOW, "classification") == []
    assert label_state(store, "clf", WINDOW)["v1"][:2] == (10, 0)


def test_performance_rerun_on_the_same_window_gives_identical_numbers_and_input_hash(store):
    rows = insert_events(store, [event("reg", t, prediction=float(i)) for i, t in enumerate(_times(50))])
    insert_labels(store, "reg", [(r["event_id"], "", float(i) * 1.1) for i, r in enumerate(rows)], START)
    first = compute_performance(store, "reg", WINDOW, "regression")
    second = compute_performance(store, "reg", WINDOW, "regression")
    assert [(r.metric, r.value, r.predictions, r.labelled, r.input_hash) for r in first] == [
        (r.metric, r.value, r.predictions, r.labelled, r.input_hash) for r in second
    ]
    assert {r.input_hash for r in first} and all(r.code_version and r.schema_version for r in first)
