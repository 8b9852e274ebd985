"""The result of a drift run: one :class:`FeatureDrift` per feature and the dataset verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from driftwarden.detectors.window import Window

SCHEMA = "driftwarden.drift/1"  # the version of the JSON document below; bump when a key changes meaning


@dataclass
class FeatureDrift:
    """The drift verdict on one feature (or model output) between two windows.

    ``verdict`` is ``"drift"``, ``"no drift"`` or ``"no verdict"`` (too few rows,
    too many categories: ``note`` says which); ``drifted`` is False without a verdict.
    """

    feature: str
    feature_type: str
    method: str
    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool
    persistent: bool
    missing_share: float
    out_of_range_share: float
    new_categories: list[str]
    reference_rows: int
    current_rows: int
    details: dict[str, Any] = field(default_factory=dict)
    verdict: str = "no drift"
    effect_size: float = 0.0
    note: str = ""

    @property
    def score(self) -> float:
        """The number compared with the threshold: the p-value of a test, else the statistic."""
        return self.p_value if self.p_value is not None else self.statistic

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "feature_type": self.feature_type,
            "method": self.method,
            "statistic": _number(self.statistic),
            "p_value": _number(self.p_value),
            "threshold": self.threshold,
            "verdict": self.verdict,
            "drifted": self.drifted,
            "persistent": self.persistent,
            "effect_size": _number(self.effect_size),
            "missing_share": self.missing_share,
            "out_of_range_share": self.out_of_range_share,
            "new_categories": list(self.new_categories),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "note": self.note,
            "details": _clean(self.details),
        }


@dataclass
class DriftReport:
    """A drift run: the windows, every feature's verdict, the dataset verdict and the provenance."""

    model: str
    model_version: str | None
    target: str
    reference: Window
    current: Window
    features: list[FeatureDrift]
    dataset_drift_share: float
    dataset_drifted: bool
    drift_share_threshold: float
    input_hash: str
    settings: dict[str, Any]
    reference_rows: int
    current_rows: int
    code_version: str
    schema_version: int
    profile_hashes: dict[str, str] = field(default_factory=dict)

    @property
    def drifted_features(self) -> list[str]:
        """Drifted features counted in the dataset's share (a text feature's descriptors are not)."""
        return [f.feature for f in self.features if f.drifted and f.feature_type != "text_descriptor"]

    def as_dict(self) -> dict[str, Any]:
        """The stable JSON document of ``driftwarden drift --format json`` (see detectors/README.md)."""
        return {
            "schema": SCHEMA,
            "model": self.model,
            "model_version": self.model_version,
            "target": self.target,
            "reference": {"start": _iso(self.reference.start), "end": _iso(self.reference.end)},
            "current": {"start": _iso(self.current.start), "end": _iso(self.current.end)},
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "dataset": {
                "drifted": self.dataset_drifted,
                "drift_share": self.dataset_drift_share,
                "threshold": self.drift_share_threshold,
                "drifted_features": self.drifted_features,
                "analysed_features": sum(
                    1 for f in self.features if f.verdict != "no verdict" and f.feature_type != "text_descriptor"
                ),
            },
            "features": [f.as_dict() for f in self.features],
            "settings": self.settings,
            "provenance": {
                "input_hash": self.input_hash,
                "code_version": self.code_version,
                "schema_version": self.schema_version,
                "profile_hashes": dict(sorted(self.profile_hashes.items())),
            },
        }


def _iso(value) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _number(value: float | None) -> float | None | str:
    """JSON has no infinity or NaN: spell them as strings so the document stays valid JSON."""
    if value is None:
        return None
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _clean(value):
    """Details as strict JSON: non-finite floats become strings, tuples lists."""
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
