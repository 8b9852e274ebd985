"""Feature layout benchmark: which column layout serves per-feature drift queries best.

Inserts N events with 20 numeric and 5 categorical features into the embedded
ClickHouse engine, once per layout, through clickhouse-connect's Arrow insert
(the collector's write path), then times the two queries detectors run most:

* a 20-bin histogram of one numeric feature over a one-day window, and
* counts per category of one categorical feature over the same window.

Layouts: ``Map`` columns, the ``JSON`` type, parallel name/value arrays, and
one wide typed column per feature (the baseline: the fastest possible read,
but it needs a schema change per model, which a shared table cannot have).
Ratios are printed against the wide baseline measured in the same run.

    python bench/feature_layout.py [--events 1000000] [--store /tmp/dw-bench-layout]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time

import clickhouse_connect
import numpy as np
import pyarrow as pa

NUM = [f"n{i:02d}" for i in range(20)]
CAT = [f"c{i}" for i in range(5)]
DAY_US = 86_400 * 1_000_000
T0_US = 1_700_000_000 * 1_000_000


def make_data(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ts = T0_US + np.sort(rng.integers(0, 10 * DAY_US, n))
    num = rng.normal(0.0, 1.0, (n, len(NUM))) + np.arange(len(NUM))
    cat = rng.integers(0, 12, (n, len(CAT)))
    return ts, num, cat


def arrow_common(ts: np.ndarray) -> dict[str, pa.Array]:
    n = len(ts)
    return {
        "model": pa.array(["m"] * n).dictionary_encode(),
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "event_id": pa.array(np.arange(n, dtype=np.uint64)),
    }


LAYOUTS: dict[str, dict] = {
    "wide": {
        "ddl": ", ".join([f"{f} Float64" for f in NUM] + [f"{f} LowCardinality(String)" for f in CAT]),
        "num": "{f}",
        "cat": "{f}",
    },
    "map": {
        "ddl": "num Map(LowCardinality(String), Float64), cat Map(LowCardinality(String), String)",
        "num": "num['{f}']",
        "cat": "cat['{f}']",
    },
    "json": {
        "ddl": "features JSON",
        "num": "features.{f}::Float64",
        "cat": "features.{f}::String",
    },
    "arrays": {
        "ddl": "num_names Array(LowCardinality(String)), num_values Array(Float64), "
        "cat_names Array(LowCardinality(String)), cat_values Array(String)",
        "num": "num_values[indexOf(num_names, '{f}')]",
        "cat": "cat_values[indexOf(cat_names, '{f}')]",
    },
}


def arrow_batch(layout: str, ts, num, cat) -> pa.Table:
    cols = arrow_common(ts)
    n = len(ts)
    cat_str = cat.astype(str)
    if layout == "wide":
        for j, f in enumerate(NUM):
            cols[f] = pa.array(num[:, j])
        for j, f in enumerate(CAT):
            cols[f] = pa.array(cat_str[:, j])
    elif layout == "map":
        offsets = pa.array(np.arange(0, (n + 1) * len(NUM), len(NUM), dtype=np.int32))
        keys = pa.array(np.tile(NUM, n))
        cols["num"] = pa.MapArray.from_arrays(offsets, keys, pa.array(num.ravel()))
        offsets = pa.array(np.arange(0, (n + 1) * len(CAT), len(CAT), dtype=np.int32))
        cols["cat"] = pa.MapArray.from_arrays(offsets, pa.array(np.tile(CAT, n)), pa.array(cat_str.ravel()))
    elif layout == "json":
        import json

        rows = (
            {**dict(zip(NUM, map(float, num[i]), strict=True)), **dict(zip(CAT, cat_str[i], strict=True))}
            for i in range(n)
        )
        cols["features"] = pa.array([json.dumps(row) for row in rows])
    elif layout == "arrays":
        offsets = pa.array(np.arange(0, (n + 1) * len(NUM), len(NUM), dtype=np.int32))
        cols["num_names"] = pa.ListArray.from_arrays(offsets, pa.array(np.tile(NUM, n)))
        cols["num_values"] = pa.ListArray.from_arrays(offsets, pa.array(num.ravel()))
        offsets = pa.array(np.arange(0, (n + 1) * len(CAT), len(CAT), dtype=np.int32))
        cols["cat_names"] = pa.ListArray.from_arrays(offsets, pa.array(np.tile(CAT, n)))
        cols["cat_values"] = pa.ListArray.from_arrays(offsets, pa.array(cat_str.ravel()))
    return pa.table(cols)


def best_of(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--store", default="/tmp/dw-bench-layout")
    args = ap.parse_args()
    shutil.rmtree(args.store, ignore_errors=True)
    client = clickhouse_connect.get_client(interface="chdb", path=args.store)
    ts, num, cat = make_data(args.events)
    lo = T0_US // 1_000_000 + 3 * 86_400
    window = f"ts >= toDateTime64({lo}, 6, 'UTC') AND ts < toDateTime64({lo + 86_400}, 6, 'UTC')"
    results = {}
    for layout, spec in LAYOUTS.items():
        client.command(f"DROP TABLE IF EXISTS ev_{layout}")
        client.command(
            f"CREATE TABLE ev_{layout} (model LowCardinality(String), ts DateTime64(6, 'UTC'), "
            f"event_id UInt64, {spec['ddl']}) ENGINE = MergeTree ORDER BY (model, ts)"
        )
        t_build = t_insert = 0.0
        for s in range(0, args.events, args.batch):
            t = time.perf_counter()
            batch = arrow_batch(layout, ts[s : s + args.batch], num[s : s + args.batch], cat[s : s + args.batch])
            t_build += time.perf_counter() - t
            t = time.perf_counter()
            client.insert_arrow(f"ev_{layout}", batch)
            t_insert += time.perf_counter() - t
        client.command(f"OPTIMIZE TABLE ev_{layout} FINAL")
        f_num, f_cat = spec["num"].format(f="n07"), spec["cat"].format(f="c3")
        hist_sql = f"SELECT histogram(20)({f_num}) FROM ev_{layout} WHERE model = 'm' AND {window}"
        cat_sql = f"SELECT {f_cat} AS v, count() FROM ev_{layout} WHERE model = 'm' AND {window} GROUP BY v"
        all_sql = (
            "SELECT "
            + ", ".join(f"quantilesExact(0.1, 0.5, 0.9)({spec['num'].format(f=f)})" for f in NUM)
            + (f" FROM ev_{layout} WHERE model = 'm' AND {window}")
        )
        hist_rows = client.query(hist_sql).result_rows
        assert hist_rows and len(hist_rows[0][0]) > 0, layout
        size = client.query(
            f"SELECT sum(data_compressed_bytes) FROM system.parts WHERE table = 'ev_{layout}' AND active"
        ).result_rows[0][0]
        results[layout] = {
            "insert_s": t_insert,
            "hist_ms": best_of(lambda q=hist_sql: client.query(q)) * 1000,
            "cat_ms": best_of(lambda q=cat_sql: client.query(q)) * 1000,
            "all_ms": best_of(lambda q=all_sql: client.query(q), 3) * 1000,
            "mb": size / 1e6,
        }
        print(layout, {k: round(v, 2) for k, v in results[layout].items()}, flush=True)
    base = results["wide"]
    print(f"\n{args.events:,} events, 20 numeric + 5 categorical features; ratios are against 'wide'")
    print(
        f"{'layout':8} {'insert s':>9} {'hist ms':>9} {'cat ms':>9} {'20 feat ms':>11} {'MB':>7}  hist x  cat x  all x"
    )
    for layout, r in results.items():
        print(
            f"{layout:8} {r['insert_s']:9.2f} {r['hist_ms']:9.1f} {r['cat_ms']:9.1f} {r['all_ms']:11.1f} {r['mb']:7.1f}"
            f"  {r['hist_ms'] / base['hist_ms']:5.1f}  {r['cat_ms'] / base['cat_ms']:5.1f}"
            f"  {r['all_ms'] / base['all_ms']:5.1f}"
        )


if __name__ == "__main__":
    main()
