"""``driftwarden ingest``: a file of predictions (or of late ground truth) into the store.

Predictions: one ``inferences`` row per file row, ``protocol='ingest'``. The timestamp
column gives ``ts``; the prediction column gives ``prediction`` (numeric) or
``prediction_label`` (text); every other numeric column becomes a numeric feature and
every other text column a categorical one. A label column, when named, also writes
``ground_truth`` rows.

Ground truth: with ``--ground-truth``, or when the file holds nothing but the id, label
and timestamp columns, rows go to ``ground_truth`` only (they join the predictions by
event id).

Event ids are deterministic, so ingesting the same file twice never counts twice (the
tables are ReplacingMergeTree by event id): the value of ``--id-column`` when it is a
UUID, else ``uuid5`` of the model and that value; without an id column, ``uuid5`` of
the model and the row's contents.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from driftwarden.commands import add_store_argument
from driftwarden.errors import UserError
from driftwarden.names import check_model_name

CHUNK_ROWS = 100_000
HUB_CHUNK_ROWS = 20_000


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "ingest",
        help="load a CSV or Parquet file of predictions or late ground truth into the store",
        description="Load a file of predictions into the inferences table (numeric columns become numeric "
        "features, text columns categorical ones), or a file of labels (id + label [+ timestamp]) into "
        "ground_truth. Re-ingesting the same file does not count its rows twice.",
    )
    add_store_argument(parser)
    parser.add_argument("--model", required=True, help="model name the rows belong to")
    parser.add_argument("--file", required=True, type=Path, metavar="F.{csv,parquet}", help="the file to load")
    parser.add_argument(
        "--timestamp-column",
        metavar="C",
        help="column with each prediction's time (ISO-8601 text or a timestamp type; naive times are UTC); "
        "required for predictions, optional for labels (default: now)",
    )
    parser.add_argument("--prediction-column", metavar="P", help="column with the model's output")
    parser.add_argument("--label-column", metavar="L", help="column with the ground truth (also written)")
    parser.add_argument(
        "--score-column",
        action="append",
        metavar="S | CLASS=COLUMN",
        help="column with the predicted probability of the positive class (binary classifier); repeat as "
        "CLASS=COLUMN, once per class, for a multiclass classifier. With scores, --prediction-column and "
        "--label-column hold classes, and `driftwarden estimate` can estimate performance without labels",
    )
    parser.add_argument(
        "--id-column", metavar="I", help="column with a unique id per prediction; needed to join later labels"
    )
    parser.add_argument(
        "--text-column",
        action="append",
        metavar="C",
        help="column of free text (a prompt, a document): the text feature C, analysed by text drift "
        "(repeatable; other text columns are categorical features)",
    )
    parser.add_argument(
        "--embedding-column",
        action="append",
        metavar="E",
        help="column of vectors: the embedding feature E (repeatable); a Parquet list of numbers per row, "
        "or in CSV a JSON array such as [0.1, -0.2]",
    )
    parser.add_argument(
        "--embed-text",
        action="store_true",
        help="also embed every --text-column C offline (all-MiniLM-L6-v2, int8 ONNX from site-packages; "
        "extra `embeddings`) into the embedding feature C.minilm",
    )
    parser.add_argument(
        "--ground-truth",
        action="store_true",
        help="the file holds labels for earlier predictions: write ground_truth rows only",
    )
    parser.add_argument(
        "--hub",
        metavar="URL",
        help="send the rows to the ingest endpoint of the process that owns the store (driftwarden api) "
        "instead of opening the store, e.g. http://127.0.0.1:8000",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from driftwarden import storage
    from driftwarden.collector.ingest_file import load_file, predictions_and_labels

    check_model_name(args.model)
    if args.embed_text and not args.text_column:
        raise UserError("--embed-text embeds the --text-column columns: name at least one --text-column")
    table = load_file(args.file)
    inferences, labels = predictions_and_labels(
        table,
        model=args.model,
        timestamp_column=args.timestamp_column,
        prediction_column=args.prediction_column,
        label_column=args.label_column,
        score_columns=_score_columns(args.score_column),
        id_column=args.id_column,
        ground_truth_only=args.ground_truth,
        source=args.file.name,
        text_columns=args.text_column,
        embedding_columns=args.embedding_column,
        embed_text=_embedder() if args.embed_text else None,
    )
    if args.hub:
        if args.store:
            raise UserError("give either --store or --hub, not both")
        where = args.hub
        _send_to_hub(args.hub, inferences, labels)
    else:
        client = storage.open_store(args.store)
        where = storage.describe(args.store)
        for name, rows in (("inferences", inferences), ("ground_truth", labels)):
            if rows is None:
                continue
            for start in range(0, rows.num_rows, CHUNK_ROWS):
                client.insert_arrow(name, rows.slice(start, CHUNK_ROWS))
    if inferences is not None:
        print(f"{where}: {inferences.num_rows:,} predictions of model {args.model} from {args.file} -> inferences")
    if labels is not None:
        print(f"{where}: {labels.num_rows:,} labels of model {args.model} from {args.file} -> ground_truth")
    return 0


def _score_columns(given: list[str] | None) -> dict[str, str] | None:
    """``--score-column`` values as ``{class: column}``; ``{"": column}`` for the one score of a binary model."""
    if not given:
        return None
    out: dict[str, str] = {}
    for text in given:
        klass, sep, column = text.partition("=")
        if not sep:
            klass, column = "", text
        if not column or (sep and not klass):
            raise UserError(f"--score-column {text!r} is not S or CLASS=COLUMN, e.g. approved=p_approved")
        if klass in out:
            raise UserError(f"--score-column names class {klass!r} twice" if klass else "--score-column S given twice")
        out[klass] = column
    if "" in out and len(out) > 1:
        raise UserError("give one --score-column S (binary) or one --score-column CLASS=COLUMN per class, not both")
    return out


def _embedder():
    """The offline text embedder's ``embed`` (UserError naming the extra when it is not installed)."""
    from driftwarden.collector.processors.text_embedding import MiniLM

    model = MiniLM()
    model.embed(["driftwarden"])  # load now: a missing model is reported before the file is read
    return model.embed


def _send_to_hub(hub: str, inferences, labels) -> None:
    """POST the rows as Arrow IPC streams to the hub's /v1/events and /v1/ground-truth, in chunks; a chunk that a
    body limit refuses (the hub's, a proxy's) goes again in smaller pieces (``collector.sinks.hub.HubSink``)."""
    import httpx

    from driftwarden.collector.sinks import RejectedBatch
    from driftwarden.collector.sinks.hub import HubSink

    base = hub.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise UserError(f"hub URL {hub!r} must start with http:// or https://, e.g. http://127.0.0.1:8000")
    for path, rows in (("/v1/events", inferences), ("/v1/ground-truth", labels)):
        if rows is None:
            continue
        sink = HubSink(base, timeout_s=120, path=path)
        try:
            for start in range(0, rows.num_rows, HUB_CHUNK_ROWS):
                try:
                    sink.write(rows.slice(start, HUB_CHUNK_ROWS))
                except httpx.HTTPError as exc:
                    raise UserError(f"cannot reach the hub at {base}: {exc}; is `driftwarden api` running?") from None
                except (RejectedBatch, OSError) as exc:
                    raise UserError(f"the hub refused rows {start + 1}..: {exc}") from None
        finally:
            sink.close()
