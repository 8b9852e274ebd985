"""Data and prediction drift, computed inside ClickHouse.

    from detectors.drift import DriftSettings, FeatureSpec, compute_drift, write_drift
    report = compute_drift(client, model="bikes", reference=Window(...), current=Window(...))
    write_drift(client, report)

See ``detectors/README.md`` for the methods, the defaults (Evidently's) and the JSON document.
"""

from __future__ import annotations

from detectors.drift.compute import compute_drift
from detectors.drift.report import DriftReport, FeatureDrift
from detectors.drift.settings import DriftSettings, FeatureSpec
from detectors.drift.store import write_drift

__all__ = ["DriftReport", "DriftSettings", "FeatureDrift", "FeatureSpec", "compute_drift", "write_drift"]
