"""The SQL of a drift run. Every statistic is reduced inside ClickHouse; Python receives aggregates only.

Features live in parallel arrays (``num_names``/``num_values``, ``cat_names``/``cat_values``).
A query ``ARRAY JOIN``s an event's names and values and keeps the requested names (by
:func:`position`), so one scan of a window serves every feature. An event without a
feature contributes no pair: the feature counts as missing there, never as a value 0 or
''. Non-finite numbers (NaN, ±inf) are missing too, as Evidently drops them.

Numeric features are compared exactly over the merged sorted support: the reference
profile holds the reference's sorted distinct values and their counts, the current
window's values are appended and the whole is sorted once per feature inside
ClickHouse; cumulative sums of the reference counts and of the current rows give both
ECDFs at every point. Ties need no special care: between equal values the step
``x_{i+1} - x_i`` is 0, and the KS gap is read only where the value changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from driftwarden.detectors.rows import WELL_FORMED
from driftwarden.detectors.window import Window

# WELL_FORMED on the arrays' sizes (their ``.size0`` subcolumns): with FINAL, ``length(num_values)`` read every value
# of the arrays (0.8 CPU-s to count a 100,000-event window of 500 features), the sizes alone 0.02.
WELL_FORMED_SIZES = re.sub(r"length\((\w+)\)", r"\1.size0", WELL_FORMED)

# (names, values) of the pairs an event holds, per kind and target: the features' parallel arrays, or
# the model's output (an empty label is no label).
ARRAYS = {
    ("numeric", "feature"): ("num_names", "num_values"),
    ("numeric", "prediction"): ("['prediction']", "[ifNull(prediction, nan)]"),
    ("categorical", "feature"): ("cat_names", "cat_values"),
    ("categorical", "prediction"): (
        "if(prediction_label = '', [], ['prediction_label'])",
        "if(prediction_label = '', [], [prediction_label])",
    ),
}


def position(name: str) -> str:
    """The 1-based position of ``name`` among the requested ``{names}``, 0 for a name not requested.

    ``transform`` over the LowCardinality names is evaluated once per distinct name; ``has`` per
    value took 10 s over the 200M values of a 10M-row window.
    """
    return f"toUInt64(transform({name}, {{names:Array(String)}}, arrayEnumerate({{names:Array(String)}}), 0))"


@dataclass(frozen=True)
class Source:
    """Which events a window selects: one model, optionally one version, no replays, well formed."""

    model: str
    model_version: str | None

    def where(self, window: Window) -> str:
        version = " AND model_version = {model_version:String}" if self.model_version is not None else ""
        return f"model = {{model:String}}{version} AND NOT is_replay AND {window.sql('ts')} AND {WELL_FORMED_SIZES}"

    def parameters(self) -> dict:
        params = {"model": self.model}
        if self.model_version is not None:
            params["model_version"] = self.model_version
        return params


def numeric_samples(source: Source, window: Window, target: str) -> str:
    """One row per finite value of a requested numeric feature in the window.

    ``+ 0.`` folds -0.0 into 0.0, which ClickHouse would otherwise sort and group apart from 0.0.
    """
    names, values = ARRAYS["numeric", target]
    return f"""
        SELECT {{names:Array(String)}}[position] AS name, v + 0. AS x
        FROM (
            SELECT {position("n")} AS position, v
            FROM inferences FINAL ARRAY JOIN {names} AS n, {values} AS v
            WHERE {source.where(window)} AND position > 0 AND isFinite(v)
        )"""


def categorical_counts(source: Source, window: Window, target: str) -> str:
    """Rows per category per requested categorical feature in the window, grouped on the feature's position."""
    names, values = ARRAYS["categorical", target]
    return f"""
        SELECT {{names:Array(String)}}[position] AS name, x, n
        FROM (
            SELECT position, x, count() AS n
            FROM (
                SELECT {position("c")} AS position, x
                FROM inferences FINAL ARRAY JOIN {names} AS c, {values} AS x
                WHERE {source.where(window)} AND position > 0
            )
            GROUP BY position, x
        )"""


