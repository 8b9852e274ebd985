"""Evidently reports of a model's current window against a reference, from bounded samples, cached on disk.

A report is built from a random sample of at most ``sample_size`` events per window,
drawn inside ClickHouse by ordering on ``cityHash64(event_id, seed)`` (see
:func:`driftwarden.detectors.api.queries.sample`), so the same events and seed give the same sample.
Evidently (``DataDriftPreset`` + ``DataSummaryPreset``) renders it; its HTML is
self-contained (the UI bundle and icon font are inlined from the installed package: no
CDN), and a provenance section is inserted at the top. Reports are cached under
``cache_dir`` by the content hash of their inputs (model, windows, row counts, a
fingerprint of the windows' event ids, sample size, seed, Evidently, code and schema
version): new events in a window change the hash, the same inputs reuse the file.
Text features go to Evidently as text columns, and a section after the provenance
explains each one with the words and documents that tell the windows apart
(:mod:`driftwarden.detectors.api.report_text`; also under ``text`` in the JSON file).

Evidently's usage telemetry is switched off before it is imported (``DO_NOT_TRACK``,
read by ``evidently.telemetry``; ``EVIDENTLY_DISABLE_TELEMETRY``, read by
``evidently.legacy._config``).
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shlex
import tempfile
import threading
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from driftwarden.auth import Principal
from driftwarden.detectors import provenance
from driftwarden.detectors.api import queries, report_text
from driftwarden.detectors.window import Window

# Before anything can import evidently: its telemetry reads these at every event (see the module docstring).
os.environ["DO_NOT_TRACK"] = "1"
os.environ["EVIDENTLY_DISABLE_TELEMETRY"] = "1"

PRESETS = ["DataDriftPreset", "DataSummaryPreset"]
SAMPLING = "ORDER BY cityHash64(event_id, seed) LIMIT sample_size, per window, in ClickHouse"
TEXT_EXPLANATION = "domain classifier: characteristic words and typical documents per window"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


class NoData(Exception):
    """A window holds no event of the model: there is nothing to report (not an error of the service)."""


@dataclass(frozen=True)
class Report:
    """A generated (or cached) report: its files and provenance."""

    html_path: Path
    json_path: Path
    provenance: dict[str, Any]
    cached: bool

    @property
    def input_hash(self) -> str:
        return self.provenance["input_hash"]


def evidently_version() -> str:
    """The installed Evidently version, read without importing it (the import is slow)."""
    from importlib.metadata import version

    return version("evidently")


def build_report(
    client: Client,
    principal: Principal,
    model: str,
    reference: Window,
    current: Window,
    *,
    sample_size: int,
    seed: int,
    cache_dir: str | Path,
) -> Report:
    """The Evidently report of ``current`` against ``reference`` for ``model``; raises :class:`NoData`."""
    ref_counts = queries.window_counts(client, principal, model, reference)
    cur_counts = queries.window_counts(client, principal, model, current)
    for name, window, counts in (("reference", reference, ref_counts), ("current", current, cur_counts)):
        if counts["rows"] == 0:
            raise NoData(f"the {name} window {window} holds no events of model {model!r}: nothing to report")
    inputs = {
        "kind": "evidently-report",
        "model": model,
        "reference": {"start": reference.start, "end": reference.end, **ref_counts},
        "current": {"start": current.start, "end": current.end, **cur_counts},
        "sample_size": sample_size,
        "seed": seed,
        "sampling": SAMPLING,
        "presets": PRESETS,
        "text_explanation": TEXT_EXPLANATION,
        "evidently_version": evidently_version(),
    }
    digest = provenance.content_hash(inputs)
    cache = Path(cache_dir)
    html_path, json_path = cache / f"{digest}.html", cache / f"{digest}.json"
    with _lock_for(digest):
        if html_path.exists() and json_path.exists():
            document = json.loads(json_path.read_text(encoding="utf-8"))
            return Report(html_path, json_path, document["provenance"], cached=True)
        ref_rows = queries.sample(client, principal, model, reference, sample_size, seed)
        cur_rows = queries.sample(client, principal, model, current, sample_size, seed)
        page, result, details = _render(ref_rows, cur_rows)
        explanations = report_text.explain(ref_rows, cur_rows)
        record = {
            "model": model,
            "reference": str(reference),
            "current": str(current),
            "reference_rows": ref_counts["rows"],
            "current_rows": cur_counts["rows"],
            "reference_sampled": len(ref_rows),
            "current_sampled": len(cur_rows),
            "sample_size": sample_size,
            "seed": seed,
            "sampling": SAMPLING,
            **details,
            "evidently_version": inputs["evidently_version"],
            "code_version": provenance.code_version(),
            "schema_version": provenance.schema_version(),
            "input_hash": digest,
        }
        page = _with_provenance(page, record, digest, report_text.section_html(explanations))
        cache.mkdir(parents=True, exist_ok=True)
        _write_atomically(html_path, page)
        document = {"provenance": record, "evidently": result, "text": explanations}
        _write_atomically(json_path, json.dumps(document, sort_keys=True))
        return Report(html_path, json_path, record, cached=False)


def _lock_for(digest: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(digest, threading.Lock())


def _frame(rows: list[dict[str, Any]]):
    """A DataFrame of the sampled events: one column per feature, plus the prediction when present."""
    import pandas as pd

    records = []
    for row in rows:
        record: dict[str, Any] = dict(zip(row["num_names"], row["num_values"], strict=False))
        record.update({name: str(value) for name, value in zip(row["cat_names"], row["cat_values"], strict=False)})
        if row["prediction"] is not None:
            record["prediction"] = float(row["prediction"])
        if row["prediction_label"]:
            record["prediction_label"] = row["prediction_label"]
        record.update(zip(row.get("text_names") or [], row.get("text_values") or [], strict=False))
        records.append(record)
    return pd.DataFrame.from_records(records)


def _render(ref_rows: list[dict], cur_rows: list[dict]) -> tuple[str, dict, dict]:
    """Evidently's HTML and JSON of the two samples, and the methods and thresholds it used."""
    from evidently import DataDefinition, Dataset
    from evidently import Report as EvidentlyReport
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    reference, current = _frame(ref_rows), _frame(cur_rows)
    text = report_text.text_features(ref_rows, cur_rows)
    numeric = sorted(
        c for c in reference.columns if c in current.columns and c not in text and _is_numeric(reference, current, c)
    )
    categorical = sorted(c for c in reference.columns if c in current.columns and c not in numeric and c not in text)
    columns = numeric + categorical + text
    for column in categorical:
        reference[column] = reference[column].astype(str)
        current[column] = current[column].astype(str)
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical, text_columns=text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Evidently warns about pandas internals on every run
        snapshot = EvidentlyReport([DataDriftPreset(columns=columns), DataSummaryPreset(columns=columns)]).run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
        )
        page = snapshot.get_html_str(as_iframe=False)
        result = json.loads(snapshot.json())
    methods, thresholds = {}, {}
    for metric in result.get("metrics", []):
        config = metric.get("config", {})
        if str(config.get("type", "")).endswith("ValueDrift"):
            methods[config["column"]] = str(config.get("method"))
            thresholds[config["column"]] = float(config.get("threshold"))
        elif str(config.get("type", "")).endswith("DriftedColumnsCount"):
            thresholds["dataset drift share"] = float(config.get("drift_share"))
    details = {
        "numeric_features": numeric,
        "categorical_features": categorical,
        "text_features": text,
        "methods": methods,
        "thresholds": thresholds,
    }
    return page, result, details


