"""The ClickHouse store: URLs, connections and the schema migrations."""

from driftwarden.storage.errors import StoreError
from driftwarden.storage.migrate import DEFAULT_RETENTION_DAYS, latest_version, migrate
from driftwarden.storage.store import connect, describe
from driftwarden.storage.url import DEFAULT_STORE, STORE_ENV

__all__ = [
    "DEFAULT_RETENTION_DAYS",
    "DEFAULT_STORE",
    "STORE_ENV",
    "StoreError",
    "connect",
    "describe",
    "latest_version",
    "migrate",
]
