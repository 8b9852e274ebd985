"""Drift of embedding features: Evidently's four methods over SQL aggregates and bounded samples.

Per embedding feature (``emb_names``/``emb_values`` of ``inferences``), ClickHouse reduces each
window, in one scan, to: the number of vectors per dimension and of vectors holding NaN or
infinities, the mean vector of the valid ones (``avgForEachIf``), the valid vectors whose
``cityHash64(event_id)`` lies below a cut sized for the first sample the method reads (so the first
samples cost no second scan) and, for the current window, the number of rows (for the missing
share). The reference's most frequent dimension is the feature's
dimension; vectors of another dimension or with non-finite values are left out and counted in
``details.ignored``. Then the method (``DriftSettings``/``--feature NAME:embedding:METHOD``):

* ``domain_classifier`` (default, as Evidently's ``EmbeddingsDrift``) reads a first sample of at
  most ``FIRST_SAMPLE_ROWS`` vectors per window; when its verdict is not clear
  (:func:`~driftwarden.detectors.methods.domain_classifier.undecided`) it reads the larger sample of
  at most ``embedding_sample_rows`` (the whole window when smaller: then the score is Evidently's on
  the same rows) and that verdict is final;
* ``ratio`` reads at most ``embedding_sample_rows`` vectors per window, ``mmd`` at most
  ``mmd_sample_rows``;
* ``distance`` reads only the two mean vectors: exact over the whole windows.

Samples are deterministic hash samples (the rows with the smallest ``cityHash64(event_id)``, then
time, chosen among the rows whose hash is below a cut that keeps a few more than needed, so that no
sort sees the whole window), returned in time order. Vectors travel as Arrow and become one
flat Float32 buffer (``rows x dim``), never Python lists nor Float64 copies.
"""

from __future__ import annotations

import math

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.drift.report import FeatureDrift
from driftwarden.detectors.drift.settings import DriftSettings, FeatureSpec
from driftwarden.detectors.drift.sql import Source
from driftwarden.detectors.methods import METHODS, get_method
from driftwarden.detectors.methods.domain_classifier import undecided
from driftwarden.detectors.methods.samples import EmbeddingSample
from driftwarden.detectors.window import Window
from driftwarden.lazy import numpy as np

DEFAULT_METHOD = "domain_classifier"
FIRST_SAMPLE_ROWS = 2_000  # the domain classifier's first sample per window (module docstring)
MIN_VECTORS = 10  # fewer valid vectors in a window than this: no verdict
_PAIRS = "ARRAY JOIN emb_names AS name, emb_values AS vector"
_VALID = "length(vector) = {dim:UInt64} AND isFinite(arraySum(vector))"
# blocks of 8192 rows (12 MB of 384-dimensional vectors) instead of 65,505: the scans' peak memory is
# ~100 MB lower, their CPU time the same
_SETTINGS = {"max_block_size": 8192}


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


def _first_limit(spec: FeatureSpec, settings: DriftSettings) -> int:
    """Vectors per window of the first sample a feature's method reads (0: none, it reads only means)."""
    method = DEFAULT_METHOD if spec.method == "auto" else spec.method
    if METHODS[method].needs == "means":
        return 0
    if method == "mmd":
        return settings.mmd_sample_rows
    if method == "domain_classifier":
        return min(FIRST_SAMPLE_ROWS, settings.embedding_sample_rows)
    return settings.embedding_sample_rows


def _cut(rows: int, limit: int) -> int | None:
    """Hash cut keeping about ``limit + 5 sqrt(limit) + 100`` of ``rows`` rows in expectation (``None``: all rows)."""
    if limit <= 0:
        return 0
    share = (limit + 5 * math.sqrt(limit) + 100) / max(rows, 1)
    return None if share >= 1.0 else int(share * 2**64)