def _requested() -> str:
    """Every requested name, so that a feature without values still gets a row."""
    return "(SELECT arrayJoin({names:Array(String)}) AS name) AS requested"


PROFILE_COLUMNS = (
    "model, model_version, feature, feature_type, reference_start, reference_end, rows, missing, unique_values, "
    "mean, std, min, max, bin_edges, bin_counts, categories, category_counts, support_values, support_counts, "
    "profile_hash"
)

# Window bounds as DateTime64 values of the profile key, from microseconds since the epoch.
REFERENCE_KEY = (
    "fromUnixTimestamp64Micro({reference_start:Int64}, 'UTC') AS reference_start, "
    "fromUnixTimestamp64Micro({reference_end:Int64}, 'UTC') AS reference_end"
)
REFERENCE_MATCH = (
    "model = {model:String} AND model_version = {profile_version:String} "
    "AND reference_start = fromUnixTimestamp64Micro({reference_start:Int64}, 'UTC') "
    "AND reference_end = fromUnixTimestamp64Micro({reference_end:Int64}, 'UTC')"
)

# The profile hash is computed where the profile is: a SHA-256 of the key and the exact aggregates.
_PROFILE_HASH = (
    "lower(hex(SHA256(toString((model, model_version, feature, feature_type, reference_start, reference_end, "
    "rows, missing, digest)))))"
)
# The weight of a current value in the merged support: the cumulative sum of the weights then holds the
# reference count in its low 32 bits and the current count above (windows of fewer than 2^32 rows).
CURRENT_WEIGHT = "toUInt64(4294967296)"

# A digest of a multiset of values that does not depend on the order rows are read in: the wrapping
# UInt64 sum of their hashes (unlike XOR, equal values do not cancel).
DIGEST = "sum(cityHash64(x))"


def build_numeric_profiles(source: Source, window: Window, target: str, prefix: str) -> str:
    """INSERT ... SELECT of the numeric profiles: the reference's sorted distinct values and their counts.

    ``{rows}`` is the window's row count (the profile's staleness check); rows without a
    finite value of the feature are its ``missing``.
    """
    return f"""
        INSERT INTO reference_profiles ({PROFILE_COLUMNS})
        SELECT model, model_version, feature, feature_type, reference_start, reference_end, rows, missing,
               length(xs) AS unique_values, mean, std, min, max,
               [] AS bin_edges, [] AS bin_counts, [] AS categories, [] AS category_counts,
               xs AS support_values, cs AS support_counts, {_PROFILE_HASH} AS profile_hash
        FROM (
            SELECT {{model:String}} AS model, {{profile_version:String}} AS model_version,
                   concat({{prefix:String}}, name) AS feature, 'numeric' AS feature_type, {REFERENCE_KEY},
                   {{rows:UInt64}} AS rows, rows - length(s) AS missing,
                   arrayCompact(s) AS xs,
                   -- run lengths of the sorted values: the distance between the ends of equal runs
                   arrayFilter((i, a, b) -> a != b, arrayEnumerate(s), s, arrayResize(arrayPopFront(s), length(s), nan))
                       AS ends,
                   arrayMap(c -> toUInt64(c), arrayPopFront(arrayDifference(arrayPushFront(ends, 0)))) AS cs,
                   if(empty(s), nan, arraySum(s) / length(s)) AS mean,
                   if(empty(s), nan, sqrt(arraySum(v -> (v - mean) * (v - mean), s) / length(s))) AS std,
                   if(empty(s), nan, s[1]) AS min, if(empty(s), nan, s[-1]) AS max, digest
            FROM {_requested()}
            LEFT JOIN (
                SELECT name, arraySort(groupArray(x)) AS s, {DIGEST} AS digest
                FROM ({numeric_samples(source, window, target)})
                GROUP BY name
            ) AS v USING (name)
        )"""


