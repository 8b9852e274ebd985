"""Files of predictions and of late ground truth (CSV, Parquet) as rows of the store's tables.

Used by ``driftwarden ingest``; see that command for the rules. Everything here is
columnar (pyarrow / numpy) except the event ids of files without an id column,
which hash each row.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from driftwarden.collector.arrow import GROUND_TRUTH_SCHEMA, SCHEMA
from driftwarden.errors import UserError, first_line

# Namespace of the uuid5 event ids that ingest derives; fixed forever so re-ingesting matches.
ID_NAMESPACE = uuid.UUID("6f1d7c3e-2b9a-5e4f-8c1d-0a7b3e9f2d41")
_UUID_RE = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
_TS = pa.timestamp("us", tz="UTC")
_UUID = pa.binary(16)


def load_file(path: Path) -> pa.Table:
    """The file as an Arrow table; UserError for a missing, unknown or unreadable file."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise UserError(f"{path}: unknown file type {suffix or '(none)'!r}; give a .csv or .parquet file")
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        if suffix == ".csv":
            import pyarrow.csv as pacsv

            return pacsv.read_csv(path)
        import pyarrow.parquet as pq

        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        kind = "CSV" if suffix == ".csv" else "Parquet"
        raise UserError(f"{path}: cannot read it as {kind}: {first_line(exc)}") from None


def predictions_and_labels(
    table: pa.Table,
    *,
    model: str,
    timestamp_column: str | None,
    prediction_column: str | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    ground_truth_only: bool = False,
    source: str = "the file",
    score_columns: dict[str, str] | None = None,
    text_columns: list[str] | None = None,
    embedding_columns: list[str] | None = None,
    embed_text=None,
) -> tuple[pa.Table | None, pa.Table | None]:
    """(inferences rows or None, ground_truth rows or None) for the file's ``table``.

    ``score_columns`` maps a class to the column of its predicted probability (``{"": S}`` for the one
    score of a binary classifier). With scores, the prediction and label columns hold classes: a numeric
    class is written as its text (``1.0`` as ``"1"``), so predictions and labels name classes alike.
    """
    names = table.column_names
    named = {
        "--timestamp-column": timestamp_column,
        "--prediction-column": prediction_column,
        "--label-column": label_column,
        "--id-column": id_column,
        **{f"--score-column {k + '=' if k else ''}{c}": c for k, c in (score_columns or {}).items()},
    }
    for option, column in named.items():
        if column is not None and column not in names:
            raise UserError(f"column {column!r} ({option}) is not in {source}; its columns are: {', '.join(names)}")
    if table.num_rows == 0:
        raise UserError(f"{source} has no rows")
    only_labels = label_column is not None and set(names) <= {id_column, label_column, timestamp_column}
    if ground_truth_only or only_labels:
        if label_column is None:
            raise UserError("--ground-truth needs --label-column: the column with the observed outcomes")
        if id_column is None:
            raise UserError(
                "ground truth needs --id-column: labels join their predictions by id, so give the column "
                "that holds the same ids as the predictions file"
            )
    if timestamp_column is not None:
        ts = timestamps(table.column(timestamp_column), timestamp_column)
    elif ground_truth_only or only_labels:  # labels observed now
        ts = pa.chunked_array([pa.array([dt.datetime.now(dt.UTC)] * table.num_rows, _TS)])
    else:
        raise UserError("--timestamp-column is required for predictions: name the column with each prediction's time")
    ids = event_ids(table, model, id_column)
    labels = None
    if label_column is not None:
        labels = _ground_truth(table.column(label_column), label_column, ids, model, ts, as_classes=bool(score_columns))
    if ground_truth_only or only_labels:
        return None, labels
    used = {timestamp_column, prediction_column, label_column, id_column, *(score_columns or {}).values()}
    used |= {*(text_columns or ()), *(embedding_columns or ())}
    features = [n for n in names if n not in used]
    rows = _inferences(table, model, ids, ts, features, prediction_column, score_columns or {})
    if text_columns or embedding_columns:  # text and embedding features (collector/ingest_documents.py)
        from driftwarden.collector.ingest_documents import document_columns

        documents = document_columns(table, text_columns or [], embedding_columns or [], source, embed_text)
        for name, column in documents.items():
            rows = rows.append_column(SCHEMA.field(name), column)
    return rows, labels