def _shapes(
    client: Client, source: Source, window: Window, names: list[str], limit: int, count_rows: bool
) -> tuple[dict[str, dict], int]:
    """Per feature, in one scan: vectors per dimension, how many of them hold NaN or infinities, the mean of
    the valid ones per dimension (Float64), and the valid vectors whose ``cityHash64(event_id)`` lies below a
    cut sized for ``limit`` of them (the candidates of the first hash sample: :func:`_first_sample`); and,
    when ``count_rows``, the window's number of rows (0 otherwise).

    The cut is sized on the window's number of rows read without ``FINAL`` (from the parts' metadata: an
    upper bound). With ``count_rows``, ``LEFT ARRAY JOIN`` keeps the rows without embeddings (``i = 0``) and a
    row counts once, at ``i <= 1``. ``isFinite(arraySum(v))``: a Float32 vector's sum (Float64, no overflow)
    is finite iff all its values are."""
    rows_query = f"SELECT count() FROM inferences WHERE {source.where(window)}"
    upper = int(client.query(rows_query, parameters=source.parameters()).result_rows[0][0])
    cut = _cut(upper, limit)
    pick = "wanted AND valid" + ("" if cut is None else " AND h < {cut:UInt64}")
    join = "LEFT ARRAY JOIN" if count_rows else "ARRAY JOIN"
    table = client.query_arrow(
        f"""SELECT feature, dim, countIf(i <= 1) AS row_count, countIf(wanted) AS vectors,
                   countIf(wanted AND NOT valid) AS non_finite, avgForEachIf(vector, wanted AND valid) AS mean,
                   groupArrayIf(vector, {pick}) AS candidates, groupArrayIf(h, {pick}) AS hashes,
                   groupArrayIf(ts, {pick}) AS times
            FROM (SELECT if(wanted, name, '') AS feature, vector, i, wanted, ts, cityHash64(event_id) AS h,
                         if(wanted, length(vector), 0) AS dim, isFinite(arraySum(vector)) AS valid
                  FROM (SELECT name, vector, i, ts, event_id, i > 0 AND has({{names:Array(String)}}, name) AS wanted
                        FROM inferences FINAL
                        {join} emb_names AS name, emb_values AS vector, arrayEnumerate(emb_names) AS i
                        WHERE {source.where(window)}))
            GROUP BY feature, dim""",
        parameters={**source.parameters(), "names": names, **({"cut": cut} if cut is not None else {})},
        settings=_SETTINGS,
    )
    out: dict[str, dict] = {}
    window_rows = 0
    columns = {name: table.column(name) for name in table.column_names}
    for k in range(table.num_rows):
        window_rows += columns["row_count"][k].as_py()
        count = columns["vectors"][k].as_py()
        if not count:
            continue
        name, dim = columns["feature"][k].as_py(), int(columns["dim"][k].as_py())
        entry = out.setdefault(name, {"dims": {}, "non_finite": {}, "means": {}, "candidates": {}})
        entry["dims"][dim] = int(count)
        entry["non_finite"][dim] = int(columns["non_finite"][k].as_py())
        entry["means"][dim] = columns["mean"][k].values.to_numpy(zero_copy_only=False).astype(np.float64)
        entry["candidates"][dim] = (
            _vectors(columns["candidates"][k].values, dim),
            columns["hashes"][k].values.to_numpy(zero_copy_only=False),
            columns["times"][k].values.cast("int64").to_numpy(zero_copy_only=False),
        )
    return out, (window_rows if count_rows else 0)


def _vectors(column, dim: int) -> np.ndarray:
    """An Arrow list<float> column as one rows x dim Float32 array (no Python lists; no copy without nulls)."""
    if len(column) == 0:
        return np.empty((0, dim), dtype=np.float32)
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32, copy=False).reshape(len(column), dim)


def _first_sample(shape: dict, dim: int, limit: int) -> np.ndarray | None:
    """The hash sample of ``limit`` vectors (smallest hash, then time; in time order) from the scan's
    candidates, or ``None`` when the cut kept too few of them to be sure (then :func:`sample` reads it)."""
    vectors, hashes, times = shape["candidates"][dim]
    valid = _valid(shape, dim)
    if len(vectors) < min(limit, valid):
        return None
    chosen = np.lexsort((times, hashes))[:limit]
    chosen = chosen[np.lexsort((hashes[chosen], times[chosen]))]
    return vectors[chosen]


def _valid(shape: dict | None, dim: int) -> int:
    if not shape:
        return 0
    return shape["dims"].get(dim, 0) - shape["non_finite"].get(dim, 0)


def _ignored(shape: dict | None, dim: int) -> dict:
    if not shape:
        return {"non_finite": 0, "other_dimension": 0}
    other = sum(n for d, n in shape["dims"].items() if d != dim)
    return {"non_finite": shape["non_finite"].get(dim, 0), "other_dimension": other}


