"""Replay Capital Bikeshare 2011 hours as inference traffic, with a drift phase.

The docker-compose ``loadgen`` profile runs this against the collector sidecar. Phase one
sends January hours (the model's training month: no drift); after ``--warmup`` seconds it
switches to the hours of ``--drift-month`` (July by default: much warmer, 3.4 times the riders),
real data whose feature distributions differ from January's, so the drift detectors and the
dashboards have something true to find. Each request is one Open Inference Protocol call
with one named tensor per feature (MLServer's pandas codec).

    python deploy/loadgen/bikeshare.py --target http://collector:8080 --rps 20 --warmup 900

A heartbeat file is touched after every successful request; the compose health check reads it.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import itertools
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

NUMERIC = {"temp": "FP64", "atemp": "FP64", "hum": "FP64", "windspeed": "FP64"}
INTEGER = ["hr", "weekday", "workingday", "holiday"]
CATEGORICAL = ["weathersit"]


def bikeshare_csv() -> Path:
    """Bikeshare.csv from the islp package, found without importing it (its dependencies are not installed)."""
    spec = importlib.util.find_spec("ISLP")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("loadgen: the islp package (Capital Bikeshare data) is not installed in this image")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "Bikeshare.csv"


def rows(month: str) -> list[dict[str, str]]:
    with bikeshare_csv().open(newline="") as handle:
        selected = [row for row in csv.DictReader(handle) if row["mnth"] == month]
    if not selected:
        sys.exit(
            f"loadgen: no rows for month {month!r}; "
            "the data spells them Jan, Feb, March, April, May, June, July, Aug, Sept, Oct, Nov, Dec"
        )
    return selected


def request_body(row: dict[str, str]) -> dict:
    """One Open Inference Protocol request: a tensor of one value per feature."""
    inputs = [{"name": n, "shape": [1], "datatype": t, "data": [float(row[n])]} for n, t in NUMERIC.items()]
    inputs += [{"name": n, "shape": [1], "datatype": "INT64", "data": [int(row[n])]} for n in INTEGER]
    inputs += [{"name": n, "shape": [1], "datatype": "BYTES", "data": [row[n]]} for n in CATEGORICAL]
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def schedule(reference: list[dict], drifted: list[dict], warmup: float) -> Iterator[tuple[str, dict]]:
    start = time.monotonic()
    for row in itertools.cycle(reference):
        if time.monotonic() - start >= warmup:
            break
        yield "reference", row
    for row in itertools.cycle(drifted):
        yield "drift", row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="http://collector:8080", help="the collector sidecar")
    parser.add_argument("--model", default="bikeshare", help="model name in the OIP path")
    parser.add_argument("--rps", type=float, default=20.0, help="requests per second")
    parser.add_argument("--warmup", type=float, default=900.0, help="seconds of January traffic before the drift")
    parser.add_argument("--reference-month", default="Jan")
    parser.add_argument("--drift-month", default="July")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: never)")
    parser.add_argument("--max-requests", type=int, default=0, help="stop after this many requests (0: never)")
    parser.add_argument("--heartbeat", type=Path, default=Path(tempfile.gettempdir()) / "driftwarden-loadgen-heartbeat")
    args = parser.parse_args()

    url = f"{args.target.rstrip('/')}/v2/models/{args.model}/infer"
    interval = 1.0 / args.rps
    started = time.monotonic()
    sent = failed = 0
    phase_seen = ""
    with httpx.Client(timeout=10.0) as client:
        for phase, row in schedule(rows(args.reference_month), rows(args.drift_month), args.warmup):
            if phase != phase_seen:
                print(f"loadgen: {phase} phase ({args.reference_month if phase == 'reference' else args.drift_month})")
                phase_seen = phase
            tick = time.monotonic()
            try:
                response = client.post(url, json=request_body(row))
                response.raise_for_status()
                args.heartbeat.touch()
                sent += 1
            except httpx.HTTPError as exc:
                failed += 1
                if failed % 100 == 1:
                    print(f"loadgen: {url}: {exc}", file=sys.stderr)
            if (sent + failed) % 1000 == 0:
                print(f"loadgen: {sent} sent, {failed} failed")
            if args.duration and time.monotonic() - started >= args.duration:
                break
            if args.max_requests and sent + failed >= args.max_requests:
                break
            time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    print(f"loadgen: done: {sent} sent, {failed} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
