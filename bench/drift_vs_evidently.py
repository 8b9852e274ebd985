"""Drift benchmark: driftwarden in the embedded store against Evidently's DataDriftPreset, same data, one run.

Data: 20 numeric features (N(0, 1); in the current window n00..n04 shifted by 0.15)
and 5 categorical ones (12 values, ``floor(12 u^2)``; c0 skewed differently in the
current window), generated inside ClickHouse. The same rows are read back into pandas
(not timed) for Evidently.

Timed:

* driftwarden, first run: builds the reference profiles (one ``INSERT ... SELECT``) and compares;
* driftwarden, second run: reuses the stored profiles (what the scheduler does every window);
  both windows are above ``exact_max_values``, so numeric features are compared on cells
  (``detectors.drift.cells``) and the largest reported error bound is printed;
* Evidently ``Report([DataDriftPreset()]).run(current, reference)`` on the frames already in memory.

Verdicts and methods must be identical feature by feature; scores are compared with the
tolerance of the agreement tests (1e-3 absolute or 1 % relative). Ratios are against
Evidently measured in this run. ``--big-rows`` adds a run without Evidently: the per-window path on a store
without hour profiles, the hours profiled as data arrives (``detectors.drift.incremental.refresh``, what the
scheduler does every pass, timed apart), then the first and second runs that read them. With ``--store`` the
generated data is kept and reused by the next run (the profiles are deleted first).

    python bench/drift_vs_evidently.py [--rows 1000000] [--big-rows 10000000] [--store DIR] [--skip-evidently]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DO_NOT_TRACK"] = "1"  # Evidently's telemetry switch (evidently/telemetry.py), before any import of it
os.environ["EVIDENTLY_DISABLE_TELEMETRY"] = "1"

from driftwarden import storage  # noqa: E402
from driftwarden.detectors.drift import DriftSettings, compute_drift, incremental  # noqa: E402
from driftwarden.detectors.window import Window  # noqa: E402
from tests.drift_data import evidently_drift, insert_synthetic  # noqa: E402

NUMERIC = 20
CATEGORICAL = 5
UTC = dt.UTC
MINUTE = dt.timedelta(minutes=1)
SHIFTS = [0.15] * 5 + [0.0] * (NUMERIC - 5)
SKEWS = [1.2] + [2.0] * (CATEGORICAL - 1)


def load(client, model: str, rows: int, day: int) -> tuple[Window, Window]:
    """Reference and current windows of ``rows`` events each, generated in ClickHouse."""
    t_ref = dt.datetime(2026, 1, day, tzinfo=UTC)
    t_cur = t_ref + dt.timedelta(days=1)
    step_us = max(1, 86_400_000_000 // rows)
    held = client.query("SELECT count() FROM inferences WHERE model = {m:String}", parameters={"m": model}).result_rows
    if held[0][0] == 2 * rows:  # a kept --store already holds this model's data: generating it again takes minutes
        return Window(t_ref, t_ref + dt.timedelta(days=1)), Window(t_cur, t_cur + dt.timedelta(days=1))
    insert_synthetic(client, model, t_ref, rows, NUMERIC, CATEGORICAL, step_us=step_us)
    insert_synthetic(
        client, model, t_cur, rows, NUMERIC, CATEGORICAL, shift=SHIFTS, skew=SKEWS, salt=1, step_us=step_us
    )
    client.command("OPTIMIZE TABLE inferences FINAL")  # steady state: merged parts, as after ingestion settles
    return Window(t_ref, t_ref + dt.timedelta(days=1)), Window(t_cur, t_cur + dt.timedelta(days=1))


def frame(client, model: str, window: Window):
    """The window's features as a pandas frame (columns n00.., c0..), read column-wise through Arrow."""
    num = ", ".join(f"num_values[indexOf(num_names, 'n{k:02d}')] AS n{k:02d}" for k in range(NUMERIC))
    cat = ", ".join(f"cat_values[indexOf(cat_names, 'c{k}')] AS c{k}" for k in range(CATEGORICAL))
    table = client.query_arrow(
        f"SELECT {num}, {cat} FROM inferences FINAL WHERE model = {{m:String}} AND {window.sql()}",
        parameters={"m": model},
    )
    return table.to_pandas()


CPU = {}  # CPU seconds of the last timed call (the process's: the embedded engine's threads included)


def timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    CPU["last"] = time.process_time() - cpu
    return value, time.perf_counter() - start


def cpu_and_load() -> str:
    return f"({CPU['last']:.2f} CPU-s, load average {os.getloadavg()[0]:.1f})"


def compare(report, expected: dict) -> list:
    mismatches = []
    for f in report.features:
        method, score, drifted = expected[f.feature]
        close = math.isclose(f.score, score, abs_tol=1e-3) or math.isclose(f.score, score, rel_tol=0.01)
        if f.method != method or f.drifted != drifted or not close:
            mismatches.append((f.feature, f.method, f.score, f.drifted, method, score, drifted))
    return mismatches


