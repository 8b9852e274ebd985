"""Performance without labels: CBPE and DLE on synthetic data whose answer is known, and bad input.

Every data set here is drawn so that the expected metric of a window is known in closed form
from the scores (or the noise) alone: calibrated scores make a prediction correct with
probability equal to its score; DLE's regressor errs with a known spread per region.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from driftwarden.collector.ingest_file import predictions_and_labels
from driftwarden.detectors.estimation.cbpe import EstimationError, estimate_cbpe, fit_cbpe
from driftwarden.detectors.estimation.dle import estimate_dle, fit_dle
from driftwarden.detectors.estimation.results import write_estimates
from driftwarden.detectors.window import Window
from driftwarden.errors import UserError
from tests.inference_rows import event, insert_events

UTC = dt.UTC
DAY = dt.timedelta(days=1)
REF_START = dt.datetime(2026, 1, 1, tzinfo=UTC)
REFERENCE = Window(REF_START, REF_START + 10 * DAY)
CURRENT = Window(REF_START + 20 * DAY, REF_START + 21 * DAY)


def _ingest(store, frame: pd.DataFrame, model: str, **columns) -> None:
    inferences, labels = predictions_and_labels(
        pa.Table.from_pandas(frame, preserve_index=False), model=model, timestamp_column="ts", id_column="id", **columns
    )
    store.insert_arrow("inferences", inferences)
    if labels is not None:
        store.insert_arrow("ground_truth", labels)


def _times(window: Window, n: int) -> list[dt.datetime]:
    return [window.start + (window.end - window.start) * (i + 0.5) / n for i in range(n)]


def _binary(window: Window, n: int, rng, *, a: float, b: float, prefix: str, labelled: bool = True) -> pd.DataFrame:
    """Scores ~ Beta(a, b), truth ~ Bernoulli(score): the scores are calibrated by construction."""
    score = rng.beta(a, b, n)
    frame = pd.DataFrame(
        {
            "id": [f"{prefix}{i}" for i in range(n)],
            "ts": _times(window, n),
            "x": rng.normal(size=n),
            "score": score,
            "predicted": (score >= 0.5).astype(int),
        }
    )
    if labelled:
        frame["truth"] = (rng.random(n) < score).astype(int)
    return frame


def test_cbpe_binary_estimates_the_expected_metrics_of_calibrated_scores_and_alerts_on_the_drop(store):
    rng = np.random.default_rng(7)
    reference = _binary(REFERENCE, 20_000, rng, a=0.5, b=0.5, prefix="r")
    current = _binary(CURRENT, 4_000, rng, a=3, b=3, prefix="c")  # scores near 0.5: the model is unsure
    _ingest(store, reference, "loan", prediction_column="predicted", score_columns={"": "score"}, label_column="truth")
    _ingest(store, current.drop(columns=["truth"]), "loan", prediction_column="predicted", score_columns={"": "score"})

    fit = fit_cbpe(store, "loan", REFERENCE, DAY)
    assert (fit.task, fit.positive, fit.chunks) == ("binary", "1", 10)
    results = {r.metric: r for r in estimate_cbpe(store, fit, CURRENT)}

    s, yp = current["score"].to_numpy(), current["predicted"].to_numpy()
    tp, fp = np.sum(s * yp), np.sum((1 - s) * yp)
    fn, tn = np.sum(s * (1 - yp)), np.sum((1 - s) * (1 - yp))
    expected = {
        "accuracy": (tp + tn) / len(s),
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
        "f1": tp / (tp + (fp + fn) / 2),
    }
    for metric, value in expected.items():
        r = results[metric]
        # the calibration map is learned from 20,000 labelled rows: within 3 sampling errors of the truth
        assert abs(r.estimated - value) < max(3 * r.sampling_error, 0.01), metric
        assert r.realized is None and r.labelled == 0 and r.predictions == 4_000
    accuracy = results["accuracy"]
    assert accuracy.estimated < accuracy.lower_threshold and accuracy.alert
    assert accuracy.reference_value == pytest.approx(np.mean(reference["truth"] == reference["predicted"]), abs=1e-12)
    # ROC AUC of calibrated scores: P(score of a positive > score of a negative), by simulation
    sim = rng.random((200, len(s))) < s
    aucs = []
    for row in sim[:20]:
        from sklearn.metrics import roc_auc_score

        aucs.append(roc_auc_score(row, s))
    assert results["roc_auc"].estimated == pytest.approx(np.mean(aucs), abs=0.01)

    assert write_estimates(store, list(results.values())) == 5
    stored = store.query(
        "SELECT metric, estimated, alert FROM estimated_performance_results FINAL WHERE model = 'loan'"
    ).result_rows
    assert {m: (v, a) for m, v, a in stored}["accuracy"] == (pytest.approx(accuracy.estimated), True)


def test_cell_auc_is_within_its_bound_of_scikit_learns_roc_auc():
    from sklearn.metrics import roc_auc_score

    from driftwarden.detectors.estimation.calibration import GRID_CELLS
    from driftwarden.detectors.estimation.cbpe import _cell_auc

    rng = np.random.default_rng(5)
    for a, b, n in ((0.5, 0.5, 100_000), (2, 2, 100_000), (1, 30, 20_000), (40, 40, 5_000)):
        score = rng.beta(a, b, n)
        truth = (rng.random(n) < score).astype(float)
        cell = np.minimum((score * GRID_CELLS).astype(int), GRID_CELLS - 1)
        positives = np.bincount(cell, weights=truth, minlength=GRID_CELLS)
        counts = np.bincount(cell, minlength=GRID_CELLS).astype(float)
        auc, bound = _cell_auc(positives, counts)
        assert 0 < bound < 0.01
        assert abs(auc - roc_auc_score(truth, score)) <= bound, (a, b, n)
    # scores that are equal within a cell are ties for scikit-learn too: exact
    score = rng.integers(0, 20, 10_000) / 20
    truth = (rng.random(10_000) < score).astype(float)
    cell = np.minimum((score * GRID_CELLS).astype(int), GRID_CELLS - 1)
    auc, _ = _cell_auc(np.bincount(cell, weights=truth, minlength=GRID_CELLS), np.bincount(cell, minlength=GRID_CELLS))
    assert auc == pytest.approx(roc_auc_score(truth, score), abs=1e-12)


@pytest.mark.parametrize("spread", [True, False], ids=["spread-scores-from-cells", "crowded-scores-sorted"])
def test_cbpe_thresholds_come_from_each_reference_chunks_realized_roc_auc(store, spread):
    """Spread scores: the chunks' ROC AUC from the score cells (within 1e-4 of the exact value); scores crowded
    into few cells: the cells cannot guarantee it, the chunks are sorted and the value is scikit-learn's."""
    from sklearn.metrics import roc_auc_score

    from driftwarden.detectors.estimation import sampling

    rng = np.random.default_rng(11)
    a = 0.5 if spread else 60.0
    reference = _binary(REFERENCE, 20_000, rng, a=a, b=a, prefix="r")
    _ingest(store, reference, "auc", prediction_column="predicted", score_columns={"": "score"}, label_column="truth")
    fit = fit_cbpe(store, "auc", REFERENCE, DAY, metrics=["roc_auc"])
    day = (pd.to_datetime(reference["ts"]) - pd.Timestamp(REF_START)).dt.days
    exact = [roc_auc_score(reference["truth"][day == d], reference["score"][day == d]) for d in range(10)]
    lower, upper = sampling.thresholds(exact, 0.0, 1.0)
    tolerance = 1e-3 if spread else 1e-12  # 3 standard deviations of values each within 1e-4
    assert fit.lower["roc_auc"] == pytest.approx(lower, abs=tolerance)
    assert fit.upper["roc_auc"] == pytest.approx(upper, abs=tolerance)