def build_categorical_profiles(source: Source, window: Window, target: str, prefix: str) -> str:
    """INSERT ... SELECT of the categorical profiles: rows per category, categories sorted."""
    return f"""
        INSERT INTO reference_profiles ({PROFILE_COLUMNS})
        SELECT model, model_version, feature, feature_type, reference_start, reference_end, rows, missing,
               length(categories) AS unique_values, nan AS mean, nan AS std, nan AS min, nan AS max,
               [] AS bin_edges, [] AS bin_counts, categories, category_counts,
               [] AS support_values, [] AS support_counts, {_PROFILE_HASH} AS profile_hash
        FROM (
            SELECT {{model:String}} AS model, {{profile_version:String}} AS model_version,
                   concat({{prefix:String}}, name) AS feature, 'categorical' AS feature_type, {REFERENCE_KEY},
                   {{rows:UInt64}} AS rows, rows - arraySum(category_counts) AS missing,
                   arrayMap(e -> e.1, t) AS categories, arrayMap(e -> toUInt64(e.2), t) AS category_counts,
                   cityHash64(t) AS digest
            FROM {_requested()}
            LEFT JOIN (
                SELECT name, arraySort(groupArray((x, n))) AS t FROM ({categorical_counts(source, window, target)})
                GROUP BY name
            ) AS v USING (name)
        )"""


def _merged_support(source: Source, current: Window, target: str) -> str:
    """Per feature: the merged sorted support ``ks`` of reference and current values, with ``ws`` the
    weight of each entry — its reference count, or ``2^32`` for a current value, so that one
    cumulative sum holds both counts — and the current values ``cur``.

    The arrays are materialised by a subquery so that the statistics above them read columns
    instead of re-evaluating the sort for every use.
    """
    return f"""
        SELECT name, rv, rc, cur, current_digest, reference_std, arraySum(rc) AS nr, length(cur) AS nc,
               arrayConcat(rv, cur) AS k0,
               arraySort(k0) AS ks,
               arraySort((w, k) -> k, arrayConcat(rc, arrayWithConstant(length(cur), {CURRENT_WEIGHT})), k0) AS ws
        FROM (
            SELECT substring(feature, {{prefix_length:UInt64}} + 1) AS name,
                   support_values AS rv, support_counts AS rc, std AS reference_std
            FROM reference_profiles FINAL
            WHERE {REFERENCE_MATCH} AND feature_type = 'numeric' AND has({{keys:Array(String)}}, feature)
        ) AS reference
        LEFT JOIN (
            SELECT name, groupArray(x) AS cur, lower(hex({DIGEST})) AS current_digest
            FROM ({numeric_samples(source, current, target)})
            GROUP BY name
        ) AS current USING (name)"""


