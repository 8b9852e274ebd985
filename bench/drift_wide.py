"""Wide models: drift time and peak memory against the number of features, driftwarden and Evidently side by side.

For each feature count (default 25, 100, 500, 2000): 100,000 reference and 100,000 current
events of N numeric features (N(0, 1); every tenth feature shifted by 0.15 in the current
window), generated inside ClickHouse. Then, each in a fresh process so that its peak
resident memory is its own:

* driftwarden, first run: a new store, no reference profile yet — ``compute_drift`` builds the
  profiles and compares (what a user's first ``driftwarden drift`` does); then a second run
  in the same process reusing them;
* Evidently ``Report([DataDriftPreset()])`` on the same rows, read from Parquet files written
  from the store before (not timed).

Printed per count: wall seconds, CPU seconds (of the whole process: the embedded engine's threads
included) and peak RSS of each, the ratios Evidently / driftwarden (first run) of both, whether the
drifted features are the same, and the load average at the end of each run. ``--evidently-max``
skips Evidently above that many features (at 500 it takes minutes; at 2,000 it would take about half an hour).

    python bench/drift_wide.py [--features 25,100,500,2000] [--rows 100000] [--evidently-max 500]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GENERATE = textwrap.dedent(
    """
    import datetime as dt, json, sys
    from driftwarden import storage
    from tests.drift_data import insert_synthetic
    url, features, rows, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    client = storage.connect(url, create_database=True)
    storage.migrate(client, retention_days=20000)
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    step = 86_400_000_000 // rows
    shift = [0.15 if k % 10 == 0 else 0.0 for k in range(features)]
    insert_synthetic(client, "wide", start, rows, features, 0, step_us=step)
    insert_synthetic(client, "wide", start + dt.timedelta(days=1), rows, features, 0, shift=shift, salt=1, step_us=step)
    client.command("OPTIMIZE TABLE inferences FINAL")
    if out:
        import pyarrow.parquet as pq
        names = [f"n{k:02d}" for k in range(features)]
        for name, day in (("reference", 5), ("current", 6)):
            table = client.query_arrow(
                "SELECT num_values FROM inferences FINAL WHERE model = 'wide' "
                f"AND toDayOfMonth(ts) = {day} ORDER BY ts"
            )
            import pyarrow as pa
            matrix = table.column(0).combine_chunks().flatten().to_numpy().reshape(-1, features)
            pq.write_table(pa.table({n: matrix[:, i] for i, n in enumerate(names)}), f"{out}/{name}.parquet")
    """
)

DRIFTWARDEN = textwrap.dedent(
    """
    import datetime as dt, json, os, resource, sys, time
    from driftwarden import storage
    from driftwarden.detectors.drift import compute_drift
    from driftwarden.detectors.window import Window
    client = storage.connect(sys.argv[1])
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    day = dt.timedelta(days=1)
    reference, current = Window(start, start + day), Window(start + day, start + 2 * day)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t, c = time.perf_counter(), time.process_time()  # process time counts the embedded engine's threads too
    first = compute_drift(client, "wide", reference, current)
    t_first, c_first = time.perf_counter() - t, time.process_time() - c
    peak_first = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load = os.getloadavg()[0]
    t, c = time.perf_counter(), time.process_time()
    compute_drift(client, "wide", reference, current)
    t_second, c_second = time.perf_counter() - t, time.process_time() - c
    print("RESULT " + json.dumps({
        "first": t_first, "second": t_second, "cpu_first": c_first, "cpu_second": c_second, "load": load,
        "peak_mb": peak_first / 1024, "base_mb": base / 1024,
        "peak_after_second_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "drifted": sorted(first.drifted_features), "methods": sorted({f.method for f in first.features}),
        "paths": sorted({f.details.get("computation", "") for f in first.features}),
        "bound": max(f.details.get("error_bound", 0.0) for f in first.features),
    }))
    """
)

EVIDENTLY = textwrap.dedent(
    """
    import json, os, resource, sys, time
    import pandas as pd
    from tests.drift_data import evidently_drift
    reference = pd.read_parquet(sys.argv[1] + "/reference.parquet")
    current = pd.read_parquet(sys.argv[1] + "/current.parquet")
    numeric = list(reference.columns)
    t, c = time.perf_counter(), time.process_time()
    verdicts, share = evidently_drift(reference, current, numeric, [])
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    print("RESULT " + json.dumps({
        "seconds": elapsed, "cpu": cpu, "load": os.getloadavg()[0],
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "drifted": sorted(c for c, (_, _, drifted) in verdicts.items() if drifted),
        "methods": sorted({m for m, _, _ in verdicts.values()}),
    }))
    """
)


def run(code: str, *args: str, timeout: float = 7200) -> dict:
    env = {**os.environ, "DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("RESULT ")), None)
    if result.returncode != 0 or (line is None and code is not GENERATE):
        raise SystemExit(f"benchmark step failed:\n{result.stderr[-3000:]}")
    return json.loads(line.removeprefix("RESULT ")) if line else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="25,100,500,2000", help="comma-separated feature counts")
    parser.add_argument("--rows", type=int, default=100_000, help="events per window")
    parser.add_argument("--evidently-max", type=int, default=500, help="run Evidently up to this many features")
    args = parser.parse_args()
    counts = [int(x) for x in args.features.split(",")]
    print(f"{args.rows:,} vs {args.rows:,} events, numeric features; each measurement in a fresh process")
    print(
        "| features | driftwarden first run s (CPU-s) | peak RSS MB | profiles reused s (CPU-s) | Evidently s (CPU-s) "
        "| Evidently peak MB | × Evidently (first run, wall / CPU) | same drifted features | load |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for n in counts:
        directory = tempfile.mkdtemp(prefix=f"dw-bench-wide-{n}-")
        try:
            with_evidently = n <= args.evidently_max
            run(GENERATE, f"chdb://{directory}/store", str(n), str(args.rows), directory if with_evidently else "")
            dw = run(DRIFTWARDEN, f"chdb://{directory}/store")
            ev = run(EVIDENTLY, directory) if with_evidently else None
            ratio = f"{ev['seconds'] / dw['first']:.1f}× / {ev['cpu'] / dw['cpu_first']:.1f}×" if ev else "not run"
            same = (dw["drifted"] == ev["drifted"]) if ev else "–"
            ev_s = f"{ev['seconds']:.1f} ({ev['cpu']:.1f})" if ev else "not run"
            ev_mb = f"{ev['peak_mb']:.0f}" if ev else "–"
            load = f"{dw['load']:.1f}" + (f" / {ev['load']:.1f}" if ev else "")
            print(
                f"| {n:,} | {dw['first']:.2f} ({dw['cpu_first']:.1f}) | {dw['peak_mb']:.0f} "
                f"| {dw['second']:.2f} ({dw['cpu_second']:.1f}) | {ev_s} | {ev_mb} | {ratio} | {same} | {load} |",
                flush=True,
            )
            detail = {k: dw[k] for k in ("base_mb", "peak_after_second_mb", "methods", "paths", "bound")}
            print(f"  driftwarden {detail}; {len(dw['drifted'])} drifted", flush=True)
            if ev and dw["drifted"] != ev["drifted"]:
                print(f"  differ: driftwarden only {sorted(set(dw['drifted']) - set(ev['drifted']))}, "
                      f"Evidently only {sorted(set(ev['drifted']) - set(dw['drifted']))}")  # fmt: skip
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
