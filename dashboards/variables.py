"""Template variables shared by the dashboards, and links to the drift report pages of the API.

ClickHouse dashboards list models, versions and features with SQL; the Prometheus dashboard
uses ``label_values``. ``$version`` has an "All" entry whose value is ``__all``, so SQL panels
filter with :data:`VERSION_FILTER` and PromQL panels with the regex ``.*``.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models.dashboard import DashboardLinkType, VariableRefresh, VariableSort

from driftwarden.dashboards.datasources import CLICKHOUSE, PROMETHEUS

ALL_VERSIONS = "__all"
DEFAULT_API_URL = "http://localhost:8000"


def sql_text(variable: str) -> str:
    """A ClickHouse expression equal to the template variable's value, whatever characters it holds.

    Grafana pastes a variable's value into the SQL as it is, so a model name holding ``'`` or
    ``\\`` would end the string literal early or be read as an escape. Formatted with
    ``:percentencode`` (RFC 3986, Grafana's ``encodeURIComponentStrict``), the literal holds only
    ``A-Z a-z 0-9 - _ . ~ %``, and ClickHouse's ``decodeURLComponent`` gives the value back.
    """
    return "decodeURLComponent('${" + variable + ":percentencode}')"


MODEL = sql_text("model")
VERSION = sql_text("version")
FEATURE = sql_text("feature")

# SQL predicate for the version picker: every version when "All" is chosen.
VERSION_FILTER = f"({VERSION} = '{ALL_VERSIONS}' OR model_version = {VERSION})"


def clickhouse_model() -> dash.QueryVariable:
    """``$model``: models that received traffic in the dashboard's time range."""
    return (
        dash.QueryVariable("model")
        .label("Model")
        .datasource(CLICKHOUSE)
        .query("SELECT DISTINCT model FROM inferences WHERE $__timeFilter(ts) ORDER BY model")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def clickhouse_version() -> dash.QueryVariable:
    """``$version``: versions of ``$model`` seen in the time range, or all of them."""
    return (
        dash.QueryVariable("version")
        .label("Version")
        .datasource(CLICKHOUSE)
        .query(
            "SELECT DISTINCT model_version FROM inferences "
            f"WHERE model = {MODEL} AND $__timeFilter(ts) ORDER BY model_version"
        )
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .include_all(True)
        .all_value(ALL_VERSIONS)
    )


def clickhouse_feature() -> dash.QueryVariable:
    """``$feature``: features of ``$model`` that have a reference profile (numeric or categorical)."""
    return (
        dash.QueryVariable("feature")
        .label("Feature")
        .datasource(CLICKHOUSE)
        .query(
            "SELECT DISTINCT feature FROM reference_profiles "
            f"WHERE model = {MODEL} AND feature_type IN ('numeric', 'categorical') ORDER BY feature"
        )
        .refresh(VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def prometheus_model() -> dash.QueryVariable:
    """``$model`` from the collector's request counter."""
    return (
        dash.QueryVariable("model")
        .label("Model")
        .datasource(PROMETHEUS)
        .query("label_values(driftwarden_collector_requests_total, model)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def prometheus_version() -> dash.QueryVariable:
    """``$version`` of the selected models, from the collector's request counter."""
    return (
        dash.QueryVariable("version")
        .label("Version")
        .datasource(PROMETHEUS)
        .query('label_values(driftwarden_collector_requests_total{model=~"$model"}, model_version)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def api_url() -> dash.TextBoxVariable:
    """``$api_url``: where the browser reaches the driftwarden API (its drift report pages)."""
    return (
        dash.TextBoxVariable("api_url")
        .label("Report API")
        .description("Base URL of `driftwarden api` as the browser reaches it; the report links point there.")
        .default_value(DEFAULT_API_URL)
    )


def model_page_link() -> dash.DashboardLink:
    """Dashboard link to the API's page of the selected model."""
    return (
        dash.DashboardLink("Drift reports of ${model}")
        .type(DashboardLinkType.LINK)
        .url("${api_url}/models/${model:percentencode}")
        .icon("doc")
        .target_blank(True)
    )


def time_range_link(title: str = "Drift results of this time range") -> dash.DashboardLink:
    """Panel link to the API's page of ``$model`` over the dashboard's time range (``?window=START..END``)."""
    return (
        dash.DashboardLink(title)
        .type(DashboardLinkType.LINK)
        .url("${api_url}/models/${model:percentencode}?window=${__from:date:iso}..${__to:date:iso}")
        .target_blank(True)
    )


# The API's report page of one analysed window: the table rows carry both windows as ISO text.
ROW_REPORT_URL = (
    "${api_url}/models/${model:percentencode}/report"
    "?reference=${__data.fields.reference_start}..${__data.fields.reference_end}"
    "&current=${__data.fields.window_start}..${__data.fields.window_end}"
)
