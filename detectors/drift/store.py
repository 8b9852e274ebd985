"""``write_drift``: a drift report into ``drift_results``, one row per feature plus one for the dataset."""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid

from clickhouse_connect.driver.client import Client

from driftwarden.detectors import provenance
from driftwarden.detectors.drift.report import DriftReport, FeatureDrift

COLUMNS = [
    "run_id",
    "computed_at",
    "model",
    "model_version",
    "target",
    "feature",
    "feature_type",
    "method",
    "statistic",
    "p_value",
    "threshold",
    "drifted",
    "persistent",
    "missing_share",
    "out_of_range_share",
    "new_categories",
    "reference_start",
    "reference_end",
    "current_start",
    "current_end",
    "reference_rows",
    "current_rows",
    "details",
    "code_version",
    "schema_version",
    "input_hash",
]


def write_drift(client: Client, report: DriftReport, run_id: uuid.UUID | None = None) -> uuid.UUID:
    """Insert the report's rows with their provenance; returns the run id.

    Each feature row's ``input_hash`` is the hash of the run's inputs plus the feature's
    name, method and threshold; the ``dataset`` row carries the run's ``input_hash``.
    """
    run_id = run_id or uuid.uuid4()
    now = dt.datetime.now(dt.UTC)
    rows = [_feature_row(report, f, run_id, now) for f in report.features]
    rows.append(_dataset_row(report, run_id, now))
    client.insert("drift_results", rows, column_names=COLUMNS)
    return run_id


def feature_hash(report: DriftReport, feature: FeatureDrift) -> str:
    """The provenance hash of one feature's row."""
    return provenance.content_hash(
        {
            "run": report.input_hash,
            "feature": feature.feature,
            "method": feature.method,
            "threshold": feature.threshold,
        }
    )


def _common(report: DriftReport, run_id: uuid.UUID, now: dt.datetime) -> list:
    return [run_id, now, report.model, report.model_version or ""]


def _feature_row(report: DriftReport, f: FeatureDrift, run_id: uuid.UUID, now: dt.datetime) -> list:
    details = {**f.details, "verdict": f.verdict, "effect_size": _finite(f.effect_size), "note": f.note}
    return [
        *_common(report, run_id, now),
        report.target,
        f.feature,
        f.feature_type,
        f.method,
        f.statistic,
        f.p_value,
        f.threshold,
        f.drifted,
        f.persistent,
        f.missing_share,
        f.out_of_range_share,
        list(f.new_categories),
        report.reference.start,
        report.reference.end,
        report.current.start,
        report.current.end,
        f.reference_rows,
        f.current_rows,
        json.dumps(details, sort_keys=True, default=_finite),
        report.code_version,
        report.schema_version,
        feature_hash(report, f),
    ]


def _dataset_row(report: DriftReport, run_id: uuid.UUID, now: dt.datetime) -> list:
    details = {
        "drifted_features": report.drifted_features,
        "analysed_features": sum(1 for f in report.features if f.verdict != "no verdict"),
        "settings": report.settings,
        "profile_hashes": report.profile_hashes,
        "feature_target": report.target,
    }
    return [
        *_common(report, run_id, now),
        "dataset",
        "" if report.target == "feature" else report.target,
        "",
        "share",
        report.dataset_drift_share,
        None,
        report.drift_share_threshold,
        report.dataset_drifted,
        report.dataset_drifted,
        0.0,
        0.0,
        [],
        report.reference.start,
        report.reference.end,
        report.current.start,
        report.current.end,
        report.reference_rows,
        report.current_rows,
        json.dumps(details, sort_keys=True),
        report.code_version,
        report.schema_version,
        report.input_hash,
    ]


def _finite(value):
    """JSON cannot hold NaN or infinity: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
