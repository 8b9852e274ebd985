"""A writer in a process of its own, for crash tests: submits events at a steady rate and reports.

    python -m tests.writer_process --hub URL --spool DIR --first ID --count N --rate R [--batch B] [--flush-ms T]

Event ``i`` has ``event_id = UUID(int=first + i)``, so a test knows which events were
submitted. Every ~10 ms it prints ``submitted S acknowledged A`` (acknowledged: in the
sink or fsync'd in the spool). After N events it closes the writer and prints ``done``.
"""

from __future__ import annotations

import argparse
import time
import uuid

from driftwarden.collector.event import Event
from driftwarden.collector.writer import open_writer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hub", required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--flush-ms", type=float, default=50.0)
    args = parser.parse_args()
    writer = open_writer(
        model="crash", hub=args.hub, spool_dir=args.spool, batch_events=args.batch, flush_interval_ms=args.flush_ms
    ).start()
    start = time.monotonic()
    last_report = 0.0
    for i in range(args.count):
        due = start + i / args.rate
        while (now := time.monotonic()) < due:
            time.sleep(min(0.001, due - now))
        writer.submit(Event(model="crash", event_id=uuid.UUID(int=args.first + i), num_names=["i"], num_values=[i]))
        if now - last_report > 0.01:
            stats = writer.stats()
            print(f"submitted {i + 1} acknowledged {stats.acknowledged}", flush=True)
            last_report = now
    stats = writer.close(timeout=30)
    print(f"submitted {args.count} acknowledged {stats.acknowledged}", flush=True)
    print(f"done replayed {stats.replayed} spool_bytes {stats.spool_bytes}", flush=True)


if __name__ == "__main__":
    main()
