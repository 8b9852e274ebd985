"""Typed response models of the JSON API: they are its OpenAPI schema (``/openapi.json``)."""

from __future__ import annotations

import datetime as dt
import uuid

from pydantic import BaseModel, Field


class ModelVersion(BaseModel):
    """A model version that has sent events."""

    model: str
    model_version: str
    events: int = Field(description="events captured (replays excluded)")
    first_event: dt.datetime
    last_event: dt.datetime
    tenants: list[str]


class ModelStatus(BaseModel):
    """A model's status at a glance: latest dataset drift, SLO, reproducibility, failed detector runs."""

    model: str
    versions: list[str]
    drifted: bool | None = Field(None, description="dataset drift verdict of the latest analysed window")
    drift_share: float | None = Field(None, description="share of drifted features in that window")
    drift_share_threshold: float | None = None
    drift_window_end: dt.datetime | None = None
    slo_attainment: float | None = Field(None, description="share of requests under the latency objective")
    slo_percentile: float | None = Field(None, description="the share the objective requires")
    slo_met: bool | None = None
    error_ratio: float | None = None
    reproducibility_rate: float | None = None
    reproducibility_mismatches: int | None = None
    failed_runs: int = 0
    total_runs: int = 0


class FeatureDrift(BaseModel):
    """One drift result: a feature, the prediction, or the whole dataset (``target``) in one window."""

    model_version: str = Field(description="'' when the run spans every version")
    target: str = Field(description="feature | prediction | dataset")
    feature: str
    feature_type: str
    method: str
    statistic: float = Field(description="the method's score (distance, statistic, or share for dataset)")
    p_value: float | None
    threshold: float
    drifted: bool
    persistent: bool = Field(description="drifted in the configured number of consecutive windows")
    verdict: str
    missing_share: float
    out_of_range_share: float
    new_categories: list[str]
    reference_start: dt.datetime
    reference_end: dt.datetime
    current_start: dt.datetime
    current_end: dt.datetime
    reference_rows: int
    current_rows: int
    code_version: str
    schema_version: int
    input_hash: str
    typical_words: dict[str, list[str]] | None = Field(
        default=None, description="text features: the words most typical of the current and of the reference window"
    )
    typical_examples: dict[str, list[str]] | None = Field(
        default=None, description="text features: documents most typical of each window (after redaction)"
    )


class DriftStatus(BaseModel):
    """The latest analysed window of a model: every feature's result, most drifted first."""

    model: str
    current_start: dt.datetime | None
    current_end: dt.datetime | None
    dataset: list[FeatureDrift]
    features: list[FeatureDrift]
    predictions: list[FeatureDrift]


class DriftPoint(BaseModel):
    """One window of one feature's drift history."""

    model_version: str
    target: str
    feature: str
    method: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool
    persistent: bool
    current_start: dt.datetime
    current_end: dt.datetime
    current_rows: int


class PerformancePoint(BaseModel):
    model_version: str
    task: str
    metric: str
    value: float
    current_start: dt.datetime
    current_end: dt.datetime
    predictions: int
    labelled: int
    input_hash: str


class LatencyPoint(BaseModel):
    model_version: str
    current_start: dt.datetime
    current_end: dt.datetime
    requests: int
    errors: int
    error_ratio: float
    throughput_rps: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    slo_latency_ms: float
    slo_percentile: float
    slo_attainment: float
    burn_rate_1h: float
    input_hash: str


class LatencySummary(BaseModel):
    """Totals of one version over the analysed windows of the requested range."""

    model_version: str
    start: dt.datetime
    end: dt.datetime
    windows: int
    requests: int
    errors: int
    error_ratio: float
    latency_p95_ms: float = Field(description="request-weighted mean of the windows' p95")
    worst_p99_ms: float
    slo_latency_ms: float
    slo_percentile: float
    slo_attainment: float = Field(description="request-weighted share of requests under the objective")
    slo_met: bool
    burn_rate_1h: float


class Latency(BaseModel):
    summary: list[LatencySummary]
    windows: list[LatencyPoint]


class ReproducibilityPoint(BaseModel):
    model_version: str
    model_digest: str
    kind: str = Field(description="consistency | replay")
    current_start: dt.datetime
    current_end: dt.datetime
    checked: int
    mismatches: int
    rate: float
    tolerance: float
    input_hash: str


class DetectorRun(BaseModel):
    run_id: uuid.UUID
    detector: str
    started_at: dt.datetime
    duration_ms: float
    status: str = Field(description="ok | error | skipped")
    error: str
    current_start: dt.datetime
    current_end: dt.datetime
    results: int
    input_hash: str
    code_version: str


class ReportProvenance(BaseModel):
    """Everything a reviewer needs to reproduce a report."""

    model: str
    reference: str
    current: str
    reference_rows: int
    current_rows: int
    reference_sampled: int
    current_sampled: int
    sample_size: int
    seed: int
    sampling: str
    numeric_features: list[str]
    categorical_features: list[str]
    methods: dict[str, str]
    thresholds: dict[str, float]
    evidently_version: str
    code_version: str
    schema_version: int
    input_hash: str


class Problem(BaseModel):
    """An error: ``detail`` says what is wrong and what to do (FastAPI's own request checks list each field)."""

    detail: str | list[dict] = Field(description="the reason, or one entry per invalid request field")
