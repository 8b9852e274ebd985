"""The rows an estimator reads, as SQL: predictions of a window with their scores and their latest label.

Where a model's outputs live in ``inferences``:

* the predicted class: ``prediction_label``;
* binary classifiers: the score (probability of the positive class) in ``output_values`` under the
  positive class's name when present, else ``prediction`` (what ``driftwarden ingest --score-column S``
  writes, and what the realized ROC AUC already reads);
* multiclass classifiers: one score per class in ``output_names``/``output_values`` (``--score-column
  CLASS=COLUMN``);
* regressors: ``prediction``, and the features in ``num_names``/``num_values``, ``cat_names``/``cat_values``.

The ground truth of a classifier is ``label``; a numeric label (an ingested 0/1 column) is read as
its integer text, so ``1.0`` and ``"1"`` are the same class. Labels are read from the first window's
start on by their observation time (``ground_truth.ts``): an outcome is observed after its prediction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from driftwarden.detectors.window import Window, micros

# A sort-merge join: three times faster than a hash join on a million labelled predictions (BENCHMARKS.md).
SETTINGS = {"join_algorithm": "full_sorting_merge"}

# The class of a label row: its text, else its numeric value written as an integer when it is one.
TRUTH = (
    "if(label != '', label, if(value IS NULL OR isNaN(value), '', "
    "if(value = floor(value) AND abs(value) < 1e15, toString(toInt64(value)), toString(value))))"
)


def rows(
    windows: Window | Sequence[Window],
    model_version: str | None,
    *,
    columns: str,
    labels: bool = True,
    events: str = "1",
    where: str = "1",
) -> str:
    """Predictions of ``windows`` (replays excluded) left-joined to their latest label; ``columns`` from ``i``.

    The columns are computed before the join, so only they travel through its sort.

    The result has the given columns plus ``w`` (the 1-based index of the window a row falls in),
    ``truth`` (the class or ''), ``value`` (the numeric outcome) and ``has`` (1 when labelled); with
    ``labels=False`` no label is read (``has`` = 0). Parameters: ``{m:String}`` and, with a version,
    ``{v:String}``. Run the query with :data:`SETTINGS` (the join is a sort-merge join). ``events`` is an SQL
    condition on ``event_id`` applied to predictions and labels alike (a sample by event-id hash); ``where`` a
    condition on the predictions only (a segment).
    """
    windows = [windows] if isinstance(windows, Window) else list(windows)
    span = Window(min(w.start for w in windows), max(w.end for w in windows))
    index = window_index(windows)
    version = "" if model_version is None else "AND model_version = {v:String}"
    selected = (
        f"model = {{m:String}} AND NOT is_replay AND {span.sql()} {version} AND {index} > 0 AND {events} AND ({where})"
    )
    if not labels:
        return f"""
        (SELECT {columns}, {index} AS w, '' AS truth, CAST(NULL, 'Nullable(Float64)') AS value, toUInt8(0) AS has
         FROM inferences AS i FINAL WHERE {selected})
        """
    # only labels observed from the first window's start on are read (an outcome is observed after its
    # prediction): the join's right side stays about as small as the windows, without a set of their event ids
    return f"""
        (SELECT i.* EXCEPT (_event), g.truth AS truth, g.value AS value, g.has AS has
         FROM (SELECT {columns}, {index} AS w, i.event_id AS _event FROM inferences AS i FINAL WHERE {selected}) AS i
         LEFT JOIN (SELECT event_id, {TRUTH} AS truth, value, toUInt8(1) AS has
                    FROM ground_truth FINAL
                    WHERE model = {{m:String}} AND ts >= fromUnixTimestamp64Micro({micros(span.start)}, 'UTC')
                      AND {events}) AS g
         ON i._event = g.event_id)
    """


def labels_observed_since(client, model: str, start: dt.datetime) -> bool:
    """Whether any label of ``model`` was observed at or after ``start`` (a cheap test before a join)."""
    return bool(
        client.query(
            "SELECT count() > 0 FROM ground_truth WHERE model = {m:String} AND ts >= {s:DateTime64(6, 'UTC')}",
            parameters={"m": model, "s": start},
        ).result_rows[0][0]
    )


def window_index(windows: Sequence[Window], column: str = "ts") -> str:
    """SQL: the 1-based index of the window of ``windows`` that ``column`` falls in (0: none).

    Contiguous windows of one length (a catch-up, a range of days) get an integer division; any other
    list a search of the window bounds."""
    if len(windows) == 1:
        return "1"
    length = windows[0].end - windows[0].start
    if all(w.end - w.start == length for w in windows) and all(
        a.end == b.start for a, b in zip(windows, windows[1:], strict=False)
    ):
        size = micros(windows[0].start + length) - micros(windows[0].start)
        return f"(intDiv(toUnixTimestamp64Micro({column}) - {micros(windows[0].start)}, {size}) + 1)"
    starts = ", ".join(str(micros(w.start)) for w in windows)
    ends = ", ".join(str(micros(w.end)) for w in windows)
    return (
        f"arrayFirstIndex((a, b) -> toUnixTimestamp64Micro({column}) >= a AND toUnixTimestamp64Micro({column}) < b, "
        f"[{starts}], [{ends}])"
    )


def chunk_index(reference: Window, length: dt.timedelta, column: str = "ts") -> str:
    """SQL: the index of the reference chunk (as long as the current window) that ``column`` falls in."""
    size = int(length.total_seconds() * 1_000_000)
    return f"intDiv(toUnixTimestamp64Micro({column}) - {micros(reference.start)}, {size})"


def chunk_count(reference: Window, length: dt.timedelta) -> int:
    """Reference chunks used for thresholds: every whole chunk, and a last partial one of at least half a window."""
    whole, rest = divmod(reference.end - reference.start, length)
    return int(whole) + (1 if rest >= length / 2 else 0)
