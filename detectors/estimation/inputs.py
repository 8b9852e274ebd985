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
its integer text, so ``1.0`` and ``"1"`` are the same class.
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


def rows(windows: Window | Sequence[Window], model_version: str | None, *, columns: str, labels: bool = True) -> str:
    """Predictions of ``windows`` (replays excluded) left-joined to their latest label; ``columns`` from ``i``.

    The result has the given columns plus ``w`` (the 1-based index of the window a row falls in),
    ``truth`` (the class or ''), ``value`` (the numeric outcome) and ``has`` (1 when labelled); with
    ``labels=False`` no label is read (``has`` = 0). Parameters: ``{m:String}`` and, with a version,
    ``{v:String}``. Run the query with :data:`SETTINGS` (the join is a sort-merge join).
    """
    windows = [windows] if isinstance(windows, Window) else list(windows)
    span = Window(min(w.start for w in windows), max(w.end for w in windows))
    if len(windows) == 1:
        index = "1"
    else:
        starts = ", ".join(str(micros(w.start)) for w in windows)
        ends = ", ".join(str(micros(w.end)) for w in windows)
        index = (
            f"arrayFirstIndex((a, b) -> toUnixTimestamp64Micro(ts) >= a AND toUnixTimestamp64Micro(ts) < b, "
            f"[{starts}], [{ends}])"
        )
    version = "" if model_version is None else "AND model_version = {v:String}"
    selected = f"model = {{m:String}} AND NOT is_replay AND {span.sql()} {version} AND {index} > 0"
    if not labels:
        return f"""
        (SELECT {columns}, i.w AS w, '' AS truth, CAST(NULL, 'Nullable(Float64)') AS value, toUInt8(0) AS has
         FROM (SELECT *, {index} AS w FROM inferences FINAL WHERE {selected}) AS i)
        """
    # only the labels of the windows' events are read: the join's right side stays as small as the windows
    return f"""
        (SELECT {columns}, i.w AS w, g.truth AS truth, g.value AS value, g.has AS has
         FROM (SELECT *, {index} AS w FROM inferences FINAL WHERE {selected}) AS i
         LEFT JOIN (SELECT event_id, {TRUTH} AS truth, value, toUInt8(1) AS has
                    FROM ground_truth FINAL
                    WHERE model = {{m:String}} AND event_id IN (SELECT event_id FROM inferences WHERE {selected})) AS g
         ON i.event_id = g.event_id)
    """


def chunk_index(reference: Window, length: dt.timedelta, column: str = "ts") -> str:
    """SQL: the index of the reference chunk (as long as the current window) that ``column`` falls in."""
    size = int(length.total_seconds() * 1_000_000)
    return f"intDiv(toUnixTimestamp64Micro({column}) - {micros(reference.start)}, {size})"


def chunk_count(reference: Window, length: dt.timedelta) -> int:
    """Reference chunks used for thresholds: every whole chunk, and a last partial one of at least half a window."""
    whole, rest = divmod(reference.end - reference.start, length)
    return int(whole) + (1 if rest >= length / 2 else 0)