def _is_numeric(reference, current, column: str) -> bool:
    from pandas.api.types import is_numeric_dtype

    return is_numeric_dtype(reference[column]) and is_numeric_dtype(current[column])


_DASHBOARD_ID = re.compile(r"metric_[0-9a-f]{32}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_LIBRARY = "<script>var global = globalThis</script>"  # Evidently's data comes before its UI bundle


def _deterministic(page: str, digest: str) -> str:
    """Replace the random ids Evidently gives its dashboard and widgets by ids derived from the input hash.

    So the same inputs give byte-identical files (from the API, the command line, or another cache).
    Only the data part before the UI bundle is touched: the bundle may hold UUID constants of its own.
    """
    page = _DASHBOARD_ID.sub("metric_" + digest[:32], page)
    split = page.find(_LIBRARY)
    data, rest = (page, "") if split == -1 else (page[:split], page[split:])
    mapping: dict[str, str] = {}

    def stable(match: re.Match) -> str:
        found = match.group(0)
        if found not in mapping:
            mapping[found] = str(uuid.UUID(hashlib.sha256(f"{digest}:{len(mapping)}".encode()).hexdigest()[:32]))
        return mapping[found]

    return _UUID.sub(stable, data) + rest


def _with_provenance(page: str, record: dict[str, Any], digest: str, text_section: str = "") -> str:
    """Evidently's page, made deterministic, with a provenance section first (then the text features')."""
    page = _deterministic(page, digest)
    section = provenance_html(record) + text_section
    style = (
        "<style>.dw-provenance{font:14px system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:16px 24px;"
        "padding:12px 16px;border:1px solid #d0d7de;border-radius:6px;background:#f6f8fa}"
        ".dw-provenance table{border-collapse:collapse}.dw-provenance th{text-align:left;padding:2px 12px 2px 0;"
        "font-weight:600;vertical-align:top}.dw-provenance td{padding:2px 0;font-family:ui-monospace,monospace}"
        ".dw-text table{width:100%;table-layout:fixed;margin:4px 0 12px}.dw-text td{vertical-align:top;"
        "padding:2px 12px 2px 0;font-family:inherit}.dw-text li{margin:2px 0}</style>"
    )
    head_end = page.find("</head>")
    if head_end != -1:
        page = page[:head_end] + style + page[head_end:]
    body = page.find("<body>")
    if body == -1:
        return style + section + page
    at = body + len("<body>")
    return page[:at] + section + page[at:]


def provenance_rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    """The provenance as (label, value) pairs, for the HTML section and the report page."""
    methods = ", ".join(f"{k}: {v}" for k, v in sorted(record["methods"].items()))
    thresholds = ", ".join(f"{k}: {v:g}" for k, v in sorted(record["thresholds"].items()))
    return [
        ("model", record["model"]),
        ("reference window", record["reference"]),
        ("current window", record["current"]),
        ("rows (reference / current)", f"{record['reference_rows']} / {record['current_rows']}"),
        (
            "sampled (reference / current)",
            f"{record['reference_sampled']} / {record['current_sampled']} "
            f"(sample size {record['sample_size']}, seed {record['seed']})",
        ),
        ("sampling", record["sampling"]),
        ("numeric features", ", ".join(record["numeric_features"]) or "none"),
        ("categorical features", ", ".join(record["categorical_features"]) or "none"),
        ("text features", ", ".join(record.get("text_features", [])) or "none"),
        ("methods", methods or "none"),
        ("thresholds", thresholds or "none"),
        ("evidently", record["evidently_version"]),
        ("code version / schema version", f"{record['code_version']} / {record['schema_version']}"),
        ("input hash", record["input_hash"]),
    ]


def provenance_html(record: dict[str, Any]) -> str:
    """An escaped HTML section listing the provenance of a report."""
    cells = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(str(value))}</td></tr>"
        for label, value in provenance_rows(record)
    )
    return (
        '<section class="dw-provenance" id="provenance"><h2>Provenance</h2>'
        f"<table>{cells}</table>"
        f"<p>Regenerate with <code>{html.escape(regenerate_command(record))}</code></p></section>"
    )


def regenerate_command(record: dict[str, Any]) -> str:
    """The ``driftwarden report`` command line that rebuilds this report."""
    return shlex.join(
        [
            "driftwarden",
            "report",
            "--model",
            record["model"],
            "--reference",
            record["reference"],
            "--current",
            record["current"],
            "--sample-size",
            str(record["sample_size"]),
            "--seed",
            str(record["seed"]),
            "--out",
            "report.html",
        ]
    )


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a report."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
