"""Response models of the analytics endpoints of the JSON API (multivariate drift, data quality, segments)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field


class MultivariatePoint(BaseModel):
    model_version: str = Field(description="'' when the windows span every version")
    method: str = Field(description="pca_reconstruction | domain_classifier")
    value: float | None = Field(description="reconstruction error or ROC AUC; null without a verdict")
    sampling_error: float | None
    lower_threshold: float | None
    upper_threshold: float | None
    alert: bool
    features: list[str]
    drivers: list[dict[str, Any]] = Field(description="features that drive the change, largest score first")
    details: dict[str, Any]
    message: str = Field(description="why there is no value, or ''")
    reference_start: dt.datetime
    reference_end: dt.datetime
    current_start: dt.datetime
    current_end: dt.datetime
    reference_rows: int
    current_rows: int
    input_hash: str


class QualityPoint(BaseModel):
    model_version: str
    check_name: str = Field(
        description="missing | type_mismatch | out_of_range | unseen_category | constant | feature_added | "
        "feature_removed | malformed_rows"
    )
    feature: str = Field(description="'' for checks of whole rows")
    feature_type: str
    value: float = Field(description="a share of rows, or a count for malformed_rows and schema checks")
    threshold: float
    failed: bool
    affected_rows: int
    current_rows: int
    details: dict[str, Any]
    reference_start: dt.datetime
    reference_end: dt.datetime
    current_start: dt.datetime
    current_end: dt.datetime
    input_hash: str


class SegmentPoint(BaseModel):
    model_version: str
    dimension: str = Field(description="tenant | model_version | endpoint | a categorical feature")
    segment: str = Field(description="the segment's value, or 'other' for those beyond max_segments")
    signal: str = Field(description="drift | performance | estimated_performance | latency")
    metric: str
    value: float | None
    reference_value: float | None
    degradation: float | None = Field(description="worse > 0; segments are ranked on it")
    flagged: bool
    rank: int = Field(description="1 = degraded most within its dimension, signal and metric")
    current_rows: int
    reference_rows: int
    message: str = Field(description="why there is no value (e.g. a segment with one row), or ''")
    details: dict[str, Any]
    current_start: dt.datetime
    current_end: dt.datetime
    input_hash: str