def test_cbpe_reports_realized_metrics_once_the_labels_of_the_window_arrive(store):
    rng = np.random.default_rng(3)
    reference = _binary(REFERENCE, 5_000, rng, a=0.5, b=0.5, prefix="r")
    current = _binary(CURRENT, 2_000, rng, a=0.5, b=0.5, prefix="c")
    _ingest(store, reference, "m", prediction_column="predicted", score_columns={"": "score"}, label_column="truth")
    _ingest(store, current, "m", prediction_column="predicted", score_columns={"": "score"}, label_column="truth")
    fit = fit_cbpe(store, "m", REFERENCE, DAY)
    results = {r.metric: r for r in estimate_cbpe(store, fit, CURRENT)}
    truth, predicted = current["truth"].to_numpy(), current["predicted"].to_numpy()
    from sklearn import metrics as skm

    assert results["accuracy"].realized == pytest.approx(skm.accuracy_score(truth, predicted))
    assert results["f1"].realized == pytest.approx(skm.f1_score(truth, predicted))
    assert results["roc_auc"].realized == pytest.approx(skm.roc_auc_score(truth, current["score"]))
    assert results["accuracy"].labelled == 2_000
    for r in results.values():  # nothing changed: estimate and realized agree, no alert
        assert abs(r.estimated - r.realized) < max(3 * r.sampling_error, 0.01), r.metric
        assert not r.alert


