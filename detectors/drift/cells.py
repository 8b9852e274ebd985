"""Numeric drift over large windows: fine cells instead of the exact sorted support.

The exact path (:mod:`driftwarden.detectors.drift.sql`) sorts every value of both windows, which is
what scipy and Evidently compute and what a window of a few hundred thousand values
affords. Above ``DriftSettings.exact_max_values`` values, a feature is reduced in one
scan to *cells*: the real line cut every ``width`` from an ``origin``, ``width`` being
``cell_resolution`` (0.002) reference standard deviations. Per cell and window ClickHouse keeps

* ``c`` — the number of values in the cell,
* ``ticks`` — the sum of their offsets inside the cell, ``u = (v - a) / width`` in
  ``[0, 1)`` for a cell starting at ``a``, in units of ``2^-16`` (integers, so that the
  sums are exact and do not depend on the order threads add them in),
* ``lo`` — the smallest value (the exact value of a cell that holds one distinct value),

and, for a reference profile, the largest value ``hi`` and the squared offsets (its moments).
The current window keeps only what the comparison reads: every aggregate is one more pass
over its values.

What follows from the cells, with ``g = F_ref - F_cur`` the gap between the ECDFs:

* **Wasserstein** ``∫|g|``. Inside a cell ``∫ F = width (sum(1 - u) / n + C / n)``
  (``C`` the values before the cell), so ``∫ g`` over every cell is exact; between
  cells ``g`` is constant. ``∫|g| = |∫ g|`` wherever ``g`` keeps its sign, which is
  every cell except those where ``g`` may cross zero; there the error is at most
  ``2 width min(g_max, -g_min)``, with ``g`` inside ``[g_a - p_cur, g_a + p_ref]``
  (``g_a`` at the cell's start, ``p`` the cell's share of each window). The sum of those
  terms, plus the ``2^-16`` rounding of the offsets, is the reported error bound. It is a
  guarantee, far above the actual error: on 1M rows per window it reached 2.4e-3 reference
  standard deviations on a feature without drift, whose value was within 1e-6 of scipy's.
* **Kolmogorov–Smirnov** ``D = max|g|``: read at every cell boundary. Inside a cell
  holding one window's values only ``g`` is monotone, so its extremes are at the
  boundaries; a cell holding both may hide a larger gap, bounded by ``|g_a| +`` the
  cell's share — the bound reported.
* **Counts per value** (chi-squared, Z-test, Jensen–Shannon, PSI on few values): one
  cell per distinct value while distinct values are further apart than a cell, keyed by
  the exact value; cells seen to hold more than one value are counted and reported.
* **Moments** of the reference: mean and standard deviation from the cell sums
  (``k + u`` per value), exact up to the ``2^-16`` rounding.

How a window is counted into cells: up to ``MAX_SORTED_VALUES`` values (features x rows), each
feature's values are gathered and sorted in one scan and its cells read off the sorted array
(:func:`window_cell_arrays`), and a current window's cells are merged with the reference's by one
sort per feature (:func:`_merged_sorted`); above, so in even batches of features, one scan each, for a
wide model (:func:`batch_size`), else by one ``GROUP BY`` over (feature, cell), whose memory grows with
the cells only (:func:`window_cells`). The cells are the same either way. The
``GROUP BY`` fed event by event jumps between features at every value, and on a wide model (500
features, 2M cells) each of its aggregates missed the CPU cache about once per value.

The origin and width are fixed before the reference is scanned, from the first 65,536
events (fewer above 25 features, :func:`sample_events`) of the window (in the table's order,
so the same data gives the same cells):
``width = resolution x std`` rounded to three significant digits, ``origin`` a multiple of
it near the mean. A value further than ``2^38`` cells from the origin is clamped into the
outermost cell; the statistics then carry an infinite error bound and a note.
"""

from __future__ import annotations

import math

from driftwarden.detectors.drift import sql
from driftwarden.detectors.drift.sql import REFERENCE_KEY, REFERENCE_MATCH, Source, _requested
from driftwarden.detectors.methods.wasserstein import STD_FLOOR
from driftwarden.detectors.window import Window

TICKS = 1 << 16  # offsets inside a cell are counted in 2^-16 cell widths
TICK_BITS = 16
KEY_LIMIT = 1 << 38  # |cell key| at or beyond this: the value was clamped
KEY_OFFSET = 1 << 39  # cell keys are shifted into [0, 2^40) inside the grouping key
FEATURE_STRIDE = 1 << 40  # one UInt64 grouping key: feature position * 2^40 + shifted cell key
SAMPLE_EVENTS = 65_536  # events that fix a window's cell grid ...
SAMPLE_VALUES = SAMPLE_EVENTS * 25  # ... fewer for a model of more than 25 features, down to
MIN_SAMPLE_EVENTS = 4_096  # (a standard deviation within a few percent: the cells' width, not their validity)


