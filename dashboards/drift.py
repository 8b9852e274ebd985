"""Drift (ClickHouse): the detectors' verdicts per feature over time, the features drifting
now with their method, statistic and threshold, the distribution of one feature in the
reference profile against the current time range, dataset and prediction drift, and the
performance metrics once ground truth has arrived.

Every query reads aggregates that the detectors wrote (``drift_results``,
``performance_results``, ``reference_profiles``) except the distribution panel, which bins
the current window's raw values inside ClickHouse with the reference profile's edges.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import barchart, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models.dashboard import (
    Dashboard,
    DashboardCursorSync,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
)

from driftwarden.dashboards.datasources import CLICKHOUSE, ClickHouseSql, Format
from driftwarden.dashboards.variables import (
    FEATURE,
    MODEL,
    ROW_REPORT_URL,
    VERSION_FILTER,
    api_url,
    clickhouse_feature,
    clickhouse_model,
    clickhouse_version,
    model_page_link,
    time_range_link,
)

UID = "driftwarden-drift"

# Rows of the selected model and version whose analysed window ends in the time range.
RESULTS = f"model = {MODEL} AND {VERSION_FILTER} AND $__timeFilter(current_end)"

DATASET_SHARE = f"""
    SELECT current_end AS time, model_version, statistic AS drift_share
    FROM drift_results FINAL
    WHERE {RESULTS} AND target = 'dataset'
    ORDER BY time
"""

LATEST_DATASET_SHARE = f"""
    SELECT statistic AS drift_share
    FROM drift_results FINAL
    WHERE {RESULTS} AND target = 'dataset'
    ORDER BY current_end DESC, computed_at DESC
    LIMIT 1
"""

DRIFTED_PER_FEATURE = f"""
    SELECT current_end AS time, feature, max(toUInt8(drifted) + toUInt8(persistent)) AS state
    FROM drift_results FINAL
    WHERE {RESULTS} AND target = 'feature'
    GROUP BY time, feature
    ORDER BY time, feature
"""

SCORE_PER_FEATURE = f"""
    SELECT current_end AS time, concat(feature, ' (', method, ')') AS feature_method, statistic
    FROM drift_results FINAL
    WHERE {RESULTS} AND target = 'feature'
    ORDER BY time, feature_method
"""

# Latest verdict per feature and method, kept when it is "drifted".
DRIFTING_NOW = f"""
    SELECT feature, method, statistic, p_value, threshold, persistent,
           missing_share, out_of_range_share, arrayStringConcat(new_categories, ', ') AS new_categories,
           current_rows, reference_rows, model_version,
           formatDateTime(current_start, '%Y-%m-%dT%H:%i:%SZ') AS window_start,
           formatDateTime(current_end, '%Y-%m-%dT%H:%i:%SZ') AS window_end,
           formatDateTime(reference_start, '%Y-%m-%dT%H:%i:%SZ') AS reference_start,
           formatDateTime(reference_end, '%Y-%m-%dT%H:%i:%SZ') AS reference_end
    FROM
    (
        SELECT *
        FROM drift_results FINAL
        WHERE {RESULTS} AND target = 'feature'
        ORDER BY current_end DESC, computed_at DESC
        LIMIT 1 BY feature, method
    )
    WHERE drifted
    ORDER BY persistent DESC, feature, method
