"""``driftwarden drift``: one drift computation between two windows, on demand.

Prints, per feature, the method, its statistic (and p-value), the threshold and
the verdict, then the dataset verdict; ``--format json`` prints the document
described in ``detectors/README.md`` instead. ``--save`` also writes the rows to
``drift_results`` (as the scheduled detector does).
"""

from __future__ import annotations

import argparse
import json
import math

from driftwarden.commands import add_store_argument


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "drift",
        help="compare the features (or predictions) of a model between two time windows",
        description="Compute data drift of one model between a reference and a current window inside "
        "ClickHouse, with Evidently's default methods and thresholds (KS / chi-squared / Z-test for "
        "references up to 1000 rows, normalised Wasserstein / Jensen-Shannon above).",
    )
    add_store_argument(parser)
    parser.add_argument("--model", required=True, help="model name, as recorded by the collector or ingest")
    parser.add_argument(
        "--reference", required=True, metavar="A..B", help="reference window, ISO-8601 START..END (END excluded)"
    )
    parser.add_argument("--current", required=True, metavar="C..D", help="current window, ISO-8601 START..END")
    parser.add_argument(
        "--version", dest="model_version", metavar="V", help="only events of this model version (both windows)"
    )
    parser.add_argument(
        "--target",
        choices=("feature", "prediction"),
        default="feature",
        help="compare the input features (default) or the model's outputs",
    )
    parser.add_argument(
        "--feature",
        action="append",
        metavar="NAME[:KIND[:METHOD[:THRESHOLD]]]",
        help="analyse only this feature (repeatable); KIND numeric|categorical (default numeric), METHOD auto|"
        "ks|wasserstein|psi|jensenshannon|chisquare|ztest; default: every feature of the reference window",
    )
    parser.add_argument(
        "--exact-max-values",
        type=int,
        metavar="N",
        help="compare a numeric feature exactly (sorting every value) up to N values in both windows together, "
        "on cells with a reported error bound above (default 200000)",
    )
    parser.add_argument(
        "--cell-resolution",
        type=float,
        metavar="R",
        help="cell width above that limit, in reference standard deviations (default 0.002)",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    parser.add_argument("--save", action="store_true", help="also write the results to drift_results")
    parser.set_defaults(run=run)


def parse_feature(text: str):
    """``NAME[:KIND[:METHOD[:THRESHOLD]]]`` as a FeatureSpec; a bad part is a UserError naming it."""
    from driftwarden.detectors.drift import FeatureSpec
    from driftwarden.errors import UserError

    parts = text.split(":")
    if len(parts) > 4 or not parts[0]:
        raise UserError(f"--feature {text!r} is not NAME[:KIND[:METHOD[:THRESHOLD]]], e.g. temp:numeric:ks:0.01")
    name = parts[0]
    kind = parts[1] if len(parts) > 1 and parts[1] else "numeric"
    method = parts[2] if len(parts) > 2 and parts[2] else "auto"
    threshold = None
    if len(parts) > 3:
        try:
            threshold = float(parts[3])
        except ValueError:
            raise UserError(f"--feature {text!r}: threshold {parts[3]!r} is not a number") from None
    try:
        return FeatureSpec(name, kind, method, threshold)
    except ValueError as exc:
        raise UserError(f"--feature {text!r}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from driftwarden import storage
    from driftwarden.detectors.drift import compute_drift, write_drift
    from driftwarden.detectors.window import Window

    reference = Window.parse(args.reference, name="--reference")
    current = Window.parse(args.current, name="--current")
    features = [parse_feature(f) for f in args.feature] if args.feature else None
    settings = _settings(args)
    client = storage.connect(args.store)
    report = compute_drift(
        client,
        model=args.model,
        reference=reference,
        current=current,
        features=features,
        model_version=args.model_version,
        target=args.target,
        settings=settings,
    )
    if args.save:
        write_drift(client, report)
    if args.format == "json":
        print(json.dumps(report.as_dict(), indent=2, sort_keys=False, allow_nan=False))
    else:
        print(render_table(report))
    return 0


def _settings(args: argparse.Namespace):
    """The drift settings of the command line: Evidently's defaults, with the scale options given."""
    from driftwarden.detectors.drift import DriftSettings
    from driftwarden.errors import UserError

    given = {
        key: value
        for key, value in (("exact_max_values", args.exact_max_values), ("cell_resolution", args.cell_resolution))
        if value is not None
    }
    try:
        return DriftSettings(**given)
    except ValueError as exc:
        raise UserError(f"--{str(exc).split(' ')[0].replace('_', '-')}: {exc}") from None


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4g}"


def render_table(report) -> str:
    """The report as an aligned text table, one line per feature, then the dataset verdict."""
    # "±": the guaranteed error bound of a statistic computed on cells (large windows), when any is
    bounded = any("error_bound" in f.details for f in report.features)
    header = ("feature", "type", "method", "statistic", *(("±",) if bounded else ()), "p_value", "threshold")
    header += ("verdict", "missing", "ref_n", "cur_n")
    rows = [header]
    for f in report.features:
        bound = (_number(f.details.get("error_bound")),) if bounded else ()
        rows.append(
            (
                f.feature,
                f.feature_type,
                f.method,
                _number(f.statistic),
                *bound,
                _number(f.p_value),
                _number(f.threshold),
                f.verdict.upper() if f.drifted else f.verdict,
                f"{f.missing_share:.1%}",
                str(f.reference_rows),
                str(f.current_rows),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        f"model {report.model}"
        + (f" version {report.model_version}" if report.model_version else "")
        + f" · {report.target} drift · reference {report.reference} ({report.reference_rows} rows)"
        + f" · current {report.current} ({report.current_rows} rows)",
        "",
    ]
    for r in rows:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    notes = [f"  {f.feature}: {f.note}" for f in report.features if f.note]
    if bounded:
        notes.append(
            "  ±: windows above --exact-max-values are compared on cells; the statistic is within ± of the exact one"
        )
    if notes:
        lines += ["", "notes:", *notes]
    analysed = sum(1 for f in report.features if f.verdict != "no verdict")
    lines += [
        "",
        f"dataset: {'DRIFT' if report.dataset_drifted else 'no drift'} — "
        f"{len(report.drifted_features)} of {analysed} features drifted "
        f"(share {report.dataset_drift_share:.3f}, threshold {report.drift_share_threshold})",
        f"input_hash {report.input_hash}",
    ]
    return "\n".join(lines)
