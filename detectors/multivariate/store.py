"""The reference side of the PCA reconstruction method, stored in ``multivariate_references`` and reused.

A :class:`.reconstruction.ReferenceFit` (encoding, components, reference chunk errors, second
moments) depends only on the reference window, the features, ``n_components`` and the chunk
length; a scheduled run compares every new window with the same reference, so the fit is stored
once (migration 0017) and later runs scan only the current window, as the drift detector does
with its reference profiles.

A stored fit is used when its ``fit_key`` (a hash of everything it depends on, and of
``FIT_FORMAT``) matches and the window still holds the ``reference_rows`` it was fitted on,
counted without ``FINAL`` (a cheap count: late rows, and merges that drop duplicates, change
it and the fit is redone).
"""

from __future__ import annotations

import json
import logging

import numpy as np
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from driftwarden.detectors import provenance
from driftwarden.detectors.multivariate.encoding import Encoding, source_parameters, source_where
from driftwarden.detectors.multivariate.reconstruction import ReferenceFit
from driftwarden.detectors.window import Window, micros

log = logging.getLogger(__name__)

FIT_FORMAT = 1  # bump when ReferenceFit or the way it is computed changes: older fits are then ignored
COLUMNS = ["model", "model_version", "reference_start", "reference_end", "fit_key", "reference_rows", "fit"]


def fit_key(numeric: list[str], categorical: list[str], n_components: float, chunk_us: int, chunks: int) -> str:
    """The hash of everything a :class:`ReferenceFit` depends on besides the reference's rows."""
    return provenance.content_hash(
        {
            "format": FIT_FORMAT,
            "numeric": list(numeric),
            "categorical": list(categorical),
            "n_components": n_components,
            "chunk_us": chunk_us,
            "chunks": chunks,
        }
    )


def stored_rows(client: Client, model: str, reference: Window, model_version: str | None) -> int:
    """The reference window's stored rows, counted without ``FINAL`` (reads no feature column)."""
    return int(
        client.query(
            f"SELECT count() FROM inferences WHERE {source_where(reference, model_version)}",
            parameters=source_parameters(model, model_version),
        ).result_rows[0][0]
    )


def _where() -> str:
    return (
        "model = {model:String} AND model_version = {version:String} "
        "AND reference_start = fromUnixTimestamp64Micro({start:Int64}, 'UTC') "
        "AND reference_end = fromUnixTimestamp64Micro({end:Int64}, 'UTC') AND fit_key = {key:String}"
    )


def load_fit(
    client: Client, model: str, reference: Window, model_version: str | None, key: str, rows: int
) -> ReferenceFit | None:
    """The stored fit of ``key`` when it was made on ``rows`` stored rows; ``None`` otherwise."""
    try:
        found = client.query(
            f"SELECT reference_rows, fit FROM multivariate_references FINAL WHERE {_where()} "
            "ORDER BY created_at DESC LIMIT 1",
            parameters={
                "model": model,
                "version": model_version or "",
                "start": micros(reference.start),
                "end": micros(reference.end),
                "key": key,
            },
        ).result_rows
    except DatabaseError as exc:  # a store not migrated to 0017 yet: fit as before
        if "UNKNOWN_TABLE" not in str(exc):
            raise
        log.warning("no multivariate_references table (run `driftwarden migrate`): the reference is refitted")
        return None
    if not found or int(found[0][0]) != rows:
        return None
    try:
        return _decode(json.loads(found[0][1]))
    except (KeyError, TypeError, ValueError) as exc:  # a damaged row is refitted, never trusted
        log.warning("multivariate reference fit of %s unreadable (%s): refitting", model, exc)
        return None


def save_fit(
    client: Client, model: str, reference: Window, model_version: str | None, key: str, rows: int, fit: ReferenceFit
) -> None:
    """Store ``fit``; a store that refuses the insert (a read-only user) only costs the next run a refit."""
    row = [model, model_version or "", reference.start, reference.end, key, rows, json.dumps(_encode(fit))]
    try:
        client.insert("multivariate_references", [row], column_names=COLUMNS)
    except Exception as exc:  # noqa: BLE001 — the result does not depend on the stored copy
        log.warning("multivariate reference fit of %s not stored (%s): the next run refits", model, exc)


def _encode(fit: ReferenceFit) -> dict:
    e = fit.encoding
    return {
        "encoding": {
            "numeric": list(e.numeric),
            "categorical": list(e.categorical),
            "reference_rows": e.reference_rows,
            "numeric_mean": list(e.numeric_mean),
            "numeric_scale": list(e.numeric_scale),
            "numeric_present": list(e.numeric_present),
            "categories": [list(c) for c in e.categories],
            "category_shares": [list(s) for s in e.category_shares],
            "rare_share": list(e.rare_share),
            "mode_share": list(e.mode_share),
            "categorical_mean": list(e.categorical_mean),
            "categorical_scale": list(e.categorical_scale),
        },
        "mean": fit.mean.tolist(),
        "components": fit.components.tolist(),
        "ratio": fit.ratio.tolist(),
        "rows": fit.rows,
        "value": fit.value,
        "chunk_values": list(fit.chunk_values),
        "chunking": fit.chunking,
        "second": fit.second.tolist(),
    }


def _decode(doc: dict) -> ReferenceFit:
    e = doc["encoding"]
    encoding = Encoding(
        numeric=tuple(e["numeric"]),
        categorical=tuple(e["categorical"]),
        reference_rows=int(e["reference_rows"]),
        numeric_mean=tuple(e["numeric_mean"]),
        numeric_scale=tuple(e["numeric_scale"]),
        numeric_present=tuple(e["numeric_present"]),
        categories=tuple(tuple(c) for c in e["categories"]),
        category_shares=tuple(tuple(s) for s in e["category_shares"]),
        rare_share=tuple(e["rare_share"]),
        mode_share=tuple(e["mode_share"]),
        categorical_mean=tuple(e["categorical_mean"]),
        categorical_scale=tuple(e["categorical_scale"]),
    )
    d = len(encoding.features)
    components = np.asarray(doc["components"], dtype=float).reshape(-1, d)
    return ReferenceFit(
        encoding=encoding,
        mean=np.asarray(doc["mean"], dtype=float),
        components=components,
        ratio=np.asarray(doc["ratio"], dtype=float),
        rows=int(doc["rows"]),
        value=float(doc["value"]),
        chunk_values=tuple(float(v) for v in doc["chunk_values"]),
        chunking=str(doc["chunking"]),
        second=np.asarray(doc["second"], dtype=float).reshape(d, d),
    )
