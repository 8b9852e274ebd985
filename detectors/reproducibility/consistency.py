"""Consistency: do identical deterministic requests get identical answers? Computed in ClickHouse.

Requests are grouped by ``(model_version, model_digest, input_hash,
params_hash)`` among successful, non-replay events whose parameters ask for a
deterministic output (``deterministic = 1``: e.g. temperature 0, a fixed seed,
or a classical model). A group with two requests or more can be checked; it is
*inconsistent* when its requests carry more than one distinct ``output_hash``::

    checked    = groups with >= 2 requests
    mismatches = checked groups with uniqExact(output_hash) > 1
    rate       = 1 - mismatches / checked                       (1.0 when nothing could be checked)

One row per model version and digest goes to ``reproducibility_results``
with ``kind = 'consistency'``; ``details`` lists up to 20 inconsistent input
hashes with their distinct output counts and one event id each, for a look.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.provenance import code_version, content_hash, schema_version
from driftwarden.detectors.window import Window

UTC = dt.UTC
MAX_DETAILS = 20


@dataclass
class ReproducibilityResult:
    """One row of ``reproducibility_results``."""

    model: str
    model_version: str
    model_digest: str
    kind: str  # consistency | replay
    current_start: dt.datetime
    current_end: dt.datetime
    checked: int
    mismatches: int
    rate: float
    tolerance: float
    details: str
    input_hash: str = ""
    code_version: str = field(default_factory=code_version)
    schema_version: int = field(default_factory=schema_version)
    run_id: uuid.UUID = field(default_factory=uuid.uuid4)
    computed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(UTC))


def compute_consistency(
    client: Client, model: str, window: Window, *, model_version: str | None = None
) -> list[ReproducibilityResult]:
    """Consistency of ``model`` in ``window``, one result per model version and digest with deterministic traffic."""
    version = "" if model_version is None else "AND model_version = {v:String}"
    rows = client.query(
        f"""
        SELECT model_version, model_digest,
               count() AS groups,
               countIf(outputs > 1) AS mismatches,
               sum(requests) AS requests,
               groupBitXor(cityHash64(input_hash, params_hash, outputs_fingerprint)) AS fingerprint,
               arraySlice(arraySort(x -> x.1, groupArrayIf((input_hash, outputs, toString(example)), outputs > 1)),
                          1, {MAX_DETAILS}) AS sample
        FROM
        (
            SELECT model_version, model_digest, input_hash, params_hash,
                   count() AS requests, uniqExact(output_hash) AS outputs,
                   groupBitXor(cityHash64(event_id, output_hash)) AS outputs_fingerprint,
                   any(event_id) AS example
            FROM inferences FINAL
            WHERE model = {{m:String}} AND NOT is_replay AND deterministic AND {window.sql()} {version}
              AND status < 400 AND error_class = ''
            GROUP BY model_version, model_digest, input_hash, params_hash
            HAVING requests >= 2
        )
        GROUP BY model_version, model_digest
        ORDER BY model_version, model_digest
        """,
        parameters={"m": model, "v": model_version or ""},
    ).result_rows
    out = []
    for ver, digest, groups, mismatches, requests, fingerprint, sample in rows:
        details = {
            "requests": int(requests),
            "inconsistent": [{"input_hash": str(h), "outputs": int(n), "example_event": e} for h, n, e in sample],
        }
        out.append(
            ReproducibilityResult(
                model=model,
                model_version=ver,
                model_digest=digest,
                kind="consistency",
                current_start=window.start,
                current_end=window.end,
                checked=int(groups),
                mismatches=int(mismatches),
                rate=1.0 - mismatches / groups,
                tolerance=0.0,
                details=json.dumps(details, sort_keys=True),
                input_hash=content_hash(
                    {
                        "detector": "consistency",
                        "model": model,
                        "model_version": ver,
                        "model_digest": digest,
                        "window": [window.start, window.end],
                        "groups": int(groups),
                        "requests": int(requests),
                        "rows_fingerprint": int(fingerprint),
                        "method": "uniqExact(output_hash) per (input_hash, params_hash), deterministic only",
                    }
                ),
            )
        )
    return out


def write_reproducibility(client: Client, results: Sequence[ReproducibilityResult]) -> int:
    """Insert ``results`` into ``reproducibility_results``; return the number of rows written."""
    if not results:
        return 0
    names = [f.name for f in dataclasses.fields(ReproducibilityResult)]
    client.insert("reproducibility_results", [[getattr(r, n) for n in names] for r in results], column_names=names)
    return len(results)
