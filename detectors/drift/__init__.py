"""Data and prediction drift, computed inside ClickHouse.

    from driftwarden.detectors.drift import DriftSettings, FeatureSpec, compute_drift, write_drift
    report = compute_drift(client, model="bikes", reference=Window(...), current=Window(...))
    write_drift(client, report)

See ``detectors/README.md`` for the methods, the defaults (Evidently's) and the JSON document.
"""

from __future__ import annotations

from driftwarden.detectors.drift.compute import compute_drift
from driftwarden.detectors.drift.report import DriftReport, FeatureDrift
from driftwarden.detectors.drift.settings import DriftSettings, FeatureSpec
from driftwarden.detectors.drift.store import write_drift

__all__ = ["DriftReport", "DriftSettings", "FeatureDrift", "FeatureSpec", "compute_drift", "write_drift"]