def _multiclass(window: Window, n: int, rng, concentration: float, prefix: str) -> pd.DataFrame:
    classes = ["bus", "car", "tram"]
    probs = rng.dirichlet([concentration] * 3, n)
    draw = rng.random(n)[:, None] > np.cumsum(probs, axis=1)
    truth = [classes[min(int(k), 2)] for k in draw.sum(axis=1)]
    frame = pd.DataFrame({"id": [f"{prefix}{i}" for i in range(n)], "ts": _times(window, n)})
    for k, c in enumerate(classes):
        frame[f"p_{c}"] = probs[:, k]
    frame["predicted"] = [classes[k] for k in probs.argmax(axis=1)]
    frame["truth"] = truth
    return frame


def test_cbpe_multiclass_estimates_the_expected_accuracy_and_macro_metrics(store):
    rng = np.random.default_rng(5)
    scores = {c: f"p_{c}" for c in ("bus", "car", "tram")}
    reference = _multiclass(REFERENCE, 5_000, rng, 0.4, "r")
    current = _multiclass(CURRENT, 2_000, rng, 2.0, "c")  # flatter probabilities: less accurate
    _ingest(store, reference, "mc", prediction_column="predicted", score_columns=scores, label_column="truth")
    _ingest(store, current.drop(columns=["truth"]), "mc", prediction_column="predicted", score_columns=scores)
    fit = fit_cbpe(store, "mc", REFERENCE, DAY)
    assert fit.task == "multiclass" and fit.classes == ["bus", "car", "tram"]
    results = {r.metric: r for r in estimate_cbpe(store, fit, CURRENT)}
    probs = current[[f"p_{c}" for c in fit.classes]].to_numpy()
    expected_accuracy = probs.max(axis=1).mean()
    accuracy = results["accuracy"]
    assert abs(accuracy.estimated - expected_accuracy) < max(3 * accuracy.sampling_error, 0.01)
    assert accuracy.alert and accuracy.estimated < accuracy.lower_threshold
    assert all(math.isfinite(r.estimated) and r.sampling_error > 0 for r in results.values())


def test_dle_estimates_the_known_mae_and_rmse_of_a_regressor_whose_error_grows(store):
    rng = np.random.default_rng(11)

    def frame(window, n, low_share, prefix):
        x = np.where(rng.random(n) < low_share, rng.uniform(-2, 0, n), rng.uniform(0, 2, n))
        spread = np.where(x < 0, 1.0, 4.0)  # the model errs 4x more for positive x
        y = x + rng.normal(0, 1, n) * spread
        region = np.where(x < 0, "low", "high")
        return pd.DataFrame(
            {
                "id": [f"{prefix}{i}" for i in range(n)],
                "ts": _times(window, n),
                "x": x,
                "region": region,
                "y": y,
                "prediction": x,
            }
        ), spread

    reference, _ = frame(REFERENCE, 8_000, 0.8, "r")
    current, spread = frame(CURRENT, 3_000, 0.1, "c")
    _ingest(store, reference, "reg", prediction_column="prediction", label_column="y")
    _ingest(store, current.drop(columns=["y"]), "reg", prediction_column="prediction")
    fit = fit_dle(store, "reg", REFERENCE, DAY)
    results = {r.metric: r for r in estimate_dle(store, fit, CURRENT)}
    expected_mae = np.mean(spread) * math.sqrt(2 / math.pi)
    expected_rmse = math.sqrt(np.mean(spread**2))
    assert results["mae"].estimated == pytest.approx(expected_mae, rel=0.06)
    assert results["rmse"].estimated == pytest.approx(expected_rmse, rel=0.06)
    assert results["mae"].alert and results["mae"].estimated > results["mae"].upper_threshold
    assert results["mae"].realized is None and results["mae"].sampling_error > 0
    assert json.loads(results["mae"].details)["categorical_features"] == ["region"]


