"""Health at a glance on the pages: the state badge with its reason, and the table of signals.

The state and the signals come from :mod:`driftwarden.detectors.health` (the worst signal wins);
this module only renders them: a badge for the models list, and at the top of a model's page the
state, the reason in words, and every signal with its value, reference value, ratio, threshold and
verdict.
"""

from __future__ import annotations

from collections.abc import Sequence

from clickhouse_connect.driver.client import Client

from driftwarden.auth import Principal
from driftwarden.detectors.api.pages import _table, badge, e, fmt, iso
from driftwarden.detectors.api.queries import scope
from driftwarden.detectors.api.settings import ApiSettings
from driftwarden.detectors.health import AlertSource, Health, models_health

KIND = {"bad": "bad", "warn": "warn", "ok": "ok", "unknown": "none"}
WORD = {"bad": "needs attention", "warn": "watch", "ok": "healthy", "unknown": "not analysed"}


def alert_source(settings: ApiSettings | None) -> AlertSource | None:
    """The configured source of firing alerts (Alertmanager first, else Prometheus), or None."""
    if settings is None:
        return None
    if settings.alertmanager_url:
        return AlertSource(settings.alertmanager_url, "alertmanager", settings.alerts_timeout_s)
    if settings.prometheus_url:
        return AlertSource(settings.prometheus_url, "prometheus", settings.alerts_timeout_s)
    return None


def health_of(
    client: Client, principal: Principal, models: Sequence[str], settings: ApiSettings | None = None
) -> dict[str, Health]:
    """The health of ``models``, scoped to what the caller's token may read, with the firing alerts of the
    configured Alertmanager / Prometheus as a signal ("alerts: not configured" without one)."""
    where, params = scope(principal)
    return models_health(client, models, where=where, params=params, alerts=alert_source(settings), with_alerts=True)


def badge_html(health: Health) -> str:
    """The state as a badge followed by the reason (for the models list)."""
    return f"{badge(KIND[health.state], WORD[health.state])} <span class='muted'>{e(health.reason)}</span>"


def section(health: Health) -> str:
    """The top of a model's page: state, reason and one row per signal."""
    rows = []
    order = {"bad": 0, "warn": 1, "ok": 2, "unknown": 3}
    for s in sorted(health.signals, key=lambda s: order[s.state]):
        ratio = "—" if s.ratio is None else f"{s.ratio:.2f}×"
        rows.append(
            f"<tr><td>{e(s.name)}</td><td class='num'>{fmt(s.value)}</td><td class='num'>{fmt(s.reference)}</td>"
            f"<td class='num'>{ratio}</td><td>{e(s.threshold)}</td><td>{badge(KIND[s.state], s.state)}</td>"
            f"<td>{e(s.reason)}</td><td>{e(iso(s.window_end)) if s.window_end else ''}</td></tr>"
        )
    head = f"<p class='health'>{badge(KIND[health.state], WORD[health.state])} {e(health.reason)}</p>"
    if not rows:
        return head
    table = _table(["signal", "value", "reference", "ratio", "threshold", "verdict", "why", "latest window"], rows)
    return head + table
