"""Opening a store at the schema this code expects, for every command that reads or writes one.

An embedded store belongs to the process that opens it, so its schema is brought up to date
on the spot (created when the directory is new), keeping the retention it has. A ClickHouse
server's schema is the operator's: a server store that is behind is refused with one line
that says to run ``driftwarden migrate``, since the user of a command may not be allowed to
create tables there.
"""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver.client import Client

from driftwarden.storage.errors import StoreError
from driftwarden.storage.migrate import DEFAULT_RETENTION_DAYS, applied, available, migrate, retention
from driftwarden.storage.store import connect, describe
from driftwarden.storage.url import parse, resolve


def open_store(
    url: str | None = None, *, retention_days: int | None = None, settings: dict[str, Any] | None = None
) -> Client:
    """A client on the store at ``url`` (default ``$DRIFTWARDEN_STORE``) whose schema is up to date.

    ``retention_days`` applies when an embedded store is migrated; by default a store keeps
    the retention it has (90 days for a new one).
    """
    embedded = parse(resolve(url)).embedded
    client = connect(url, create_database=embedded, settings=settings)
    done = applied(client)
    missing = [m for m in available() if m.version not in done]
    if not missing:
        return client
    if embedded:
        days = retention_days or (retention(client, "inferences") if done else None) or DEFAULT_RETENTION_DAYS
        migrate(client, retention_days=days)
        return client
    where = describe(url)
    state = (
        "has no schema yet"
        if not done
        else f"is at schema version {max(done)}, this driftwarden needs {missing[-1].version}"
    )
    raise StoreError(f"the store {where} {state}: run `driftwarden migrate --store {where}` first")
