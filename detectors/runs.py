"""Bookkeeping of detector runs in ``detector_runs``: what was computed, when, and whether it failed.

The scheduler asks :func:`completed` which windows a detector already computed
successfully for a model (with which input hash), and records every attempt
with :func:`record`, failures included, so an operator can read in SQL why a
detector stopped producing results.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from driftwarden.detectors.provenance import code_version
from driftwarden.detectors.window import Window, micros

UTC = dt.UTC


@dataclass(frozen=True)
class Run:
    """One attempt of one detector on one model and window."""

    detector: str
    model: str
    window: Window
    input_hash: str
    started_at: dt.datetime
    finished_at: dt.datetime
    status: str  # ok | error | skipped
    results: int = 0
    error: str = ""
    run_id: uuid.UUID = uuid.UUID(int=0)

    @property
    def duration_seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()


def completed(client: Client, detector: str, model: str, since: dt.datetime) -> set[tuple[int, int, str]]:
    """``(start_us, end_us, input_hash)`` of the successful runs of windows ending after ``since``."""
    rows = client.query(
        "SELECT DISTINCT toUnixTimestamp64Micro(current_start), toUnixTimestamp64Micro(current_end), input_hash "
        "FROM detector_runs WHERE detector = {d:String} AND model = {m:String} AND status = 'ok' "
        "AND current_end > fromUnixTimestamp64Micro({since:Int64}, 'UTC')",
        parameters={"d": detector, "m": model, "since": micros(since)},
    ).result_rows
    return {(int(s), int(e), str(h)) for s, e, h in rows}


def key(window: Window, input_hash: str) -> tuple[int, int, str]:
    """The key :func:`completed` returns for a window and input hash."""
    return (micros(window.start), micros(window.end), input_hash)


_COLUMNS = [
    "run_id",
    "detector",
    "model",
    "started_at",
    "finished_at",
    "duration_ms",
    "status",
    "error",
    "current_start",
    "current_end",
    "results",
    "input_hash",
    "code_version",
]


def record(client: Client, run: Run) -> None:
    """Append ``run`` to ``detector_runs``."""
    row = [
        run.run_id if run.run_id.int else uuid.uuid4(),
        run.detector,
        run.model,
        run.started_at,
        run.finished_at,
        run.duration_seconds * 1000.0,
        run.status,
        run.error[:4000],
        run.window.start,
        run.window.end,
        run.results,
        run.input_hash,
        code_version(),
    ]
    client.insert("detector_runs", [row], column_names=_COLUMNS)
