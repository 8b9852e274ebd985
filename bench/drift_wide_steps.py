"""Wide models: where a first run's time goes, and the least time its per-value work takes in the engine.

On the data of ``bench/drift_wide.py`` (100,000 vs 100,000 events of N numeric features, every tenth shifted),
generated in a new store:

1. a first run (``compute_drift`` on a store without profiles), in a fresh process, query by query: wall and CPU
   seconds of each query of the run (CPU of the whole process, the embedded engine's threads included);
2. in the same process, the per-value steps of counting each window into cells, each step cumulative (it runs
   the steps before it too), the median of ``--repeat`` runs: read the window's value arrays; ``+`` the
   ``ARRAY JOIN`` and each value's feature position; ``+`` gathering each feature's values; ``+`` sorting them;
   ``+`` the array passes that read the cells off the sorted values (the comparison's cells,
   ``cells.window_cell_arrays``), for the features of the run's first profile scan (all of them up to 600
   features of 100,000 events). The last step of the two windows together is the time any first run on sorted
   cells spends before it writes a profile or compares anything;
3. with ``--evidently``, Evidently's ``DataDriftPreset`` on the same rows (``bench/drift_wide.py``'s step, in a
   fresh process), and the first run that would be 100 times faster.

    python bench/drift_wide_steps.py [--features 500] [--rows 100000] [--repeat 3] [--evidently]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import textwrap

import drift_wide  # bench/drift_wide.py, beside this file

STEPS = textwrap.dedent(
    """
    import datetime as dt, json, statistics, sys, time
    from driftwarden import storage
    from driftwarden.detectors.drift import cells, compute_drift, sql
    from driftwarden.detectors.window import Window
    client = storage.connect(sys.argv[1])
    repeat = int(sys.argv[2])
    start = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    day = dt.timedelta(days=1)
    reference, current = Window(start, start + day), Window(start + day, start + 2 * day)

    queries = []
    def timed(method):
        def call(query, *args, **kwargs):
            t, c = time.perf_counter(), time.process_time()
            try:
                return method(query, *args, **kwargs)
            finally:
                wall, cpu = time.perf_counter() - t, time.process_time() - c
                queries.append((" ".join(query.split())[:90], wall, cpu, dict(kwargs.get("parameters") or {})))
        return call
    query, command = client.query, client.command
    client.query, client.command = timed(query), timed(command)
    t, c = time.perf_counter(), time.process_time()
    compute_drift(client, "wide", reference, current)
    first = (time.perf_counter() - t, time.process_time() - c)
    client.query, client.command = query, command
    profile = next(p for q, _, _, p in queries if q.startswith("INSERT INTO reference_profiles") and "origins" in p)

    source = sql.Source("wide", None)
    def steps(window):
        where = source.where(window)
        inner = (f"SELECT {sql.position('n')} AS position, x + 0. AS v FROM inferences FINAL "
                 f"ARRAY JOIN num_names AS n, num_values AS x WHERE {where} AND position > 0 AND isFinite(v)")
        gathered = cells._sorted_values(source, window, "feature")
        if " ".join(inner.split()) not in " ".join(gathered.split()):
            raise SystemExit("cells._sorted_values no longer reads the window as this benchmark does: update it")
        return [
            ("read the value arrays", f"SELECT sum(length(num_values)) FROM inferences FINAL WHERE {where}"),
            ("+ ARRAY JOIN, positions", f"SELECT count(), sum(v) FROM ({inner})"),
            ("+ gather per feature",
             f"SELECT sum(length(s)) FROM (SELECT groupArray(v) AS s FROM ({inner}) GROUP BY position)"),
            ("+ sort", f"SELECT sum(length(s)) FROM ({gathered})"),
            ("+ cell passes", f"SELECT sum(length(keys)) FROM ({cells.window_cell_arrays(source, window, 'feature')})"),
        ]
    grid = {**source.parameters(), **{k: profile[k] for k in ("names", "origins", "scales")}}
    measured = []
    for label, window in (("reference", reference), ("current", current)):
        for step, sql_text in steps(window):
            walls, cpus = [], []
            for _ in range(repeat):
                t, c = time.perf_counter(), time.process_time()
                client.query(sql_text, parameters=grid)
                walls.append(time.perf_counter() - t)
                cpus.append(time.process_time() - c)
            measured.append((label, step, statistics.median(walls), statistics.median(cpus)))
    print("RESULT " + json.dumps({"first": first, "queries": [q[:3] for q in queries], "steps": measured}))
    """
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=500)
    parser.add_argument("--rows", type=int, default=100_000, help="events per window")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each step (the median is printed)")
    parser.add_argument("--evidently", action="store_true", help="run Evidently on the same rows (minutes)")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix=f"dw-bench-steps-{args.features}-")
    try:
        store = f"chdb://{directory}/store"
        out = directory if args.evidently else ""
        drift_wide.run(drift_wide.GENERATE, store, str(args.features), str(args.rows), out)
        result = drift_wide.run(STEPS, store, str(args.repeat))
        wall, cpu = result["first"]
        print(f"{args.rows:,} vs {args.rows:,} events x {args.features} numeric features")
        print(f"\nfirst run: {wall:.2f} s ({cpu:.1f} CPU-s), query by query (those over 0.05 s):")
        for query, q_wall, q_cpu in result["queries"]:
            if q_wall > 0.05:
                print(f"  {q_wall:6.2f} s ({q_cpu:5.2f} CPU-s)  {query}")
        print(f"\nper-value steps, each cumulative (median of {args.repeat}):")
        print("| window | step | wall s | CPU-s |\n| --- | --- | ---: | ---: |")
        for window, step, s_wall, s_cpu in result["steps"]:
            print(f"| {window} | {step} | {s_wall:.2f} | {s_cpu:.2f} |")
        floor = sum(w for _, step, w, _ in result["steps"] if step == "+ cell passes")
        print(f"\nboth windows counted into cells: {floor:.2f} s, {floor / wall:.0%} of the first run", flush=True)
        if args.evidently:
            ev = drift_wide.run(drift_wide.EVIDENTLY, directory)
            print(
                f"Evidently's DataDriftPreset: {ev['seconds']:.1f} s ({ev['cpu']:.1f} CPU-s): "
                f"{ev['seconds'] / wall:.1f}x the first run; 100x needs a first run of {ev['seconds'] / 100:.2f} s, "
                f"{ev['seconds'] / 100 - floor:+.2f} s beside the two windows' cells"
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
