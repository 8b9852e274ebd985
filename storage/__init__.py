"""The ClickHouse store: URLs, connections and the schema migrations."""

from storage.errors import StoreError
from storage.migrate import DEFAULT_RETENTION_DAYS, latest_version, migrate
from storage.store import connect, describe
from storage.url import DEFAULT_STORE, STORE_ENV

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
