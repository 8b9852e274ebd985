"""Direct loss estimation (DLE): a regressor's MAE and RMSE without labels.

A second model, the *error model*, learns on the labelled reference how large the regressor's error
is given its inputs and its prediction: one learner for the absolute error |y - ŷ| and one for the
squared error (y - ŷ)². On a window without labels the estimates are

    MAE ≈ mean_i max(0, e_abs(x_i, ŷ_i)),        RMSE ≈ sqrt(mean_i max(0, e_sq(x_i, ŷ_i))),

(NannyML's DLE). Sampling errors (NannyML): MAE: std(|y - ŷ|) / sqrt(n); RMSE: the error of the mean
squared error carried through the square root, sqrt(std((y - ŷ)²)² / (4 n mean((y - ŷ)²))), both
from the reference. Thresholds: the realized metric on reference chunks as long as the window,
mean ± 3 standard deviations, the lower one not below 0.

The learner is scikit-learn's ``HistGradientBoostingRegressor`` where NannyML uses LightGBM: the
same algorithm (histogram gradient boosting, 100 trees, learning rate 0.1, 31 leaves, native
missing values and categorical features), already a dependency of driftwarden, maintained by
scikit-learn with wheels for every platform, so DLE adds no library (LightGBM would add a
compiled dependency with its own OpenMP runtime for one estimator).

Data: the features are the model's numeric and categorical inputs (``num_names``/``cat_names``)
and its prediction. The learners fit on a bounded uniform sample of the labelled reference
(default 200,000 rows), and a window is scored on a bounded uniform sample of its predictions
(default 200,000; every prediction when the window is smaller); the realized metrics, the
thresholds and the counts come from SQL aggregates over every row.

Reference: NannyML ``performance_estimation/direct_loss_estimation`` (0.13); Ke et al.,
"LightGBM: A Highly Efficient Gradient Boosting Decision Tree" (NeurIPS 2017).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from clickhouse_connect.driver.client import Client
from threadpoolctl import threadpool_limits

from driftwarden.detectors.estimation import sampling
from driftwarden.detectors.estimation.cbpe import EstimationError
from driftwarden.detectors.estimation.inputs import chunk_count, chunk_index, rows
from driftwarden.detectors.estimation.results import EstimateResult, window_hash
from driftwarden.detectors.window import Window

METRICS = ("mae", "rmse")
SAMPLE_ROWS = 200_000
_COLUMNS = (
    "i.event_id AS event_id, i.ts AS ts, i.prediction AS prediction, i.num_names AS num_names, "
    "i.num_values AS num_values, i.cat_names AS cat_names, i.cat_values AS cat_values"
)


@dataclass
class DLEFit:
    """The error models learned on the reference, with sampling-error components and thresholds."""

    model: str
    model_version: str | None
    reference: Window
    chunk: dt.timedelta
    metrics: list[str]
    numeric: list[str]
    categorical: list[str]
    categories: dict[str, list] = field(default_factory=dict)
    learners: dict = field(default_factory=dict)
    components: dict = field(default_factory=dict)
    lower: dict[str, float] = field(default_factory=dict)
    upper: dict[str, float] = field(default_factory=dict)
    reference_values: dict[str, float] = field(default_factory=dict)
    chunks: int = 0
    sample_rows: int = 0
    notes: list[str] = field(default_factory=list)


def _frame(records: list, numeric: list[str] | None, categorical: list[str] | None) -> pd.DataFrame:
    """Rows (prediction, num_names, num_values, cat_names, cat_values, ...) as one column per feature."""
    num = [dict(zip(r[1], r[2], strict=False)) for r in records]
    cat = [dict(zip(r[3], r[4], strict=False)) for r in records]
    numeric = numeric if numeric is not None else sorted({k for d in num for k in d})
    categorical = categorical if categorical is not None else sorted({k for d in cat for k in d})
    frame = pd.DataFrame({f"num:{k}": [d.get(k, np.nan) for d in num] for k in numeric}, dtype=float)
    for k in categorical:
        frame[f"cat:{k}"] = pd.Categorical([d.get(k) for d in cat])
    frame["prediction"] = [float(r[0]) if r[0] is not None else np.nan for r in records]
    return frame


def _learner():
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(
        max_iter=100, learning_rate=0.1, max_leaf_nodes=31, categorical_features="from_dtype", random_state=0
    )


def _realized_sql(group: str) -> str:
    return (
        f"SELECT {group} AS g, count(), avg(abs(prediction - value)), sqrt(avg(pow(prediction - value, 2))) "
        "FROM {base} WHERE has = 1 AND value IS NOT NULL AND prediction IS NOT NULL GROUP BY g"
    )


def fit_dle(
    client: Client,
    model: str,
    reference: Window,
    chunk: dt.timedelta,
    *,
    model_version: str | None = None,
    metrics: list[str] | None = None,
    sample_rows: int = SAMPLE_ROWS,
) -> DLEFit:
    """Fit the error models on the labelled ``reference``; ``chunk`` is the length of the windows to estimate."""
    metrics = list(metrics or METRICS)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise EstimationError(f"DLE estimates {', '.join(METRICS)}, not {', '.join(unknown)}")
    params = {"m": model, "v": model_version or ""}
    base = rows(reference, model_version, columns=_COLUMNS)
    records = client.query(
        f"""
        SELECT prediction, num_names, num_values, cat_names, cat_values, value FROM {base}
        WHERE has = 1 AND value IS NOT NULL AND prediction IS NOT NULL
        ORDER BY cityHash64(event_id) LIMIT {int(sample_rows)}
        """,
        parameters=params,
    ).result_rows
    if len(records) < 20:
        raise EstimationError(
            f"the reference {reference} of model {model} has {len(records)} predictions with a numeric outcome: "
            "DLE learns the regressor's errors on the reference and needs it labelled (at least 20 rows); "
            "ingest its ground truth or choose another reference"
        )
    frame = _frame(records, None, None)
    numeric = [c[4:] for c in frame.columns if c.startswith("num:")]
    categorical = [c[4:] for c in frame.columns if c.startswith("cat:")]
    truth = np.array([float(r[5]) for r in records])
    error = truth - frame["prediction"].to_numpy()
    fit = DLEFit(model, model_version, reference, chunk, metrics, numeric, categorical, sample_rows=len(records))
    fit.categories = {k: list(frame[f"cat:{k}"].cat.categories) for k in categorical}
    targets = {"mae": np.abs(error), "rmse": error**2}
    with threadpool_limits(1):  # OpenMP threads thrash on a shared machine; one is 10x faster there
        for metric in metrics:
            fit.learners[metric] = _learner().fit(frame, targets[metric])
    fit.components["mae"] = (float(np.std(np.abs(error))),)
    fit.components["rmse"] = (float(np.std(error**2)), float(np.mean(error**2)))

    per_chunk = {
        int(g): {"mae": float(mae), "rmse": float(rmse)}
        for g, _, mae, rmse in client.query(
            _realized_sql(chunk_index(reference, chunk)).replace("{base}", base), parameters=params
        ).result_rows
    }
    whole = client.query(_realized_sql("0").replace("{base}", base), parameters=params).result_rows
    fit.reference_values = {"mae": float(whole[0][2]), "rmse": float(whole[0][3])} if whole else {}
    fit.chunks = chunk_count(reference, chunk)
    if fit.chunks < 2:
        fit.notes.append(
            f"the reference holds {fit.chunks} window(s) of {chunk}: thresholds need at least 2; "
            "give a reference at least twice as long as the window"
        )
    for metric in metrics:
        values = [per_chunk[k][metric] for k in range(fit.chunks) if k in per_chunk]
        fit.lower[metric], fit.upper[metric] = (
            sampling.thresholds(values, 0.0, None) if fit.chunks >= 2 else (math.nan, math.nan)
        )
    return fit


def estimate_dle(
    client: Client, fit: DLEFit, current: Window, *, sample_rows: int = SAMPLE_ROWS, where: str = "1"
) -> list[EstimateResult]:
    """Estimated MAE / RMSE of ``current`` (one result per metric), with realized values where labels exist;
    ``where`` (SQL over ``inferences``) keeps a segment's predictions only."""
    params = {"m": fit.model, "v": fit.model_version or ""}
    base = rows(current, fit.model_version, columns=_COLUMNS, where=where)
    n, predicted, labelled = client.query(
        f"SELECT count(), countIf(prediction IS NOT NULL), countIf(has = 1 AND value IS NOT NULL) FROM {base}",
        parameters=params,
    ).result_rows[0]
    message, estimates, used = "", {}, 0
    if not n:
        message = f"no predictions in window {current}"
    elif not predicted:
        message = (
            f"no numeric predictions in window {current} ({n} events): DLE estimates a regressor's error "
            "from its prediction; record the prediction (ingest --prediction-column with a numeric column)"
        )
    else:
        records = client.query(
            f"""
            SELECT prediction, num_names, num_values, cat_names, cat_values FROM {base}
            WHERE prediction IS NOT NULL ORDER BY cityHash64(event_id) LIMIT {int(sample_rows)}
            """,
            parameters=params,
        ).result_rows
        used = len(records)
        frame = _frame(records, fit.numeric, fit.categorical)
        for k in fit.categorical:  # a category the reference never saw is read as missing
            column = f"cat:{k}"
            frame[column] = pd.Categorical(frame[column].astype(object), categories=fit.categories[k])
        for metric in fit.metrics:
            with threadpool_limits(1):
                per_row = np.maximum(0.0, fit.learners[metric].predict(frame))
            estimates[metric] = float(per_row.mean()) if metric == "mae" else float(math.sqrt(per_row.mean()))
        if predicted < n:
            message = f"{n - predicted} of {n} events have no prediction and were left out"
    realized = {}
    if labelled:
        rows_ = client.query(_realized_sql("0").replace("{base}", base), parameters=params).result_rows
        if rows_:
            realized = {"mae": float(rows_[0][2]), "rmse": float(rows_[0][3])}
    details = {
        "learner": "sklearn HistGradientBoostingRegressor",
        "numeric_features": fit.numeric,
        "categorical_features": fit.categorical,
        "reference_sample_rows": fit.sample_rows,
        "scored_rows": used,
    }
    input_hash = window_hash("dle", fit, current, n, labelled, details, estimates)
    out = []
    for metric in fit.metrics:
        value = estimates.get(metric)
        error = None
        if value is not None:
            error = (
                fit.components["mae"][0] / math.sqrt(predicted)
                if metric == "mae"
                else math.sqrt(fit.components["rmse"][0] ** 2 / (4 * predicted * fit.components["rmse"][1]))
                if fit.components["rmse"][1] > 0
                else math.nan
            )
        out.append(
            EstimateResult.of_fit(
                fit,
                method="dle",
                task="regression",
                metric=metric,
                estimated=value,
                sampling_error=error,
                realized=realized.get(metric),
                current=current,
                predictions=n,
                labelled=labelled,
                message=message,
                details=details,
                input_hash=input_hash,
            )
        )
    return out