"""

# $feature in the reference profile against the traffic of the time range, binned inside
# ClickHouse. Numeric: the profile's bins (its quantile edges); values outside the reference
# range count in the first or last bin, as the detectors count them. Categorical: the
# profile's categories, plus categories the reference never saw, marked "(new)".
DISTRIBUTION = (
    f"""
    WITH
        (
            SELECT (feature_type, bin_edges, bin_counts, categories, category_counts)
            FROM reference_profiles FINAL
            WHERE model = {MODEL} AND feature = {FEATURE}
            ORDER BY reference_end DESC, created_at DESC
            LIMIT 1
        ) AS profile,
        profile.1 AS kind,
        profile.2 AS edges,
        profile.3 AS reference_counts
    SELECT bin, reference, current
    FROM
    (
        SELECT
            bin_index AS position,
            concat('[', toString(round(edges[bin_index], 4)), ', ',
                   toString(round(edges[bin_index + 1], 4)), ')') AS bin,
            reference_counts[bin_index] / arraySum(reference_counts) AS reference,
            current_counts[bin_index] / greatest(1, arraySum(current_counts)) AS current
        FROM
        (
            SELECT sumForEach(arrayMap(i -> toUInt64(i = bin_of_value), arrayEnumerate(reference_counts)))
                   AS current_counts
            FROM
            (
                SELECT greatest(1, least(length(reference_counts), arrayCount(e -> e <= value, edges))) AS bin_of_value
                FROM
                (
                    SELECT num_values[indexOf(num_names, {FEATURE})] AS value
                    FROM inferences
                    WHERE model = {MODEL} AND """
    + VERSION_FILTER
    + f""" AND $__timeFilter(ts)
                      AND NOT is_replay AND has(num_names, {FEATURE})
                )
            )
        )
        ARRAY JOIN arrayEnumerate(reference_counts) AS bin_index
        WHERE kind = 'numeric'

        UNION ALL

        SELECT
            toUInt64(0) AS position,
            if(reference_count = 0, concat(bin, ' (new)'), bin) AS bin,
            reference_count / arraySum(profile.5) AS reference,
            current_count / greatest(1, sum(current_count) OVER ()) AS current
        FROM
        (
            SELECT category.1 AS bin, category.2 AS reference_count
            FROM (SELECT arrayJoin(arrayZip(profile.4, profile.5)) AS category)
        ) AS ref
        FULL OUTER JOIN
        (
            SELECT cat_values[indexOf(cat_names, {FEATURE})] AS bin, count() AS current_count
            FROM inferences
            WHERE model = {MODEL} AND """
    + VERSION_FILTER
    + f""" AND $__timeFilter(ts)
              AND NOT is_replay AND has(cat_names, {FEATURE})
            GROUP BY bin
        ) AS cur USING (bin)
        WHERE kind = 'categorical'
    )
    ORDER BY position, reference DESC, bin
"""
)

PREDICTION_DRIFT = f"""
    SELECT current_end AS time, concat(model_version, ' (', method, ')') AS version_method, statistic
    FROM drift_results FINAL
    WHERE {RESULTS} AND target = 'prediction'
    ORDER BY time, version_method
"""

PERFORMANCE = f"""
    SELECT current_end AS time, concat(metric, ' ', model_version) AS metric_version, value
    FROM performance_results FINAL
    WHERE {RESULTS}
    ORDER BY time, metric_version
"""

LABELLED_SHARE = f"""
    SELECT current_end AS time, model_version, labelled / greatest(1, predictions) AS labelled_share
    FROM performance_results FINAL
    WHERE {RESULTS}
    GROUP BY time, model_version, labelled, predictions
    ORDER BY time, model_version
