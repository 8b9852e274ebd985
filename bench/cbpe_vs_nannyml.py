"""CBPE benchmark: driftwarden in the embedded store against NannyML's CBPE, same data, one run.

Data: a binary classifier with calibrated scores (score ~ Beta(0.6, 0.6) in the reference,
Beta(2, 2) in the analysis period: the model becomes unsure), label ~ Bernoulli(score),
prediction = score >= 0.5; ``--rows`` predictions in each of the reference and the analysis
period, spread evenly over ``--days`` days each. Both sides estimate every metric (ROC AUC, F1,
precision, recall, accuracy) for each day of the analysis period, with thresholds from the
reference's days.

Timed:

* driftwarden: ``fit_cbpe`` on the reference (one joined pass: SQL aggregates per reference day, a
  bounded sample for the calibration test, a per-cell histogram for the calibration map) and
  ``estimate_cbpe_windows`` for the analysis days (one aggregate over their rows, as the scheduler's
  catch-up and ``driftwarden estimate`` over a range); the rows were inserted before (not timed:
  ingest is a separate, streaming step, and the background merges of its parts have finished);
* NannyML 0.13.1 ``CBPE(chunk_period="D").fit(reference).estimate(analysis)`` on the frames
  already in memory.

Estimates must agree within max(3 sampling errors, 0.01) and the alerts must be identical. The
ratio is NannyML's time over driftwarden's, measured in this run, in wall time and in CPU-seconds
of the process (every thread; the embedded ClickHouse runs in it), with the load average.

    python bench/cbpe_vs_nannyml.py [--rows 1000000] [--days 10] [--store DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"  # NannyML's usage analytics: off, nothing leaves the machine

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402

from driftwarden import storage  # noqa: E402
from driftwarden.collector.arrow import GROUND_TRUTH_SCHEMA, SCHEMA  # noqa: E402
from driftwarden.detectors.estimation.cbpe import METRICS, estimate_cbpe_windows, fit_cbpe  # noqa: E402
from driftwarden.detectors.window import Window  # noqa: E402
from driftwarden.storage.migrate import migrate  # noqa: E402

UTC = dt.UTC
DAY = dt.timedelta(days=1)
START = dt.datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


def cpu_seconds() -> float:
    """CPU seconds of this process, every thread (the embedded ClickHouse runs in it)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def frame(rng, n: int, days: int, start: dt.datetime, a: float, offset: int) -> pd.DataFrame:
    score = rng.beta(a, a, n)
    seconds = np.arange(n) * (days * 86_400 / n)
    return pd.DataFrame(
        {
            "id": np.arange(offset, offset + n),
            "timestamp": pd.Timestamp(start.replace(tzinfo=None)) + pd.to_timedelta(seconds, unit="s"),
            "y_pred_proba": score,
            "y_pred": (score >= 0.5).astype(int),
            "y_true": (rng.random(n) < score).astype(int),
        }
    )


def settle(client, limit: float = 120.0) -> float:
    """Wait until the engine has no merge running: the insert's parts are merged in the background right after
    it, and a run timed meanwhile would share the cores with the ingest's work, not only with other jobs."""
    t = time.perf_counter()
    while client.query("SELECT count() FROM system.merges").result_rows[0][0] and time.perf_counter() - t < limit:
        time.sleep(0.1)
    return time.perf_counter() - t


