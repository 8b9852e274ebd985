"""The two datasources every dashboard reads, referenced by uid, and the ClickHouse query model.

The uids are the ones the provisioning files under ``dashboards/provisioning/datasources``
give the datasources, so a provisioned Grafana resolves every panel without a lookup by name.
The foundation SDK has no builder for the ClickHouse plugin's query, so this module defines
the query object with the fields of the plugin's v4 SQL editor (``CHSqlQuery`` and
``QueryType`` in grafana/clickhouse-datasource ``src/types``).
"""

from __future__ import annotations

import enum
import textwrap

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

CLICKHOUSE_UID = "driftwarden-clickhouse"
CLICKHOUSE_TYPE = "grafana-clickhouse-datasource"
PROMETHEUS_UID = "driftwarden-prometheus"
PROMETHEUS_TYPE = "prometheus"

CLICKHOUSE = DataSourceRef(type_val=CLICKHOUSE_TYPE, uid=CLICKHOUSE_UID)
PROMETHEUS = DataSourceRef(type_val=PROMETHEUS_TYPE, uid=PROMETHEUS_UID)


class Format(enum.IntEnum):
    """How the plugin shapes the result: grafana-plugin-sdk-go's ``sqlutil.FormatQueryOption`` values.

    The backend turns a long time-series frame (time, label columns, values, sorted by time)
    into one series per label combination.
    """

    TIME_SERIES = 0
    TABLE = 1


class ClickHouseSqlQuery(cogvariants.Dataquery):
    """A raw-SQL query of the official ClickHouse datasource plugin (v4)."""

    def __init__(self, raw_sql: str, ref_id: str, fmt: Format) -> None:
        self.raw_sql = raw_sql
        self.ref_id = ref_id
        self.format = fmt

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": CLICKHOUSE.to_json(),
            "editorType": "sql",
            "format": int(self.format),
            "queryType": "timeseries" if self.format is Format.TIME_SERIES else "table",
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class ClickHouseSql(cogbuilder.Builder[ClickHouseSqlQuery]):
    """Builder of :class:`ClickHouseSqlQuery`, for ``Panel.with_target``."""

    def __init__(self, raw_sql: str, *, ref_id: str = "A", fmt: Format = Format.TABLE) -> None:
        self._internal = ClickHouseSqlQuery(_dedent(raw_sql), ref_id, fmt)

    def build(self) -> ClickHouseSqlQuery:
        return self._internal


def _dedent(sql: str) -> str:
    return textwrap.dedent(sql).strip()