def compare_numeric(source: Source, current: Window, target: str) -> str:
    """Merge the current window's values with the stored reference support, per feature.

    Returns, per feature, the exact KS statistic and Wasserstein area over the merged sorted
    support, the out-of-reference-range count, the distinct-value counts Evidently's method
    choice needs, and — up to ``{max_values} + 1`` of them — the merged values that end a run
    of equal values with both cumulative counts there (``ends``), from which the counts per
    value follow when the support is small (chi-squared, Z-test, PSI, Jensen–Shannon); only for a
    feature with at most ``{ends_limits}[i]`` distinct values, the methods that read them.

    The per-point arithmetic runs on ``ARRAY JOIN``ed rows (columnar, no lambdas). The
    Wasserstein terms, in units of the reference standard deviation (floored at 0.001 as
    Evidently does), are summed as Int128 multiples of 1e-18: an exact sum whatever order the
    threads add them in, so the same data always gives the same number (each term is rounded
    by at most 1e-18 standard deviations).
    """
    return f"""
        SELECT name, any(n_ref) AS nr, any(n_cur) AS nc, any(digest) AS current_digest,
               any(ref_distinct) AS reference_distinct, any(ref_min) AS reference_min, any(ref_max) AS reference_max,
               max(if(d != 0, abs(c_r / n_ref - c_c / n_cur), 0.)) AS ks_statistic,
               toFloat64(sum(toInt128(least(abs(c_r / n_ref - c_c / n_cur) * d / norm, 1e20) * 1e18))) / 1e18
                   * any(norm) AS wasserstein,
               countIf(d != 0) AS distinct_values,
               countIf(w = {CURRENT_WEIGHT} AND (x < ref_min OR x > ref_max)) AS out_of_range,
               if(distinct_values <= any(ends_limit),
                  groupArrayIf({{max_values:UInt64}} + 1)((x, c_r, c_c), d != 0), []) AS ends
        FROM (
            SELECT name, n_ref, n_cur, digest, ref_distinct, ref_min, ref_max, norm, x, w, d, ends_limit,
                   -- one cumulative sum carries both counts: reference rows below 2^32, current rows above
                   packed % {CURRENT_WEIGHT} AS c_r, intDiv(packed, {CURRENT_WEIGHT}) AS c_c
            FROM (
                SELECT name, nr AS n_ref, nc AS n_cur, current_digest AS digest, ks, ws,
                       {{ends_limits:Array(UInt64)}}[indexOf({{names:Array(String)}}, name)] AS ends_limit,
                       greatest(reference_std, 0.001) AS norm,
                       length(rv) AS ref_distinct,
                       if(empty(rv), nan, rv[1]) AS ref_min, if(empty(rv), nan, rv[-1]) AS ref_max,
                       arrayCumSum(ws) AS cum,
                       -- the step to the next point: 0 inside a run of equal values, -1 after the last
                       -- point (where both ECDFs are 1 and the gap is 0)
                       arrayPushBack(arrayPopFront(arrayDifference(ks)), -1.) AS steps
                FROM ({_merged_support(source, current, target)})
                WHERE nr > 0 AND nc > 0
            )
            ARRAY JOIN ks AS x, ws AS w, cum AS packed, steps AS d
        )
        GROUP BY name"""


def sturges_bins(source: Source, current: Window, target: str) -> str:
    """Sturges' equal-width bins over both samples and the counts of each sample per bin.

    The bins are numpy's ``histogram_bin_edges(both, bins="sturges")``: ``k = ceil(range /
    (range / (log2(n) + 1)))`` bins, edges ``i * (range / k) + min`` with the last edge the
    maximum (``numpy.linspace``'s arithmetic), a value in bin ``i`` when
    ``edge_i <= v < edge_{{i+1}}``, the last bin closed — Evidently's PSI and Jensen–Shannon
    binning of a numeric feature with more than 20 reference values.
    """
    return f"""
        SELECT name, edges,
               arrayMap(b -> arraySum(arrayFilter((w, i) -> i = b, rc, ref_bin)), range(1, bins + 1)) AS bin_reference,
               arrayMap(b -> arrayCount(i -> i = b, cur_bin), range(1, bins + 1)) AS bin_current
        FROM (
            SELECT name, rc, bins, edges,
                   arrayMap(v -> if(arrayFirstIndex(e -> v < e, edges) = 0, bins,
                                    arrayFirstIndex(e -> v < e, edges) - 1), rv) AS ref_bin,
                   arrayMap(v -> if(arrayFirstIndex(e -> v < e, edges) = 0, bins,
                                    arrayFirstIndex(e -> v < e, edges) - 1), cur) AS cur_bin
            FROM (
                SELECT name, rv, rc, cur, bins,
                       arrayMap(i -> if(i = bins, hi, i * ((hi - lo) / bins) + lo), range(bins + 1)) AS edges
                FROM (
                    SELECT name, rv, rc, cur, ks[1] AS lo, ks[-1] AS hi,
                           toUInt64(ceil((hi - lo) / ((hi - lo) / (log2(nr + nc) + 1.)))) AS bins
                    FROM ({_merged_support(source, current, target)})
                    WHERE nr > 0 AND nc > 0 AND ks[-1] > ks[1]
                )
            )
        )"""


