"""``driftwarden estimate``: a model's performance in a window without its labels (CBPE / DLE), on demand.

Fits the estimator on the labelled reference window (CBPE for classifiers, from their scores; DLE
for regressors, from their inputs and predictions), then prints per metric the estimate, its
sampling error, the thresholds from reference chunks as long as the current window, the verdict
and the realized value once labels of the window exist. ``--format json`` prints a JSON array of
the objects documented in ``detectors/README.md``; ``--save`` also writes them to
``estimated_performance_results``.
"""

from __future__ import annotations

import argparse
import json
import math

from driftwarden.commands import add_store_argument

METRICS = ("roc_auc", "f1", "precision", "recall", "accuracy", "mae", "rmse")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "estimate",
        help="estimate a model's performance in a window without its labels (CBPE, DLE)",
        description="Estimate performance without labels: CBPE (confidence-based performance estimation) for "
        "classifiers from their scores, DLE (direct loss estimation) for regressors, fitted on a labelled "
        "reference window, with sampling errors and alert thresholds as NannyML computes them.",
    )
    add_store_argument(parser)
    parser.add_argument("--model", required=True, help="model name, as recorded by the collector or ingest")
    parser.add_argument(
        "--reference", required=True, metavar="A..B", help="labelled reference window, ISO-8601 START..END"
    )
    parser.add_argument("--current", required=True, metavar="C..D", help="window to estimate, ISO-8601 START..END")
    parser.add_argument(
        "--metric",
        action="append",
        choices=METRICS,
        help="estimate only this metric (repeatable); default: every metric of the model's task",
    )
    parser.add_argument(
        "--task",
        choices=("classification", "regression"),
        help="the model's task; default: classification when the reference labels are classes, else regression",
    )
    parser.add_argument("--positive-label", metavar="L", help="positive class of a binary classifier (default 1)")
    parser.add_argument("--version", dest="model_version", metavar="V", help="only events of this model version")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="output format (default table)")
    parser.add_argument("--save", action="store_true", help="also write the results to estimated_performance_results")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from driftwarden import storage
    from driftwarden.detectors.estimation.cbpe import EstimationError
    from driftwarden.detectors.estimation.estimator import estimate, fit_estimator
    from driftwarden.detectors.estimation.results import write_estimates
    from driftwarden.detectors.window import Window
    from driftwarden.errors import UserError
    from driftwarden.names import check_model_name

    check_model_name(args.model)
    reference = Window.parse(args.reference, name="--reference")
    current = Window.parse(args.current, name="--current")
    client = storage.open_store(args.store)
    try:
        fit = fit_estimator(
            client,
            args.model,
            reference,
            current.end - current.start,
            task=args.task,
            metrics=args.metric,
            model_version=args.model_version,
            positive_label=args.positive_label,
        )
    except EstimationError as exc:
        raise UserError(str(exc)) from None
    results = estimate(client, fit, current)
    if args.save:
        write_estimates(client, results)
    if args.format == "json":
        print(json.dumps([r.as_dict() for r in results], indent=2, allow_nan=False))
    else:
        print(render_table(results))
    return 0


def _number(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def render_table(results) -> str:
    """One line per metric: estimate ± sampling error, thresholds, verdict, realized and reference values."""
    if not results:
        return "no estimates"
    first = results[0]
    header = ("metric", "estimated", "±", "lower", "upper", "verdict", "realized", "reference")
    rows = [header]
    for r in results:
        verdict = "ALERT" if r.alert else ("no estimate" if r.estimated is None else "ok")
        rows.append(
            (
                r.metric,
                _number(r.estimated),
                _number(r.sampling_error),
                _number(r.lower_threshold),
                _number(r.upper_threshold),
                verdict,
                _number(r.realized),
                _number(r.reference_value),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        f"model {first.model} · {first.method.upper()} ({first.task}) · reference {first.reference_start.isoformat()}"
        f"..{first.reference_end.isoformat()} ({first.reference_chunks} chunks) · current "
        f"{first.current_start.isoformat()}..{first.current_end.isoformat()} ({first.predictions} predictions, "
        f"{first.labelled} labelled)",
        "",
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    messages = sorted({r.message for r in results if r.message})
    if messages:
        lines += ["", *(f"note: {m}" for m in messages)]
    return "\n".join(lines)
