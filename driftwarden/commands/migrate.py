"""``driftwarden migrate``: create or upgrade the schema of a store."""

from __future__ import annotations

import argparse

from driftwarden.commands import add_store_argument


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "migrate",
        help="create or upgrade the ClickHouse schema of a store",
        description="Apply the numbered SQL migrations that the store does not have yet, then set the "
        "retention TTL of raw data. Re-running is a no-op.",
    )
    add_store_argument(parser)
    parser.add_argument(
        "--retention-days",
        type=_positive_int,
        default=None,
        metavar="N",
        help="keep raw inferences and ground truth N days after they are received (default 90)",
    )
    parser.add_argument(
        "--cluster",
        metavar="NAME",
        help="render the DDL for a ClickHouse cluster (ReplicatedMergeTree ON CLUSTER NAME plus Distributed tables)",
    )
    parser.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="print the DDL that would run on an empty store instead of applying it",
    )
    parser.set_defaults(run=run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of days, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 day, got {value}")
    from driftwarden.storage.migrate import MAX_RETENTION_DAYS

    if value > MAX_RETENTION_DAYS:
        raise argparse.ArgumentTypeError(
            f"expected at most {MAX_RETENTION_DAYS} days (ClickHouse dates end in 2106), got {value}"
        )
    return value


def run(args: argparse.Namespace) -> int:
    from driftwarden import storage
    from driftwarden.storage.migrate import DEFAULT_RETENTION_DAYS, render_all

    days = args.retention_days or DEFAULT_RETENTION_DAYS
    if args.print_only:
        for statement in render_all(retention_days=days, cluster=args.cluster):
            print(statement.strip() + ";\n")
        return 0
    client = storage.connect(args.store, create_database=True)
    new = storage.migrate(client, retention_days=days, cluster=args.cluster)
    where = storage.describe(args.store)
    if new:
        print(f"{where}: applied " + ", ".join(f"{m.version:04d}_{m.name}" for m in new))
    else:
        print(f"{where}: already at schema version {storage.latest_version()}, nothing to apply")
    print(f"retention of raw data: {days} days")
    rows = client.query(
        "SELECT name, total_rows FROM system.tables WHERE database = currentDatabase() ORDER BY name"
    ).result_rows
    width = max(len(name) for name, _ in rows)
    for name, total in rows:
        print(f"  {name:<{width}}  {total or 0:>12,} rows")
    return 0
