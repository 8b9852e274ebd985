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
        help="analyse only this feature (repeatable); KIND numeric|categorical|text|embedding (default numeric), "
        "METHOD auto|ks|wasserstein|psi|jensenshannon|chisquare|ztest (numeric, categorical), domain_classifier "
        "(text, embedding), mmd|ratio|distance (embedding); default: every feature of the reference window",
    )
    parser.add_argument(
        "--exact-max-values",
        type=int,
        metavar="N",
        help="compare a numeric feature exactly (sorting every value) up to N values in both windows together, "
        "on cells with a reported error bound above (default 200000)",
    )
    parser.add_argument(
        "--exact-max-run-values",
        type=int,
        metavar="N",
        help="compare every numeric feature on cells when the features times the rows of both windows exceed N "
        "(a wide model; default 10000000)",
    )
    parser.add_argument(
        "--cell-resolution",
        type=float,
        metavar="R",
        help="cell width above that limit, in reference standard deviations (default 0.002)",
    )
    parser.add_argument(
        "--multivariate",
        default="none",
        metavar="METHODS",
        help="also multivariate drift over every numeric and categorical feature (target feature only): a "
        "comma-separated list of pca_reconstruction, domain_classifier (default none: it loads scikit-learn "
        "and pandas; the scheduled multivariate_drift detector runs both)",
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
    from driftwarden.names import check_model_name

    check_model_name(args.model)
    reference = Window.parse(args.reference, name="--reference")
    current = Window.parse(args.current, name="--current")
    features = [parse_feature(f) for f in args.feature] if args.feature else None
    settings = _settings(args)
    client = storage.open_store(args.store)
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
    multivariate = _multivariate(client, args, report)
    if args.save:
        write_drift(client, report)
        if multivariate:
            from driftwarden.detectors.multivariate import write_multivariate

            write_multivariate(client, multivariate)
    if args.format == "json":
        doc = report.as_dict()
        if multivariate:
            doc["multivariate"] = [_rounded(r.as_dict()) for r in multivariate]
        print(json.dumps(doc, indent=2, sort_keys=False, allow_nan=False))
    else:
        print(render_table(report))
        if multivariate:
            print(render_multivariate(multivariate))
    return 0


def _multivariate(client, args: argparse.Namespace, report) -> list:
    """Multivariate drift of the report's numeric and categorical features, by the methods of --multivariate."""
    from driftwarden.errors import UserError

    methods = tuple(m.strip() for m in args.multivariate.split(",") if m.strip())
    if args.target != "feature" or methods in ((), ("none",)):
        return []
    from driftwarden.detectors.multivariate import METHODS, MultivariateSettings, compute_multivariate

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(
            f"--multivariate {args.multivariate!r}: unknown method {unknown[0]!r}; accepted: "
            f"{', '.join(METHODS)} or none"
        )
    return compute_multivariate(
        client,
        report.model,
        report.reference,
        report.current,
        numeric=[f.feature for f in report.features if f.feature_type == "numeric"],
        categorical=[f.feature for f in report.features if f.feature_type == "categorical"],
        model_version=report.model_version,
        settings=MultivariateSettings(methods=methods),
    )


def _rounded(value):
    """Floats to 10 significant digits: sums merged across threads differ in the last bits between runs."""
    if isinstance(value, float):
        return float(f"{value:.10g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def render_multivariate(results) -> str:
    """Multivariate drift as text: one line per method with its thresholds, then the features that drive it."""
    lines = ["", "multivariate drift:"]
    for r in results:
        if r.value is None:
            lines.append(f"  {r.method}: no verdict — {r.message}")
            continue
        low = "-" if r.lower_threshold is None else _number(r.lower_threshold)
        high = "-" if r.upper_threshold is None else _number(r.upper_threshold)
        error = f" ± {_number(r.sampling_error)}" if r.sampling_error is not None else ""
        lines.append(
            f"  {r.method}: {_number(r.value)}{error} (thresholds {low}..{high}) "
            f"{'DRIFT' if r.alert else 'no drift'} over {len(r.features)} features"
        )
        drivers = ", ".join(f"{d['feature']} ({_number(d['score'])})" for d in r.drivers[:5])
        if drivers:
            lines.append(f"    driven by: {drivers}")
    return "\n".join(lines)


def _settings(args: argparse.Namespace):
    """The drift settings of the command line: Evidently's defaults, with the scale options given."""
    from driftwarden.detectors.drift import DriftSettings
    from driftwarden.errors import UserError

    given = {
        key: value
        for key, value in (
            ("exact_max_values", args.exact_max_values),
            ("exact_max_run_values", args.exact_max_run_values),
            ("cell_resolution", args.cell_resolution),
        )
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
    for f in report.features:  # what drove a text verdict: the classifier's most telling words
        words = f.details.get("typical_words")
        if words and f.verdict != "no verdict":
            notes.append(f"  {f.feature}: words of the current window: {', '.join(words['current'][:10]) or '-'}")
            notes.append(f"  {f.feature}: words of the reference window: {', '.join(words['reference'][:10]) or '-'}")
    if bounded:
        notes.append(
            "  ±: windows above --exact-max-values are compared on cells; the statistic is within ± of the exact one"
        )
    if notes:
        lines += ["", "notes:", *notes]
    analysed = sum(1 for f in report.features if f.verdict != "no verdict" and f.feature_type != "text_descriptor")
    lines += [
        "",
        f"dataset: {'DRIFT' if report.dataset_drifted else 'no drift'} — "
        f"{len(report.drifted_features)} of {analysed} features drifted "
        f"(share {report.dataset_drift_share:.3f}, threshold {report.drift_share_threshold})",
        f"input_hash {report.input_hash}",
    ]
    return "\n".join(lines)
