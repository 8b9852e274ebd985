"""Applying the numbered SQL migrations in ``storage/migrations/`` to a store.

Migrations are applied in order, once: each applied version is recorded in
``schema_migrations`` with the checksum of its file, and a file that changed
after it was applied is refused (migrations are append-only). The retention of
raw data is rendered into the DDL and kept in line with the configuration on
every run, by ``ALTER TABLE ... MODIFY TTL`` when it changed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files
from string import Template

from clickhouse_connect.driver.client import Client

from driftwarden.storage import cluster as cluster_ddl
from driftwarden.storage.errors import StoreError

DEFAULT_RETENTION_DAYS = 90
# The TTLs add the retention to a DateTime, which ends on 2106-02-07: 25,000 days (68 years) from
# arrival stays inside it, while 36,500 wrapped around and expired every row at the next merge.
MAX_RETENTION_DAYS = 25_000
# Raw data under the retention TTL, with the expression the TTL counts from.
RETENTION_TABLES = {
    "inferences": "received_at",
    "ground_truth": "toDateTime(received_at)",
    "drift_hour_profiles": "toDateTime(built_at)",  # partial drift profiles live as long as the events they hold
    "genai_content_events": "toDateTime(received_at)",
}

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_SPLIT = re.compile(r";\s*$", re.MULTILINE)
_TTL_DAYS = re.compile(r"\bTTL\b.*?toIntervalDay\((\d+)\)", re.IGNORECASE)

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY version
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, retention_days: int, cluster: str | None = None) -> list[str]:
        """The migration as executable statements, rendered for a cluster when one is named."""
        sql = Template(self.sql).substitute(RETENTION_DAYS=str(retention_days))
        out: list[str] = []
        for chunk in _SPLIT.split(sql):
            if not _strip_comments(chunk):
                continue
            out.extend(cluster_ddl.render(chunk.strip(), cluster) if cluster else [chunk.strip()])
        return out


def _strip_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines()).strip()


def available() -> list[Migration]:
    """Every migration shipped with this version, in order."""
    found = []
    for entry in files("driftwarden.storage").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise StoreError(f"two migrations share a version number: {versions}")
    return found


def latest_version() -> int:
    """The schema version this code expects."""
    return available()[-1].version


def applied(client: Client) -> dict[int, str]:
    """Applied migration versions and their checksums; empty for a store never migrated."""
    exists = client.query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'schema_migrations'"
    ).result_rows[0][0]
    if not exists:
        return {}
    rows = client.query("SELECT version, checksum FROM schema_migrations FINAL").result_rows
    return {int(v): c for v, c in rows}


def migrate(
    client: Client, *, retention_days: int = DEFAULT_RETENTION_DAYS, cluster: str | None = None
) -> list[Migration]:
    """Apply the migrations that are not yet applied; return them. Re-running is a no-op."""
    if not 1 <= retention_days <= MAX_RETENTION_DAYS:
        raise StoreError(
            f"retention days must be between 1 and {MAX_RETENTION_DAYS} (ClickHouse dates end in 2106), "
            f"got {retention_days}"
        )
    for statement in cluster_ddl.render(MIGRATIONS_TABLE, cluster) if cluster else [MIGRATIONS_TABLE]:
        client.command(statement)
    done = applied(client)
    new = []
    for migration in available():
        if migration.version in done:
            if done[migration.version] != migration.checksum:
                raise StoreError(
                    f"migration {migration.version:04d}_{migration.name}.sql changed after it was applied to "
                    "this store; migrations are append-only: restore the file and add a new migration"
                )
            continue
        for statement in migration.statements(retention_days, cluster):
            client.command(statement)
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
        new.append(migration)
    apply_retention(client, retention_days, cluster)
    return new


def retention(client: Client, table: str) -> int | None:
    """The retention in days of ``table``'s TTL, or None when it has none."""
    rows = client.query(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": table},
    ).result_rows
    match = _TTL_DAYS.search(rows[0][0]) if rows else None
    return int(match.group(1)) if match else None


def apply_retention(client: Client, retention_days: int, cluster: str | None = None) -> None:
    """Set the TTL of raw-data tables to ``retention_days`` where it differs."""
    for table, since in RETENTION_TABLES.items():
        local = f"{table}_local" if cluster else table
        if retention(client, local) == retention_days:
            continue
        statement = f"ALTER TABLE {table} MODIFY TTL {since} + INTERVAL {retention_days} DAY"
        for rendered in cluster_ddl.render(statement, cluster) if cluster else [statement]:
            client.command(rendered)


def render_all(*, retention_days: int = DEFAULT_RETENTION_DAYS, cluster: str | None = None) -> list[str]:
    """Every statement of every migration, as ``migrate`` would run them on an empty store."""
    out = cluster_ddl.render(MIGRATIONS_TABLE, cluster) if cluster else [MIGRATIONS_TABLE.strip()]
    for migration in available():
        out.extend(migration.statements(retention_days, cluster))
    return out
