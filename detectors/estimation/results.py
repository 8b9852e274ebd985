"""One estimated metric of one window: the row of ``estimated_performance_results`` and its JSON form."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.estimation.sampling import alert
from driftwarden.detectors.provenance import code_version, content_hash, schema_version

UTC = dt.UTC


def window_hash(method: str, fit, current, n: int, labelled: int, details: dict, estimates: dict) -> str:
    """The provenance hash of one window's estimates by an estimator fitted on the reference."""
    return content_hash(
        {
            "detector": method,
            "model": fit.model,
            "model_version": fit.model_version or "",
            "reference": [fit.reference.start, fit.reference.end],
            "window": [current.start, current.end],
            "predictions": int(n),
            "labelled": int(labelled),
            "details": details,
            "estimates": estimates,
        }
    )


@dataclass
class EstimateResult:
    """An estimate with its sampling error, the reference thresholds, the alert and (later) the realized value.

    ``estimated`` is None when the window could not be estimated; ``message`` then says why and
    what to do. ``realized`` is None until labels of the window arrive.
    """

    model: str
    model_version: str
    method: str
    task: str
    metric: str
    estimated: float | None
    sampling_error: float | None
    lower_threshold: float | None
    upper_threshold: float | None
    alert: bool
    realized: float | None
    reference_value: float | None
    reference_start: dt.datetime
    reference_end: dt.datetime
    current_start: dt.datetime
    current_end: dt.datetime
    predictions: int
    labelled: int
    reference_chunks: int
    message: str = ""
    details: str = "{}"
    input_hash: str = ""
    code_version: str = field(default_factory=code_version)
    schema_version: int = field(default_factory=schema_version)
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)
    computed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(UTC))

    @classmethod
    def of_fit(
        cls,
        fit,
        *,
        method: str,
        task: str,
        metric: str,
        estimated: float | None,
        sampling_error: float | None,
        realized: float | None,
        current,
        predictions: int,
        labelled: int,
        message: str,
        details: dict,
        input_hash: str,
    ) -> EstimateResult:
        """The result of ``metric`` in window ``current`` by an estimator fitted on the reference (CBPE or DLE):
        the thresholds, reference value and notes come from ``fit``."""
        lower, upper = fit.lower.get(metric, math.nan), fit.upper.get(metric, math.nan)
        return cls(
            model=fit.model,
            model_version=fit.model_version or "",
            method=method,
            task=task,
            metric=metric,
            estimated=estimated,
            sampling_error=sampling_error,
            lower_threshold=lower,
            upper_threshold=upper,
            alert=alert(estimated, lower, upper),
            realized=realized if labelled else None,
            reference_value=fit.reference_values.get(metric),
            reference_start=fit.reference.start,
            reference_end=fit.reference.end,
            current_start=current.start,
            current_end=current.end,
            predictions=int(predictions),
            labelled=int(labelled),
            reference_chunks=fit.chunks,
            message=message or "; ".join(fit.notes),
            details=json.dumps(details),
            input_hash=input_hash,
        )

    def as_dict(self) -> dict:
        """The documented JSON object of ``driftwarden estimate --format json`` (and the API)."""
        return {
            "model": self.model,
            "model_version": self.model_version,
            "method": self.method,
            "task": self.task,
            "metric": self.metric,
            "estimated": _finite(self.estimated),
            "sampling_error": _finite(self.sampling_error),
            "lower_threshold": _finite(self.lower_threshold),
            "upper_threshold": _finite(self.upper_threshold),
            "alert": bool(self.alert),
            "realized": _finite(self.realized),
            "reference_value": _finite(self.reference_value),
            "reference": f"{self.reference_start.isoformat()}..{self.reference_end.isoformat()}",
            "current": f"{self.current_start.isoformat()}..{self.current_end.isoformat()}",
            "predictions": self.predictions,
            "labelled": self.labelled,
            "reference_chunks": self.reference_chunks,
            "message": self.message or None,
            "details": json.loads(self.details),
            "input_hash": self.input_hash,
        }


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def write_estimates(client: Client, results: Sequence[EstimateResult]) -> int:
    """Insert ``results`` into ``estimated_performance_results``; return the number of rows written."""
    if not results:
        return 0
    names = [f.name for f in dataclasses.fields(EstimateResult)]
    rows = []
    for r in results:
        row = []
        for name in names:
            value = getattr(r, name)
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            row.append(value)
        rows.append(row)
    client.insert("estimated_performance_results", rows, column_names=names)
    return len(results)
