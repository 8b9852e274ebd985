"""The queries of the model-owner analytics on the pages and JSON API, each scoped to the caller's token.

* :func:`histograms` — a numeric feature's counts on shared equal-width bins in a reference
  and a current window, aggregated in ClickHouse (``GROUP BY`` bin; no row leaves the
  database). The bins span the 0.1% to 99.9% quantiles of both windows together; values
  beyond are counted in the first or last bin.
* :func:`multivariate`, :func:`quality`, :func:`segments` — rows of the result tables of
  migration 0012, oldest first.

The scope predicate is :func:`driftwarden.detectors.api.queries.scope`, as for every query of the API.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from clickhouse_connect.driver.client import Client

from driftwarden.auth import Principal
from driftwarden.detectors.api.queries import _model_filter, _normalise, _rows, scope
from driftwarden.detectors.rows import WELL_FORMED
from driftwarden.detectors.window import Window, micros

BINS = 30
_POSITION = "toUInt64(transform(n, {names:Array(String)}, arrayEnumerate({names:Array(String)}), 0))"


def _values(window_name: str, model_version: str, where: str) -> str:
    version = "AND model_version = {v:String}" if model_version else ""
    return f"""
        SELECT {_POSITION} AS p, v AS x
        FROM inferences FINAL ARRAY JOIN num_names AS n, num_values AS v
        WHERE model = {{m:String}} {version} AND NOT is_replay AND {where}
          AND ts >= fromUnixTimestamp64Micro({{{window_name}_start:Int64}}, 'UTC')
          AND ts < fromUnixTimestamp64Micro({{{window_name}_end:Int64}}, 'UTC')
          AND {WELL_FORMED} AND p > 0 AND isFinite(v)"""


def histograms(
    client: Client,
    principal: Principal,
    model: str,
    model_version: str,
    features: list[str],
    reference: Window,
    current: Window,
) -> dict[str, tuple[list[float], list[int], list[int]]]:
    """``{feature: (edges, reference counts, current counts)}`` on :data:`BINS` shared bins per feature."""
    if not features:
        return {}
    where, params = scope(principal)
    params = {
        **params,
        "m": model,
        "v": model_version,
        "names": list(features),
        "ref_start": micros(reference.start),
        "ref_end": micros(reference.end),
        "cur_start": micros(current.start),
        "cur_end": micros(current.end),
    }
    both = f"{_values('ref', model_version, where)} UNION ALL {_values('cur', model_version, where)}"
    ranges = client.query(
        f"SELECT p, quantiles(0.001, 0.999)(x), min(x), max(x) FROM ({both}) GROUP BY p", parameters=params
    ).result_rows
    lows = [0.0] * len(features)
    widths = [1.0] * len(features)
    for p, (q_lo, q_hi), lo, hi in ranges:
        lo, hi = (float(q_lo), float(q_hi)) if q_hi > q_lo else (float(lo), float(hi))
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        lows[int(p) - 1], widths[int(p) - 1] = lo, (hi - lo) / BINS
    counts = client.query(
        f"""
        SELECT w, p, least(greatest(toInt64(floor((x - {{lows:Array(Float64)}}[p]) / {{widths:Array(Float64)}}[p])), 0),
                          {BINS - 1}) AS bin, count()
        FROM (SELECT 'reference' AS w, p, x FROM ({_values("ref", model_version, where)})
              UNION ALL SELECT 'current' AS w, p, x FROM ({_values("cur", model_version, where)}))
        GROUP BY w, p, bin
        """,
        parameters={**params, "lows": lows, "widths": widths},
    ).result_rows
    out: dict[str, tuple[list[float], list[int], list[int]]] = {}
    present = {int(p) for p, *_ in ranges}
    for i, name in enumerate(features):
        if i + 1 in present:
            edges = [lows[i] + k * widths[i] for k in range(BINS + 1)]
            out[name] = (edges, [0] * BINS, [0] * BINS)
    for w, p, bin_, n in counts:
        name = features[int(p) - 1]
        out[name][1 if w == "reference" else 2][int(bin_)] += int(n)
    return out


def multivariate(client: Client, principal: Principal, model: str, within: Window | None = None) -> list[dict]:
    """Multivariate drift results per window and method, oldest first (drivers and details parsed)."""
    where, params = _model_filter(principal, model, within)
    rows = _rows(
        client,
        f"""
        SELECT model_version, method, value, sampling_error, lower_threshold, upper_threshold, alert, features,
               drivers, details, message, reference_start, reference_end, current_start, current_end,
               reference_rows, current_rows, input_hash
        FROM multivariate_results FINAL
        WHERE {where}
        ORDER BY current_start, model_version, method
        """,
        params,
    )
    return _normalise([{**r, "drivers": _json(r["drivers"], []), "details": _json(r["details"], {})} for r in rows])


def quality(client: Client, principal: Principal, model: str, within: Window | None = None) -> list[dict]:
    """Data-quality check results per window, oldest first."""
    where, params = _model_filter(principal, model, within)
    rows = _rows(
        client,
        f"""
        SELECT model_version, check_name, feature, feature_type, value, threshold, failed, affected_rows,
               current_rows, details, reference_start, reference_end, current_start, current_end, input_hash
        FROM quality_results FINAL
        WHERE {where}
        ORDER BY current_start, model_version, check_name, feature
        """,
        params,
    )
    return _normalise([{**r, "details": _json(r["details"], {})} for r in rows])


def segments(client: Client, principal: Principal, model: str, within: Window | None = None) -> list[dict]:
    """Segment results per window, oldest first; within a window by dimension and rank."""
    where, params = _model_filter(principal, model, within)
    rows = _rows(
        client,
        f"""
        SELECT model_version, dimension, segment, signal, metric, value, reference_value, degradation, flagged,
               rank, current_rows, reference_rows, message, details, reference_start, reference_end,
               current_start, current_end, input_hash
        FROM segment_results FINAL
        WHERE {where}
        ORDER BY current_start, model_version, dimension, signal, metric, rank
        """,
        params,
    )
    return _normalise([{**r, "details": _json(r["details"], {})} for r in rows])


def latest_window(rows: list[dict]) -> list[dict]:
    """The rows of the latest analysed window (by ``current_end``) among ``rows``."""
    if not rows:
        return []
    end: dt.datetime = max(r["current_end"] for r in rows)
    return [r for r in rows if r["current_end"] == end]


def _json(text: Any, default: Any) -> Any:
    try:
        value = json.loads(text or "null")
    except ValueError:
        return default
    return default if value is None else value
