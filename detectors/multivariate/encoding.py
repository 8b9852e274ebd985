"""The rows of a window as standardised vectors, defined by aggregates of the reference, evaluated in SQL.

Both multivariate methods see a row as one vector over every numeric and categorical
feature (NannyML's preprocessing of ``DataReconstructionDriftCalculator``):

* a numeric feature ``x`` missing (absent from the row, or not finite) is imputed by its
  reference mean; a categorical one by its most frequent reference category;
* a categorical value is count-encoded: replaced by its share of the reference rows
  (after imputation); a category the reference never saw gets 0 (as NannyML's CountEncoder),
  and so do categories beyond the ``MAX_ENCODED_CATEGORIES`` most frequent of a feature;
* every column is standardised by its reference mean and standard deviation (population
  standard deviation after imputation, as scikit-learn's ``StandardScaler``; a constant
  column is scaled by 1):

      z_j = (x_j - mean_j) / std_j

The :class:`Encoding` holds those reference aggregates (read in one aggregate query, no
rows leave the database) and renders :meth:`Encoding.centred_sql`, the ClickHouse expression
of ``z * std`` for one row of ``inferences``. Rows whose name and value arrays differ in length
are malformed: they are left out here and counted by the data-quality detector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.rows import WELL_FORMED
from driftwarden.detectors.window import Window

MAX_ENCODED_CATEGORIES = 1000
LAYOUT_ROWS = 10_000  # events read to find the usual order of the numeric features
MISSING_KEY = "\x00missing"  # the key of a missing categorical value: encoded as the most frequent category


def source_where(window: Window, model_version: str | None) -> str:
    """The events of ``{model:String}`` (and ``{model_version:String}``) in ``window``: no replays, well formed."""
    version = " AND model_version = {model_version:String}" if model_version is not None else ""
    return f"model = {{model:String}}{version} AND NOT is_replay AND {window.sql('ts')} AND {WELL_FORMED}"


def source_parameters(model: str, model_version: str | None) -> dict:
    params: dict = {"model": model}
    if model_version is not None:
        params["model_version"] = model_version
    return params


@dataclass(frozen=True)
class Encoding:
    """Reference aggregates that turn a row into its standardised vector ``z`` (numeric features first)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    reference_rows: int
    numeric_mean: tuple[float, ...]
    numeric_scale: tuple[float, ...]
    numeric_present: tuple[int, ...]
    categories: tuple[tuple[str, ...], ...]
    category_shares: tuple[tuple[float, ...], ...]
    rare_share: tuple[float, ...]
    mode_share: tuple[float, ...]
    categorical_mean: tuple[float, ...]
    categorical_scale: tuple[float, ...]

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def scale(self) -> list[float]:
        """The standard deviation of every column of ``z``, numeric features first."""
        return [*self.numeric_scale, *self.categorical_scale]

    def centred_sql(self) -> str:
        """The ClickHouse expression of the row's ``z * std`` (Array(Float64)): imputed, encoded, centred on the
        reference mean but not yet divided by the standard deviation (array arithmetic in ClickHouse has no
        element-wise division; the methods fold ``1 / std`` into their constants instead).

        Numeric: ``v - mean`` (0 when missing). Categorical: ``share(value) - mean share``, the share looked
        up with ``transform`` over ``feature \\x1f value`` keys (a hash lookup per value).
        """
        numeric = (
            "arrayMap((v, m) -> if(isFinite(v), v - m, 0.), "
            "if(num_names = {mv_num:Array(String)}, num_values, "
            "arrayMap(n -> if(indexOf(num_names, n) > 0, num_values[indexOf(num_names, n)], nan), "
            "{mv_num:Array(String)})), {mv_num_mean:Array(Float64)})"
        )
        value = "if(indexOf(cat_names, n) > 0, cat_values[indexOf(cat_names, n)], '\\x00missing')"  # MISSING_KEY
        categorical = (
            "arrayMap((n, x, m) -> transform(concat(n, '\\x1f', x), {mv_keys:Array(String)}, "
            "{mv_shares:Array(Float64)}, 0.) - m, {mv_cat:Array(String)}, "
            f"if(cat_names = {{mv_cat:Array(String)}}, cat_values, arrayMap(n -> {value}, {{mv_cat:Array(String)}})), "
            "{mv_cat_mean:Array(Float64)})"
        )
        if not self.categorical:
            return f"CAST({numeric} AS Array(Float64))"
        if not self.numeric:
            return f"CAST({categorical} AS Array(Float64))"
        return f"CAST(arrayConcat({numeric}, {categorical}) AS Array(Float64))"

    def parameters(self) -> dict:
        keys, shares = [], []
        for name, categories, values, mode in zip(
            self.categorical, self.categories, self.category_shares, self.mode_share, strict=True
        ):
            keys += [f"{name}\x1f{c}" for c in categories] + [f"{name}\x1f{MISSING_KEY}"]
            shares += [*values, mode]
        return {
            "mv_num": list(self.numeric),
            "mv_num_mean": list(self.numeric_mean),
            "mv_cat": list(self.categorical),
            "mv_keys": keys,
            "mv_shares": shares,
            "mv_cat_mean": list(self.categorical_mean),
        }

    def as_dict(self) -> dict:
        return {
            "numeric": {
                name: {"mean": m, "scale": s, "present": p}
                for name, m, s, p in zip(
                    self.numeric, self.numeric_mean, self.numeric_scale, self.numeric_present, strict=True
                )
            },
            "categorical": {
                name: {"categories": len(c), "mean": m, "scale": s}
                for name, c, m, s in zip(
                    self.categorical, self.categories, self.categorical_mean, self.categorical_scale, strict=True
                )
            },
        }


