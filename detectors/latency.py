"""Latency, errors and SLO burn rates per model version and window, computed in ClickHouse.

For each model version with requests in the window ``[start, end)`` (replays
excluded: they are not traffic):

* ``requests``, ``throughput_rps`` = requests / window seconds;
* errors: ``collector_errors`` = ``error_class`` in the collector's failure
  classes (configurable: the upstream was unreachable or timed out, or the
  collector failed; the client got a 502/504 from the collector),
  ``upstream_errors`` = other answers with HTTP status >= 500 (the model
  server's own 5xx), ``errors`` = their sum, ``error_ratio`` = errors / requests;
* latency (``latency_ms``, as the client saw it) mean and p50/p90/p95/p99, and
  time to first token p50/p95 of streamed responses (NULL when none streamed);
* ``slo_attainment``: share of requests with ``latency_ms <= slo.latency_ms``;
* burn rates of the error budget over 1 h, 6 h, 24 h and 30 d lookbacks
  ending at the window end.

Burn rate. The SLI is a *good request*: it did not fail (neither error kind)
and took at most ``slo.latency_ms``. Its objective combines both objectives of
the configuration, its error budget being the sum of theirs::

    budget     = (1 - slo.percentile) + (1 - slo.availability)     e.g. 0.01 + 0.001
    bad ratio  = (failed or slower than slo.latency_ms) / requests   over the lookback
    burn rate  = bad ratio / budget

A burn rate of 1 spends the budget exactly over the SLO period; 14.4 over 1 h
is the classic page threshold for a 30-day budget (Google SRE workbook, ch. 5).
A lookback without requests burns nothing (0).

Quantiles use ``quantilesExactInclusive``: exact (the sorted values, linear
interpolation between closest ranks, the same definition as numpy's default
``percentile``), so an alert on p99 is not an artefact of a sketch. It keeps
the window's latencies in memory (8 bytes each: 80 MB for 10 M requests in a
window) and ``bench/latency_quantiles.py`` measures its cost against
``quantilesTDigest`` and a plain ``count()`` over the same rows.

Example (doctest-style; needs a migrated store)::

    >>> results = compute_latency(client, "bikes", Window(a, b), SLOConfig(latency_ms=300))  # doctest: +SKIP
    >>> results[0].latency_p99_ms, results[0].burn_rate_1h                                      # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.config import DEFAULT_COLLECTOR_ERROR_CLASSES, SLOConfig
from driftwarden.detectors.provenance import code_version, content_hash, schema_version
from driftwarden.detectors.window import Window, micros

UTC = dt.UTC
QUANTILES = (0.5, 0.9, 0.95, 0.99)
QUANTILE_FUNCTION = "quantilesExactInclusive"
LOOKBACKS: tuple[tuple[str, dt.timedelta], ...] = (
    ("1h", dt.timedelta(hours=1)),
    ("6h", dt.timedelta(hours=6)),
    ("24h", dt.timedelta(hours=24)),
    ("30d", dt.timedelta(days=30)),
)


@dataclass
class LatencyResult:
    """One row of ``latency_results``."""

    model: str
    model_version: str
    current_start: dt.datetime
    current_end: dt.datetime
    requests: int
    errors: int
    upstream_errors: int
    collector_errors: int
    throughput_rps: float
    error_ratio: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    slo_latency_ms: float
    slo_percentile: float
    slo_attainment: float
    burn_rate_1h: float
    burn_rate_6h: float
    burn_rate_24h: float
    burn_rate_30d: float
    input_hash: str = ""
    code_version: str = field(default_factory=code_version)
    schema_version: int = field(default_factory=schema_version)
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)
    computed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(UTC))

    @property
    def burn_rates(self) -> dict[str, float]:
        return {name: getattr(self, f"burn_rate_{name}") for name, _ in LOOKBACKS}


def _version_filter(model_version: str | None) -> str:
    return "" if model_version is None else "AND model_version = {v:String}"


def compute_latency(
    client: Client,
    model: str,
    window: Window,
    slo: SLOConfig,
    *,
    model_version: str | None = None,
    collector_error_classes: Sequence[str] = DEFAULT_COLLECTOR_ERROR_CLASSES,
) -> list[LatencyResult]:
    """Latency, error and SLO results of ``model`` in ``window``, one per model version with requests."""
    params = {
        "m": model,
        "v": model_version or "",
        "classes": list(collector_error_classes),
        "slo": float(slo.latency_ms),
    }
    quantiles = ", ".join(str(q) for q in QUANTILES)
    failed = "(status >= 500 OR error_class IN {classes:Array(String)})"
    rows = client.query(
        f"""
        SELECT model_version,
               count() AS requests,
               countIf(status >= 500 AND error_class NOT IN {{classes:Array(String)}}) AS upstream_errors,
               countIf(error_class IN {{classes:Array(String)}}) AS collector_errors,
               countIf({failed}) AS errors,
               avg(latency_ms),
               {QUANTILE_FUNCTION}({quantiles})(latency_ms),
               countIf(ttft_ms IS NOT NULL),
               {QUANTILE_FUNCTION}(0.5, 0.95)(ttft_ms),
               countIf(latency_ms <= {{slo:Float64}}),
               groupBitXor(cityHash64(event_id))
        FROM inferences FINAL
        WHERE model = {{m:String}} AND NOT is_replay AND {window.sql()} {_version_filter(model_version)}
        GROUP BY model_version
        ORDER BY model_version
        """,
        parameters=params,
    ).result_rows
    if not rows:
        return []
    burns = _burn_counts(client, model, window.end, params, failed, model_version)
    budget = 1.0 - slo.objective
    out = []
    for version, n, up, coll, err, mean, q, n_ttft, ttft, fast, fingerprint in rows:
        lookback_counts = burns.get(version, {})
        rates = {name: (bad / total / budget if total else 0.0) for name, (total, bad) in lookback_counts.items()}
        result = LatencyResult(
            model=model,
            model_version=version,
            current_start=window.start,
            current_end=window.end,
            requests=int(n),
            errors=int(err),
            upstream_errors=int(up),
            collector_errors=int(coll),
            throughput_rps=n / window.seconds,
            error_ratio=err / n,
            latency_mean_ms=float(mean),
            latency_p50_ms=float(q[0]),
            latency_p90_ms=float(q[1]),
            latency_p95_ms=float(q[2]),
            latency_p99_ms=float(q[3]),
            ttft_p50_ms=_finite(ttft[0]) if n_ttft else None,
            ttft_p95_ms=_finite(ttft[1]) if n_ttft else None,
            slo_latency_ms=float(slo.latency_ms),
            slo_percentile=float(slo.percentile),
            slo_attainment=fast / n,
            burn_rate_1h=rates.get("1h", 0.0),
            burn_rate_6h=rates.get("6h", 0.0),
            burn_rate_24h=rates.get("24h", 0.0),
            burn_rate_30d=rates.get("30d", 0.0),
        )
        result.input_hash = content_hash(
            {
                "detector": "latency",
                "model": model,
                "model_version": version,
                "window": [window.start, window.end],
                "rows": int(n),
                "rows_fingerprint": int(fingerprint),
                "lookbacks": {k: list(v) for k, v in lookback_counts.items()},
                "method": QUANTILE_FUNCTION,
                "quantiles": list(QUANTILES),
                "slo": slo.model_dump(),
                "collector_error_classes": sorted(collector_error_classes),
            }
        )
        out.append(result)
    return out


def _burn_counts(
    client: Client, model: str, end: dt.datetime, params: dict, failed: str, model_version: str | None
) -> dict[str, dict[str, tuple[int, int]]]:
    """``{version: {lookback: (requests, bad)}}`` over the lookbacks ending at ``end``."""
    longest = max(delta for _, delta in LOOKBACKS)
    end_us = micros(end)
    bad = f"({failed} OR latency_ms > {{slo:Float64}})"
    columns = []
    for name, delta in LOOKBACKS:
        since = f"fromUnixTimestamp64Micro({end_us - int(delta.total_seconds()) * 1_000_000}, 'UTC')"
        columns.append(f"countIf(ts >= {since}) AS n_{name}, countIf(ts >= {since} AND {bad}) AS bad_{name}")
    lookback = Window(end - longest, end)
    rows = client.query(
        f"""
        SELECT model_version, {", ".join(columns)}
        FROM inferences FINAL
        WHERE model = {{m:String}} AND NOT is_replay AND {lookback.sql()} {_version_filter(model_version)}
        GROUP BY model_version
        """,
        parameters=params,
    ).result_rows
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for row in rows:
        counts = row[1:]
        out[row[0]] = {name: (int(counts[2 * i]), int(counts[2 * i + 1])) for i, (name, _) in enumerate(LOOKBACKS)}
    return out


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def write_latency(client: Client, results: Sequence[LatencyResult]) -> int:
    """Insert ``results`` into ``latency_results``; return the number of rows written."""
    if not results:
        return 0
    names = [f.name for f in dataclasses.fields(LatencyResult)]
    client.insert("latency_results", [[getattr(r, n) for n in names] for r in results], column_names=names)
    return len(results)