def compare_categorical(source: Source, current: Window, target: str) -> str:
    """Current rows per category per feature (categories sorted), at most ``{max_values}`` of them."""
    return f"""
        SELECT name, length(t) AS distinct_values,
               arrayMap(e -> e.1, if(length(t) <= {{max_values:UInt64}}, t, [])) AS categories,
               arrayMap(e -> toUInt64(e.2), if(length(t) <= {{max_values:UInt64}}, t, [])) AS counts,
               arraySum(arrayMap(e -> e.2, t)) AS present,
               lower(hex(cityHash64(t))) AS current_digest
        FROM {_requested()}
        LEFT JOIN (
            SELECT name, arraySort(groupArray((x, n))) AS t FROM ({categorical_counts(source, current, target)})
            GROUP BY name
        ) AS v USING (name)"""


def read_profiles() -> str:
    """The stored profiles of a reference window, newest per feature."""
    return f"""
        SELECT feature, feature_type, rows, missing, unique_values, mean, std, min, max,
               if(length(categories) <= {{max_values:UInt64}}, categories, []) AS categories,
               if(length(categories) <= {{max_values:UInt64}}, category_counts, []) AS category_counts,
               profile_hash, cell_resolution, cell_origin, cell_width
        FROM reference_profiles FINAL
        WHERE {REFERENCE_MATCH} AND has({{keys:Array(String)}}, feature)"""


def window_rows(source: Source, window: Window) -> str:
    """Rows of a window (the events a drift run reads)."""
    return f"SELECT count() FROM inferences FINAL WHERE {source.where(window)}"


DISCOVERED = "discovery"  # feature_type of the row that remembers a reference window's features


def remembered_features() -> str:
    """The features found in a reference window by an earlier run, while its row count is unchanged."""
    return f"""
        SELECT categories FROM reference_profiles FINAL
        WHERE {REFERENCE_MATCH} AND feature = {{key:String}} AND feature_type = '{DISCOVERED}'
          AND rows = {{rows:UInt64}}"""


def remember_features() -> str:
    """Remember a reference window's features (``kind/name``) beside its profiles."""
    return f"""
        INSERT INTO reference_profiles (model, model_version, feature, feature_type, reference_start, reference_end,
                                        rows, categories, profile_hash)
        SELECT {{model:String}}, {{profile_version:String}}, {{key:String}}, '{DISCOVERED}', {REFERENCE_KEY},
               {{rows:UInt64}}, {{features:Array(String)}},
               lower(hex(SHA256(arrayStringConcat({{features:Array(String)}}, '\n'))))"""


def discover(source: Source, window: Window) -> str:
    """Feature names (numeric, categorical) and prediction presence in a window.

    The names are found by ``DISTINCT`` over the ``ARRAY JOIN``ed LowCardinality names (grouped on their
    dictionary positions): ``groupUniqArrayArray`` hashed every name's string, 6 times the CPU on a wide model.
    """

    def names(column: str) -> str:
        return f"""(
            SELECT arraySort(groupArray(toString(n)))
            FROM (SELECT DISTINCT n FROM inferences FINAL ARRAY JOIN {column} AS n WHERE {source.where(window)}))"""

    return f"""
        SELECT {names("num_names")}, {names("cat_names")},
               countIf(prediction IS NOT NULL), countIf(prediction_label != '')
        FROM inferences FINAL WHERE {source.where(window)}"""


def previous_verdicts() -> str:
    """The latest verdict of each earlier current window of one feature, newest first."""
    return """
        SELECT current_start, current_end, argMax(drifted, computed_at) AS drifted
        FROM drift_results FINAL
        WHERE model = {model:String} AND model_version = {model_version:String} AND target = {target:String}
          AND feature = {feature:String}
          AND current_end <= fromUnixTimestamp64Micro({before:Int64}, 'UTC')
        GROUP BY current_start, current_end
        ORDER BY current_end DESC, current_start DESC
        LIMIT {limit:UInt64}"""