def timestamps(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """The column as UTC microsecond timestamps; UserError naming the first bad row."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_timestamp(kind):
        if kind.tz is None:
            column = column.cast(pa.timestamp(kind.unit, tz="UTC"))
        result = column.cast(_TS)
    elif pa.types.is_date(kind):
        result = column.cast(pa.timestamp("us")).cast(_TS)
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        import pandas as pd

        text = column.to_pandas()
        parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
        bad = parsed.isna() & text.notna()
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise UserError(
                f"column {name!r} row {row + 1}: {text.iloc[row]!r} is not a time; "
                "use ISO-8601, e.g. 2011-01-01T05:00:00Z (times without an offset are UTC)"
            )
        result = pa.chunked_array([pa.array(parsed.dt.as_unit("us"), type=_TS)])
    else:
        raise UserError(
            f"column {name!r} holds {kind} values, not times; give ISO-8601 text "
            "(e.g. 2011-01-01T05:00:00Z) or a timestamp column"
        )
    if result.null_count:
        row = int(np.argmax(result.is_null().to_numpy(zero_copy_only=False)))
        raise UserError(f"column {name!r} row {row + 1} has no time; every prediction needs one")
    return result


def event_ids(table: pa.Table, model: str, id_column: str | None) -> pa.Array:
    """Deterministic UUIDs (16-byte binaries): the id when it is a UUID, else uuid5 of model and id (or of
    the whole row)."""
    if id_column is not None:
        column = table.column(id_column)
        if column.null_count:
            raise UserError(f"column {id_column!r} (--id-column) has {column.null_count} empty value(s)")
        values = column.cast(pa.string()).to_pylist()
        is_uuid = pc.match_substring_regex(pa.array(values), _UUID_RE).to_pylist()
        return pa.array(
            [
                uuid.UUID(v).bytes if ok else uuid.uuid5(ID_NAMESPACE, f"{model}\x1f{v}").bytes
                for v, ok in zip(values, is_uuid, strict=True)
            ],
            type=_UUID,
        )
    rows = zip(*(c.to_pylist() for c in table.columns), strict=True)
    return pa.array([uuid.uuid5(ID_NAMESPACE, f"{model}\x1f{row!r}").bytes for row in rows], type=_UUID)


def _ground_truth(
    column: pa.ChunkedArray, name: str, ids: pa.Array, model: str, ts: pa.ChunkedArray, *, as_classes: bool = False
) -> pa.Table:
    n = len(ids)
    if as_classes:
        value = column.cast(pa.float64()) if _numeric(column.type) else pa.nulls(n, pa.float64())
        label = class_text(column)
    elif _numeric(column.type):
        value = column.cast(pa.float64())
        label = pa.array([""] * n)
    else:
        value = pa.nulls(n, pa.float64())
        label = pc.fill_null(column.cast(pa.string()), "")
    return pa.Table.from_arrays(
        [ids, pa.array([model] * n), ts, label, value],
        schema=GROUND_TRUTH_SCHEMA,
    )


def _inferences(
    table: pa.Table,
    model: str,
    ids: pa.Array,
    ts: pa.ChunkedArray,
    features: list[str],
    prediction_column: str | None,
    score_columns: dict[str, str],
) -> pa.Table:
    n = table.num_rows
    num = [f for f in features if _numeric(table.column(f).type)]
    cat = [f for f in features if _text(table.column(f).type)]
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "event_id": ids,
        "ts": ts,
        "model": pa.array([model] * n),
        "protocol": pa.array(["ingest"] * n),
    }
    num_values = np.column_stack(
        [pc.fill_null(table.column(f).cast(pa.float64()), np.nan).to_numpy() for f in num] or [np.empty((n, 0))]
    )
    columns["num_names"], columns["num_values"] = _lists(num, num_values.ravel(), n)
    cat_values = np.column_stack(
        [pc.fill_null(table.column(f).cast(pa.string()), "").to_numpy(zero_copy_only=False) for f in cat]
        or [np.empty((n, 0), dtype=object)]
    )
    columns["cat_names"], columns["cat_values"] = _lists(cat, cat_values.ravel(), n)
    if score_columns:
        columns.update(_scores(table, score_columns))
    if prediction_column is not None and score_columns:
        columns["prediction_label"] = class_text(table.column(prediction_column))
    elif prediction_column is not None:
        prediction = table.column(prediction_column)
        if _numeric(prediction.type):
            columns["prediction"] = prediction.cast(pa.float64())
        else:
            columns["prediction_label"] = pc.fill_null(prediction.cast(pa.string()), "")
    schema = pa.schema([SCHEMA.field(name) for name in columns])
    return pa.Table.from_arrays([_chunked(c) for c in columns.values()], schema=schema)


def class_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A column of classes as text: whole numbers without a decimal point (``1.0`` -> ``"1"``), empty when null."""
    if pa.types.is_floating(column.type):
        values = column.to_numpy(zero_copy_only=False)
        whole = np.isfinite(values) & (np.floor(values) == values)
        if whole[~np.isnan(values)].all():
            column = pa.chunked_array([pa.array(np.where(np.isnan(values), None, values), type=pa.float64())])
            column = column.cast(pa.int64())
    return pc.fill_null(column.cast(pa.string()), "")


def _scores(table: pa.Table, score_columns: dict[str, str]) -> dict[str, pa.ChunkedArray | pa.Array]:
    """The score columns as ``prediction`` (binary) or as ``output_names``/``output_values`` (one per class)."""
    for name in score_columns.values():
        column = table.column(name)
        if not _numeric(column.type):
            raise UserError(f"score column {name!r} holds {column.type} values; scores are probabilities in [0, 1]")
        values = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        bad = ~np.isnan(values) & ((values < 0) | (values > 1))
        if bad.any():
            row = int(np.argmax(bad))
            raise UserError(
                f"score column {name!r} row {row + 1} holds {values[row]!r}, outside [0, 1]: give the predicted "
                "probability (e.g. predict_proba), not a logit or a margin"
            )
    if list(score_columns) == [""]:
        return {"prediction": table.column(score_columns[""]).cast(pa.float64())}
    if "" in score_columns:
        raise UserError("give either one --score-column S (binary) or --score-column CLASS=COLUMN per class, not both")
    n = table.num_rows
    classes = list(score_columns)
    values = np.column_stack(
        [pc.fill_null(table.column(c).cast(pa.float64()), np.nan).to_numpy() for c in score_columns.values()]
    )
    names, flat = _lists(classes, values.ravel(), n)
    return {"output_names": names, "output_values": flat}


def _lists(names: list[str], flat_values: np.ndarray, n: int) -> tuple[pa.Array, pa.Array]:
    """Per-row arrays of names and of values, ``len(names)`` per row."""
    k = len(names)
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32) if k else np.zeros(n + 1, dtype=np.int32))
    name_values = pa.array(np.tile(np.array(names, dtype=object), n) if k else [], type=pa.string())
    return pa.ListArray.from_arrays(offsets, name_values), pa.ListArray.from_arrays(offsets, pa.array(flat_values))


def _chunked(column: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    return column if isinstance(column, pa.ChunkedArray) else pa.chunked_array([column])


def _numeric(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def _text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)
