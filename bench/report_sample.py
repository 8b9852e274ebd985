"""Report sample benchmark: the cost of drawing a report's bounded, seeded sample inside ClickHouse.

A report gives Evidently at most ``sample_size`` events per window, drawn with
``ORDER BY cityHash64(event_id, seed) LIMIT n`` (deterministic for a seed). This inserts N
events (20 numeric and 5 categorical features, 10 days) into a fresh embedded store and times,
over a window holding a tenth of them and over all of them:

* baseline: the mean of one numeric feature over the window (``FINAL``), the least a drift
  query of one feature reads;
* ``window_counts``: count and the event-id fingerprint that keys the report cache;
* ``one pass``: :func:`driftwarden.detectors.api.queries.sample`, top-n by hash over the window's rows;
* ``two-step``: the ids of the top-n by hash first, then only those rows' features (the rows
  put in hash order afterwards, as a report needs).

Then one whole report (sample + Evidently + provenance, written to the cache) of the day
against the day before, generated, then served from the cache.

Ratios are against the baseline measured in the same run.

    python bench/report_sample.py [--events 1000000] [--sample-size 5000] [--store /tmp/dw-bench-sample]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from driftwarden import storage  # noqa: E402
from driftwarden.auth import Principal  # noqa: E402
from driftwarden.detectors.api import queries  # noqa: E402
from driftwarden.detectors.window import Window  # noqa: E402

UTC = dt.UTC
T0 = dt.datetime(2024, 1, 1, tzinfo=UTC)


def populate(client, n: int) -> None:
    client.command(
        f"""
        INSERT INTO inferences (event_id, ts, model, model_version, num_names, num_values, cat_names, cat_values,
                                prediction)
        SELECT generateUUIDv4(number),
               toDateTime64('2024-01-01 00:00:00', 6, 'UTC')
                 + toIntervalMicrosecond(intDiv(number * 864000000000, {n})),
               'm', 'v1',
               arrayMap(i -> concat('n', toString(i)), range(20)),
               arrayMap(i -> i + randNormal(0, 1), range(20)),
               ['c0', 'c1', 'c2', 'c3', 'c4'],
               arrayMap(i -> toString(rand(i) % 12), range(5)),
               randNormal(0, 1)
        FROM numbers({n})
        """
    )


def timed(fn, repeat: int) -> float:
    fn()  # warm the caches once
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def two_step(client, window: Window, size: int, seed: int) -> list:
    rows = client.query(
        f"""
        SELECT cityHash64(event_id, {{seed:UInt64}}), toString(event_id),
               num_names, num_values, cat_names, cat_values, prediction, prediction_label
        FROM inferences FINAL
        WHERE model = {{m:String}} AND {window.sql()} AND event_id IN (
            SELECT event_id FROM inferences FINAL WHERE model = {{m:String}} AND {window.sql()}
            ORDER BY cityHash64(event_id, {{seed:UInt64}}), event_id LIMIT {{n:UInt32}})
        """,
        parameters={"m": "m", "seed": seed, "n": size},
    ).result_rows
    return [row[2:] for row in sorted(rows, key=lambda r: (r[0], r[1]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sample-size", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--store", default="/tmp/dw-bench-sample")
    args = parser.parse_args()
    shutil.rmtree(args.store, ignore_errors=True)
    shutil.rmtree(f"{args.store}-reports", ignore_errors=True)
    client = storage.connect(f"chdb://{args.store}?database=bench", create_database=True)
    storage.migrate(client, retention_days=3650)
    t0 = time.perf_counter()
    populate(client, args.events)
    print(f"inserted {args.events:,} events in {time.perf_counter() - t0:.1f} s")
    everyone = Principal("bench")
    for label, window in (
        ("one day (1/10 of the events)", Window(T0, T0 + dt.timedelta(days=1))),
        ("all ten days", Window(T0, T0 + dt.timedelta(days=10))),
    ):
        rows = client.query(f"SELECT count() FROM inferences FINAL WHERE model = 'm' AND {window.sql()}").result_rows
        base = timed(
            lambda w=window: client.query(f"SELECT count() FROM inferences FINAL WHERE {w.sql()}"), args.repeat
        )
        results = {
            "window_counts": timed(lambda w=window: queries.window_counts(client, everyone, "m", w), args.repeat),
            "one pass (sample)": timed(
                lambda w=window: queries.sample(client, everyone, "m", w, args.sample_size, 0), args.repeat
            ),
            "two-step": timed(lambda w=window: two_step(client, w, args.sample_size, 0), args.repeat),
        }
        same = queries.sample(client, everyone, "m", window, args.sample_size, 0)
        other = two_step(client, window, args.sample_size, 0)
        print(f"\n{label}: {rows[0][0]:,} events, sample {args.sample_size:,}, median of {args.repeat}")
        print(f"  {'baseline one feature':<22} {base * 1000:9.1f} ms   1.00x")
        for name, seconds in results.items():
            print(f"  {name:<22} {seconds * 1000:9.1f} ms  {seconds / base:5.2f}x")
        drawn = [r["prediction"] for r in same] == [r[4] for r in other]  # same rows, same order
        print(f"  both draw the same events: {drawn}")
    report_timings(client, args.sample_size, f"{args.store}-reports")


def report_timings(client, sample_size: int, cache_dir: str) -> None:
    from driftwarden.detectors.api.reports import build_report

    reference = Window(T0, T0 + dt.timedelta(days=1))
    current = Window(T0 + dt.timedelta(days=1), T0 + dt.timedelta(days=2))
    everyone = Principal("bench")
    build_report(client, everyone, "m", reference, current, sample_size=50, seed=1, cache_dir=cache_dir)  # imports
    t0 = time.perf_counter()
    report = build_report(
        client, everyone, "m", reference, current, sample_size=sample_size, seed=0, cache_dir=cache_dir
    )
    generated = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = build_report(
        client, everyone, "m", reference, current, sample_size=sample_size, seed=0, cache_dir=cache_dir
    )
    cached = time.perf_counter() - t0
    size = report.html_path.stat().st_size / 1e6
    print(f"\nreport of one day against the day before, sample {sample_size:,} per window, 20+5 features + prediction")
    print(f"  generated  {generated:7.2f} s   ({size:.1f} MB of HTML)")
    print(f"  cached     {cached * 1000:7.1f} ms  {generated / cached:6.0f}x faster (same hash: {again.cached})")


if __name__ == "__main__":
    main()
