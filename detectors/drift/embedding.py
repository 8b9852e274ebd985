"""Drift of embedding features: Evidently's four methods over SQL aggregates and bounded samples.

Per embedding feature (``emb_names``/``emb_values`` of ``inferences``), ClickHouse reduces each
window, in one scan, to: the number of vectors per dimension and of vectors holding NaN or
infinities, and the mean vector of the valid ones (``avgForEachIf``). The reference's most frequent dimension is
the feature's dimension; vectors of another dimension or with non-finite values are left out
and counted in ``details.ignored``. Then the method (``DriftSettings``/``--feature NAME:embedding:METHOD``):

* ``domain_classifier`` (default, as Evidently's ``EmbeddingsDrift``) and ``ratio`` read at most
  ``embedding_sample_rows`` vectors per window, ``mmd`` at most ``mmd_sample_rows`` (a
  deterministic hash sample in time order; the whole window when smaller);
* ``distance`` reads only the two mean vectors: exact over the whole windows.

Vectors travel as Arrow (``query_arrow``), never as Python lists.
"""

from __future__ import annotations

import math

import numpy as np
from clickhouse_connect.driver.client import Client

from driftwarden.detectors.drift.report import FeatureDrift
from driftwarden.detectors.drift.settings import DriftSettings, FeatureSpec
from driftwarden.detectors.drift.sql import Source
from driftwarden.detectors.methods import METHODS, get_method
from driftwarden.detectors.methods.samples import EmbeddingSample
from driftwarden.detectors.window import Window

DEFAULT_METHOD = "domain_classifier"
MIN_VECTORS = 10  # fewer valid vectors in a window than this: no verdict
_PAIRS = "ARRAY JOIN emb_names AS name, emb_values AS vector"
_VALID = "length(vector) = {dim:UInt64} AND arrayAll(x -> isFinite(x), vector)"


def has_columns(client: Client) -> bool:
    """Whether the store has the text and embedding columns (migration 0007)."""
    query = (
        "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = 'inferences' "
        "AND name IN ('text_names', 'emb_names')"
    )
    return int(client.query(query).result_rows[0][0]) == 2


def discover(client: Client, source: Source, window: Window) -> list[str]:
    """Names of the embedding features in a window."""
    return list(
        client.query(
            f"SELECT arraySort(groupUniqArrayArray(emb_names)) FROM inferences WHERE {source.where(window)}",
            parameters=source.parameters(),
        ).result_rows[0][0]
    )


def _shapes(client: Client, source: Source, window: Window, names: list[str]) -> dict[str, dict]:
    """Per feature, in one scan: vectors per dimension, how many of them hold NaN or infinities, and the
    mean of the valid ones per dimension (Float64)."""
    rows = client.query(
        f"""SELECT name, dim, count(), countIf(NOT valid), avgForEachIf(vector, valid)
            FROM (SELECT name, vector, length(vector) AS dim, arrayAll(x -> isFinite(x), vector) AS valid
                  FROM inferences FINAL {_PAIRS}
                  WHERE {source.where(window)} AND has({{names:Array(String)}}, name))
            GROUP BY name, dim""",
        parameters={**source.parameters(), "names": names},
    ).result_rows
    out: dict[str, dict] = {}
    for name, dim, count, bad, mean in rows:
        entry = out.setdefault(name, {"dims": {}, "non_finite": {}, "means": {}})
        entry["dims"][int(dim)] = int(count)
        entry["non_finite"][int(dim)] = int(bad)
        entry["means"][int(dim)] = np.asarray(mean, dtype=np.float64)
    return out


def _valid(shape: dict | None, dim: int) -> int:
    if not shape:
        return 0
    return shape["dims"].get(dim, 0) - shape["non_finite"].get(dim, 0)


def _ignored(shape: dict | None, dim: int) -> dict:
    if not shape:
        return {"non_finite": 0, "other_dimension": 0}
    other = sum(n for d, n in shape["dims"].items() if d != dim)
    return {"non_finite": shape["non_finite"].get(dim, 0), "other_dimension": other}


def sample(client: Client, source: Source, window: Window, name: str, dim: int, limit: int) -> np.ndarray:
    """At most ``limit`` valid vectors of ``name`` in ``window`` (a hash sample) in time order, rows x dim.

    The sample's event ids are chosen first (sorting ids, not vectors), then only their vectors are read."""
    query = f"""
        SELECT vector FROM inferences FINAL {_PAIRS}
        WHERE {source.where(window)} AND name = {{name:String}} AND {_VALID}
          AND event_id IN (
            SELECT event_id FROM inferences FINAL {_PAIRS}
            WHERE {source.where(window)} AND name = {{name:String}} AND {_VALID}
            ORDER BY cityHash64(event_id), ts LIMIT {{limit:UInt64}})
        ORDER BY ts, event_id"""
    table = client.query_arrow(query, parameters={**source.parameters(), "name": name, "dim": dim, "limit": limit})
    column = table.column(0).combine_chunks()
    if len(column) == 0:
        return np.empty((0, dim))
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    return flat.reshape(len(column), dim)