# Up to this many values of a window (features x rows) per query, its cells are computed from each feature's sorted
# values (:func:`window_cell_arrays`, held in memory: about 20 bytes a value at the peak). A model of at least
# BATCHED_MIN_FEATURES features with more values is counted so in batches of features, one scan each, while a batch
# holds at least that many features; otherwise by one GROUP BY over (feature, cell), whose memory grows with the
# cells only (and whose hash table fits the cache while the features are few). All give the same cells.
MAX_SORTED_VALUES = 60_000_000
BATCHED_MIN_FEATURES = 200


def batch_size(features: int, rows: int) -> int:
    """How many features of a window of ``rows`` events one query counts from sorted values (0: all of them at once
    by the ``GROUP BY`` of :func:`window_cells`).

    Batched, the features are spread evenly over the fewest scans that keep each under ``MAX_SORTED_VALUES``
    values: 2,000 features of 100,000 rows go in 4 scans of 500 (not 600, 600, 600 and 200), so that the peak
    memory is a batch's and no higher than a 500-feature model's.
    """
    per_query = MAX_SORTED_VALUES // max(1, rows)
    if features <= per_query:
        return max(1, features)
    if features < BATCHED_MIN_FEATURES or per_query < BATCHED_MIN_FEATURES:
        return 0
    scans = -(-features // per_query)
    return -(-features // scans)


def feature_batches(names: list[str], rows: int) -> list[tuple[list[str], bool]]:
    """``names`` in the batches their cells are counted in, each with whether it is counted from sorted values."""
    size = batch_size(len(names), rows)
    if size == 0:
        return [(names, False)]
    return [(names[i : i + size], True) for i in range(0, len(names), size)]


def sample_events(features: int) -> int:
    """Events read to fix the cell grids of ``features`` features: about 1.6M values, 4,096 to 65,536 events."""
    return max(MIN_SAMPLE_EVENTS, min(SAMPLE_EVENTS, SAMPLE_VALUES // max(1, features)))


def grid(mean: float, std: float, resolution: float) -> tuple[float, float]:
    """``(origin, width)`` of the cells of a feature with this (estimated) mean and standard deviation."""
    scale = std if math.isfinite(std) and std > STD_FLOOR else STD_FLOOR
    width = float(f"{resolution * scale:.3g}")
    center = mean if math.isfinite(mean) else 0.0
    return width * round(center / width), width


def sample_moments(
    source: Source, window: Window, target: str, whole: bool = False, events: int = SAMPLE_EVENTS
) -> str:
    """Mean and population standard deviation of each requested feature over the window's first ``events``
    events (over all of them with ``whole``, for a feature the first events do not hold)."""
    names, values = sql.ARRAYS["numeric", target]
    first = "" if whole else f"ORDER BY ts, event_id LIMIT {int(events)}"
    return f"""
        SELECT {{names:Array(String)}}[position] AS name, mean, std
        FROM (
            SELECT {sql.position("n")} AS position, avg(x) AS mean, stddevPop(x) AS std
            FROM (
                SELECT {names} AS names, {values} AS values
                FROM inferences FINAL WHERE {source.where(window)}
                {first}
            )
            ARRAY JOIN names AS n, values AS x
            WHERE position > 0 AND isFinite(x)
            GROUP BY position
        )"""


def _fixed_point(value: str, name: str) -> str:
    """``q``: the value in ``2^-16`` cell widths from the origin, as an Int64 (``k = q >> 16``, ``t = q & 0xFFFF``).

    The feature ``name``'s origin and scale (``2^16 / width``) are its entries of ``{origins}`` and ``{scales}``;
    values further than ``2^38`` cells are clamped there. They are looked up by ``transform`` over the name, which
    on the LowCardinality names of a scan runs once per distinct name (indexing the arrays by the feature's
    position ran once per value: about 0.4 CPU-s of a 50M-value scan).
    """
    limit = float(KEY_LIMIT * TICKS)

    def lookup(array: str) -> str:
        return f"transform({name}, {{names:Array(String)}}, {{{array}:Array(Float64)}}, 0.)"

    return (
        f"toInt64(floor(greatest(least(({value} - {lookup('origins')}) * {lookup('scales')}, {limit}), -{limit}))) AS q"
    )


def window_cells(source: Source, window: Window, target: str, profile: bool = False) -> str:
    """The cells of a window: per requested feature ``f`` (its 1-based position in ``{names}``) and cell ``k``,
    the count, the offset ticks and the smallest value; with ``profile``, also the squared offsets and the
    largest value (a reference profile's moments and range).

    One scan, one ``GROUP BY`` on a single UInt64 key (feature position, :func:`sql.position`, and
    cell). Each aggregate costs a pass over the window's values, so the current window keeps only
    those the comparison reads.
    """
    names, values = sql.ARRAYS["numeric", target]
    extra = f", sum(intDiv(t * t, {TICKS})) AS ticks2, max(v) AS hi" if profile else ""
    return f"""
        SELECT intDiv(key, {FEATURE_STRIDE}) AS f, toInt64(key % {FEATURE_STRIDE}) - {KEY_OFFSET} AS k,
               count() AS c, sum(t) AS ticks, min(v) AS lo{extra}
        FROM (
            SELECT {sql.position("n")} AS position, x + 0. AS v,
                   {_fixed_point("v", "n")}, toUInt64(bitAnd(q, {TICKS - 1})) AS t,
                   position * {FEATURE_STRIDE} + toUInt64(bitShiftRight(q, {TICK_BITS}) + {KEY_OFFSET}) AS key
            FROM inferences FINAL ARRAY JOIN {names} AS n, {values} AS x
            WHERE {source.where(window)} AND position > 0 AND isFinite(v)
        )
        GROUP BY key"""


def _sorted_values(source: Source, window: Window, target: str) -> str:
    """Per requested feature ``f``: its finite values in the window as one sorted array ``s``.

    One scan; the ``GROUP BY`` has one key per feature, so the values land feature by feature
    (a hash table of cells keyed by feature and cell, fed event by event, misses the cache on
    nearly every value of a wide model: each aggregate cost about 1 CPU-s per 50M values).
    """
    names, values = sql.ARRAYS["numeric", target]
    return f"""
        SELECT position AS f, arraySort(groupArray(v)) AS s
        FROM (
            SELECT {sql.position("n")} AS position, x + 0. AS v
            FROM inferences FINAL ARRAY JOIN {names} AS n, {values} AS x
            WHERE {source.where(window)} AND position > 0 AND isFinite(v)
        )
        GROUP BY position"""


def window_cell_arrays(source: Source, window: Window, target: str, profile: bool = False) -> str:
    """The cells of :func:`window_cells` as arrays in key order, one row per feature ``f``: ``keys``, ``counts``,
    ``ticks``, ``los`` (with ``profile``, also ``ticks2`` and ``his``), computed from each feature's sorted values.

    The fixed-point offset ``q`` is monotone in the value, so the sorted values' cells come in key
    order: a cell is a run of equal ``q >> 16``, its count the distance between run ends, its tick
    sums differences of running sums at the run ends, its smallest and largest values the run's
    first and last. Same numbers as the ``GROUP BY`` of :func:`window_cells` (integer sums), about
    40 % less CPU on a wide model; it holds the window's values in memory, so it is used while
    they number at most ``MAX_SORTED_VALUES``.
    """
    offset = f"toUInt64(bitAnd(x, {TICKS - 1}))"
    squares = _run_sums(f"arrayMap(x -> intDiv({offset} * {offset}, {TICKS}), q)")
    extra = f", {squares} AS ticks2, arrayFilter((v, e) -> e, s, last) AS his" if profile else ""
    limit = float(KEY_LIMIT * TICKS)
    return f"""
        SELECT f, arrayFilter((x, e) -> e, k, last) AS keys,
               arrayMap(x -> toUInt64(x), arrayPopFront(arrayDifference(
                   arrayPushFront(arrayFilter((i, e) -> e, arrayEnumerate(k), last), 0)))) AS counts,
               {_run_sums(f"arrayMap(x -> {offset}, q)")} AS ticks,
               arrayFilter((v, b) -> b, s, arrayPushFront(arrayPopBack(last), 1)) AS los{extra}
        FROM (
            SELECT f, s, {{origins:Array(Float64)}}[f] AS origin, {{scales:Array(Float64)}}[f] AS scale,
                   arrayMap(v -> toInt64(floor(greatest(least((v - origin) * scale, {limit}), -{limit}))), s) AS q,
                   arrayMap(x -> bitShiftRight(x, {TICK_BITS}), q) AS k,
                   -- the last value of each cell: the next value is in another cell (or there is none)
                   arrayMap((a, b) -> a != b, k, arrayPushBack(arrayPopFront(k), k[-1] + 1)) AS last
            FROM ({_sorted_values(source, window, target)})
        )"""


def _run_sums(terms: str) -> str:
    """Per cell, the sum of ``terms`` (one per sorted value) over the cell's values: running sums at the cells'
    last values, differenced."""
    return (
        f"arrayMap(x -> toUInt64(x), arrayPopFront(arrayDifference(arrayPushFront("
        f"arrayFilter((c, e) -> e, arrayCumSum({terms}), last), toUInt64(0)))))"
    )


def _cell_rows(source: Source, window: Window, target: str, per_feature: bool) -> str:
    """The cells of a window as rows ``(f, k, c, ticks, lo)``: :func:`window_cells`, or :func:`window_cell_arrays`
    unrolled (``per_feature``)."""
    if not per_feature:
        return window_cells(source, window, target)
    return f"""
        SELECT f, k, c, ticks, lo
        FROM ({window_cell_arrays(source, window, target)})
        ARRAY JOIN keys AS k, counts AS c, ticks, los AS lo"""


def _sorted_by_key(cells: str, **columns: str) -> str:
    """Per feature ``f`` of ``cells``: its cell keys ``keys`` and each of ``columns`` (``output=input``) as arrays
    sorted by key. One numeric sort per array: sorting an array of tuples compares them element by element and
    cost 20 times more on 2M cells."""
    gathered = ", ".join(f"groupArray({c}) AS {c}_" for c in columns.values())
    ordered = ", ".join(f"arraySort((x, key) -> key, {c}_, keys_) AS {out}" for out, c in columns.items())
    return f"""
        SELECT f, arraySort(keys_) AS keys, {ordered}
        FROM (SELECT f, groupArray(k) AS keys_, {gathered} FROM ({cells}) GROUP BY f)"""


def build_profiles(source: Source, window: Window, target: str, per_feature: bool = False) -> str:
    """INSERT ... SELECT of the cell profiles of the requested features.

    Moments come from the cells: ``z = k + u`` per value, ``mean = origin + width E[z]``,
    ``std = width sqrt(E[z^2] - E[z]^2)``, summed over the cells in key order (deterministic).
    """
    return f"""
        INSERT INTO reference_profiles ({sql.PROFILE_COLUMNS}, cell_resolution, cell_origin, cell_width,
                                        cell_keys, cell_counts, cell_ticks, cell_ticks2, cell_min, cell_max)
        SELECT model, model_version, feature, feature_type, reference_start, reference_end, rows, rows - n AS missing,
               length(keys) AS unique_values,
               if(n = 0, nan, origin + width * ez) AS mean,
               if(n = 0, nan, width * sqrt(greatest(ez2 - ez * ez, 0.))) AS std,
               if(n = 0, nan, arrayMin(los)) AS min, if(n = 0, nan, arrayMax(his)) AS max,
               [] AS bin_edges, [] AS bin_counts, [] AS categories, [] AS category_counts,
               [] AS support_values, [] AS support_counts,
               -- the cells enter the hash through two 64-bit hashes of them, CityHash and XXH3 (0.05 s each on the
               -- 1.5M cells of 500 features): as text they cost 6 s, through their 128-bit SipHash 0.8 s
               lower(hex(SHA256(toString((model, model_version, feature, feature_type, reference_start, reference_end,
                   rows, origin, width, cityHash64(keys, counts, ticks, ticks2, los, his),
                   xxh3(keys, counts, ticks, ticks2, los, his)))))) AS profile_hash,
               {{resolution:Float64}} AS cell_resolution, origin AS cell_origin, width AS cell_width,
               keys AS cell_keys, counts AS cell_counts, ticks AS cell_ticks, ticks2 AS cell_ticks2,
               los AS cell_min, his AS cell_max
        FROM (
            SELECT {{model:String}} AS model, {{profile_version:String}} AS model_version,
                   concat({{prefix:String}}, name) AS feature, 'numeric' AS feature_type, {REFERENCE_KEY},
                   {{rows:UInt64}} AS rows,
                   {{origins:Array(Float64)}}[indexOf({{names:Array(String)}}, name)] AS origin,
                   {TICKS} / {{scales:Array(Float64)}}[indexOf({{names:Array(String)}}, name)] AS width,
                   keys, counts, ticks, ticks2, los, his, arraySum(counts) AS n,
                   -- sum over the cell's values of z = k + u, and of z^2 = k^2 + 2 k u + u^2 (in Float64:
                   -- k^2 of a far cell would overflow Int64)
                   arraySum((k, c, t) -> toFloat64(k) * c + (t + c / 2) / {TICKS}, keys, counts, ticks) / n AS ez,
                   arraySum((k, c, t, t2) -> toFloat64(k) * k * c + 2 * k * (t + c / 2) / {TICKS} + t2 / {TICKS},
                            keys, counts, ticks, ticks2) / n AS ez2
            FROM {_requested()}
            LEFT JOIN (
                SELECT {{names:Array(String)}}[f] AS name, keys, counts, ticks, ticks2, los, his
                FROM ({_profile_cells(source, window, target, per_feature)})
            ) AS v USING (name)
        )"""


def _profile_cells(source: Source, window: Window, target: str, per_feature: bool) -> str:
    """Per feature ``f``, the reference's cells as arrays in key order (with the moments' and range's columns)."""
    if per_feature:
        return window_cell_arrays(source, window, target, profile=True)
    return _sorted_by_key(
        window_cells(source, window, target, profile=True),
        counts="c",
        ticks="ticks",
        ticks2="ticks2",
        los="lo",
        his="hi",
    )


def _reference_cells() -> str:
    """The reference cells of the requested features: stored, or derived from an exact profile's support."""
    return f"""
        SELECT substring(feature, {{prefix_length:UInt64}} + 1) AS name, k, c AS cr, t AS tr, lo, hi
        FROM reference_profiles FINAL
        ARRAY JOIN cell_keys AS k, cell_counts AS c, cell_ticks AS t, cell_min AS lo, cell_max AS hi
        WHERE {REFERENCE_MATCH} AND feature_type = 'numeric' AND has({{keys:Array(String)}}, feature)
          AND notEmpty(cell_keys)
        UNION ALL
        {_support_cells()}"""


def _support_cells() -> str:
    """The cells of exact reference profiles (sorted support), one row per feature ``name`` and cell ``k``."""
    return f"""
        SELECT name, bitShiftRight(q, {TICK_BITS}) AS k, sum(c) AS cr, sum(toUInt64(bitAnd(q, {TICKS - 1})) * c) AS tr,
               min(v) AS lo, max(v) AS hi
        FROM (
            SELECT substring(feature, {{prefix_length:UInt64}} + 1) AS name, v, c,
                   {sql.position("name")} AS position,
                   {_fixed_point("v", "name")}
            FROM reference_profiles FINAL ARRAY JOIN support_values AS v, support_counts AS c
            WHERE {REFERENCE_MATCH} AND feature_type = 'numeric' AND has({{keys:Array(String)}}, feature)
              AND empty(cell_keys) AND position > 0
        )
        GROUP BY name, k"""


def _reference_cell_arrays() -> str:
    """The reference cells of the requested features as one row of arrays per feature ``f``, in key order:
    ``kr``, ``cr``, ``tr``, ``lo_r``, ``hi_r`` (stored so, or derived from an exact profile's support)."""
    support = _sorted_by_key(
        f"SELECT {sql.position('name')} AS f, k, cr, tr, lo, hi FROM ({_support_cells()})",
        cr="cr",
        tr="tr",
        lo_r="lo",
        hi_r="hi",
    )
    return f"""
        SELECT {sql.position("name")} AS f, cell_keys AS kr, cell_counts AS cr, cell_ticks AS tr, cell_min AS lo_r,
               cell_max AS hi_r
        FROM (
            SELECT substring(feature, {{prefix_length:UInt64}} + 1) AS name, cell_keys, cell_counts, cell_ticks,
                   cell_min, cell_max
            FROM reference_profiles FINAL
            WHERE {REFERENCE_MATCH} AND feature_type = 'numeric' AND has({{keys:Array(String)}}, feature)
              AND notEmpty(cell_keys)
        )
        UNION ALL
        SELECT f, keys AS kr, cr, tr, lo_r, hi_r FROM ({support})"""


def _merged_sorted(source: Source, current: Window, target: str) -> str:
    """:func:`_merged_arrays` from both windows' cell arrays, merged feature by feature without a hash table.

    Each key is tagged ``2 (k + 2^39)`` on the reference side and one more on the current side, so that
    one sort of the tags orders the cells of both windows by key, a reference cell before the current
    cell of the same key; the columns are moved into that order together, as one array of tuples sorted
    by the same tags (one sort: seven took 0.15-0.2 s more in the merge query of 500 features); a current cell
    that follows the reference cell of its key (``dup``) is folded into it.
    """

    def folded(column: str) -> str:
        """A current-window column at each kept position: its own value, or the next one when that is folded."""
        return (
            f"arrayFilter((x, d) -> NOT d, arrayMap((y, n, dn) -> if(dn, n, y), {column}, "
            f"arrayPushBack(arrayPopFront({column}), {column}[1]), dup_next), dup)"
        )

    return f"""
        SELECT f, arrayFilter((x, d) -> NOT d, ks, dup) AS keys,
               arrayFilter((x, d) -> NOT d, cr_all, dup) AS cr, arrayFilter((x, d) -> NOT d, tr_all, dup) AS tr,
               arrayFilter((x, d) -> NOT d, lo_r_all, dup) AS lo_r, arrayFilter((x, d) -> NOT d, hi_r_all, dup) AS hi_r,
               {folded("cc_all")} AS cc, {folded("tc_all")} AS tc, {folded("lo_c_all")} AS lo_c
        FROM (
            SELECT f, arrayConcat(arrayMap(k -> (k + {KEY_OFFSET}) * 2, kr),
                                  arrayMap(k -> (k + {KEY_OFFSET}) * 2 + 1, kc)) AS tags,
                   arraySort(tags) AS sorted_tags,
                   arrayMap(t -> intDiv(t, 2) - {KEY_OFFSET}, sorted_tags) AS ks,
                   arrayMap((a, b) -> intDiv(a, 2) = intDiv(b, 2), sorted_tags,
                            arrayPushFront(arrayPopBack(sorted_tags), -2)) AS dup,
                   arrayPushBack(arrayPopFront(dup), 0) AS dup_next,
                   arraySort((x, t) -> t, arrayZip(
                       arrayConcat(cr, arrayWithConstant(length(kc), toUInt64(0))),
                       arrayConcat(tr, arrayWithConstant(length(kc), toUInt64(0))),
                       arrayConcat(lo_r, arrayWithConstant(length(kc), inf)),
                       arrayConcat(hi_r, arrayWithConstant(length(kc), -inf)),
                       arrayConcat(arrayWithConstant(length(kr), toUInt64(0)), cc),
                       arrayConcat(arrayWithConstant(length(kr), toUInt64(0)), tc),
                       arrayConcat(arrayWithConstant(length(kr), inf), lo_c)), tags) AS moved,
                   moved.1 AS cr_all, moved.2 AS tr_all, moved.3 AS lo_r_all, moved.4 AS hi_r_all,
                   moved.5 AS cc_all, moved.6 AS tc_all, moved.7 AS lo_c_all
            FROM ({_reference_cell_arrays()}) AS reference
            INNER JOIN (
                SELECT f, keys AS kc, counts AS cc, ticks AS tc, los AS lo_c
                FROM ({window_cell_arrays(source, current, target)})
            ) AS current USING (f)
        )"""


def _merged(source: Source, current: Window, target: str, per_feature: bool = False) -> str:
    """Reference and current cells side by side, one row per feature and cell: counts and ticks of both,
    the reference's range in the cell (``lo_r``, ``hi_r``) and the current window's smallest value
    (``lo_c``), the running counts before the cell (``br``, ``bc``), the window totals, the reference's
    first and last cell and the next cell's key."""
    return f"""
        SELECT name, k, cr, tr, cc, tc, lo_r, hi_r, lo_c, least(lo_r, lo_c) AS lo,
               sum(cr) OVER whole AS nr, sum(cc) OVER whole AS nc,
               minIf(k, cr > 0) OVER whole AS kr_min, maxIf(k, cr > 0) OVER whole AS kr_max,
               sum(cr) OVER running - cr AS br, sum(cc) OVER running - cc AS bc,
               leadInFrame(k, 1, k) OVER following AS next_k
        FROM (
            SELECT name, k, sum(cr) AS cr, sum(tr) AS tr, sum(cc) AS cc, sum(tc) AS tc,
                   min(lo_r) AS lo_r, max(hi_r) AS hi_r, min(lo_c) AS lo_c
            FROM (
                SELECT name, k, cr, tr, toUInt64(0) AS cc, toUInt64(0) AS tc, lo AS lo_r, hi AS hi_r, inf AS lo_c
                FROM ({_reference_cells()})
                UNION ALL
                SELECT {{names:Array(String)}}[f] AS name, k, toUInt64(0) AS cr, toUInt64(0) AS tr, c AS cc,
                       ticks AS tc, inf AS lo_r, -inf AS hi_r, lo AS lo_c
                FROM ({_cell_rows(source, current, target, per_feature)})
            )
            GROUP BY name, k
        )
        WINDOW whole AS (PARTITION BY name),
               running AS (PARTITION BY name ORDER BY k ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
               following AS (PARTITION BY name ORDER BY k ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING)"""


def _merged_arrays(source: Source, current: Window, target: str, per_feature: bool = False) -> str:
    """Reference and current cells side by side, per requested feature ``f`` one row of arrays sorted by cell key
    ``keys``: counts and ticks of both windows (``cr``, ``tr``, ``cc``, ``tc``), the reference's range in each
    cell (``lo_r``, ``hi_r``) and the current window's smallest value (``lo_c``)."""
    rows = f"""
        SELECT f, k, sum(cr) AS cr, sum(tr) AS tr, sum(cc) AS cc, sum(tc) AS tc,
               min(lo_r) AS lo_r, max(hi_r) AS hi_r, min(lo_c) AS lo_c
        FROM (
            SELECT {sql.position("name")} AS f, k, cr, tr, toUInt64(0) AS cc, toUInt64(0) AS tc,
                   lo AS lo_r, hi AS hi_r, inf AS lo_c
            FROM ({_reference_cells()})
            UNION ALL
            SELECT f, k, toUInt64(0) AS cr, toUInt64(0) AS tr, c AS cc, ticks AS tc, inf AS lo_r, -inf AS hi_r,
                   lo AS lo_c
            FROM ({_cell_rows(source, current, target, per_feature)})
        )
        GROUP BY f, k"""
    return _sorted_by_key(rows, cr="cr", tr="tr", cc="cc", tc="tc", lo_r="lo_r", hi_r="hi_r", lo_c="lo_c")


# Exact sums of non-negative Float64 terms: Int128 multiples of 1e-18, whatever order they are added in.
def _exact_sum(terms: str) -> str:
    return f"toFloat64(arraySum(arrayMap(x -> toInt128(least(x, 1e20) * 1e18), {terms}))) / 1e18"


def compare(source: Source, current: Window, target: str, per_feature: bool = False) -> str:
    """Per feature, from the merged cells: the statistics of :func:`sql.compare_numeric`, Wasserstein in
    cell widths (``wasserstein_cells``, ``wasserstein_bound_cells``), with their bounds.

    Each feature's merged cells are one row of arrays in key order, so running counts are
    ``arrayCumSum`` and every statistic an array function (window functions over 2M cell rows of a
    500-feature model cost 3 times the scan of the window).

    ``ends`` holds, per cell, the cell's smallest value and both cumulative counts after it — the
    shape :func:`sql.compare_numeric` returns per distinct value — when the feature has at most
    ``{ends_limits}[f]`` cells (the methods that read counts per value), else nothing. ``mixed_cells``
    counts cells seen to hold more than one value (a reference range, or a current value apart from the
    reference's). ``out_of_range`` counts the current values in cells outside the reference's first and
    last cell: values beyond the reference range but inside its boundary cells are not counted.
    """
    merged = _merged_sorted(source, current, target) if per_feature else _merged_arrays(source, current, target)
    return f"""
        SELECT {{names:Array(String)}}[f] AS name, nr, nc,
               lower(hex(cityHash64(arrayFilter((e, c) -> c > 0, arrayZip(k, cc, tc, lo_c), cc)))) AS current_digest,
               arrayCount(c -> c > 0, cr) AS reference_distinct, length(k) AS distinct_values,
               arrayCount((a, b, r, c, l) -> a < b OR (r > 0 AND c > 0 AND l != a), lo_r, hi_r, cr, cc, lo_c)
                   AS mixed_cells,
               arrayCount(x -> abs(x) >= {KEY_LIMIT}, k) AS clamped_cells,
               arrayMax(arrayMap((a, b) -> greatest(abs(a), abs(b)), ga, gb)) AS ks_statistic,
               arrayMax(arrayMap((a, b, h, l, r, c) -> if(r > 0 AND c > 0, greatest(abs(l), abs(h)),
                                                          greatest(abs(a), abs(b))), ga, gb, g_hi, g_lo, cr, cc))
                   - ks_statistic AS ks_bound,
               {_exact_sum("arrayMap((i, b, g) -> abs(i) + abs(b) * g, inner, gb, gaps)")} AS wasserstein_cells,
               {_exact_sum("arrayMap((h, l) -> if(h > 0 AND l < 0, 2 * least(h, -l), 0.), g_hi, g_lo)")}
                   AS wasserstein_bound_cells,
               arraySum(arrayMap((x, c) -> if(x < kr_min OR x > kr_max, c, 0), k, cc)) AS out_of_range,
               if(length(k) <= {{ends_limits:Array(UInt64)}}[f],
                  arrayZip(arrayMap((a, b) -> least(a, b), lo_r, lo_c), arrayCumSum(cr), arrayCumSum(cc)),
                  []) AS ends
        FROM (
            SELECT f, keys AS k, cr, tr, cc, tc, lo_r, hi_r, lo_c, arraySum(cr) AS nr, arraySum(cc) AS nc,
                   arrayFirst((x, c) -> c > 0, k, cr) AS kr_min, arrayLast((x, c) -> c > 0, k, cr) AS kr_max,
                   -- the running counts before each cell, and the ECDF gap there and after the cell
                   arrayMap((s, c) -> s - c, arrayCumSum(cr), cr) AS br,
                   arrayMap((s, c) -> s - c, arrayCumSum(cc), cc) AS bc,
                   arrayMap((a, b) -> a / nr - b / nc, br, bc) AS ga,
                   arrayMap((g, r, c) -> g + r / nr - c / nc, ga, cr, cc) AS gb,
                   -- the range of the gap inside the cell: reference values raise it, current values lower it
                   arrayMap((g, r) -> g + r / nr, ga, cr) AS g_hi,
                   arrayMap((g, c) -> g - c / nc, ga, cc) AS g_lo,
                   -- the integral of each ECDF over the cell, in cell widths: sum(1 - u) / n + before / n
                   arrayMap((r, t, b, c, u, d) -> (r - (t + r / 2) / {TICKS} + b) / nr
                                                  - (c - (u + c / 2) / {TICKS} + d) / nc, cr, tr, br, cc, tc, bc)
                       AS inner,
                   -- empty cells up to the next one, where the gap stays at its value after this cell
                   arrayMap((a, b) -> greatest(b - a - 1, 0), k, arrayPushBack(arrayPopFront(k), k[-1])) AS gaps
            FROM ({merged})
            WHERE nr > 0 AND nc > 0
        )"""


def sturges(source: Source, current: Window, target: str, per_feature: bool = False) -> str:
    """Sturges' bins of :func:`sql.sturges_bins` over the merged cells.

    The lower edge is exact (the smallest value of either window); the upper edge is the
    reference's largest value or the current window's smallest value in its last cell,
    whichever is larger (at most a cell below the exact one). A cell is counted in the bin
    of its smallest value, so a cell that straddles an edge may put values one bin off:
    ``straddling`` is the share of values in such cells.
    """
    position = "indexOf({names:Array(String)}, name)"
    return f"""
        SELECT name, any(edges) AS edges,
               arrayMap(b -> toUInt64(arraySum(arrayFilter((c, i) -> i = b, groupArray(cr), groupArray(bin)))),
                        range(1, any(bins) + 1)) AS bin_reference,
               arrayMap(b -> toUInt64(arraySum(arrayFilter((c, i) -> i = b, groupArray(cc), groupArray(bin)))),
                        range(1, any(bins) + 1)) AS bin_current,
               sumIf(cr / nr + cc / nc, bin != bin_top) / 2 AS straddling
        FROM (
            SELECT name, cr, cc, nr, nc, bins, edges,
                   if(arrayFirstIndex(e -> lo < e, edges) = 0, bins, arrayFirstIndex(e -> lo < e, edges) - 1) AS bin,
                   if(arrayFirstIndex(e -> top < e, edges) = 0, bins, arrayFirstIndex(e -> top < e, edges) - 1)
                       AS bin_top
            FROM (
                SELECT name, cr, cc, nr, nc, lo, bins,
                       least(high, {{origins:Array(Float64)}}[{position}]
                                   + (k + 1) * {TICKS} / {{scales:Array(Float64)}}[{position}]) AS top,
                       arrayMap(i -> if(i = bins, high, i * ((high - low) / bins) + low), range(bins + 1)) AS edges
                FROM (
                    SELECT name, k, cr, cc, nr, nc, lo, low, high,
                           toUInt64(ceil((high - low) / ((high - low) / (log2(nr + nc) + 1.)))) AS bins
                    FROM (
                        SELECT *, min(lo) OVER feature AS low,
                               greatest(max(hi_r) OVER feature, maxIf(lo_c, cc > 0) OVER feature) AS high
                        FROM ({_merged(source, current, target, per_feature)})
                        WHERE nr > 0 AND nc > 0
                        WINDOW feature AS (PARTITION BY name)
                    )
                    WHERE high > low
                )
            )
        )
        GROUP BY name"""
