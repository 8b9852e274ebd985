"""``driftwarden up``: the whole platform in one process (collectors, ingest, detectors, API, /metrics)."""

from __future__ import annotations

import argparse

from driftwarden.commands import add_store_argument


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "up",
        help="run collectors, ingest, detectors and the reports API in one process",
        description="One process that owns the store (embedded, or a ClickHouse server when the store URL "
        "says so) and runs a collector per entry of `collectors:`, the ingest endpoints, the detectors on "
        "their schedule, the reports API and one /metrics for all of them. The configuration is the "
        "detectors' YAML plus `collectors:` and `api:` sections (see examples/up.yaml). SIGTERM or Ctrl-C "
        "stops it after every accepted event is written.",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="the YAML configuration (examples/up.yaml)")
    add_store_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import sys

    from driftwarden import up

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = up.load(args.config, store=args.store)
    return up.run(config)
