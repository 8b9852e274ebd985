"""The detectors' YAML configuration: what it accepts, and messages naming key, value and accepted values."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from driftwarden.detectors.config import load, parse, parse_duration
from driftwarden.detectors.scheduler import drift_settings
from driftwarden.detectors.window import Window
from driftwarden.errors import UserError
from tests.conftest import ROOT, run_cli

UTC = dt.UTC


def _error(text: str) -> str:
    with pytest.raises(UserError) as info:
        parse(text, source="d.yaml")
    return str(info.value)


def test_the_example_configuration_is_valid_and_resolves_references_and_overrides():
    config = load(ROOT / "examples" / "detectors.yaml")
    bikes = next(m for m in config.models if m.name == "bikes")
    assert config.window_for(bikes) == dt.timedelta(hours=1)
    reference = config.resolve_reference(bikes)
    assert reference.kind == "window" and reference.name == "january"
    assert reference.window == Window(dt.datetime(2011, 1, 1, tzinfo=UTC), dt.datetime(2011, 2, 1, tzinfo=UTC))
    assert set(config.enabled(bikes)) == {
        "drift",
        "prediction_drift",
        "performance",
        "estimated_performance",  # a fixed, labelled reference: performance is also estimated without labels
        "latency",
        "consistency",
        "replay",
        "multivariate_drift",
        "data_quality",
    }
    settings = drift_settings(config.drift_for(bikes))
    assert (settings.min_rows, settings.fdr, settings.persistence) == (100, True, 3)


def test_a_previous_reference_is_the_window_just_before_the_current_one():
    config = parse("window: 1d\nmodels: [{name: m, features: {numeric: [x]}}]")
    current = Window(dt.datetime(2026, 3, 2, tzinfo=UTC), dt.datetime(2026, 3, 3, tzinfo=UTC))
    assert config.resolve_reference(config.models[0]).for_current(current) == Window(
        dt.datetime(2026, 3, 1, tzinfo=UTC), current.start
    )


def test_model_overrides_merge_with_the_deployment_defaults():
    config = parse(
        """
drift: {min_samples: 50, by_kind: {numeric: {method: psi, threshold: 0.2}}}
models:
  - name: m
    features: {numeric: [x]}
    drift: {persistence: 2, by_kind: {categorical: {method: chisquare}}}
"""
    )
    merged = config.drift_for(config.models[0])
    assert merged.min_samples == 50 and merged.persistence == 2
    assert merged.by_kind["numeric"].method == "psi" and merged.by_kind["categorical"].method == "chisquare"


def test_a_value_out_of_range_names_its_key_path_the_value_and_the_bound():
    message = _error("models: [{name: m, slo: {percentile: 1.5}}]")
    assert message == "d.yaml: models[0].slo.percentile: value 1.5 is not accepted: Input should be less than 1"


def test_an_unknown_choice_lists_the_accepted_values():
    message = _error("models: [{name: m, performance: {task: ranking}}]")
    assert "models[0].performance.task: value 'ranking' is not accepted" in message
    assert "'classification' or 'regression'" in message


def test_an_unknown_key_lists_the_keys_accepted_at_that_place():
    message = _error("models: [{name: m, reproducibility: {replay: {collector_url: 'http://c:1', sample: 5}}}]")
    assert "models[0].reproducibility.replay.sample: unknown key" in message
    assert "accepted keys here: collector_url, sample_size, tolerance, text_similarity, timeout" in message


def test_a_bad_duration_and_a_bad_method_are_both_reported_one_line_each():
    message = _error(
        "window: 90x\nmodels: [{name: m, features: {numeric: [x]}, drift: {by_feature: {x: {method: magic}}}}]"
    )
    lines = message.splitlines()
    assert lines[0] == "d.yaml: 2 problems:"
    assert "window: value '90x' is not accepted: expected a positive duration" in lines[1]
    assert "models[0].drift.by_feature.x.method: value 'magic' is not accepted" in lines[2]
    assert (
        "accepted: auto, chisquare, distance, domain_classifier, jensenshannon, ks, mmd, psi, ratio, wasserstein, ztest"
        in lines[2]
    )


def test_a_method_that_does_not_fit_the_kind_of_feature_is_refused():
    message = _error("models: [{name: m, features: {numeric: [x]}, drift: {by_kind: {categorical: {method: ks}}}}]")
    assert "method 'ks' does not apply to categorical features; accepted: auto, chisquare" in message


def test_a_reference_naming_no_baseline_lists_the_baselines():
    message = _error("baselines: {jan: '2011-01-01..2011-02-01'}\nmodels: [{name: m, reference: feb}]")
    assert "models[0].reference: value 'feb' is not accepted" in message
    assert "'previous', a START..END window, or a name under `baselines` ('jan')" in message


def test_a_model_without_features_to_watch_is_told_how_to_name_them():
    assert "set discover: true" in _error("models: [{name: m, features: {}}]")


def test_durations_accept_seconds_to_days_and_refuse_anything_else():
    assert parse_duration("30s") == dt.timedelta(seconds=30)
    assert parse_duration("5m") == dt.timedelta(minutes=5)
    assert parse_duration("2d") == dt.timedelta(days=2)
    for bad in ("0m", "1w", "-5m", "", True):
        with pytest.raises(ValueError, match="s, m, h or d"):
            parse_duration(bad)
    assert parse("schedule: {lag: 0s}\nmodels: [{name: m}]").schedule.lag == dt.timedelta(0)  # the lag may be none
    assert "schedule.every: value '0s' is not accepted" in _error("schedule: {every: 0s}\nmodels: [{name: m}]")


def test_the_command_prints_one_error_per_problem_and_exits_2(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("schedule: {every: soon}\nmodels: [{name: m, slo: {availability: 2}}]\n")
    result = run_cli("detectors", "--config", str(path), "--once", "--store", f"chdb://{tmp_path / 'store'}")
    assert result.returncode == 2
    assert "schedule.every: value 'soon' is not accepted" in result.stderr
    assert "models[0].slo.availability: value 2 is not accepted: Input should be less than 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_configuration_file_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError, match="does not exist"):
        load(tmp_path / "nope.yaml")


def test_the_two_sample_chi_squared_option_reaches_the_drift_settings():
    from driftwarden.detectors.config import DriftConfig
    from driftwarden.detectors.scheduler import drift_settings

    assert drift_settings(DriftConfig(chisquare_homogeneity=True)).chisquare_homogeneity is True
    assert drift_settings(DriftConfig()).chisquare_homogeneity is False


def test_the_large_window_options_reach_the_drift_settings_and_are_bounded():
    from pydantic import ValidationError

    from driftwarden.detectors.config import DriftConfig

    settings = drift_settings(DriftConfig(exact_max_values=50_000, cell_resolution=0.001))
    assert (settings.exact_max_values, settings.cell_resolution) == (50_000, 0.001)
    default = drift_settings(DriftConfig())
    assert (default.exact_max_values, default.cell_resolution) == (200_000, 0.002)
    with pytest.raises(ValidationError, match="less than or equal to 0.1"):
        DriftConfig(cell_resolution=0.5)
