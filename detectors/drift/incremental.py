"""Partial drift profiles per hour, kept up to date as data arrives and merged by a drift run.

A drift run over long windows would scan every event of both windows. Instead each hour of a
model's events is profiled once into ``drift_hour_profiles`` (migration 0021), on a grid that
depends on no window, and a run merges the hours its windows cover: only the partial hours at a
window's edges are read raw.

**The grid.** A numeric value ``v`` falls in the cell of its float's sign, exponent and top
``MANTISSA_BITS`` (7) mantissa bits — the relative-error grid of DDSketch and HDR histograms: a
cell ``[a, a + w)`` has ``w <= 2^-7 |a|``. Its key is the magnitude's bits shifted right by
``52 - 7`` (``m``), ``m`` for ``v >= 0`` and ``-1 - m`` below, so keys sort as values do. Per
cell an hour keeps the count, the sum of the values' offsets ``u = (v - a) / w`` in ``2^-16``
cells (the next 16 mantissa bits: integers, exact in any order) and of their squares, and the
smallest and largest value; categorical features keep counts per category. Counts add up, so
the hours of a window merge by summing (:mod:`driftwarden.detectors.drift.incremental_statistics` reads
the statistics off the merged cells with their error bounds). 7 bits rather than 8: half the cells
(about 3,000 per feature and hour of 400k normal values), half the merge, a bound still 10 times
below the Wasserstein threshold on the benchmark (largest 8e-3 standard deviations).

**Exactly once.** An hour's row per (model, version, hour, feature) is replaced, never added
to: a rebuild writes a newer row (ReplacingMergeTree by ``built_at``, read with FINAL). Each row
carries its hour's ``stamp`` — ``cityHash64(rows, sum(cityHash64(event_id)))`` over the hour's
deduplicated (FINAL), non-replayed events of every version — taken *before* the hour is read; the
row with ``model_version = feature = ''`` records the stamp the hour was profiled at, and a row
``feature = '/names'`` per version lists the hour's feature names (what discovery reads). A run (or
:func:`refresh`) computes each hour's stamp from the events again: an hour whose stamp changed
(late rows, rows replaced or expired) is profiled again, and only rows of the current stamp are
merged, so a late row is counted once and a duplicate (same key, deduplicated by FINAL) never.

**As data arrives.** The detectors' scheduler calls :func:`refresh` for each model whose windows
are long enough on every pass: it profiles the hours completed since the last pass (and any
earlier hour of its look-back whose stamp changed). A run that finds a complete hour not profiled
yet profiles it itself, once for every later run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.drift import sql
from driftwarden.detectors.drift.sql import ARRAYS, WELL_FORMED_SIZES, Source
from driftwarden.detectors.window import Window, micros

MANTISSA_BITS = 7  # relative cell width 2^-7: about 3,000 cells per feature and hour of 400k normal values
CELL_SHIFT = 52 - MANTISSA_BITS
TICK_BITS = 16
TICK_SHIFT = CELL_SHIFT - TICK_BITS
TICKS = 1 << TICK_BITS
KEY_OFFSET = 1 << 39  # cell keys shifted into [0, 2^40) inside the grouping key ...
FEATURE_STRIDE = 1 << 40  # ... of feature position * 2^40 + shifted cell key
HOUR = 3600
HOUR_US = HOUR * 1_000_000
LEDGER = ""  # the feature (and model version) of the row that records an hour's stamp
NAMES = "/names"  # the feature of the row that lists a version's features in the hour (kind/name)


def _hour_of(ts: str) -> str:
    return f"intDiv(toUnixTimestamp64Micro({ts}), {HOUR_US}) * {HOUR}"


def cell_columns(value: str) -> str:
    """``k`` (the cell key) and ``t`` (the value's offset in the cell, in ``2^-16`` cells) of the Float64 ``value``
    (finite, -0 folded into 0)."""
    return (
        f"bitAnd(reinterpretAsUInt64({value}), {0x7FFF_FFFF_FFFF_FFFF}) AS bits, "
        f"bitShiftRight(bits, {CELL_SHIFT}) AS m, if({value} >= 0, toInt64(m), -1 - toInt64(m)) AS k, "
        f"bitAnd(bitShiftRight(bits, {TICK_SHIFT}), {TICKS - 1}) AS j, bitXor(j, if({value} >= 0, 0, {TICKS - 1})) AS t"
    )


def _ranges(hours: list[int]) -> str:
    """A predicate on ``ts`` selecting the hours (epoch seconds of their starts), contiguous ones as one range."""
    runs: list[list[int]] = []
    for h in sorted(set(hours)):
        if runs and h == runs[-1][1]:
            runs[-1][1] = h + HOUR
        else:
            runs.append([h, h + HOUR])
    return " OR ".join(
        f"(ts >= fromUnixTimestamp64Micro({a * 1_000_000}, 'UTC') "
        f"AND ts < fromUnixTimestamp64Micro({b * 1_000_000}, 'UTC'))"
        for a, b in runs
    )


def _events(model_version: str | None, where: str) -> str:
    version = " AND model_version = {model_version:String}" if model_version is not None else ""
    return f"model = {{model:String}}{version} AND NOT is_replay AND ({where}) AND {WELL_FORMED_SIZES}"


def live_stamps(client: Client, model: str, where: str) -> dict[int, int]:
    """``hour -> stamp`` of the events selected by ``where`` (a predicate on ``ts``), every version together.

    The stamp detects change, nothing more: it reads only the sort key (which FINAL reads anyway), so it
    costs a tenth of a CPU-second per 10M events.
    """
    query = f"""
        SELECT {_hour_of("ts")} AS h, cityHash64(count(), sum(cityHash64(event_id)))
        FROM inferences FINAL WHERE model = {{model:String}} AND NOT is_replay AND ({where})
        GROUP BY h"""
    return {int(h): int(s) for h, s in client.query(query, parameters={"model": model}).result_rows}


def stored_stamps(client: Client, model: str, first: int, last: int) -> dict[int, int]:
    """``hour -> stamp`` of the hours from ``first`` to ``last`` (inclusive) profiled so far."""
    rows = client.query(
        f"""SELECT toUnixTimestamp(hour), stamp FROM drift_hour_profiles FINAL
            WHERE model = {{model:String}} AND model_version = '{LEDGER}' AND feature = '{LEDGER}'
              AND hour >= toDateTime({{first:Int64}}, 'UTC') AND hour <= toDateTime({{last:Int64}}, 'UTC')""",
        parameters={"model": model, "first": first, "last": last},
    ).result_rows
    return {int(h): int(s) for h, s in rows}


def _build_numeric(target: str, where: str) -> str:
    """INSERT ... SELECT of one hour's cells of one version, per requested feature: one ``GROUP BY`` on a single
    UInt64 key (feature position, cell), then one row of arrays in key order per feature."""
    names, values = ARRAYS["numeric", target]
    return f"""
        INSERT INTO drift_hour_profiles (model, model_version, hour, feature, stamp, rows, cell_keys, cell_counts,
                                         cell_ticks, cell_ticks2, cell_min, cell_max)
        SELECT {{model:String}}, {{model_version:String}}, toDateTime({{hour:Int64}}, 'UTC'),
               concat('{target}/numeric/', {{names:Array(String)}}[f]), {{stamp:UInt64}}, sum(c),
               arraySort(groupArray(k)), arraySort((x, y) -> y, groupArray(c), groupArray(k)),
               arraySort((x, y) -> y, groupArray(ticks), groupArray(k)),
               arraySort((x, y) -> y, groupArray(ticks2), groupArray(k)),
               arraySort((x, y) -> y, groupArray(lo), groupArray(k)),
               arraySort((x, y) -> y, groupArray(hi), groupArray(k))
        FROM (
            SELECT intDiv(key, {FEATURE_STRIDE}) AS f, toInt64(key % {FEATURE_STRIDE}) - {KEY_OFFSET} AS k,
                   count() AS c, sum(t) AS ticks, sum(intDiv(t * t, {TICKS})) AS ticks2, min(v) AS lo, max(v) AS hi
            FROM (
                SELECT {sql.position("n")} AS position, x + 0. AS v, {cell_columns("v")},
                       position * {FEATURE_STRIDE} + toUInt64(k + {KEY_OFFSET}) AS key
                FROM inferences FINAL ARRAY JOIN {names} AS n, {values} AS x
                WHERE {_events("", where)} AND position > 0 AND isFinite(x)
            )
            GROUP BY key
        )
        GROUP BY f"""


def _build_categorical(target: str, where: str) -> str:
    """INSERT ... SELECT of one hour's counts per category of one version, per requested feature."""
    names, values = ARRAYS["categorical", target]
    return f"""
        INSERT INTO drift_hour_profiles (model, model_version, hour, feature, stamp, rows, categories, category_counts)
        SELECT {{model:String}}, {{model_version:String}}, toDateTime({{hour:Int64}}, 'UTC'),
               concat('{target}/categorical/', {{names:Array(String)}}[position]), {{stamp:UInt64}}, sum(c),
               arrayMap(e -> e.1, arraySort(groupArray((x, c)))), arrayMap(e -> e.2, arraySort(groupArray((x, c))))
        FROM (
            SELECT position, x, count() AS c
            FROM (
                SELECT {sql.position("n")} AS position, x
                FROM inferences FINAL ARRAY JOIN {names} AS n, {values} AS x
                WHERE {_events("", where)} AND position > 0
            )
            GROUP BY position, x
        )
        GROUP BY position"""


def _hour_contents(client: Client, model: str, where: str) -> list[tuple[str, list[str], list[str], int, int]]:
    """Per version in the hour: its numeric and categorical feature names, and its predictions and labels.

    The names come from ``DISTINCT`` over the ``ARRAY JOIN``ed LowCardinality names of one version (their
    dictionary positions): collecting every event's name arrays cost 0.7 CPU-s an hour of 400k events, and
    ``DISTINCT`` on (version, name) 0.5.
    """
    versions = client.query(
        f"""SELECT model_version, countIf(prediction IS NOT NULL), countIf(prediction_label != '')
            FROM inferences FINAL WHERE {_events(None, where)} GROUP BY model_version ORDER BY model_version""",
        parameters={"model": model},
    ).result_rows
    out = []
    for version, predictions, labels in versions:
        names = [
            list(
                client.query(
                    f"""SELECT arraySort(groupArray(toString(n)))
                        FROM (SELECT DISTINCT n FROM inferences FINAL ARRAY JOIN {column} AS n
                              WHERE {_events("", where)})""",
                    parameters={"model": model, "model_version": version},
                ).result_rows[0][0]
            )
            for column in ("num_names", "cat_names")
        ]
        out.append((version, names[0], names[1], int(predictions), int(labels)))
    return out


def build_hour(client: Client, model: str, hour: int) -> None:
    """Profile one hour (epoch seconds of its start) of every version of ``model``, replacing its earlier profile.

    The stamp is taken before the events are read: a row arriving meanwhile makes it stale, and the hour is
    profiled again next time; the ledger row is written last, so an interrupted build is redone.
    """
    where = _ranges([hour])
    stamp = live_stamps(client, model, where).get(hour)
    if stamp is None:
        return
    for version, numeric, categorical, predictions, labels in _hour_contents(client, model, where):
        parameters = {"model": model, "model_version": version, "hour": hour, "stamp": stamp}
        for build, target, names in (
            (_build_numeric, "feature", numeric),
            (_build_categorical, "feature", categorical),
            (_build_numeric, "prediction", ["prediction"] if predictions else []),
            (_build_categorical, "prediction", ["prediction_label"] if labels else []),
        ):
            if names:
                client.command(build(target, where), parameters={**parameters, "names": names})
        # every name seen, also those without a finite value (which have no cells): what discovery finds
        seen = [f"numeric/{n}" for n in numeric] + [f"categorical/{n}" for n in categorical]
        seen += (["prediction"] if predictions else []) + (["prediction_label"] if labels else [])
        client.command(
            f"""INSERT INTO drift_hour_profiles (model, model_version, hour, feature, stamp, categories)
                SELECT {{model:String}}, {{model_version:String}}, toDateTime({{hour:Int64}}, 'UTC'), '{NAMES}',
                       {{stamp:UInt64}}, {{seen:Array(String)}}""",
            parameters={**parameters, "seen": seen},
        )
    client.command(
        f"""INSERT INTO drift_hour_profiles (model, model_version, hour, feature, stamp)
            SELECT {{model:String}}, '{LEDGER}', toDateTime({{hour:Int64}}, 'UTC'), '{LEDGER}', {{stamp:UInt64}}""",
        parameters={"model": model, "hour": hour, "stamp": stamp},
    )


def stale_hours(live: dict[int, int], stored: dict[int, int]) -> list[int]:
    """The hours whose events changed since they were profiled, or that never were."""
    return sorted(h for h, stamp in live.items() if stored.get(h) != stamp)


def refresh(client: Client, model: str, now: dt.datetime, lookback: dt.timedelta, lag: dt.timedelta) -> int:
    """Profile every completed hour (ended at least ``lag`` before ``now``) of the last ``lookback`` that is not
    profiled yet or whose events changed since; returns the number of hours profiled."""
    end = (int((now - lag).timestamp()) // HOUR) * HOUR
    start = (int((now - lookback).timestamp()) // HOUR) * HOUR
    if end <= start:
        return 0
    live = live_stamps(client, model, _ranges(list(range(start, end, HOUR))))
    stale = stale_hours(live, stored_stamps(client, model, start, end - HOUR))
    for hour in stale:
        build_hour(client, model, hour)
    return len(stale)


def refresh_window(client: Client, model: str, window: Window) -> int:
    """Profile the complete hours of ``window`` not profiled at their current stamp (a drift reference, once);
    returns how many were."""
    return window_hours(client, model, window).hours_built


def worth_profiling(client: Client, model: str, window: Window, min_rows: int, max_numeric: int) -> bool:
    """Whether drift runs over windows like ``window`` read hour profiles: the window holds at least ``min_rows``
    events of at most ``max_numeric`` numeric features (a count without FINAL: a hint, not a figure)."""
    rows, widest = client.query(
        f"SELECT count(), max(num_names.size0) FROM inferences WHERE model = {{model:String}} AND NOT is_replay "
        f"AND {window.sql('ts')}",
        parameters={"model": model},
    ).result_rows[0]
    return int(rows) >= max(min_rows, 1) and int(widest or 0) <= max_numeric


@dataclass(frozen=True)
class WindowHours:
    """How a window is read: its complete hours from their profiles (with their stamps), the rest raw."""

    window: Window
    stamps: dict[int, int]  # hour -> stamp of the complete hours read from their profiles
    edges: str  # a predicate on ts selecting the rest: the partial hours at the window's edges ('0' when none)
    hours_built: int
    hours_raw: int = 0  # complete hours read raw: not profiled at their current stamp


def window_hours(client: Client, model: str, window: Window, build: bool = True) -> WindowHours:
    """The window's complete hours, each profiled (again) when its profile is missing or stale (with ``build``;
    else read raw), and its edges."""
    first = -(-micros(window.start) // HOUR_US) * HOUR  # the first hour starting inside the window
    last = (micros(window.end) // HOUR_US) * HOUR  # the end of the last complete hour
    live: dict[int, int] = {}
    complete: dict[int, int] = {}
    built = 0
    if first < last:
        live = live_stamps(client, model, _ranges(list(range(first, last, HOUR))))
        stored = stored_stamps(client, model, first, last - HOUR)
        stale = stale_hours(live, stored) if build else []
        for hour in stale:
            build_hour(client, model, hour)
        if stale:
            # an event that arrived during the builds leaves its hour stale: that hour is read raw
            stored = stored_stamps(client, model, first, last - HOUR)
            built = len(stale)
        complete = {h: stamp for h, stamp in live.items() if stored.get(h) == stamp}
    edges = []
    if last <= first:
        edges.append(window.sql("ts"))
    else:
        if micros(window.start) < first * 1_000_000:
            edges.append(Window(window.start, dt.datetime.fromtimestamp(first, dt.UTC)).sql("ts"))
        if last * 1_000_000 < micros(window.end):
            edges.append(Window(dt.datetime.fromtimestamp(last, dt.UTC), window.end).sql("ts"))
        raw = [h for h in live if h not in complete]
        if raw:
            edges.append(_ranges(raw))
    hours_raw = sum(1 for h in live if h not in complete)
    return WindowHours(window, complete, " OR ".join(f"({e})" for e in edges) or "0", built, hours_raw)


# A profile row is read while its hour's events are those it was built from.
STAMP_MATCH = (
    "stamp = transform(toInt64(toUnixTimestamp(hour)), {stamp_hours:Array(Int64)}, {stamps:Array(UInt64)}, toUInt64(0))"
)


def numeric_cells(source: Source, target: str, hours: WindowHours) -> str:
    """Per requested feature ``f`` (its 1-based position in ``{names}``): the window's merged cells as arrays in key
    order (``keys``, ``counts``, ``ticks``, ``ticks2``, ``los``, ``his``), from its complete hours' profiles and
    its edges read raw, summed by one ``GROUP BY`` on a single UInt64 key (feature position, cell)."""
    names, values = ARRAYS["numeric", target]
    version = " AND model_version = {model_version:String}" if source.model_version is not None else ""
    packed = f"position * {FEATURE_STRIDE} + toUInt64(k + {KEY_OFFSET}) AS key"
    return f"""
        SELECT f, arraySort(groupArray(k)) AS keys,
               arraySort((x, y) -> y, groupArray(cell_c), groupArray(k)) AS counts,
               arraySort((x, y) -> y, groupArray(cell_t), groupArray(k)) AS ticks,
               arraySort((x, y) -> y, groupArray(cell_t2), groupArray(k)) AS ticks2,
               arraySort((x, y) -> y, groupArray(cell_lo), groupArray(k)) AS los,
               arraySort((x, y) -> y, groupArray(cell_hi), groupArray(k)) AS his
        FROM (
            SELECT intDiv(key, {FEATURE_STRIDE}) AS f, toInt64(key % {FEATURE_STRIDE}) - {KEY_OFFSET} AS k,
                   sum(c) AS cell_c, sum(t) AS cell_t, sum(t2) AS cell_t2, min(lo) AS cell_lo, max(hi) AS cell_hi
            FROM (
                SELECT {packed}, c, t, t2, lo, hi
                FROM (
                    SELECT toUInt64(transform(feature, {{keys:Array(String)}}, arrayEnumerate({{keys:Array(String)}}),
                                              0)) AS position,
                           cell_keys, cell_counts, cell_ticks, cell_ticks2, cell_min, cell_max
                    FROM drift_hour_profiles FINAL
                    WHERE model = {{model:String}}{version} AND has({{keys:Array(String)}}, feature)
                      AND hour >= toDateTime({{first:Int64}}, 'UTC') AND hour <= toDateTime({{last:Int64}}, 'UTC')
                      AND {STAMP_MATCH}
                )
                ARRAY JOIN cell_keys AS k, cell_counts AS c, cell_ticks AS t, cell_ticks2 AS t2, cell_min AS lo,
                           cell_max AS hi
                UNION ALL
                SELECT key, count() AS raw_c, sum(t) AS raw_t, sum(intDiv(t * t, {TICKS})) AS raw_t2,
                       min(v) AS raw_lo, max(v) AS raw_hi
                FROM (
                    SELECT {sql.position("n")} AS position, x + 0. AS v, {cell_columns("v")}, {packed}
                    FROM inferences FINAL ARRAY JOIN {names} AS n, {values} AS x
                    WHERE {_events(source.model_version, hours.edges)} AND position > 0 AND isFinite(x)
                )
                GROUP BY key
            )
            GROUP BY key
        )
        GROUP BY f"""


def categorical_counts(source: Source, target: str, hours: WindowHours) -> str:
    """Per requested feature ``name``: the window's counts per category (``categories`` sorted, ``counts``)."""
    names, values = ARRAYS["categorical", target]
    version = " AND model_version = {model_version:String}" if source.model_version is not None else ""
    return f"""
        SELECT name, arrayMap(e -> e.1, t) AS categories, arrayMap(e -> e.2, t) AS counts
        FROM (
            SELECT name, arraySort(groupArray((x, category_c))) AS t
            FROM (
                SELECT name, x, sum(c) AS category_c
                FROM (
                    SELECT substring(feature, {{prefix_length:UInt64}} + 1) AS name, x, c
                    FROM (
                        SELECT feature, categories, category_counts
                        FROM drift_hour_profiles FINAL
                        WHERE model = {{model:String}}{version} AND has({{keys:Array(String)}}, feature)
                          AND hour >= toDateTime({{first:Int64}}, 'UTC') AND hour <= toDateTime({{last:Int64}}, 'UTC')
                          AND {STAMP_MATCH}
                    )
                    ARRAY JOIN categories AS x, category_counts AS c
                    UNION ALL
                    SELECT {{names:Array(String)}}[position] AS name, x, count() AS raw_c
                    FROM (
                        SELECT {sql.position("n")} AS position, x
                        FROM inferences FINAL ARRAY JOIN {names} AS n, {values} AS x
                        WHERE {_events(source.model_version, hours.edges)} AND position > 0
                    )
                    GROUP BY position, x
                )
                GROUP BY name, x
            )
            GROUP BY name
        )"""


def discover(source: Source, hours: WindowHours) -> str:
    """The names of the window's features, as :func:`sql.discover` returns them (numeric names, categorical
    names, whether it holds predictions, labels), from its complete hours' name lists and its edges read raw;
    first ``listed``, the number of complete hours that have name lists (all of them, unless they were profiled
    before the lists were kept)."""
    version = " AND model_version = {model_version:String}" if source.model_version is not None else ""
    raw = _events(source.model_version, hours.edges)

    def names(column: str, kind: str) -> str:
        return f"""(
            SELECT arraySort(arrayDistinct(arrayConcat(
                (SELECT groupArray(toString(n)) FROM (SELECT DISTINCT n FROM inferences FINAL
                                                      ARRAY JOIN {column} AS n WHERE {raw})),
                arrayMap(x -> substring(x, {len(kind) + 2}), arrayFilter(x -> startsWith(x, '{kind}/'), seen))))))"""

    return f"""
        WITH (SELECT arrayDistinct(arrayFlatten(groupArray(categories))) FROM drift_hour_profiles FINAL
              WHERE model = {{model:String}}{version} AND feature = '{NAMES}'
                AND hour >= toDateTime({{first:Int64}}, 'UTC') AND hour <= toDateTime({{last:Int64}}, 'UTC')
                AND {STAMP_MATCH}) AS seen
        SELECT (SELECT uniqExact(hour) FROM drift_hour_profiles FINAL
                WHERE model = {{model:String}} AND feature = '{NAMES}'
                  AND hour >= toDateTime({{first:Int64}}, 'UTC') AND hour <= toDateTime({{last:Int64}}, 'UTC')
                  AND {STAMP_MATCH}) AS listed,
               {names("num_names", "numeric")}, {names("cat_names", "categorical")},
               has(seen, 'prediction') OR (SELECT countIf(prediction IS NOT NULL) > 0 FROM inferences FINAL
                                           WHERE {raw}),
               has(seen, 'prediction_label') OR (SELECT countIf(prediction_label != '') > 0 FROM inferences FINAL
                                                 WHERE {raw})"""


def read_parameters(source: Source, hours: WindowHours, key_prefix: str, names: list[str]) -> dict:
    """The parameters of :func:`numeric_cells` and :func:`categorical_counts`."""
    hour_starts = list(hours.stamps) or [0]
    return {
        **source.parameters(),
        "stamp_hours": list(hours.stamps),
        "stamps": list(hours.stamps.values()),
        "names": names,
        "keys": [key_prefix + n for n in names],
        "prefix_length": len(key_prefix),
        "first": min(hour_starts),
        "last": max(hour_starts),
    }
