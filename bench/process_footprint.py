"""Lean processes: start-up of ``driftwarden --help`` and peak memory of ``driftwarden drift`` on a small window.

Anchors measured in the same run:

* start-up: a bare ``python -c pass`` of the same interpreter (median of ``--repeat`` runs each);
* memory: a process that only opens the embedded store and runs ``SELECT 1`` — the floor of any
  command that reads an embedded store (the chdb engine is a 550 MB library); its resident memory is
  printed split into mapped-file pages (the library's code the engine touched) and anonymous memory.

``driftwarden drift`` runs on 2,000 vs 2,000 events of 5 numeric and 2 categorical features with
``--multivariate none`` (the per-feature drift of this benchmark; the multivariate methods load
scikit-learn), and once with the default multivariate methods for comparison.

    python bench/process_footprint.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LOAD = textwrap.dedent(
    """
    import datetime as dt, sys
    from driftwarden import storage
    from tests.drift_data import insert_synthetic
    client = storage.connect(sys.argv[1], create_database=True)
    storage.migrate(client, retention_days=20000)
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    insert_synthetic(client, "small", start, 2000, 5, 2, step_us=1_000_000)
    insert_synthetic(client, "small", start + dt.timedelta(days=1), 2000, 5, 2, shift=0.3, salt=1, step_us=1_000_000)
    """
)
OPEN_ONLY = "import sys; from driftwarden import storage; storage.connect(sys.argv[1]).query('SELECT 1')"
# Resident memory split into pages of mapped files (the engine's library code) and anonymous memory (its heap)
RSS_SPLIT = (
    "status = dict(line.split(':', 1) for line in open('/proc/self/status')); "
    "print(', '.join(f'{k} {int(status[k].split()[0]) / 1024:.0f} MB' for k in ('VmRSS', 'RssFile', 'RssAnon')))"
)
PEAK = textwrap.dedent(
    """
    import resource, runpy, sys
    sys.argv = sys.argv[1:]
    try:
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    print(f"PEAK_MB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}", file=sys.stderr)
    """
)


def seconds(*args: str, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, check=True, timeout=120)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def peak_mb(*args: str) -> float:
    result = subprocess.run(
        [sys.executable, "-c", PEAK, *args], cwd=ROOT, capture_output=True, text=True, timeout=900, check=False
    )
    line = next((x for x in result.stderr.splitlines() if x.startswith("PEAK_MB ")), None)
    if line is None:
        raise SystemExit(result.stderr[-2000:])
    return float(line.split()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    bare = seconds("-c", "pass", repeat=args.repeat)
    help_s = seconds("-m", "driftwarden.cli", "--help", repeat=args.repeat)
    print(f"start-up, median of {args.repeat}: python -c pass {bare:.3f} s; driftwarden --help {help_s:.3f} s "
          f"({help_s - bare:.3f} s above the bare interpreter)")  # fmt: skip
    directory = tempfile.mkdtemp(prefix="dw-bench-footprint-")
    try:
        url = f"chdb://{directory}/store"
        subprocess.run([sys.executable, "-c", LOAD, url], cwd=ROOT, check=True, timeout=300)
        code = subprocess.run(
            [sys.executable, "-c", OPEN_ONLY + "; import resource; print(resource.getrusage(resource.RUSAGE_SELF)"
             ".ru_maxrss / 1024)", url],
            cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
        )  # fmt: skip
        floor = float(code.stdout.split()[-1])
        split = subprocess.run(
            [sys.executable, "-c", OPEN_ONLY + "; " + RSS_SPLIT, url],
            cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
        ).stdout.strip()  # fmt: skip
        print(f"the anchor's resident memory after SELECT 1: {split}")
        drift = ["drift", "--store", url, "--model", "small", "--reference", "2026-01-05..2026-01-06"]
        drift += ["--current", "2026-01-06..2026-01-07"]
        lean = peak_mb("driftwarden.cli", *drift, "--multivariate", "none")
        full = peak_mb("driftwarden.cli", *drift)
        print(f"peak RSS: open the embedded store + SELECT 1 {floor:.0f} MB (anchor); driftwarden drift "
              f"--multivariate none {lean:.0f} MB ({lean - floor:+.0f} MB); with the default multivariate methods "
              f"{full:.0f} MB")  # fmt: skip
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