def compare(
    client: Client,
    source: Source,
    reference: Window,
    current: Window,
    specs: list[FeatureSpec],
    settings: DriftSettings,
) -> dict[str, list[FeatureDrift]]:
    """Per embedding feature: its verdict (a one-element list, like text features without descriptors)."""
    names = [s.name for s in specs]
    ref_shapes = _shapes(client, source, reference, names)
    cur_shapes = _shapes(client, source, current, names)
    window_rows = int(
        client.query(
            f"SELECT count() FROM inferences FINAL WHERE {source.where(current)}", parameters=source.parameters()
        ).result_rows[0][0]
    )
    out = {}
    for spec in specs:
        ref_shape, cur_shape = ref_shapes.get(spec.name), cur_shapes.get(spec.name)
        out[spec.name] = [_one(client, source, reference, current, spec, settings, ref_shape, cur_shape, window_rows)]
    return out


def _one(
    client: Client,
    source: Source,
    reference: Window,
    current: Window,
    spec: FeatureSpec,
    settings: DriftSettings,
    ref_shape: dict | None,
    cur_shape: dict | None,
    window_rows: int,
) -> FeatureDrift:
    method = DEFAULT_METHOD if spec.method == "auto" else spec.method
    threshold = (
        spec.threshold
        if spec.threshold is not None
        else settings.thresholds.get(method, METHODS[method].default_threshold)
    )
    present = sum(cur_shape["dims"].values()) if cur_shape else 0
    missing = (window_rows - present) / window_rows if window_rows else 0.0
    if not ref_shape:
        return _result(spec, method, threshold, None, 0, 0, missing, {}, "no verdict: no vectors in the reference")
    valid_dims = {d: n - ref_shape["non_finite"].get(d, 0) for d, n in ref_shape["dims"].items()}
    dim = max(valid_dims, key=lambda d: (valid_dims[d], -d))
    nr, nc = _valid(ref_shape, dim), _valid(cur_shape, dim)
    details: dict = {
        "dimension": dim,
        "ignored": {"reference": _ignored(ref_shape, dim), "current": _ignored(cur_shape, dim)},
    }
    least = max(MIN_VECTORS, settings.min_rows)
    if nr < least or nc < least:
        note = f"no verdict: {nr} reference and {nc} current valid vectors of dimension {dim}, below {least}"
        if cur_shape and nc < least and cur_shape["dims"]:
            seen = ", ".join(str(d) for d in sorted(cur_shape["dims"]))
            note += f" (current dimensions: {seen})"
        return _result(spec, method, threshold, None, nr, nc, missing, details, note)
    ref_mean, cur_mean = ref_shape["means"][dim], cur_shape["means"][dim]  # type: ignore[index]
    if METHODS[method].needs == "means":
        ref_sample = cur_sample = np.empty((0, dim))
    else:
        limit = settings.mmd_sample_rows if method == "mmd" else settings.embedding_sample_rows
        ref_sample = sample(client, source, reference, spec.name, dim, limit)
        cur_sample = sample(client, source, current, spec.name, dim, limit)
        details["sample"] = {"reference": len(ref_sample), "current": len(cur_sample), "bound": limit}
        if len(ref_sample) < nr or len(cur_sample) < nc:
            details["sampled"] = True
    data = EmbeddingSample(ref_sample, cur_sample, ref_mean, cur_mean, nr, nc)
    try:
        score = get_method(method).score(data, threshold)
    except ValueError as exc:
        return _result(spec, method, threshold, None, nr, nc, missing, details, f"no verdict: {exc}")
    return _result(spec, method, threshold, score, nr, nc, missing, {**details, **score.details}, "")


def _result(spec, method, threshold, score, nr, nc, missing, details, note) -> FeatureDrift:
    return FeatureDrift(
        feature=spec.name,
        feature_type="embedding",
        method=method,
        statistic=score.statistic if score else math.nan,
        p_value=None,
        threshold=score.threshold if score else threshold,
        drifted=bool(score and score.drifted),
        persistent=False,
        missing_share=missing,
        out_of_range_share=0.0,
        new_categories=[],
        reference_rows=nr,
        current_rows=nc,
        details=details,
        verdict=("drift" if score.drifted else "no drift") if score else "no verdict",
        effect_size=score.effect_size if score else 0.0,
        note=note,
    )