def window_features(client: Client, model: str, window: Window, model_version: str | None) -> tuple[list, list]:
    """Numeric and categorical feature names seen in the window, each sorted."""
    numeric, categorical = client.query(
        "SELECT arraySort(groupUniqArrayArray(num_names)), arraySort(groupUniqArrayArray(cat_names)) "
        f"FROM inferences WHERE {source_where(window, model_version)}",
        parameters=source_parameters(model, model_version),
    ).result_rows[0]
    return [str(n) for n in numeric], [str(c) for c in categorical]


def dominant_order(
    client: Client, model: str, window: Window, model_version: str | None, numeric: list[str]
) -> list[str]:
    """``numeric`` in the order most of the window's first ``LAYOUT_ROWS`` events store them, so that
    :meth:`Encoding.centred_sql` takes the fast path (the row's value array as it is) for those events. Only a
    speed-up: any order gives the same values, so a bounded peek replaces a scan of the window."""
    rows = client.query(
        f"SELECT num_names, count() AS n FROM (SELECT num_names FROM inferences "
        f"WHERE {source_where(window, model_version)} LIMIT {LAYOUT_ROWS}) "
        "GROUP BY num_names ORDER BY n DESC LIMIT 1",
        parameters=source_parameters(model, model_version),
    ).result_rows
    if rows:
        layout = [str(n) for n in rows[0][0]]
        if sorted(layout) == sorted(numeric):
            return layout
    return list(numeric)


def fit_encoding(
    client: Client,
    model: str,
    reference: Window,
    numeric: list[str],
    categorical: list[str],
    model_version: str | None = None,
) -> Encoding:
    """The :class:`Encoding` of ``reference``: means, scales and category shares, read in one scan.

    One aggregate over the window: the row count; per numeric feature (in ``numeric``'s order, the row's
    value array taken as it is when its layout is that order) the count, mean and population variance of the
    finite values (``-IfForEach`` combinators); per categorical feature the count of every value
    (``sumMap`` over ``position \\x1f value`` keys, no ARRAY JOIN).
    """
    params = {**source_parameters(model, model_version), "mv_num": list(numeric), "cats": list(categorical)}
    vector = (
        "if(num_names = {mv_num:Array(String)}, num_values, "
        "arrayMap(n -> if(indexOf(num_names, n) > 0, num_values[indexOf(num_names, n)], nan), {mv_num:Array(String)}))"
    )
    rows, present_counts, means, variances, (keys, key_counts) = client.query(
        f"""
        SELECT count(),
               sumForEach(arrayMap(x -> toUInt64(isFinite(x)), v)),
               avgIfForEach(v, arrayMap(x -> isFinite(x), v)),
               varPopIfForEach(v, arrayMap(x -> isFinite(x), v)),
               sumMap(keys, arrayMap(k -> toUInt64(1), keys))
        FROM (SELECT {vector} AS v,
                     arrayFilter(k -> k != '', arrayMap((n, x) -> if(has({{cats:Array(String)}}, n),
                         concat(toString(indexOf({{cats:Array(String)}}, n)), '\x1f', x), ''), cat_names, cat_values))
                         AS keys
              FROM inferences FINAL WHERE {source_where(reference, model_version)})
        """,
        parameters=params,
    ).result_rows[0]
    rows = int(rows)
    numeric_mean, numeric_scale, numeric_present = [], [], []
    for j in range(len(numeric)):
        present = int(present_counts[j]) if j < len(present_counts) else 0
        mean = float(means[j]) if present else 0.0
        var_sum = float(variances[j]) * present if present else 0.0
        # mean imputation adds values at the mean: the variance over all rows is the sum of squares over `rows`
        std = math.sqrt(var_sum / rows) if rows else 0.0
        numeric_mean.append(mean)
        numeric_scale.append(std if std > 0 and math.isfinite(std) else 1.0)
        numeric_present.append(present)

    counts: dict[str, list[tuple[str, int]]] = {c: [] for c in categorical}
    for key, n in zip(keys, key_counts, strict=True):
        position, _, value = str(key).partition("\x1f")
        counts[categorical[int(position) - 1]].append((value, int(n)))
    categories, shares, rare, modes, cat_mean, cat_scale = [], [], [], [], [], []
    for name in categorical:
        items = sorted(counts[name], key=lambda item: (-item[1], item[0]))
        present = sum(n for _, n in items)
        missing = max(0, rows - present)
        if items:
            mode = items[0][0]
            items = [(v, n + missing if v == mode else n) for v, n in items]
        kept, left = items[:MAX_ENCODED_CATEGORIES], items[MAX_ENCODED_CATEGORIES:]
        total = max(1, rows)
        share = {v: n / total for v, n in items}
        rare_share = (sum(n for _, n in left) / len(left) / total) if left else 0.0
        mean = sum(share[v] * n for v, n in items) / total
        var = sum(n * (share[v] - mean) ** 2 for v, n in items) / total
        categories.append(tuple(v for v, _ in kept))
        shares.append(tuple(share[v] for v, _ in kept))
        rare.append(rare_share)
        modes.append(share[items[0][0]] if items else 0.0)
        cat_mean.append(mean)
        cat_scale.append(math.sqrt(var) if var > 0 else 1.0)
    return Encoding(
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        reference_rows=rows,
        numeric_mean=tuple(numeric_mean),
        numeric_scale=tuple(numeric_scale),
        numeric_present=tuple(numeric_present),
        categories=tuple(categories),
        category_shares=tuple(shares),
        rare_share=tuple(rare),
        mode_share=tuple(modes),
        categorical_mean=tuple(cat_mean),
        categorical_scale=tuple(cat_scale),
    )