def sample(
    client: Client, source: Source, window: Window, name: str, dim: int, limit: int, valid: int | None = None
) -> np.ndarray:
    """At most ``limit`` valid vectors of ``name`` in ``window`` (a hash sample: the smallest
    ``cityHash64(event_id)``, then time) in time order, rows x dim, Float32.

    When the window's number of valid vectors (``valid``) is known, only the rows below the hash cut of
    :func:`_cut` are sorted (a few more than ``limit``, not the window's vectors); in the rare case the cut
    kept too few, the sample is read again without it, so the rows are always the same."""
    cut = _cut(valid, limit) if valid is not None else None
    vectors = _read_sample(client, source, window, name, dim, limit, cut)
    if cut is not None and len(vectors) < min(limit, valid or 0):
        vectors = _read_sample(client, source, window, name, dim, limit, None)
    return vectors


def _read_sample(
    client: Client, source: Source, window: Window, name: str, dim: int, limit: int, cut: int | None
) -> np.ndarray:
    below = "" if cut is None else " AND cityHash64(event_id) < {cut:UInt64}"
    query = f"""
        SELECT vector FROM (
            SELECT ts, cityHash64(event_id) AS h, vector FROM inferences FINAL {_PAIRS}
            WHERE {source.where(window)} AND name = {{name:String}}{below} AND {_VALID}
            ORDER BY h, ts LIMIT {{limit:UInt64}})
        ORDER BY ts, h"""
    parameters = {**source.parameters(), "name": name, "dim": dim, "limit": limit}
    if cut is not None:
        parameters["cut"] = cut
    table = client.query_arrow(query, parameters=parameters, settings=_SETTINGS)
    return _vectors(table.column(0).combine_chunks(), dim)


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
    limit = max(_first_limit(spec, settings) for spec in specs)
    ref_shapes, _ = _shapes(client, source, reference, names, limit, count_rows=False)
    cur_shapes, window_rows = _shapes(client, source, current, names, limit, count_rows=True)
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

    def read(limit: int) -> EmbeddingSample:
        first = limit == _first_limit(spec, settings)
        ref_sample = _first_sample(ref_shape, dim, limit) if first else None
        cur_sample = _first_sample(cur_shape, dim, limit) if first else None
        if ref_sample is None:
            ref_sample = sample(client, source, reference, spec.name, dim, limit, nr)
        if cur_sample is None:
            cur_sample = sample(client, source, current, spec.name, dim, limit, nc)
        details["sample"] = {"reference": len(ref_sample), "current": len(cur_sample), "bound": limit}
        return EmbeddingSample(ref_sample, cur_sample, ref_mean, cur_mean, nr, nc)

    try:
        if METHODS[method].needs == "means":
            empty = np.empty((0, dim), dtype=np.float32)
            score = get_method(method).score(EmbeddingSample(empty, empty, ref_mean, cur_mean, nr, nc), threshold)
        elif method == "domain_classifier":
            score = _staged_classifier(read, settings, threshold, details)
        else:
            data = read(settings.mmd_sample_rows if method == "mmd" else settings.embedding_sample_rows)
            details["sampled"] = data.sampled or None
            score = get_method(method).score(data, threshold)
    except ValueError as exc:
        return _result(spec, method, threshold, None, nr, nc, missing, details, f"no verdict: {exc}")
    if not details.get("sampled"):
        details.pop("sampled", None)
    return _result(spec, method, threshold, score, nr, nc, missing, {**details, **score.details}, "")


def _staged_classifier(read, settings: DriftSettings, threshold: float, details: dict):
    """The domain classifier on a first sample of ``FIRST_SAMPLE_ROWS`` per window, then, when that verdict is
    not clear, on the larger sample of ``embedding_sample_rows`` (see the module docstring)."""
    method = get_method("domain_classifier")
    bound = settings.embedding_sample_rows
    data = read(min(FIRST_SAMPLE_ROWS, bound))
    score = method.score(data, threshold)
    if data.sampled and bound > FIRST_SAMPLE_ROWS:
        reason = undecided(score, data)
        if reason:
            details["first_sample"] = {**details["sample"], "statistic": score.statistic, "undecided": reason}
            data = read(bound)
            score = method.score(data, threshold)
    details["sampled"] = data.sampled or None
    return score


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
