"""Multivariate drift benchmark: PCA reconstruction error and the domain classifier on 1M rows x 25 features.

Data (generated inside ClickHouse, as ``bench/drift_vs_evidently.py``): 20 numeric features
N(0, 1) and 5 categorical ones (12 values); in the current window n00..n04 are shifted by 0.15
and c0 is skewed differently. Reference and current windows hold ``--rows`` events each.

Timed, in one run:

* anchor: one plain scan of both windows' feature arrays (``sumForEach(num_values)``), the least
  any method reading every value must do;
* ``pca_reconstruction``: the encoding (2 aggregate queries), the covariance of the reference
  (one pass), the reconstruction error of both windows with reference chunks (one pass) — every
  value is read in ClickHouse, only d x d sums leave it;
* ``domain_classifier``: a bounded sample of ``classifier_rows`` rows per window (10,000) and a
  5-fold cross-validated HistGradientBoosting with permutation importance;
* both methods as the detector runs them (``compute_multivariate``).

The goal of issue 15: multivariate drift of 1M rows x 25 features within 10 s on this machine.

    python bench/multivariate_drift.py [--rows 1000000] [--store DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from driftwarden import storage  # noqa: E402
from driftwarden.detectors.multivariate import MultivariateSettings, compute_multivariate  # noqa: E402
from driftwarden.detectors.window import Window  # noqa: E402
from tests.drift_data import insert_synthetic  # noqa: E402

NUMERIC = 20
CATEGORICAL = 5
UTC = dt.UTC
SHIFTS = [0.15] * 5 + [0.0] * (NUMERIC - 5)
SKEWS = [1.2] + [2.0] * (CATEGORICAL - 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="events per window (default 1,000,000)")
    parser.add_argument("--store", help="embedded store directory (default: a temporary one, removed after)")
    args = parser.parse_args()
    directory = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="bench-multivariate-"))
    try:
        client = storage.connect(f"chdb://{directory}")
        storage.migrate(client, retention_days=20000)
        t_ref = dt.datetime(2026, 1, 1, tzinfo=UTC)
        t_cur = t_ref + dt.timedelta(days=1)
        step_us = max(1, 86_400_000_000 // args.rows)
        t0 = time.perf_counter()
        insert_synthetic(client, "bench", t_ref, args.rows, NUMERIC, CATEGORICAL, step_us=step_us)
        insert_synthetic(
            client, "bench", t_cur, args.rows, NUMERIC, CATEGORICAL, shift=SHIFTS, skew=SKEWS, salt=1, step_us=step_us
        )
        client.command("OPTIMIZE TABLE inferences FINAL")
        print(f"loaded 2 x {args.rows:,} rows x {NUMERIC + CATEGORICAL} features in {time.perf_counter() - t0:.1f} s")
        reference = Window(t_ref, t_cur)
        current = Window(t_cur, t_cur + dt.timedelta(days=1))

        t0 = time.perf_counter()
        client.query(
            "SELECT count(), sumForEach(num_values), groupUniqArrayArray(cat_values) FROM inferences FINAL "
            "WHERE model = 'bench'"
        )
        anchor = time.perf_counter() - t0
        print(f"anchor: one scan of both windows' features: {anchor:.2f} s")

        timings = {}
        for methods in (("pca_reconstruction",), ("domain_classifier",), ("pca_reconstruction", "domain_classifier")):
            t0 = time.perf_counter()
            results = compute_multivariate(
                client, "bench", reference, current, settings=MultivariateSettings(methods=methods)
            )
            elapsed = time.perf_counter() - t0
            timings[methods] = elapsed
            for r in results:
                top = ", ".join(d["feature"] for d in r.drivers[:5])
                print(
                    f"  {r.method}: value {r.value:.4f} thresholds {r.lower_threshold:.4f}..{r.upper_threshold:.4f} "
                    f"alert {r.alert}; drivers {top}"
                )
            print(f"{' + '.join(methods)}: {elapsed:.2f} s ({elapsed / anchor:.1f}x the anchor scan)")
        both = timings[("pca_reconstruction", "domain_classifier")]
        print(f"both methods on {args.rows:,} vs {args.rows:,} rows x 25 features: {both:.2f} s (goal: under 10 s)")
    finally:
        if not args.store:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
