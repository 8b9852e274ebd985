"""False-positive controls applied after the methods: effect-size floor, Benjamini–Hochberg, persistence."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.drift import sql
from driftwarden.detectors.drift.fdr import benjamini_hochberg
from driftwarden.detectors.drift.report import FeatureDrift
from driftwarden.detectors.drift.settings import DriftSettings
from driftwarden.detectors.methods import METHODS
from driftwarden.detectors.window import Window, micros


def control_false_positives(features: list[FeatureDrift], settings: DriftSettings) -> None:
    """Effect-size floor and Benjamini–Hochberg, on the p-value tests of this run."""
    tests = [f for f in features if f.verdict != "no verdict" and f.p_value is not None]
    if settings.fdr or settings.effect_size_floor > 0:
        for feature in tests:
            feature.details["uncontrolled_verdict"] = feature.verdict  # the test alone, as Evidently would say
    if settings.fdr and tests:
        adjusted = benjamini_hochberg([f.p_value for f in tests])
        for feature, p_adjusted in zip(tests, adjusted, strict=True):
            feature.details["p_value_adjusted"] = p_adjusted
            feature.drifted = METHODS[feature.method]().is_drift(p_adjusted, feature.threshold)
    if settings.effect_size_floor > 0:
        for feature in tests:
            if feature.drifted and feature.effect_size < settings.effect_size_floor:
                feature.drifted = False
                feature.note = (
                    f"significant (p={feature.p_value:.3g}) but the effect size {feature.effect_size:.3g} is below "
                    f"the floor {settings.effect_size_floor}"
                )
    for feature in tests:
        feature.verdict = "drift" if feature.drifted else "no drift"


def mark_persistence(
    client: Client,
    features: list[FeatureDrift],
    model: str,
    model_version: str | None,
    target: str,
    current: Window,
    settings: DriftSettings,
) -> None:
    """``persistent`` when the feature also drifted in the ``persistence - 1`` analysed windows before this one."""
    for feature in features:
        if not feature.drifted:
            continue
        if settings.persistence == 1:
            feature.persistent = True
            continue
        earlier = client.query(
            sql.previous_verdicts(),
            parameters={
                "model": model,
                "model_version": model_version or "",
                "target": target,
                "feature": feature.feature,
                "before": micros(current.start),
                "limit": settings.persistence - 1,
            },
        ).result_rows
        feature.persistent = len(earlier) == settings.persistence - 1 and all(bool(r[2]) for r in earlier)
        feature.details["earlier_windows_drifted"] = [bool(r[2]) for r in earlier]