def test_a_score_outside_0_1_a_class_the_reference_never_saw_and_a_window_without_scores_get_a_clear_message(store):
    rng = np.random.default_rng(1)
    reference = _binary(REFERENCE, 3_000, rng, a=0.5, b=0.5, prefix="r")
    _ingest(store, reference, "bad", prediction_column="predicted", score_columns={"": "score"}, label_column="truth")
    fit = fit_cbpe(store, "bad", REFERENCE, DAY)

    def only_message(window):
        results = estimate_cbpe(store, fit, window)
        assert all(r.estimated is None and not r.alert for r in results)
        assert len({r.message for r in results}) == 1
        return results[0].message

    logits = Window(REF_START + 30 * DAY, REF_START + 31 * DAY)
    insert_events(store, [event("bad", logits.start, prediction=v, prediction_label="1") for v in (2.5, -1.0, 0.3)])
    assert "2 of 3 scores" in only_message(logits) and "outside [0, 1]" in only_message(logits)

    unseen = Window(REF_START + 32 * DAY, REF_START + 33 * DAY)
    insert_events(store, [event("bad", unseen.start, prediction=0.4, prediction_label="maybe")])
    assert "maybe" in only_message(unseen) and "never hold" in only_message(unseen)

    unscored = Window(REF_START + 34 * DAY, REF_START + 35 * DAY)
    insert_events(store, [event("bad", unscored.start, prediction_label="1") for _ in range(4)])
    message = only_message(unscored)
    assert message.startswith("no scores") and "--score-column" in message

    with pytest.raises(UserError, match="outside \\[0, 1\\]"):
        predictions_and_labels(
            pa.table({"id": ["a"], "ts": ["2026-01-01T00:00:00Z"], "s": [1.7]}),
            model="bad",
            timestamp_column="ts",
            score_columns={"": "s"},
        )


def test_a_reference_without_labels_is_refused_with_what_to_do(store):
    rng = np.random.default_rng(2)
    frame = _binary(REFERENCE, 500, rng, a=1, b=1, prefix="r", labelled=False)
    _ingest(store, frame, "nolabels", prediction_column="predicted", score_columns={"": "score"})
    with pytest.raises(EstimationError, match="no labels"):
        fit_cbpe(store, "nolabels", REFERENCE, DAY)


def test_a_reference_labelled_with_one_class_is_refused_although_later_labels_hold_two(store):
    rng = np.random.default_rng(3)
    reference = _binary(REFERENCE, 500, rng, a=1, b=1, prefix="r").assign(truth=0)
    later = _binary(CURRENT, 500, rng, a=1, b=1, prefix="c")  # labelled with both classes, after the reference
    for frame in (reference, later):
        _ingest(
            store, frame, "oneclass", prediction_column="predicted", score_columns={"": "score"}, label_column="truth"
        )
    with pytest.raises(EstimationError, match=r"labels of one class only \(0\)"):
        fit_cbpe(store, "oneclass", REFERENCE, DAY)


def _cli(capsys, *args: str):
    """``driftwarden ARGS`` run by the real entry point in this process: (returncode, stdout, stderr)."""
    from types import SimpleNamespace

    from driftwarden.cli import main

    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)