def insert(client, data: pd.DataFrame, labelled: bool) -> None:
    n = len(data)
    ids = pa.array([int(i).to_bytes(16, "big") for i in data["id"]], type=pa.binary(16))  # distinct 16-byte event ids
    ts = pa.array(data["timestamp"].dt.tz_localize("UTC"), type=pa.timestamp("us", tz="UTC"))
    columns = {
        "event_id": ids,
        "ts": ts,
        "model": pa.array(["bench"] * n),
        "protocol": pa.array(["ingest"] * n),
        "prediction": pa.array(data["y_pred_proba"], type=pa.float64()),
        "prediction_label": pa.array(data["y_pred"].astype(str)),
    }
    table = pa.Table.from_arrays(list(columns.values()), schema=pa.schema([SCHEMA.field(c) for c in columns]))
    for start in range(0, n, 250_000):
        client.insert_arrow("inferences", table.slice(start, 250_000))
    if labelled:
        labels = pa.Table.from_arrays(
            [ids, pa.array(["bench"] * n), ts, pa.array(data["y_true"].astype(str)), pa.nulls(n, pa.float64())],
            schema=GROUND_TRUTH_SCHEMA,
        )
        for start in range(0, n, 250_000):
            client.insert_arrow("ground_truth", labels.slice(start, 250_000))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="predictions in each period")
    parser.add_argument("--days", type=int, default=10, help="days per period (one chunk per day)")
    parser.add_argument("--store", help="directory of the embedded store (default: a temporary one)")
    args = parser.parse_args()

    rng = np.random.default_rng(42)
    reference = frame(rng, args.rows, args.days, START, 0.6, 0)
    analysis_start = START + args.days * DAY
    analysis = frame(rng, args.rows, args.days, analysis_start, 2.0, args.rows)
    path = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="cbpe-bench-"))
    client = storage.connect(f"chdb://{path}")
    migrate(client, retention_days=3_650)
    t = time.perf_counter()
    insert(client, reference, labelled=True)
    insert(client, analysis, labelled=False)
    print(f"inserted {2 * args.rows:,} predictions and {args.rows:,} labels in {time.perf_counter() - t:.1f} s")
    settled = settle(client)
    print(f"background merges of the inserted parts finished after {settled:.1f} s more (not timed)")

    t, c = time.perf_counter(), cpu_seconds()
    fit = fit_cbpe(client, "bench", Window(START, analysis_start), DAY)
    fitted, fitted_cpu = time.perf_counter() - t, cpu_seconds() - c
    windows = [Window(analysis_start + d * DAY, analysis_start + (d + 1) * DAY) for d in range(args.days)]
    ours = {(r.current_start, r.metric): r for r in estimate_cbpe_windows(client, fit, windows)}
    driftwarden_s, driftwarden_cpu = time.perf_counter() - t, cpu_seconds() - c
    print(
        f"driftwarden: fit {fitted:.2f} s ({fitted_cpu:.2f} CPU-s), {args.days} windows estimated, "
        f"total {driftwarden_s:.2f} s wall, {driftwarden_cpu:.2f} CPU-s; load {load()}"
    )

    import nannyml

    t, c = time.perf_counter(), cpu_seconds()
    estimator = nannyml.CBPE(
        y_pred_proba="y_pred_proba",
        y_pred="y_pred",
        y_true="y_true",
        timestamp_column_name="timestamp",
        metrics=list(METRICS),
        chunk_period="D",
        problem_type="classification_binary",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(reference)
        expected = estimator.estimate(analysis.drop(columns=["y_true"])).filter(period="analysis").to_df()
    nannyml_s, nannyml_cpu = time.perf_counter() - t, cpu_seconds() - c
    print(f"NannyML: {nannyml_s:.2f} s wall, {nannyml_cpu:.2f} CPU-s; load {load()}")

    worst, same_alerts, compared = 0.0, True, 0
    for _, row in expected.iterrows():
        start = pd.Timestamp(row[("chunk", "start_date")]).tz_localize("UTC").to_pydatetime()
        for metric in METRICS:
            r = ours[(start, metric)]
            tolerance = max(3 * row[(metric, "sampling_error")], 0.01)
            worst = max(worst, abs(r.estimated - row[(metric, "value")]) / tolerance)
            same_alerts &= r.alert == bool(row[(metric, "alert")])
            compared += 1
    alerts = sum(r.alert for r in ours.values())
    print(
        f"{compared} estimates compared: largest difference {worst:.4f} of the tolerance "
        f"(max(3 sampling errors, 0.01)); alerts identical: {same_alerts} ({alerts} alerts)"
    )
    print(
        f"speed-up: NannyML / driftwarden = {nannyml_s / driftwarden_s:.1f}x wall, "
        f"{nannyml_cpu / driftwarden_cpu:.1f}x CPU"
    )
    if not args.store:
        shutil.rmtree(path, ignore_errors=True)
    return 0 if worst <= 1 and same_alerts else 1


if __name__ == "__main__":
    sys.exit(main())