def big_run(client, rows: int) -> None:
    """The long windows: the per-window path on a store without hour profiles, the hours profiled as data arrives
    (timed apart: the scheduler does it hour by hour), then first and second runs reading them."""
    print(f"{rows:,} reference rows vs {rows:,} current rows (driftwarden only)")
    (reference, current), t_load = timed(lambda: load(client, "big", rows, 10))
    print(f"  generated in ClickHouse in {t_load:.1f} s")
    for table in ("reference_profiles", "drift_hour_profiles"):  # a kept --store: start from no profile at all
        client.command(f"ALTER TABLE {table} DELETE WHERE model = 'big' SETTINGS mutations_sync = 1")
    per_window = DriftSettings(hour_profiles_min_rows=2**62)
    old, t_old = timed(lambda: compute_drift(client, "big", reference, current, settings=per_window))
    print(f"  per-window path (no hour profiles), profiles built:  {t_old:8.2f} s {cpu_and_load()}")
    _, t_old2 = timed(lambda: compute_drift(client, "big", reference, current, settings=per_window))
    print(f"  per-window path (no hour profiles), profiles reused: {t_old2:8.2f} s {cpu_and_load()}")
    client.command("ALTER TABLE reference_profiles DELETE WHERE model = 'big' SETTINGS mutations_sync = 1")
    arrived = current.end + dt.timedelta(minutes=5)
    hours, t_hours = timed(lambda: incremental.refresh(client, "big", arrived, dt.timedelta(days=3), MINUTE))
    print(f"  {hours} hours profiled as data arrives: {t_hours:8.2f} s {cpu_and_load()}, per hour of "
          f"{rows // 24:,} events {t_hours / hours:.2f} s ({CPU['last'] / hours:.2f} CPU-s)")  # fmt: skip
    big, t_big = timed(lambda: compute_drift(client, "big", reference, current))
    print(f"  driftwarden, first run (hour profiles): {t_big:8.2f} s {cpu_and_load()}")
    _, t_big2 = timed(lambda: compute_drift(client, "big", reference, current))
    print(f"  driftwarden, second run (hour profiles): {t_big2:8.2f} s {cpu_and_load()}")
    bound = max(f.details.get("error_bound", 0.0) for f in big.features)
    paths = sorted({f.details.get("computation", "counts") for f in big.features})
    same = [(f.feature, f.method, f.drifted) for f in big.features] == [
        (f.feature, f.method, f.drifted) for f in old.features
    ]
    print(f"  drifted: {big.drifted_features}; paths {paths}; largest error bound {bound:.2e}")
    gap = max(abs(a.statistic - b.statistic) for a, b in zip(big.features, old.features, strict=True))
    print(f"  same methods and verdicts as the per-window path: {same}; largest |difference| of a statistic {gap:.2e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per window for the Evidently comparison")
    parser.add_argument("--big-rows", type=int, default=0, help="rows per window of a driftwarden-only run (0: none)")
    parser.add_argument("--store", help="embedded store directory (default: a temporary one, removed after)")
    parser.add_argument("--skip-evidently", action="store_true", help="time driftwarden only")
    args = parser.parse_args()

    directory = args.store or tempfile.mkdtemp(prefix="dw-bench-drift-")
    try:
        client = storage.connect(f"chdb://{directory}?database=bench_drift", create_database=True)
        storage.migrate(client, retention_days=20000)
        print(
            f"{args.rows:,} reference rows vs {args.rows:,} current rows, {NUMERIC} numeric + {CATEGORICAL} categorical"
        )
        (reference, current), t_load = timed(lambda: load(client, "bench", args.rows, 5))
        print(f"  generated in ClickHouse in {t_load:.1f} s")
        first, t_first = timed(lambda: compute_drift(client, "bench", reference, current))
        first_cpu = cpu_and_load()
        second, t_second = timed(lambda: compute_drift(client, "bench", reference, current))
        second_cpu = cpu_and_load()
        assert second.input_hash == first.input_hash
        methods = sorted({f.method for f in first.features})
        paths = sorted({f.details.get("computation", "counts") for f in first.features})
        bound = max(f.details.get("error_bound", 0.0) for f in first.features)
        print(f"  driftwarden, profiles built:  {t_first:8.2f} s {first_cpu}  methods {methods}, paths {paths}")
        print(f"  largest reported error bound of a statistic: {bound:.2e}")
        print(f"  driftwarden, profiles reused: {t_second:8.2f} s {second_cpu}")
        print(f"  drifted: {first.drifted_features} (dataset drift {first.dataset_drifted})")
        if not args.skip_evidently:
            (ref_df, cur_df), t_read = timed(
                lambda: (frame(client, "bench", reference), frame(client, "bench", current))
            )
            print(f"  frames read back for Evidently in {t_read:.1f} s (not part of the comparison)")
            numeric = [f"n{k:02d}" for k in range(NUMERIC)]
            categorical = [f"c{k}" for k in range(CATEGORICAL)]
            (expected, share), t_evidently = timed(lambda: evidently_drift(ref_df, cur_df, numeric, categorical))
            mismatches = compare(first, expected)
            print(f"  Evidently DataDriftPreset:    {t_evidently:8.2f} s")
            print(f"  ratio Evidently / driftwarden: {t_evidently / t_first:.1f}x (profiles built), "
                  f"{t_evidently / t_second:.1f}x (profiles reused)")  # fmt: skip
            gap = max(abs(f.score - expected[f.feature][1]) for f in first.features)
            print(f"  verdicts identical: {not mismatches}; dataset share {first.dataset_drift_share} vs {share}")
            print(f"  largest |driftwarden - Evidently| of a statistic: {gap:.2e}")
            for m in mismatches:
                print("    mismatch", m)
        if args.big_rows:
            big_run(client, args.big_rows)
    finally:
        if not args.store:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
