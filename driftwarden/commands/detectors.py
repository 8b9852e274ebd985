"""``driftwarden detectors``: run the scheduled detectors and serve their metrics on ``/metrics``."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading

from driftwarden.commands import add_store_argument
from driftwarden.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "detectors",
        help="run drift, performance, latency/SLO and reproducibility detectors on a schedule",
        description="Compute every detector of the configuration on each window that ended since it last ran "
        "(catching up missed windows up to a bound), write the results to the store and export them as "
        "Prometheus gauges on /metrics. A window already computed is not computed again.",
    )
    parser.add_argument("--config", required=True, metavar="FILE", help="the detectors' YAML configuration")
    parser.add_argument(
        "--once",
        action="store_true",
        help="compute every due window once and exit: status 0 when every detector succeeded, 1 otherwise",
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        type=_host_port,
        default=None,
        help="serve /metrics here (port 0 picks a free port; default 127.0.0.1:9464 unless --once)",
    )
    parser.add_argument(
        "--now",
        metavar="TIMESTAMP",
        type=_instant,
        default=None,
        help="evaluate as if the time were TIMESTAMP (ISO-8601), e.g. to backfill windows of past data",
    )
    add_store_argument(parser)
    parser.set_defaults(run=run)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, e.g. 127.0.0.1:9464, got {text!r}")
    return host.strip("[]"), int(port)


def _instant(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO-8601 timestamp, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def run(args: argparse.Namespace) -> int:
    from driftwarden import storage
    from driftwarden.detectors import config as detector_config
    from driftwarden.detectors.exporter import Exporter
    from driftwarden.detectors.scheduler import Scheduler, describe
    from driftwarden.storage.migrate import apply_retention

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    config = detector_config.load(args.config)
    url = args.store or config.store  # the command line wins over the file
    try:
        client = storage.open_store(url, retention_days=config.retention_days)
    except storage.StoreError as exc:
        raise UserError(str(exc)) from None
    if config.retention_days:
        try:
            apply_retention(client, config.retention_days)
        except Exception as exc:  # e.g. a ClickHouse user without ALTER on the raw tables
            raise UserError(
                f"cannot set the retention of raw data to {config.retention_days} days: {str(exc).splitlines()[0]}; "
                "set it as the schema owner with `driftwarden migrate --retention-days N`, or remove "
                "`retention_days` from the configuration"
            ) from None

    stop = threading.Event()
    if not args.once:  # before the address is printed: whoever reads it may stop us at once
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    exporter = Exporter()
    scheduler = Scheduler(client, config, exporter)
    listen = args.listen or (None if args.once else ("127.0.0.1", 9464))
    if listen:
        try:
            exporter.restore(client, [m.name for m in config.models])
        except Exception as exc:  # the gauges fill again as windows are computed
            logging.getLogger("driftwarden.detectors").error("restoring gauges failed: %s", exc)
        try:
            port = exporter.serve(*listen)
        except OSError as exc:
            raise UserError(f"cannot listen on {listen[0]}:{listen[1]}: {exc.strerror}") from None
        print(f"serving metrics on http://{listen[0]}:{port}/metrics", flush=True)

    if args.once:
        made = scheduler.run_once(args.now)
        for run_ in made:
            print(describe(run_))
        failed = [r for r in made if r.status == "error"]
        print(f"{len(made)} runs, {len(failed)} failed" + (" (nothing was due)" if not made else ""), flush=True)
        for run_ in failed:
            print(f"failed: {run_.detector} for model {run_.model} window {run_.window}: {run_.error}", file=sys.stderr)
        for problem in scheduler.problems:
            print(f"failed: {problem}", file=sys.stderr)
        exporter.close()
        return 1 if failed or scheduler.problems else 0

    if args.now is not None:
        scheduler.run_once(args.now)
    scheduler.run_forever(stop)
    exporter.close()
    return 0
