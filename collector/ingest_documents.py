"""Text and embedding columns of an ingested file as the ``text_*`` and ``emb_*`` arrays of ``inferences``.

``driftwarden ingest --text-column C`` (repeatable) makes column ``C`` the text feature ``C``;
``--embedding-column E`` makes ``E`` the embedding feature ``E``. An embedding column is a
Parquet list of numbers (``list<float>``, ``fixed_size_list``, ...) or, in a CSV file, text
holding a JSON array (``"[0.12, -0.5, ...]"``). A null cell leaves the feature out of that
row (missing), never an empty text or a zero vector. Vectors are stored as Float32; NaN or
infinite components are kept as they are and reported by the drift run, not dropped here.
``--embed-text`` adds, per text column ``C``, the embedding feature ``C.minilm`` computed offline
(collector/processors/text_embedding.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from driftwarden.errors import UserError

_VECTOR = pa.list_(pa.float32())


def document_columns(
    table: pa.Table,
    text_columns: list[str],
    embedding_columns: list[str],
    source: str,
    embed: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> dict:
    """``{"text_names": ..., "text_values": ..., "emb_names": ..., "emb_values": ...}`` for the named columns.

    With ``embed`` (``collector.processors.text_embedding.MiniLM().embed``), each text column ``C`` also
    becomes the embedding feature ``C.minilm``: the vectors of its texts."""
    names = table.column_names
    for option, columns in (("--text-column", text_columns), ("--embedding-column", embedding_columns)):
        for column in columns:
            if column not in names:
                raise UserError(f"column {column!r} ({option}) is not in {source}; its columns are: {', '.join(names)}")
    both = set(text_columns) & set(embedding_columns)
    if both:
        raise UserError(f"column {sorted(both)[0]!r} is given as both --text-column and --embedding-column")
    n = table.num_rows
    texts = [_text(table.column(c), c) for c in text_columns]
    vectors = [_vectors(table.column(c), c) for c in embedding_columns]
    text_names: list[list[str]] = [[] for _ in range(n)]
    text_values: list[list[str]] = [[] for _ in range(n)]
    for column, values in zip(text_columns, texts, strict=True):
        for i, value in enumerate(values):
            if value is not None:
                text_names[i].append(column)
                text_values[i].append(value)
    emb_names: list[list[str]] = [[] for _ in range(n)]
    emb_values: list[list[list[float]]] = [[] for _ in range(n)]
    if embed is not None:
        for column, values in zip(text_columns, texts, strict=True):
            present = [i for i, v in enumerate(values) if v is not None]
            embedded = embed([values[i] for i in present])
            full: list[list[float] | None] = [None] * n
            for i, vector in zip(present, embedded, strict=True):
                full[i] = vector.tolist()
            embedding_columns = [*embedding_columns, f"{column}.minilm"]
            vectors.append(full)
    for column, values in zip(embedding_columns, vectors, strict=True):
        for i, value in enumerate(values):
            if value is not None:
                emb_names[i].append(column)
                emb_values[i].append(value)
    return {
        "text_names": pa.array(text_names, pa.list_(pa.string())),
        "text_values": pa.array(text_values, pa.list_(pa.string())),
        "emb_names": pa.array(emb_names, pa.list_(pa.string())),
        "emb_values": pa.array(emb_values, pa.list_(_VECTOR)),
    }


def _text(column: pa.ChunkedArray, name: str) -> list[str | None]:
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise UserError(f"column {name!r} (--text-column) holds {kind} values, not text")
    return column.cast(pa.string()).to_pylist()


def _vectors(column: pa.ChunkedArray, name: str) -> list[list[float] | None]:
    kind = column.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        if not (pa.types.is_floating(kind.value_type) or pa.types.is_integer(kind.value_type)):
            raise UserError(f"column {name!r} (--embedding-column) holds lists of {kind.value_type}, not numbers")
        return column.cast(_VECTOR).to_pylist()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        out: list[list[float] | None] = []
        for row, text in enumerate(pc.cast(column, pa.string()).to_pylist()):
            out.append(None if text is None or not text.strip() else _parse_vector(text, name, row))
        return out
    raise UserError(
        f"column {name!r} (--embedding-column) holds {kind} values; give a Parquet list of numbers per row "
        "(or, in CSV, a JSON array such as [0.1, -0.2])"
    )


def _parse_vector(text: str, name: str, row: int) -> list[float]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise UserError(
            f"column {name!r} (--embedding-column) row {row + 1}: {shown!r} is not a JSON array of numbers"
        ) from None
    return [float(v) for v in value]
