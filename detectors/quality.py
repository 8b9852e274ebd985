"""Data quality per window against the reference: checks with thresholds, counted in ClickHouse.

Every feature seen in either window is checked; a check *fails* when its value is above its
threshold (:class:`~driftwarden.detectors.config.QualityConfig` holds the defaults):

=================  =======================================================================  ===============
check              value                                                                    fails when
=================  =======================================================================  ===============
missing            share of rows of the window without a finite value of the feature         > reference's
                                                                                            share + 0.05
type_mismatch      share of rows holding the feature under the other kind (a numeric         > 0
                   feature sent as a string, a categorical one as a number)
out_of_range       share of the numeric values outside the reference's [min, max]            > 0.05
unseen_category    share of the categorical values the reference never saw                   > 0.05
constant           1 when the feature takes one value in the window but several in the       = 1
                   reference
feature_added      1 for a feature present in the window but not in the reference            = 1
feature_removed    1 for a feature of the reference absent from the window                   = 1
malformed_rows     rows whose name and value arrays differ in length, or that repeat a       > 0
                   feature name (feature '')
=================  =======================================================================  ===============

Malformed rows are stored like any other (the collector never drops them) and counted here;
the feature checks and every other detector of this module family skip them
(``length(num_names) = length(num_values)``), so a malformed row never makes a query fail.
Only aggregates leave the database: counts, minima and maxima, distinct counts, and for
unseen categories up to 10 examples.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.config import QualityConfig
from driftwarden.detectors.provenance import code_version, content_hash, schema_version
from driftwarden.detectors.rows import WELL_FORMED as READABLE
from driftwarden.detectors.window import Window

UTC = dt.UTC
CHECKS = (
    "missing",
    "type_mismatch",
    "out_of_range",
    "unseen_category",
    "constant",
    "feature_added",
    "feature_removed",
    "malformed_rows",
)
MAX_REFERENCE_CATEGORIES = 10_000
EXAMPLES = 10
# What the other detectors read, and no feature named twice in one row.
WELL_FORMED = (
    f"{READABLE} "
    "AND length(arrayDistinct(num_names)) = length(num_names) AND length(arrayDistinct(cat_names)) = length(cat_names)"
)


@dataclass
class QualityResult:
    """One row of ``quality_results``."""

    model: str
    model_version: str
    check_name: str
    feature: str
    feature_type: str
    value: float
    threshold: float
    failed: bool
    affected_rows: int
    current_rows: int
    details: dict
    reference_start: dt.datetime
    reference_end: dt.datetime
    current_start: dt.datetime
    current_end: dt.datetime
    input_hash: str = ""
    code_version: str = field(default_factory=code_version)
    schema_version: int = field(default_factory=schema_version)
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)
    computed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(UTC))

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for key in ("reference_start", "reference_end", "current_start", "current_end", "computed_at"):
            out[key] = out[key].isoformat()
        out["run_id"] = str(out["run_id"])
        return out


def _where(window: Window, model_version: str | None) -> str:
    version = " AND model_version = {v:String}" if model_version is not None else ""
    return f"model = {{m:String}}{version} AND NOT is_replay AND {window.sql()}"


def _both(inner: str, reference: Window, current: Window, model_version: str | None) -> str:
    """``inner`` (a SELECT ... FROM inferences FINAL ... WHERE {where}) over both windows, tagged ``w``."""
    return (
        f"SELECT 'reference' AS w, * FROM ({inner.format(where=_where(reference, model_version))}) "
        f"UNION ALL SELECT 'current' AS w, * FROM ({inner.format(where=_where(current, model_version))})"
    )


def compute_quality(
    client: Client,
    model: str,
    reference: Window,
    current: Window,
    *,
    model_version: str | None = None,
    config: QualityConfig | None = None,
) -> list[QualityResult]:
    """Every check of the current window against the reference (failed and passed), per feature."""
    config = config or QualityConfig()
    params = {"m": model, "v": model_version or ""}
    rows = {
        str(w): (int(n), int(bad))
        for w, n, bad in client.query(
            "SELECT w, count(), countIf(NOT ok) FROM ("
            + _both(
                f"SELECT ({WELL_FORMED}) AS ok FROM inferences FINAL WHERE {{where}}", reference, current, model_version
            )
            + ") GROUP BY w",
            parameters=params,
        ).result_rows
    }
    ref_rows, _ = rows.get("reference", (0, 0))
    cur_rows, malformed = rows.get("current", (0, 0))

    numeric = {
        (str(w), str(n)): (int(present), float(lo), float(hi), int(distinct))
        for w, n, present, lo, hi, distinct in client.query(
            "SELECT w, n, count(), min(v), max(v), uniqExact(v) FROM ("
            + _both(
                "SELECT n, v FROM inferences FINAL ARRAY JOIN num_names AS n, num_values AS v "
                f"WHERE {{where}} AND {WELL_FORMED} AND isFinite(v)",
                reference,
                current,
                model_version,
            )
            + ") GROUP BY w, n",
            parameters=params,
        ).result_rows
    }
    numeric_named = {
        (str(w), str(n)): int(k)
        for w, n, k in client.query(
            "SELECT w, n, count() FROM ("
            + _both(
                f"SELECT arrayJoin(num_names) AS n FROM inferences FINAL WHERE {{where}} AND {WELL_FORMED}",
                reference,
                current,
                model_version,
            )
            + ") GROUP BY w, n",
            parameters=params,
        ).result_rows
    }
    categorical = {
        (str(w), str(n)): (int(present), int(distinct), list(values))
        for w, n, present, distinct, values in client.query(
            "SELECT w, n, count(), uniqExact(x), groupUniqArray({cap:UInt32})(x) FROM ("
            + _both(
                "SELECT n, x FROM inferences FINAL ARRAY JOIN cat_names AS n, cat_values AS x "
                f"WHERE {{where}} AND {WELL_FORMED}",
                reference,
                current,
                model_version,
            )
            + ") GROUP BY w, n",
            parameters={**params, "cap": MAX_REFERENCE_CATEGORIES},
        ).result_rows
    }
    ref_numeric = {n for (w, n) in numeric_named if w == "reference"}
    cur_numeric = {n for (w, n) in numeric_named if w == "current"}
    ref_categorical = {n for (w, n) in categorical if w == "reference"}
    cur_categorical = {n for (w, n) in categorical if w == "current"}

    # out of range and unseen categories need the reference first: one more pass over the current window
    ranges = {n: numeric[("reference", n)][1:3] for n in cur_numeric & ref_numeric if ("reference", n) in numeric}
    out_of_range: dict[str, int] = {}
    if ranges:
        names = sorted(ranges)
        for n, k in client.query(
            f"""
            SELECT n, countIf(v < {{lo:Array(Float64)}}[p] OR v > {{hi:Array(Float64)}}[p])
            FROM (SELECT n, v, indexOf({{names:Array(String)}}, n) AS p
                  FROM inferences FINAL ARRAY JOIN num_names AS n, num_values AS v
                  WHERE {_where(current, model_version)} AND {WELL_FORMED} AND isFinite(v) AND p > 0)
            GROUP BY n
            """,
            parameters={
                **params,
                "names": names,
                "lo": [ranges[n][0] for n in names],
                "hi": [ranges[n][1] for n in names],
            },
        ).result_rows:
            out_of_range[str(n)] = int(k)
    seen_lists = {
        n: categorical[("reference", n)][2]
        for n in cur_categorical & ref_categorical
        if ("reference", n) in categorical
    }
    unseen: dict[str, tuple[int, list[str]]] = {}
    if seen_lists:
        names = sorted(seen_lists)
        complete = [int(categorical[("reference", n)][1] <= MAX_REFERENCE_CATEGORIES) for n in names]
        for n, k, examples in client.query(
            f"""
            SELECT n, count(), groupUniqArray({EXAMPLES})(x)
            FROM (SELECT n, x, indexOf({{names:Array(String)}}, n) AS p
                  FROM inferences FINAL ARRAY JOIN cat_names AS n, cat_values AS x
                  WHERE {_where(current, model_version)} AND {WELL_FORMED} AND p > 0)
            WHERE NOT has({{seen:Array(Array(String))}}[p], x) AND {{complete:Array(UInt8)}}[p] = 1
            GROUP BY n
            """,
            parameters={**params, "names": names, "seen": [seen_lists[n] for n in names], "complete": complete},
        ).result_rows:
            unseen[str(n)] = (int(k), sorted(map(str, examples)))

    out: list[tuple[str, str, str, float, float, bool, int, dict]] = []

    def add(check: str, feature: str, kind: str, value: float, threshold: float, failed: bool, affected: int, **d):
        out.append((check, feature, kind, float(value), float(threshold), bool(failed), int(affected), d))

    add(
        "malformed_rows",
        "",
        "",
        malformed,
        config.malformed_rows,
        malformed > config.malformed_rows,
        malformed,
        note="rows whose name and value arrays differ in length or repeat a name; stored, left out of the checks",
    )
    for kind, ref_names, cur_names, other_ref in (
        ("numeric", ref_numeric, cur_numeric, ref_categorical),
        ("categorical", ref_categorical, cur_categorical, ref_numeric),
    ):
        for name in sorted(cur_names | ref_names):
            if kind == "numeric" and name in ref_categorical and name not in ref_numeric:
                continue  # a categorical feature sent as a number: reported once, under its reference kind
            if kind == "categorical" and name in ref_numeric and name not in ref_categorical:
                continue
            in_ref, in_cur = name in ref_names or name in other_ref, name in cur_names
            if in_cur and not in_ref:
                add(
                    "feature_added",
                    name,
                    kind,
                    1,
                    0,
                    config.schema_changes,
                    numeric_named.get(("current", name), 0) if kind == "numeric" else categorical[("current", name)][0],
                )
                continue
            if in_ref and not in_cur and name not in (cur_categorical if kind == "numeric" else cur_numeric):
                add("feature_removed", name, kind, 1, 0, config.schema_changes, 0)
                continue
            if kind == "numeric":
                present = numeric.get(("current", name), (0, 0.0, 0.0, 0))[0]
                ref_present = numeric.get(("reference", name), (0, 0.0, 0.0, 0))[0]
                mismatched = categorical.get(("current", name), (0, 0, []))[0]
            else:
                present = categorical.get(("current", name), (0, 0, []))[0]
                ref_present = categorical.get(("reference", name), (0, 0, []))[0]
                mismatched = numeric_named.get(("current", name), 0)
            missing_share = 1 - present / cur_rows if cur_rows else 0.0
            ref_missing = 1 - ref_present / ref_rows if ref_rows else 0.0
            limit = min(1.0, ref_missing + config.missing)
            add(
                "missing",
                name,
                kind,
                missing_share,
                limit,
                missing_share > limit + 1e-12,
                cur_rows - present,
                note=f"reference share {ref_missing:.4f} + {config.missing}",
            )
            mismatch_share = mismatched / cur_rows if cur_rows else 0.0
            add(
                "type_mismatch",
                name,
                kind,
                mismatch_share,
                config.type_mismatch,
                mismatch_share > config.type_mismatch,
                mismatched,
                note=f"sent as {'categorical' if kind == 'numeric' else 'numeric'}" if mismatched else "",
            )
            if kind == "numeric" and name in ranges:
                k = out_of_range.get(name, 0)
                share = k / present if present else 0.0
                lo, hi = ranges[name]
                add(
                    "out_of_range",
                    name,
                    kind,
                    share,
                    config.out_of_range,
                    share > config.out_of_range,
                    k,
                    note=f"reference range [{lo:.6g}, {hi:.6g}]",
                )
            if kind == "categorical" and name in seen_lists:
                k, examples = unseen.get(name, (0, []))
                share = k / present if present else 0.0
                add(
                    "unseen_category",
                    name,
                    kind,
                    share,
                    config.unseen_category,
                    share > config.unseen_category,
                    k,
                    examples=examples,
                )
            cur_distinct = (
                (numeric.get(("current", name)) or (0, 0, 0, 0))[3]
                if kind == "numeric"
                else (categorical.get(("current", name)) or (0, 0, []))[1]
            )
            ref_distinct = (
                (numeric.get(("reference", name)) or (0, 0, 0, 0))[3]
                if kind == "numeric"
                else (categorical.get(("reference", name)) or (0, 0, []))[1]
            )
            constant = cur_distinct == 1 and ref_distinct > 1
            add(
                "constant",
                name,
                kind,
                1 if constant else 0,
                0,
                config.constant and constant,
                present if constant else 0,
                note=f"{cur_distinct} distinct values here, {ref_distinct} in the reference",
            )

    inputs = {
        "detector": "data_quality",
        "model": model,
        "model_version": model_version or "",
        "reference": [reference.start, reference.end, ref_rows],
        "current": [current.start, current.end, cur_rows],
        "config": config.model_dump(),
    }
    input_hash = content_hash(inputs)
    return [
        QualityResult(
            model=model,
            model_version=model_version or "",
            check_name=check,
            feature=feature,
            feature_type=kind,
            value=value,
            threshold=threshold,
            failed=failed,
            affected_rows=affected,
            current_rows=cur_rows,
            details={k: v for k, v in details.items() if v not in ("", [], None)},
            reference_start=reference.start,
            reference_end=reference.end,
            current_start=current.start,
            current_end=current.end,
            input_hash=input_hash,
        )
        for check, feature, kind, value, threshold, failed, affected, details in out
    ]


def write_quality(client: Client, results: Sequence[QualityResult]) -> int:
    """Insert ``results`` into ``quality_results``; return the rows written."""
    if not results:
        return 0
    names = [f.name for f in dataclasses.fields(QualityResult)]
    rows = [
        [json.dumps(r.details, sort_keys=True) if n == "details" else getattr(r, n) for n in names] for r in results
    ]
    client.insert("quality_results", rows, column_names=names)
    return len(rows)
