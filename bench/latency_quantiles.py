"""Latency quantile benchmark: the latency detector over 10M events in the embedded store.

Generates N events of one model in a one-hour window inside ClickHouse
(``INSERT ... SELECT FROM numbers(N)``, log-normal latencies, 1% errors), then
times, median of ``--repeat`` runs:

* the baseline: ``count()`` over the same rows (the cheapest full pass),
  ``avg(latency_ms)`` (one pass over the same column), and
  numpy's ``percentile`` over the same values pulled into Python once;
* p50/p90/p95/p99 with ``quantilesExactInclusive`` (what the detector uses),
  ``quantilesExact``, ``quantilesTDigest`` and ``quantiles`` (reservoir sample),
  with their relative error on p99 against numpy;
* the whole latency detector (``compute_latency``: window aggregates with FINAL,
  plus the 1h/6h/24h/30d burn-rate lookbacks).

Ratios are against ``count()`` and ``avg(latency_ms)`` measured in the same run.

    python bench/latency_quantiles.py [--events 10000000] [--store /tmp/dw-bench-latency] [--repeat 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import time

import numpy as np

from driftwarden import storage
from driftwarden.detectors.config import SLOConfig
from driftwarden.detectors.latency import compute_latency
from driftwarden.detectors.window import Window

UTC = dt.UTC
START = dt.datetime(2026, 3, 1, 10, tzinfo=UTC)
WINDOW = Window(START, START + dt.timedelta(hours=1))
LEVELS = "0.5, 0.9, 0.95, 0.99"


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--store", default="/tmp/dw-bench-latency")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    shutil.rmtree(args.store, ignore_errors=True)
    client = storage.connect(f"chdb://{args.store}")
    storage.migrate(client, retention_days=3650)
    start_us = int(START.timestamp() * 1_000_000)
    t0 = time.perf_counter()
    client.command(
        f"""
        INSERT INTO inferences (event_id, ts, model, model_version, status, latency_ms, error_class)
        SELECT generateUUIDv4(number),
               fromUnixTimestamp64Micro({start_us} + intDiv(number * 3600000000, {args.events}), 'UTC'),
               'bench', 'v1',
               if(number % 100 = 0, 503, 200),
               exp(randNormal(3.0, 0.8)),
               ''
        FROM numbers({args.events})
        """
    )
    insert_s = time.perf_counter() - t0
    where = f"model = 'bench' AND NOT is_replay AND {WINDOW.sql()}"

    def scalar(sql: str):
        return client.query(sql).result_rows[0][0]

    rows = []
    base_s, n = timed(lambda: scalar(f"SELECT count() FROM inferences WHERE {where}"), args.repeat)
    final_s, _ = timed(lambda: scalar(f"SELECT count() FROM inferences FINAL WHERE {where}"), args.repeat)
    pull_s, values = timed(lambda: client.query_np(f"SELECT latency_ms FROM inferences WHERE {where}")[:, 0], 1)
    values = np.asarray(values, dtype=float)
    numpy_s, reference = timed(lambda: np.percentile(values, [50, 90, 95, 99]), args.repeat)
    p99 = reference[3]
    rows.append(("count() (baseline)", base_s, None))
    rows.append(("count() FINAL", final_s, None))
    avg_s, _ = timed(lambda: scalar(f"SELECT avg(latency_ms) FROM inferences WHERE {where}"), args.repeat)
    rows.append(("avg(latency_ms) (reads the same column)", avg_s, None))
    for name in ("quantilesExactInclusive", "quantilesExact", "quantilesTDigest", "quantiles"):
        seconds, q = timed(
            lambda name=name: scalar(f"SELECT {name}({LEVELS})(latency_ms) FROM inferences WHERE {where}"), args.repeat
        )
        rows.append((name, seconds, abs(q[3] - p99) / p99))
    detector_s, results = timed(
        lambda: compute_latency(client, "bench", WINDOW, SLOConfig(latency_ms=100)), args.repeat
    )
    rows.append(("compute_latency (FINAL + burn rates)", detector_s, abs(results[0].latency_p99_ms - p99) / p99))
    rows.append(("numpy.percentile (values in memory)", numpy_s, 0.0))
    rows.append(("numpy: pull latency_ms once + percentile", pull_s + numpy_s, 0.0))

    print(f"events: {n:,}  insert: {insert_s:.1f} s  pull latency_ms into numpy once: {pull_s:.2f} s")
    print(f"{'query':42} {'median s':>9} {'x count()':>10} {'x avg()':>8} {'p99 rel. error':>15}")
    for name, seconds, error in rows:
        err = "" if error is None else f"{error:.2e}"
        print(f"{name:42} {seconds:9.3f} {seconds / base_s:10.1f} {seconds / avg_s:8.2f} {err:>15}")
    shutil.rmtree(args.store, ignore_errors=True)


if __name__ == "__main__":
    main()
