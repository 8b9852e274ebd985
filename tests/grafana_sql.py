"""Expansion of a ClickHouse panel's SQL as Grafana and the ClickHouse datasource plugin do it.

Grafana's frontend substitutes template variables (``$name``, ``${name}``); the plugin's
backend then expands its macros (grafana/clickhouse-datasource ``pkg/macros/macros.go``):
``$__timeFilter(c)`` is ``c >= toDateTime(FROM) AND c <= toDateTime(TO)`` in Unix seconds,
the ``_ms`` variants use ``fromUnixTimestamp64Milli``, ``$__timeInterval(c)`` buckets with
``toStartOfInterval`` by the panel interval in whole seconds (at least 1).
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True)
class TimeRange:
    start: dt.datetime
    end: dt.datetime
    interval_s: int = 3600


_MACRO = re.compile(r"\$__(\w+)(?:\(([^()]*)\))?")
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def _seconds(t: dt.datetime) -> int:
    return int(t.timestamp())


def _millis(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def expand_macros(sql: str, time_range: TimeRange) -> str:
    """Expand the plugin's macros; an unknown macro raises, as the plugin answers with an error."""
    frm, to, interval = time_range.start, time_range.end, max(1, time_range.interval_s)

    def one(match: re.Match) -> str:
        name, arg = match.group(1), (match.group(2) or "").strip()
        if name == "timeFilter":
            return f"{arg} >= toDateTime({_seconds(frm)}) AND {arg} <= toDateTime({_seconds(to)})"
        if name == "timeFilter_ms":
            lo, hi = f"fromUnixTimestamp64Milli({_millis(frm)})", f"fromUnixTimestamp64Milli({_millis(to)})"
            return f"{arg} >= {lo} AND {arg} <= {hi}"
        if name == "dateFilter":
            return f"{arg} >= toDate('{frm:%Y-%m-%d}') AND {arg} <= toDate('{to:%Y-%m-%d}')"
        if name == "fromTime":
            return f"toDateTime({_seconds(frm)})"
        if name == "toTime":
            return f"toDateTime({_seconds(to)})"
        if name == "fromTime_ms":
            return f"fromUnixTimestamp64Milli({_millis(frm)})"
        if name == "toTime_ms":
            return f"fromUnixTimestamp64Milli({_millis(to)})"
        if name == "timeInterval":
            return f"toStartOfInterval(toDateTime({arg}), INTERVAL {interval} second)"
        if name == "timeInterval_ms":
            return f"toStartOfInterval(toDateTime64({arg}, 3), INTERVAL {interval * 1000} millisecond)"
        if name == "interval_s":
            return str(interval)
        raise ValueError(f"the ClickHouse datasource has no macro $__{name}")

    return _MACRO.sub(one, sql)


def substitute_variables(sql: str, variables: dict[str, str]) -> str:
    """Replace ``$name``, ``${name}`` and ``${name:format}`` with the variable's (single) value, as Grafana does.

    Formats: none or ``raw`` paste the value as it is; ``percentencode`` is Grafana's
    ``encodeURIComponentStrict``: UTF-8, every byte but ``A-Z a-z 0-9 - _ . ~`` as ``%XX``.
    """

    def one(match: re.Match) -> str:
        name, fmt = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), None)
        if name not in variables:
            raise KeyError(f"the query uses ${name}, which the test gives no value")
        if fmt in (None, "raw"):
            return variables[name]
        if fmt == "percentencode":
            return urllib.parse.quote(variables[name], safe="")
        raise ValueError(f"the test does not implement Grafana's :{fmt} format")

    return _VARIABLE.sub(one, sql)


def expand(sql: str, time_range: TimeRange, variables: dict[str, str]) -> str:
    """The SQL the ClickHouse server receives for a panel (variables first, then macros)."""
    protected = re.sub(r"\$__", "\x00", sql)  # macros are not template variables
    substituted = substitute_variables(protected, variables).replace("\x00", "$__")
    return expand_macros(substituted, time_range)
