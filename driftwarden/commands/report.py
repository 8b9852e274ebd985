"""``driftwarden report``: the Evidently report of a model's current window against a reference, to a file.

Writes the same file as the API's ``/models/{model}/report.html`` (or ``.json``): a bounded,
seeded sample per window drawn in ClickHouse, rendered by Evidently with a provenance
section, cached by the content hash of its inputs.
"""

from __future__ import annotations

import argparse

from driftwarden.commands import add_store_argument


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report",
        help="write the Evidently drift report of a model between two windows (HTML or JSON)",
        description="Draw a bounded random sample of each window inside ClickHouse (deterministic for a seed), "
        "run Evidently's data drift and data summary presets on it and write the report with its provenance "
        "(windows, row counts, sample size, methods, thresholds, code and schema version, input hash).",
    )
    add_store_argument(parser)
    parser.add_argument("--model", required=True, help="model name, as recorded by the collector or ingest")
    parser.add_argument("--reference", required=True, metavar="A..B", help="reference window, ISO-8601 START..END")
    parser.add_argument("--current", required=True, metavar="C..D", help="current window, ISO-8601 START..END")
    parser.add_argument("--out", required=True, metavar="FILE", help="file to write (e.g. report.html)")
    parser.add_argument("--format", choices=("html", "json"), default=None, help="default: from --out's suffix")
    parser.add_argument(
        "--sample-size", type=_positive, default=None, metavar="N", help="events per window (default 5000)"
    )
    parser.add_argument("--seed", type=_non_negative, default=None, metavar="S", help="sampling seed (default 0)")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=None,
        help="report cache (default $DRIFTWARDEN_REPORT_CACHE, else ./driftwarden-reports)",
    )
    parser.add_argument(
        "--api-config",
        metavar="FILE",
        default=None,
        help="YAML file whose `api:` section sets report_sample_size, report_seed and report_cache_dir "
        "(default $DRIFTWARDEN_API_CONFIG); the options above override it",
    )
    parser.set_defaults(run=run)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 10:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 10 events, got {text!r}")
    return int(text)


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from driftwarden import storage
    from driftwarden.auth import Principal
    from driftwarden.detectors.api import load_settings, queries
    from driftwarden.detectors.api.reports import NoData, build_report
    from driftwarden.detectors.window import Window
    from driftwarden.errors import UserError
    from driftwarden.names import check_model_name

    check_model_name(args.model)
    reference = Window.parse(args.reference, name="--reference")
    current = Window.parse(args.current, name="--current")
    fmt = args.format or ("json" if args.out.lower().endswith(".json") else "html")
    settings = load_settings(args.api_config)
    client = storage.open_store(args.store)
    everyone = Principal(name="cli")  # the command line reads the store directly: no token scope applies
    if not queries.model_visible(client, everyone, args.model):
        raise UserError(f"model {args.model!r} has no events in {storage.describe(args.store)}; check --model")
    try:
        report = build_report(
            client,
            everyone,
            args.model,
            reference,
            current,
            sample_size=args.sample_size or settings.report_sample_size,
            seed=settings.report_seed if args.seed is None else args.seed,
            cache_dir=args.cache_dir or settings.report_cache_dir,
        )
    except NoData as exc:
        raise UserError(str(exc)) from None
    out = Path(args.out)
    try:
        shutil.copyfile(report.html_path if fmt == "html" else report.json_path, out)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror}") from None
    record = report.provenance
    print(
        f"{out}: {fmt} report of {args.model}, {record['current_sampled']} of {record['current_rows']} current and "
        f"{record['reference_sampled']} of {record['reference_rows']} reference events, "
        f"input hash {record['input_hash']}{' (cached)' if report.cached else ''}"
    )
    return 0