"""


def _thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def _series(title: str, description: str, sql: str, label: str, unit: str = "none") -> timeseries.Panel:
    """A time series of a long frame (time, ``label``, value): one series per value of ``label``."""
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(CLICKHOUSE)
        .with_target(ClickHouseSql(sql, fmt=Format.TIME_SERIES))
        .display_name(f"${{__field.labels.{label}}}")
        .unit(unit)
        .height(8)
        .span(12)
        .show_points("always")
    )


def _drift_states() -> ValueMap:
    return ValueMap(
        options={
            "0": ValueMappingResult(text="no drift", color="green", index=0),
            "1": ValueMappingResult(text="drifted", color="orange", index=1),
            "2": ValueMappingResult(text="persistent drift", color="red", index=2),
        }
    )


def _report_of_row() -> DynamicConfigValue:
    """Data link from a table row to the API's drift report of that row's window."""
    return DynamicConfigValue(
        id_val="links",
        value=[
            {
                "targetBlank": True,
                "title": "Drift report of this window",
                "url": ROW_REPORT_URL,
            }
        ],
    )


def build() -> Dashboard:
    """The dashboard model."""
    board = (
        dash.Dashboard("driftwarden / Drift")
        .uid(UID)
        .description("Feature, prediction and dataset drift found by the detectors, and performance on labels.")
        .tags(["driftwarden", "drift"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-7d", "now")
        .timezone("utc")
        .refresh("5m")
        .with_variable(clickhouse_model())
        .with_variable(clickhouse_version())
        .with_variable(clickhouse_feature())
        .with_variable(api_url())
        .link(model_page_link())
        .with_row(dash.Row("Dataset"))
        .with_panel(
            stat.Panel()
            .title("Dataset drift share (latest window)")
            .description("Share of the model's features that drifted in the latest analysed window.")
            .datasource(CLICKHOUSE)
            .with_target(ClickHouseSql(LATEST_DATASET_SHARE))
            .unit("percentunit")
            .thresholds(_thresholds((None, "green"), (0.3, "orange"), (0.5, "red")))
            .links([time_range_link()])
            .height(8)
            .span(6)
        )
        .with_panel(
            _series(
                "Dataset drift share",
                "Share of drifted features per analysed window and version.",
                DATASET_SHARE,
                "model_version",
                "percentunit",
            )
            .min(0)
            .max(1)
            .span(18)
        )
        .with_row(dash.Row("Features"))
        .with_panel(
            statetimeline.Panel()
            .title("Drift verdict per feature")
            .description("Each analysed window of each feature: no drift, drifted, or drifted persistently.")
            .datasource(CLICKHOUSE)
            .with_target(ClickHouseSql(DRIFTED_PER_FEATURE, fmt=Format.TIME_SERIES))
            .display_name("${__field.labels.feature}")
            .mappings([_drift_states()])
            .thresholds(_thresholds((None, "green"), (1, "orange"), (2, "red")))
            .show_value("never")
            .height(10)
            .span(24)
        )
        .with_panel(
            _series(
                "Drift score per feature",
                "The method's statistic per window: a distance (wasserstein, psi, jensenshannon) "
                "or a p-value (ks, chisquare, ztest) — compare each with its threshold in the table below.",
                SCORE_PER_FEATURE,
                "feature_method",
            )
        )
        .with_panel(
            barchart.Panel()
            .title("Distribution of $feature: reference vs current")
            .description(
                "Share of values per bin (numeric) or per category of the reference profile (the detectors' "
                "reference window) and of the traffic in the dashboard's time range."
            )
            .datasource(CLICKHOUSE)
            .with_target(ClickHouseSql(DISTRIBUTION))
            .x_field("bin")
            .unit("percentunit")
            .x_tick_label_rotation(-45)
            .links([time_range_link()])
            .height(8)
            .span(12)
        )
        .with_panel(
            table.Panel()
            .title("Features drifting in the latest window")
            .description(
                "Latest verdict per feature and method that says drifted: the statistic against its threshold. "
                "Click a row for the drift report of its window."
            )
            .datasource(CLICKHOUSE)
            .with_target(ClickHouseSql(DRIFTING_NOW))
            .override_by_name("feature", [_report_of_row()])
            .override_by_name("missing_share", [DynamicConfigValue(id_val="unit", value="percentunit")])
            .override_by_name("out_of_range_share", [DynamicConfigValue(id_val="unit", value="percentunit")])
            .height(10)
            .span(24)
        )
        .with_row(dash.Row("Prediction and performance"))
        .with_panel(
            _series(
                "Prediction drift",
                "Drift of the model's output distribution per window, by version and method.",
                PREDICTION_DRIFT,
                "version_method",
            )
        )
        .with_panel(
            _series(
                "Performance on ground truth",
                "Metrics over predictions whose labels have arrived (empty until ground truth is ingested).",
                PERFORMANCE,
                "metric_version",
            )
        )
        .with_panel(
            _series(
                "Labelled share",
                "Share of the window's predictions that have ground truth so far; performance is only as "
                "good as this coverage.",
                LABELLED_SHARE,
                "model_version",
                "percentunit",
            )
            .min(0)
            .max(1)
        )
    )
    return board.build()
