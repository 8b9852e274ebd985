"""Every SQL query of the reports API, each scoped to what the caller's token may read.

The scope is a predicate on ``model`` bound with query parameters
(``model IN {allowed_models:Array(String)}``, and for tenant-limited tokens the models
that served those tenants), added to the WHERE clause of every query, so an
out-of-scope row never leaves the database. Results are returned as lists of dicts.

Tables read: ``inferences`` (models, versions, counts), ``drift_results``,
``performance_results``, ``latency_results``, ``reproducibility_results``,
``detector_runs`` (``storage/migrations/0001_initial.sql``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from clickhouse_connect.driver.client import Client

from driftwarden.auth import Principal
from driftwarden.detectors.window import Window, micros

UTC = dt.UTC


def scope(principal: Principal, column: str = "model") -> tuple[str, dict[str, Any]]:
    """The SQL predicate limiting ``column`` to the principal's models, with its parameters."""
    parts, params = [], {}
    if principal.models is not None:
        parts.append(f"{column} IN {{allowed_models:Array(String)}}")
        params["allowed_models"] = list(principal.models)
    if principal.tenants is not None:
        parts.append(
            f"{column} IN (SELECT DISTINCT model FROM inferences WHERE tenant IN {{allowed_tenants:Array(String)}})"
        )
        params["allowed_tenants"] = list(principal.tenants)
    return (" AND ".join(parts) or "1"), params


def _between(within: Window | None) -> tuple[str, dict[str, Any]]:
    """Results whose analysed window lies inside ``within`` (every result when None)."""
    if within is None:
        return "1", {}
    return (
        "current_start >= fromUnixTimestamp64Micro({w_start:Int64}, 'UTC') "
        "AND current_end <= fromUnixTimestamp64Micro({w_end:Int64}, 'UTC')",
        {"w_start": micros(within.start), "w_end": micros(within.end)},
    )


def _model_filter(principal: Principal, model: str, within: Window | None) -> tuple[str, dict[str, Any]]:
    """The WHERE predicate of a result table: the model, the principal's scope and the window bounds."""
    where, params = scope(principal)
    between, window_params = _between(within)
    return f"model = {{m:String}} AND {where} AND {between}", {**params, **window_params, "m": model}


