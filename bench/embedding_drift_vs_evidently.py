"""Embedding drift benchmark: driftwarden in the embedded store against Evidently's ``EmbeddingsDrift``, one run.

Data: ``--rows`` 384-dimensional vectors per window (the size of all-MiniLM-L6-v2's), drawn from
a Gaussian with a random covariance; scenario ``drift`` moves the current window's mean by 0.02
standard deviations along every axis (a small shift, spread over all components), ``weak`` by 0.003
(too weak for a classifier trained on a small sample: the first sample is undecided and the larger one
decides), scenario ``same`` does not. Written once as ``.npy``; each side then runs in a fresh
process, so that its peak memory (``ru_maxrss``) is its own:

* driftwarden: a store with the vectors (built before, not timed), then ``compute_drift`` on the
  embedding feature with the default method (the domain classifier on a first sample of 2,000 vectors
  per window, on up to 20,000 when that is undecided; the counts, dimensions and means reduced in
  ClickHouse over all of them, the first sample taken in the same scan); scikit-learn and scipy are
  imported before timing, as Evidently (and its scikit-learn) is on its side;
* Evidently: its default method (``model()``, no bootstrap above 1000 rows) on the two frames
  (built before timing), called as ``EmbeddingsDrift`` calls it; ``--evidently report`` times the
  whole ``Report([EmbeddingsDrift(...)])`` instead, whose t-SNE picture of 5,000 vectors adds minutes.

Verdicts must be the same; the ratio is against Evidently in the same run. Each side reports wall and
CPU seconds (``time.process_time``: all threads of its process, the embedded ClickHouse's included) and
the load average when it finished.

    python bench/embedding_drift_vs_evidently.py [--rows 100000] [--scenarios drift,same,weak]
        [--evidently method|report]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DO_NOT_TRACK"] = "1"  # Evidently's telemetry switch, before any import of it
os.environ["EVIDENTLY_DISABLE_TELEMETRY"] = "1"

DIM = 384
REFERENCE = "2031-01-01..2031-01-08"
CURRENT = "2031-01-08..2031-01-15"


def make_data(rows: int, scenario: str, tmp: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(DIM, DIM)) / np.sqrt(DIM)
    ref = (rng.normal(size=(rows, DIM)) @ mixing).astype(np.float32)
    cur = rng.normal(size=(rows, DIM)) @ mixing
    if scenario == "drift":
        cur += 0.02 * ref.std(axis=0)
    elif scenario == "weak":
        cur += 0.003 * ref.std(axis=0)
    np.save(tmp / "reference.npy", ref)
    np.save(tmp / "current.npy", cur.astype(np.float32))


def build_store(tmp: Path, store: Path) -> None:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from driftwarden.storage.migrate import migrate
    from driftwarden.storage.store import connect

    client = connect(f"chdb://{store}")
    migrate(client, retention_days=3650)
    for name, start in (("reference", "2031-01-01"), ("current", "2031-01-08")):
        vectors = np.load(tmp / f"{name}.npy")
        n = len(vectors)
        ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.arange(n) * (7 * 86_400_000_000 // n), unit="us")
        for lo in range(0, n, 50_000):
            hi = min(n, lo + 50_000)
            k = hi - lo
            inner = pa.FixedSizeListArray.from_arrays(pa.array(vectors[lo:hi].ravel()), DIM).cast(
                pa.list_(pa.float32())
            )
            one = pa.array(np.arange(k + 1, dtype=np.int32))
            table = pa.table(
                {
                    "event_id": pa.array([os.urandom(16) for _ in range(k)], pa.binary(16)),
                    "ts": pa.array(ts[lo:hi], pa.timestamp("us", tz="UTC")),
                    "model": pa.array(["vectors"] * k),
                    "emb_names": pa.ListArray.from_arrays(one, pa.array(["vec"] * k)),
                    "emb_values": pa.ListArray.from_arrays(one, inner),
                }
            )
            client.insert_arrow("inferences", table)


def run_driftwarden(store: Path) -> dict:
    import scipy.stats  # noqa: F401  imported before timing, as Evidently's libraries are
    import sklearn.linear_model  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import sklearn.model_selection  # noqa: F401

    from driftwarden.detectors.drift import FeatureSpec, compute_drift
    from driftwarden.detectors.window import Window
    from driftwarden.storage.store import connect

    client = connect(f"chdb://{store}")
    t0, c0 = time.perf_counter(), time.process_time()
    report = compute_drift(
        client, "vectors", Window.parse(REFERENCE), Window.parse(CURRENT), features=[FeatureSpec("vec", "embedding")]
    )
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    (vec,) = report.features
    first = vec.details.get("first_sample")
    return {
        "seconds": seconds,
        "cpu": cpu,
        "load": os.getloadavg()[0],
        "score": vec.statistic,
        "drifted": vec.drifted,
        "sample": vec.details.get("sample"),
        "first_sample": first and {"statistic": round(first["statistic"], 4), "undecided": first["undecided"]},
    }


def run_evidently(tmp: Path, mode: str) -> dict:
    """``report``: the whole ``Report([EmbeddingsDrift])`` (its t-SNE picture of 2,500 + 2,500 vectors
    included); ``method``: only its default drift method, ``model()``, called as the metric calls it."""
    import warnings

    import numpy as np
    import pandas as pd

    columns = [f"e{j}" for j in range(DIM)]
    ref_frame = pd.DataFrame(np.load(tmp / "reference.npy"), columns=columns)
    cur_frame = pd.DataFrame(np.load(tmp / "current.npy"), columns=columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "method":
            from evidently.legacy.metrics.data_drift.embedding_drift_methods import model

            t0, c0 = time.perf_counter(), time.process_time()
            score, drifted, _ = model(bootstrap=len(ref_frame) < 1000)(cur_frame, ref_frame)
            return {
                "seconds": time.perf_counter() - t0,
                "cpu": time.process_time() - c0,
                "load": os.getloadavg()[0],
                "score": float(score),
                "drifted": bool(drifted),
            }
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics.embeddings import EmbeddingsDrift

        definition = DataDefinition(numerical_columns=columns, embeddings={"vec": columns})
        ref = Dataset.from_pandas(ref_frame, definition)
        cur = Dataset.from_pandas(cur_frame, definition)
        t0, c0 = time.perf_counter(), time.process_time()
        snapshot = Report([EmbeddingsDrift(embeddings_name="vec")]).run(cur, ref)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    score = float(snapshot.dict()["metrics"][0]["value"])
    # EmbeddingsDrift's default method: model(bootstrap=False) above 1000 rows, drift when ROC AUC > 0.55
    return {"seconds": seconds, "cpu": cpu, "load": os.getloadavg()[0], "score": score, "drifted": score > 0.55}


def worker(side: str, path: str) -> None:
    out = run_driftwarden(Path(path)) if side == "driftwarden" else run_evidently(Path(path), side.split(":")[1])
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def child(*args: str) -> dict:
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def scenario(rows: int, name: str, skip_evidently: bool, evidently: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="embedding-bench-"))
    try:
        make_data(rows, name, tmp)
        store = tmp / "store"
        t0 = time.perf_counter()
        child("--build", str(tmp), str(store))
        print(f"[{name} {rows:,} vs {rows:,} x {DIM}] store built in {time.perf_counter() - t0:.1f} s (not timed)")
        ours = child("--worker", "driftwarden", str(store))
        print(
            f"  driftwarden: {ours['seconds']:.2f} s (CPU {ours['cpu']:.2f} s, load {ours['load']:.1f}), "
            f"peak {ours['peak_mb']:.0f} MB, ROC AUC {ours['score']:.4f}, drift={ours['drifted']}, "
            f"sample {ours['sample']}, first sample {ours['first_sample']}"
        )
        if not skip_evidently:
            theirs = child("--worker", f"evidently:{evidently}", str(tmp))
            print(
                f"  Evidently ({evidently}): {theirs['seconds']:.2f} s (CPU {theirs['cpu']:.2f} s, load "
                f"{theirs['load']:.1f}), peak {theirs['peak_mb']:.0f} MB, ROC AUC {theirs['score']:.4f}, "
                f"drift={theirs['drifted']}"
            )
            same = "same verdict" if theirs["drifted"] == ours["drifted"] else "DIFFERENT VERDICT"
            print(
                f"  ratio: driftwarden is {theirs['seconds'] / ours['seconds']:.1f}x faster in wall time, "
                f"{theirs['cpu'] / ours['cpu']:.1f}x in CPU time; {same}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--build":
        build_store(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="vectors per window (default 100000)")
    parser.add_argument("--scenarios", default="drift,same", help="drift, same and/or weak (default drift,same)")
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument(
        "--evidently",
        choices=("method", "report"),
        default="method",
        help="time Evidently's default method alone (default; the fairer anchor) or its whole report (with t-SNE)",
    )
    args = parser.parse_args()
    for name in args.scenarios.split(","):
        scenario(args.rows, name, args.skip_evidently, args.evidently)


if __name__ == "__main__":
    main()