def test_estimate_command_prints_the_documented_json(store_url, tmp_path, capsys):
    # In this process: the session's embedded engine is open here, and ClickHouse admits one process per store.
    rng = np.random.default_rng(9)
    frame = pd.concat(
        [
            _binary(REFERENCE, 3_000, rng, a=0.5, b=0.5, prefix="r"),
            _binary(CURRENT, 1_000, rng, a=0.5, b=0.5, prefix="c").drop(columns=["truth"]),
        ]
    )
    frame["ts"] = [t.isoformat() for t in frame["ts"]]
    path = tmp_path / "loans.csv"
    frame.to_csv(path, index=False)
    ingest = _cli(
        capsys,
        "ingest",
        "--store",
        store_url,
        "--model",
        "cli",
        "--file",
        str(path),
        "--timestamp-column",
        "ts",
        "--id-column",
        "id",
        "--prediction-column",
        "predicted",
        "--score-column",
        "score",
        "--label-column",
        "truth",
    )
    assert ingest.returncode == 0, ingest.stderr
    out = _cli(
        capsys,
        "estimate",
        "--store",
        store_url,
        "--model",
        "cli",
        "--reference",
        f"{REFERENCE}",
        "--current",
        f"{CURRENT}",
        "--metric",
        "accuracy",
        "--metric",
        "roc_auc",
        "--format",
        "json",
    )
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    assert [d["metric"] for d in document] == ["accuracy", "roc_auc"]
    for d in document:
        assert {
            "metric",
            "estimated",
            "sampling_error",
            "lower_threshold",
            "upper_threshold",
            "alert",
            "realized",
        } <= set(d)
        assert d["realized"] is None and isinstance(d["estimated"], float) and d["alert"] in (True, False)
    bad = _cli(
        capsys,
        "estimate",
        "--store",
        store_url,
        "--model",
        "nobody",
        "--reference",
        f"{REFERENCE}",
        "--current",
        f"{CURRENT}",
    )
    assert bad.returncode == 2 and "no labels" in bad.stderr and "Traceback" not in bad.stderr


def test_the_scheduler_estimates_each_window_against_the_fixed_reference_and_exports_it(store):
    from prometheus_client import generate_latest

    from driftwarden.detectors import config as detector_config
    from driftwarden.detectors.exporter import Exporter
    from driftwarden.detectors.scheduler import Scheduler

    rng = np.random.default_rng(4)
    reference = _binary(REFERENCE, 5_000, rng, a=0.5, b=0.5, prefix="r")
    current = _binary(CURRENT, 2_000, rng, a=3, b=3, prefix="c")
    _ingest(store, reference, "loan", prediction_column="predicted", score_columns={"": "score"}, label_column="truth")
    _ingest(store, current.drop(columns=["truth"]), "loan", prediction_column="predicted", score_columns={"": "score"})
    config = detector_config.parse(
        f"""
window: 1d
schedule: {{every: 30s, lag: 1m, catch_up: 3}}
models:
  - name: loan
    reference: {REFERENCE}
    performance: {{task: classification, label_horizon: 3d, estimate_metrics: [accuracy, f1]}}
    segments: {{dimensions: [model_version]}}
    detectors: [estimated_performance, segments]
"""
    )
    exporter = Exporter()
    scheduler = Scheduler(store, config, exporter)
    made = scheduler.run_once(CURRENT.end + dt.timedelta(hours=1))
    assert sorted((r.detector, r.window, r.status) for r in made) == [
        ("estimated_performance", CURRENT, "ok"),
        ("segments", CURRENT, "ok"),
    ]
    assert len(scheduler._estimators) == 1  # one fit serves the estimate and the segments
    (segment,) = store.query(
        "SELECT segment, metric, value, flagged FROM segment_results FINAL "
        "WHERE model = 'loan' AND signal = 'estimated_performance'"
    ).result_rows
    rows = store.query(
        "SELECT metric, estimated, alert, realized FROM estimated_performance_results FINAL WHERE model = 'loan'"
    ).result_rows
    assert {m for m, *_ in rows} == {"accuracy", "f1"}
    accuracy = next(r for r in rows if r[0] == "accuracy")
    assert accuracy[2] is True and accuracy[3] is None
    # the one segment (every prediction) has the window's estimate, flagged against its realized reference
    assert segment[1] == "accuracy"
    assert segment[2] == pytest.approx(accuracy[1], abs=1e-12) and segment[3] is True
    body = generate_latest(exporter.registry).decode()
    assert f'driftwarden_estimated_performance{{metric="accuracy",model="loan",model_version=""}} {accuracy[1]}' in body
    assert 'driftwarden_estimated_performance_alert{metric="accuracy",model="loan",model_version=""} 1.0' in body
    from driftwarden.auth import Principal
    from driftwarden.detectors.api import estimation_section

    html = estimation_section.section(store, Principal("owner"), "loan")
    assert "Performance without labels" in html and "outside reference range" in html
    assert html.count("<svg") == 2 and "accuracy: estimated vs realized" in html  # one chart per metric
    assert estimation_section.section(store, Principal("other", models=("bikes",)), "loan") == ""