def _rows(client: Client, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows as dicts. A trailing ``_`` in a column alias (``requests_``) avoids ClickHouse resolving the alias
    inside its own aggregate; it is dropped here."""
    result = client.query(sql, parameters=params)
    names = [n[:-1] if n.endswith("_") else n for n in result.column_names]
    names = [{"n_requests": "requests", "n_errors": "errors"}.get(n, n) for n in names]
    return [dict(zip(names, row, strict=True)) for row in result.result_rows]


def _utc(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _normalise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: _utc(v) for k, v in row.items()} for row in rows]


def list_models(client: Client, principal: Principal) -> list[dict[str, Any]]:
    """One row per model and version the principal may see: event count, first and last event, tenants."""
    where, params = scope(principal)
    return _normalise(
        _rows(
            client,
            f"""
            SELECT model, model_version, count() AS events, min(ts) AS first_event, max(ts) AS last_event,
                   arraySort(groupUniqArray(tenant)) AS tenants
            FROM inferences
            WHERE NOT is_replay AND {where}
            GROUP BY model, model_version
            ORDER BY model, model_version
            """,
            params,
        )
    )


def model_visible(client: Client, principal: Principal, model: str) -> bool:
    """True when ``model`` has events or results the principal may see."""
    where, params = scope(principal)
    found = client.query(
        f"""
        SELECT (SELECT count() FROM (SELECT 1 FROM inferences WHERE model = {{m:String}} AND {where} LIMIT 1))
             + (SELECT count() FROM (SELECT 1 FROM drift_results WHERE model = {{m:String}} AND {where} LIMIT 1))
        """,
        parameters={**params, "m": model},
    ).result_rows[0][0]
    return bool(found)


_DRIFT_COLUMNS = """
    model, model_version, target, feature, feature_type, method, statistic, p_value, threshold, drifted,
    persistent, missing_share, out_of_range_share, new_categories, reference_start, reference_end,
    current_start, current_end, reference_rows, current_rows, details, code_version, schema_version,
    input_hash, computed_at
"""


def latest_drift(
    client: Client, principal: Principal, model: str, within: Window | None = None
) -> list[dict[str, Any]]:
    """The drift rows (features, predictions, dataset) of the model's latest analysed window inside ``within``."""
    where, params = _model_filter(principal, model, within)
    return _normalise(
        _rows(
            client,
            f"""
            SELECT {_DRIFT_COLUMNS}
            FROM drift_results FINAL
            WHERE {where}
              AND current_end = (SELECT max(current_end) FROM drift_results
                                 WHERE {where})
            ORDER BY computed_at DESC
            LIMIT 1 BY model_version, target, feature
            """,
            params,
        )
    )


def drift_history(
    client: Client,
    principal: Principal,
    model: str,
    within: Window | None = None,
    feature: str | None = None,
    limit_windows: int = 1000,
    *,
    until: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Drift rows per analysed window, oldest first: the last ``limit_windows`` windows inside ``within``.

    With ``until`` instead, the last windows that ended by then (the trend leading to a chosen window).
    """
    where, params = _model_filter(principal, model, within)
    if until is not None:
        where += " AND current_end <= fromUnixTimestamp64Micro({until:Int64}, 'UTC')"
        params["until"] = micros(until)
    only = "AND feature = {f:String}" if feature is not None else ""
    return _normalise(
        _rows(
            client,
            f"""
            SELECT model_version, target, feature, method, statistic, p_value, threshold, drifted, persistent,
                   current_start, current_end, current_rows
            FROM drift_results FINAL
            WHERE {where} {only}
              AND current_end >= (SELECT min(e) FROM (SELECT DISTINCT current_end AS e FROM drift_results
                                   WHERE {where}
                                   ORDER BY e DESC LIMIT {{n:UInt32}}))
            ORDER BY target, feature, current_start, computed_at DESC
            LIMIT 1 BY model_version, target, feature, current_start, current_end
            """,
            {**params, "f": feature or "", "n": limit_windows},
        )
    )


def performance(client: Client, principal: Principal, model: str, within: Window | None = None) -> list[dict]:
    """Performance metrics per window and version, oldest first."""
    where, params = _model_filter(principal, model, within)
    return _normalise(
        _rows(
            client,
            f"""
            SELECT model_version, task, metric, value, current_start, current_end, predictions, labelled,
                   code_version, schema_version, input_hash
            FROM performance_results FINAL
            WHERE {where}
            ORDER BY current_start, model_version, metric
            """,
            params,
        )
    )


def latency(client: Client, principal: Principal, model: str, within: Window | None = None) -> list[dict]:
    """Latency, errors and SLO per window and version, oldest first."""
    where, params = _model_filter(principal, model, within)
    return _normalise(
        _rows(
            client,
            f"""
            SELECT model_version, current_start, current_end, requests, errors, upstream_errors, collector_errors,
                   throughput_rps, error_ratio, latency_mean_ms, latency_p50_ms, latency_p90_ms, latency_p95_ms,
                   latency_p99_ms, slo_latency_ms, slo_percentile, slo_attainment, burn_rate_1h, burn_rate_6h,
                   burn_rate_24h, burn_rate_30d, code_version, schema_version, input_hash
            FROM latency_results FINAL
            WHERE {where}
            ORDER BY current_start, model_version
            """,
            params,
        )
    )


def latency_summary(client: Client, principal: Principal, model: str, within: Window | None = None) -> list[dict]:
    """Totals per version over every analysed window inside ``within`` (request-weighted SLO attainment)."""
    where, params = _model_filter(principal, model, within)
    return _normalise(
        _rows(
            client,
            f"""
            SELECT model_version, min(current_start) AS start, max(current_end) AS end, count() AS windows,
                   sum(requests) AS n_requests, sum(errors) AS n_errors,
                   if(n_requests > 0, n_errors / n_requests, 0) AS error_ratio_,
                   if(n_requests > 0, sum(latency_p95_ms * requests) / n_requests, 0) AS latency_p95_ms_,
                   max(latency_p99_ms) AS worst_p99_ms,
                   any(slo_latency_ms) AS slo_latency_ms_, any(slo_percentile) AS slo_percentile_,
                   if(n_requests > 0, sum(slo_attainment * requests) / n_requests, 1) AS slo_attainment_,
                   argMax(burn_rate_1h, current_end) AS burn_rate_1h_
            FROM latency_results FINAL
            WHERE {where}
            GROUP BY model_version
            ORDER BY model_version
            """,
            params,
        )
    )


def reproducibility(client: Client, principal: Principal, model: str, within: Window | None = None) -> list[dict]:
    """Consistency and replay results per window, version and digest, oldest first."""
    where, params = _model_filter(principal, model, within)
    return _normalise(
        _rows(
            client,
            f"""
            SELECT model_version, model_digest, kind, current_start, current_end, checked, mismatches, rate,
                   tolerance, details, code_version, schema_version, input_hash
            FROM reproducibility_results FINAL
            WHERE {where}
            ORDER BY current_start, model_version, kind
            """,
            params,
        )
    )


def runs(
    client: Client,
    principal: Principal,
    model: str,
    within: Window | None = None,
    status: str | None = None,
    limit: int = 200,
) -> list[dict]:
    """Detector runs of the model, newest first, with their errors."""
    where, params = _model_filter(principal, model, within)
    only = "AND status = {s:String}" if status else ""
    return _normalise(
        _rows(
            client,
            f"""
            SELECT run_id, detector, started_at, finished_at, duration_ms, status, error, current_start,
                   current_end, results, input_hash, code_version
            FROM detector_runs
            WHERE {where} {only}
            ORDER BY started_at DESC, detector
            LIMIT {{n:UInt32}}
            """,
            {**params, "s": status or "", "n": limit},
        )
    )


def overview(client: Client, principal: Principal, *, by_version: bool = False) -> list[dict[str, Any]]:
    """Per model (or model and version): latest dataset drift, SLO attainment, reproducibility; failed runs.

    Drift rows of runs over every version have ``model_version = ''``; detector runs are per model only.
    """
    where, params = scope(principal)
    keys = "model, model_version" if by_version else "model"
    drift = _rows(
        client,
        f"""
        SELECT {keys}, argMax(statistic, (current_end, computed_at)) AS drift_share,
               argMax(drifted, (current_end, computed_at)) AS drifted_,
               argMax(threshold, (current_end, computed_at)) AS drift_share_threshold,
               max(current_end) AS drift_window_end
        FROM drift_results FINAL
        WHERE target = 'dataset' AND feature = '' AND {where}
        GROUP BY {keys}
        """,
        params,
    )
    slo = _rows(
        client,
        f"""
        SELECT {keys}, argMax(attainment, current_end) AS slo_attainment_,
               argMax(objective, current_end) AS slo_percentile_,
               argMax(errors_share, current_end) AS error_ratio_
        FROM (SELECT {keys}, current_start, current_end,
                     sum(slo_attainment * requests) / greatest(sum(requests), 1) AS attainment,
                     any(slo_percentile) AS objective, sum(errors) / greatest(sum(requests), 1) AS errors_share
              FROM latency_results FINAL WHERE {where} GROUP BY {keys}, current_start, current_end)
        GROUP BY {keys}
        """,
        params,
    )
    repro = _rows(
        client,
        f"""
        SELECT {keys}, argMax(rate, current_end) AS reproducibility_rate,
               argMax(mismatches, current_end) AS reproducibility_mismatches
        FROM reproducibility_results FINAL WHERE {where} GROUP BY {keys}
        """,
        params,
    )
    failures = _rows(
        client,
        f"SELECT model, countIf(status = 'error') AS failed_runs, count() AS total_runs FROM detector_runs "
        f"WHERE {where} GROUP BY model",
        params,
    )
    merged: dict[tuple[str, ...], dict[str, Any]] = {}
    for rows in (drift, slo, repro):
        for row in rows:
            key = (row["model"], row["model_version"]) if by_version else (row["model"],)
            merged.setdefault(key, {}).update(row)
    runs_by_model = {row["model"]: row for row in failures}
    for key, row in merged.items():
        row.update(runs_by_model.get(key[0], {}))
    if not by_version:
        for model, row in runs_by_model.items():
            merged.setdefault((model,), dict(row))
    return _normalise([merged[k] for k in sorted(merged)])


def window_counts(client: Client, principal: Principal, model: str, window: Window) -> dict[str, int]:
    """Events of the model in ``window`` and an order-independent fingerprint of their ids (for cache keys)."""
    where, params = scope(principal)
    rows, fingerprint = client.query(
        f"""
        SELECT count(), groupBitXor(cityHash64(event_id))
        FROM inferences FINAL
        WHERE model = {{m:String}} AND NOT is_replay AND {where} AND {window.sql()}
        """,
        parameters={**params, "m": model},
    ).result_rows[0]
    return {"rows": int(rows), "fingerprint": int(fingerprint)}


def sample(
    client: Client, principal: Principal, model: str, window: Window, size: int, seed: int
) -> list[dict[str, Any]]:
    """A bounded random sample of the window's events: the same (events, seed) always give the same rows.

    Ordering by ``cityHash64(event_id, seed)`` draws a uniform sample without ``rand()``, so a
    report can be reproduced from its provenance. One pass, top-n by hash: choosing the ids
    first and then reading only their features was not consistently faster
    (``bench/report_sample.py``), so the simpler query stays.
    """
    where, params = scope(principal)
    return _rows(
        client,
        f"""
        SELECT num_names, num_values, cat_names, cat_values, prediction, prediction_label,
               text_names, arrayMap(t -> toValidUTF8(t), text_values) AS text_values_
        FROM inferences FINAL
        WHERE model = {{m:String}} AND NOT is_replay AND {where} AND {window.sql()}
        ORDER BY cityHash64(event_id, {{seed:UInt64}}), event_id
        LIMIT {{n:UInt32}}
        """,
        {**params, "m": model, "seed": seed, "n": size},
    )
