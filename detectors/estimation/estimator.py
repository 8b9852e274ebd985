"""Which estimator a model gets (CBPE for classifiers, DLE for regressors), fitted once, applied to windows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.estimation.cbpe import METRICS as CLASSIFICATION_METRICS
from driftwarden.detectors.estimation.cbpe import CBPEFit, EstimationError, estimate_cbpe, fit_cbpe
from driftwarden.detectors.estimation.dle import METRICS as REGRESSION_METRICS
from driftwarden.detectors.estimation.dle import DLEFit, estimate_dle, fit_dle
from driftwarden.detectors.estimation.inputs import rows
from driftwarden.detectors.estimation.results import EstimateResult
from driftwarden.detectors.window import Window

ALL_METRICS = CLASSIFICATION_METRICS + REGRESSION_METRICS


def detect_task(client: Client, model: str, reference: Window, model_version: str | None = None) -> str:
    """``classification`` when the reference labels are classes (text), ``regression`` when numeric outcomes."""
    base = rows(reference, model_version, columns="i.prediction_label AS predicted, i.output_names AS names")
    text, numeric, predicted_labels = client.query(
        f"""
        SELECT countIf(has = 1 AND truth != '' AND value IS NULL), countIf(has = 1 AND value IS NOT NULL),
               countIf(predicted != '' OR notEmpty(names))
        FROM {base}
        """,
        parameters={"m": model, "v": model_version or ""},
    ).result_rows[0]
    if text or predicted_labels:
        return "classification"
    if numeric:
        return "regression"
    raise EstimationError(
        f"the reference {reference} of model {model} has no labels: estimation learns on a labelled reference; "
        "ingest its ground truth (driftwarden ingest --ground-truth) or choose another reference"
    )


def fit_estimator(
    client: Client,
    model: str,
    reference: Window,
    window: dt.timedelta,
    *,
    task: str | None = None,
    metrics: Sequence[str] | None = None,
    model_version: str | None = None,
    positive_label: str | None = None,
) -> CBPEFit | DLEFit:
    """CBPE (classification) or DLE (regression) fitted on ``reference`` for windows of length ``window``."""
    if task is None and metrics:
        if all(m in REGRESSION_METRICS for m in metrics):
            task = "regression"
        elif all(m in CLASSIFICATION_METRICS for m in metrics):
            task = "classification"
        else:
            raise EstimationError(
                f"metrics {', '.join(metrics)} mix classification ({', '.join(CLASSIFICATION_METRICS)}) "
                f"and regression ({', '.join(REGRESSION_METRICS)})"
            )
    task = task or detect_task(client, model, reference, model_version)
    if task == "regression":
        return fit_dle(client, model, reference, window, model_version=model_version, metrics=list(metrics or []))
    return fit_cbpe(
        client,
        model,
        reference,
        window,
        model_version=model_version,
        positive_label=positive_label,
        metrics=list(metrics or []),
    )


def estimate(client: Client, fit: CBPEFit | DLEFit, current: Window, *, where: str = "1") -> list[EstimateResult]:
    """The estimates of ``current`` with the fitted estimator (of the predictions ``where`` selects: a segment)."""
    if isinstance(fit, DLEFit):
        return estimate_dle(client, fit, current, where=where)
    return estimate_cbpe(client, fit, current, where=where)
