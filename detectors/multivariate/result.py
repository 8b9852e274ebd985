"""Settings and results of multivariate drift, and how results are written to ``multivariate_results``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.provenance import code_version, schema_version

UTC = dt.UTC
METHODS = ("pca_reconstruction", "domain_classifier")


@dataclass(frozen=True)
class MultivariateSettings:
    """Options of both methods; the defaults are NannyML's.

    ``n_components``: PCA components kept, as the explained-variance fraction to reach (0 < x < 1)
    or a count. ``sigma``: PCA thresholds at mean +- sigma std of the reference chunks.
    ``classifier_rows``: rows sampled per window for the domain classifier (10,000) (a bounded sample,
    drawn by hash of the event id: the same events give the same sample). ``cv_folds``: folds of
    its cross-validation. ``auc_thresholds``: its alert range (NannyML: 0.45..0.65).
    ``min_rows``: fewer rows in either window give no verdict.
    """

    methods: tuple[str, ...] = METHODS
    n_components: float = 0.65
    sigma: float = 3.0
    classifier_rows: int = 10_000
    cv_folds: int = 5
    auc_thresholds: tuple[float, float] = (0.45, 0.65)
    min_rows: int = 100
    max_drivers: int = 10
    seed: int = 13

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown multivariate method(s) {unknown}; accepted: {', '.join(METHODS)}")
        if not self.n_components > 0:
            raise ValueError(f"n_components must be > 0, got {self.n_components}")
        if self.classifier_rows < 10 or self.cv_folds < 2:
            raise ValueError("classifier_rows must be >= 10 and cv_folds >= 2")

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "methods": list(self.methods), "auc_thresholds": list(self.auc_thresholds)}


@dataclass
class MultivariateResult:
    """One method's verdict on a window: its value, sampling error, thresholds, alert and drivers."""

    method: str
    value: float | None
    sampling_error: float | None
    lower_threshold: float | None
    upper_threshold: float | None
    alert: bool
    features: list[str]
    drivers: list[dict[str, Any]]
    details: dict[str, Any]
    message: str
    reference_rows: int
    current_rows: int
    model: str = ""
    model_version: str = ""
    reference_start: dt.datetime | None = None
    reference_end: dt.datetime | None = None
    current_start: dt.datetime | None = None
    current_end: dt.datetime | None = None
    input_hash: str = ""
    code_version: str = field(default_factory=code_version)
    schema_version: int = field(default_factory=schema_version)
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)
    computed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(UTC))

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "no verdict"
        return "drift" if self.alert else "no drift"

    def as_dict(self) -> dict[str, Any]:
        """The JSON of one result (``driftwarden drift --format json`` key ``multivariate``, and the API)."""
        return {
            "method": self.method,
            "value": _finite(self.value),
            "sampling_error": _finite(self.sampling_error),
            "lower_threshold": _finite(self.lower_threshold),
            "upper_threshold": _finite(self.upper_threshold),
            "alert": self.alert,
            "verdict": self.verdict,
            "message": self.message,
            "features": list(self.features),
            "drivers": _clean(self.drivers),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "details": _clean(self.details),
            "input_hash": self.input_hash,
        }


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


COLUMNS = [
    "run_id",
    "computed_at",
    "model",
    "model_version",
    "method",
    "value",
    "sampling_error",
    "lower_threshold",
    "upper_threshold",
    "alert",
    "features",
    "drivers",
    "details",
    "message",
    "reference_start",
    "reference_end",
    "current_start",
    "current_end",
    "reference_rows",
    "current_rows",
    "code_version",
    "schema_version",
    "input_hash",
]


def write_multivariate(client: Client, results: Sequence[MultivariateResult]) -> int:
    """Insert ``results`` into ``multivariate_results``; return the rows written."""
    if not results:
        return 0
    rows = []
    for r in results:
        values = {
            **{c: getattr(r, c) for c in COLUMNS if hasattr(r, c)},
            "value": _finite(r.value),
            "sampling_error": _finite(r.sampling_error),
            "lower_threshold": _finite(r.lower_threshold),
            "upper_threshold": _finite(r.upper_threshold),
            "drivers": json.dumps(_clean(r.drivers), sort_keys=True),
            "details": json.dumps(_clean(r.details), sort_keys=True),
        }
        rows.append([values[c] for c in COLUMNS])
    client.insert("multivariate_results", rows, column_names=COLUMNS)
    return len(rows)
