"""Reproducibility and lineage (ClickHouse): which model version and artifact digest served
the traffic over time, how often the same input gave the same output (consistency) and how
often a replayed request reproduced the recorded one (replay), and the recent mismatches.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.models.dashboard import (
    Dashboard,
    DashboardCursorSync,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
)

from driftwarden.dashboards.datasources import CLICKHOUSE, ClickHouseSql, Format
from driftwarden.dashboards.variables import (
    MODEL,
    VERSION,
    VERSION_FILTER,
    api_url,
    clickhouse_model,
    clickhouse_version,
    model_page_link,
)

UID = "driftwarden-reproducibility"

TRAFFIC = f"model = {MODEL} AND {VERSION_FILTER} AND $__timeFilter(ts) AND NOT is_replay"
RESULTS = f"model = {MODEL} AND {VERSION_FILTER} AND $__timeFilter(current_end)"

REQUESTS_PER_DIGEST = f"""
    SELECT $__timeInterval(ts) AS time,
           concat(model_version, ' @ ', substring(model_digest, 1, 19)) AS version_digest,
           count() AS requests
    FROM inferences
    WHERE {TRAFFIC}
    GROUP BY time, version_digest
    ORDER BY time, version_digest
"""

VERSIONS = f"""
    SELECT model_version, model_digest, min(ts) AS first_seen, max(ts) AS last_seen, count() AS requests,
           countIf(error_class != '') / count() AS error_share
    FROM inferences
    WHERE {TRAFFIC}
    GROUP BY model_version, model_digest
    ORDER BY first_seen
"""

RATES = f"""
    SELECT current_end AS time, concat(kind, ' ', model_version) AS kind_version, rate
    FROM reproducibility_results FINAL
    WHERE {RESULTS}
    ORDER BY time, kind_version
"""


def _latest_rate(kind: str) -> str:
    return f"""
        SELECT rate
        FROM reproducibility_results FINAL
        WHERE {RESULTS} AND kind = '{kind}'
        ORDER BY current_end DESC, computed_at DESC
        LIMIT 1
    """


MISMATCH_WINDOWS = f"""
    SELECT current_end, kind, model_version, model_digest, checked, mismatches, rate, tolerance, details
    FROM reproducibility_results FINAL
    WHERE {RESULTS} AND mismatches > 0
    ORDER BY current_end DESC
    LIMIT 100
"""

# Replays (sent by the replay detector) whose output differs from the recorded event's.
REPLAY_MISMATCHES = f"""
    SELECT replay.ts AS replayed_at, replay.replay_of AS original_event, original.ts AS original_at,
           original.model_version AS original_version, replay.model_version AS replay_version,
           original.model_digest AS original_digest, replay.model_digest AS replay_digest,
           original.prediction AS original_prediction, replay.prediction AS replay_prediction
    FROM inferences AS replay
    INNER JOIN inferences AS original ON original.event_id = replay.replay_of
    WHERE replay.model = {MODEL} AND replay.is_replay AND $__timeFilter(replay.ts)
      AND original.model = {MODEL} AND replay.output_hash != original.output_hash
      AND ({VERSION} = '__all' OR original.model_version = {VERSION})
    ORDER BY replayed_at DESC
    LIMIT 100
"""

DETECTOR_RUNS = f"""
    SELECT started_at, detector, status, duration_ms, results, code_version, input_hash, error
    FROM detector_runs
    WHERE model = {MODEL} AND $__timeFilter(started_at)
    ORDER BY started_at DESC
    LIMIT 100
"""


def _rate_stat(title: str, kind: str) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(f"Share reproduced in the latest {kind} check.")
        .datasource(CLICKHOUSE)
        .with_target(ClickHouseSql(_latest_rate(kind)))
        .unit("percentunit")
        .decimals(3)
        .thresholds(
            dash.ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=None, color="red"), Threshold(value=0.999, color="green")])
        )
        .height(6)
        .span(6)
    )


def build() -> Dashboard:
    """The dashboard model."""
    board = (
        dash.Dashboard("driftwarden / Reproducibility and lineage")
        .uid(UID)
        .description("Model versions and digests serving traffic, consistency and replay reproducibility.")
        .tags(["driftwarden", "reproducibility"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-7d", "now")
        .timezone("utc")
        .refresh("5m")
        .with_variable(clickhouse_model())
        .with_variable(clickhouse_version())
        .with_variable(api_url())
        .link(model_page_link())
        .with_row(dash.Row("Lineage"))
        .with_panel(
            timeseries.Panel()
            .title("Requests per version and digest")
            .description("Which model version and artifact digest answered the traffic, over time.")
            .datasource(CLICKHOUSE)
            .with_target(ClickHouseSql(REQUESTS_PER_DIGEST, fmt=Format.TIME_SERIES))
            .display_name("${__field.labels.version_digest}")
            .unit("short")
            .fill_opacity(30)
            .height(8)
            .span(12)
        )
        .with_panel(
            table.Panel()
            .title("Versions and digests")
            .description("First and last request of each version and digest in the time range.")
            .datasource(CLICKHOUSE)
            .with_target(ClickHouseSql(VERSIONS))
            .override_by_name("error_share", [DynamicConfigValue(id_val="unit", value="percentunit")])
            .height(8)
            .span(12)
        )
        .with_row(dash.Row("Reproducibility"))
        .with_panel(_rate_stat("Consistency (latest)", "consistency"))
        .with_panel(_rate_stat("Replay (latest)", "replay"))
        .with_panel(
            timeseries.Panel()
            .title("Reproducibility rate")
            .description("Share of input groups (consistency) and replayed events (replay) that reproduced.")
            .datasource(CLICKHOUSE)
            .with_target(ClickHouseSql(RATES, fmt=Format.TIME_SERIES))
            .display_name("${__field.labels.kind_version}")
            .unit("percentunit")
            .show_points("always")
            .max(1)
            .height(6)
            .span(12)
        )
        .with_row(dash.Row("Recent mismatches"))
        .with_panel(
            table.Panel()
            .title("Windows with mismatches")
            .description("Checks that found outputs that did not reproduce; details hold a sample of event ids.")
            .datasource(CLICKHOUSE)
            .with_target(ClickHouseSql(MISMATCH_WINDOWS))
            .height(8)
            .span(24)
        )
        .with_panel(
            table.Panel()
            .title("Replays that did not reproduce")
            .description("Replayed requests whose output differs from the recorded event's output.")
            .datasource(CLICKHOUSE)
            .with_target(ClickHouseSql(REPLAY_MISMATCHES))
            .height(8)
            .span(24)
        )
        .with_panel(
            table.Panel()
            .title("Detector runs")
            .description("Every run with its code version and input hash: the lineage of each stored result.")
            .datasource(CLICKHOUSE)
            .with_target(ClickHouseSql(DETECTOR_RUNS))
            .height(8)
            .span(24)
        )
    )
    return board.build()
