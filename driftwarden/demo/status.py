"""What the demo shows while it runs: a status line, drift announcements in plain words, a summary.

On a terminal the status line is rewritten in place; otherwise (a log, a pipe, a
test) one line is printed per simulated week, so that the output stays short.
The numbers come from the store (the detectors' results), read with small
aggregate queries after each detector pass.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
from dataclasses import dataclass, field
from typing import TextIO

from driftwarden.detectors.window import Window

ERROR_INCREASE = 1.2  # the ModelPredictionErrorIncrease rule: MAE above 1.2x the week before


@dataclass
class Drifted:
    feature: str
    method: str
    statistic: float
    threshold: float


@dataclass
class WindowFindings:
    """The detectors' verdicts on one analysed window."""

    window: Window
    drifted: list[Drifted] = field(default_factory=list)
    persistent: list[str] = field(default_factory=list)
    top: list[tuple[str, float]] = field(default_factory=list)  # highest scores, drifted or not
    dataset_drifted: bool = False
    prediction_drifted: bool = False


def read_findings(client, model: str, window: Window) -> WindowFindings:
    """Drift verdicts of ``window`` from ``drift_results`` (latest computation of each row)."""
    rows = client.query(
        "SELECT target, feature, method, statistic, threshold, drifted, persistent FROM drift_results FINAL "
        "WHERE model = {m:String} AND current_start = {s:DateTime64(6, 'UTC')} "
        "AND current_end = {e:DateTime64(6, 'UTC')} "
        "ORDER BY statistic DESC",
        parameters={"m": model, "s": window.start, "e": window.end},
    ).result_rows
    found = WindowFindings(window)
    for target, feature, method, statistic, threshold, drifted, persistent in rows:
        if target == "feature":
            found.top.append((feature, float(statistic)))
            if drifted:
                found.drifted.append(Drifted(feature, method, float(statistic), float(threshold)))
            if persistent:
                found.persistent.append(feature)
        elif target == "dataset":
            found.dataset_drifted = found.dataset_drifted or bool(drifted)
        elif target == "prediction":
            found.prediction_drifted = found.prediction_drifted or bool(drifted)
    return found


def read_mae(client, model: str, until: dt.datetime) -> list[tuple[dt.datetime, float, int]]:
    """(window start, MAE, labelled predictions) of every analysed window ended by ``until``, oldest first."""
    rows = client.query(
        "SELECT current_start, value, labelled FROM performance_results FINAL "
        "WHERE model = {m:String} AND metric = 'mae' AND current_end <= {u:DateTime64(6, 'UTC')} "
        "ORDER BY current_start",
        parameters={"m": model, "u": until},
    ).result_rows
    return [(_utc(start), float(value), int(labelled)) for start, value, labelled in rows]


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def read_drift_windows(client, model: str, until: dt.datetime) -> list[Window]:
    """The windows with feature drift results that ended by ``until``, oldest first."""
    rows = client.query(
        "SELECT DISTINCT current_start, current_end FROM drift_results WHERE model = {m:String} "
        "AND target = 'feature' AND current_end <= {u:DateTime64(6, 'UTC')} ORDER BY current_start",
        parameters={"m": model, "u": until},
    ).result_rows
    return [Window(_utc(start), _utc(end)) for start, end in rows]


def count_analysed_windows(client, model: str, until: dt.datetime) -> int:
    """Windows ended by ``until`` on which at least one detector ran successfully."""
    rows = client.query(
        "SELECT count(DISTINCT current_start) FROM detector_runs WHERE model = {m:String} AND status = 'ok' "
        "AND current_end <= {u:DateTime64(6, 'UTC')}",
        parameters={"m": model, "u": until},
    ).result_rows
    return int(rows[0][0])


def describe_window(window: Window) -> str:
    """``the week 17 Feb – 24 Feb 2011`` (windows are a week long, aligned to the Unix epoch)."""
    last = window.end - dt.timedelta(microseconds=1)
    return f"the week {window.start:%-d %b} – {window.end:%-d %b %Y}" if last.year == window.start.year else str(window)


class Status:
    """The demo's terminal output. Methods may be called from the replay and the scheduler threads."""

    def __init__(self, out: TextIO | None = None, *, page_url: str = "") -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.page_url = page_url
        self._lock = threading.Lock()
        self._line_shown = False
        self._live = False  # the status line is drawn between update() and finish()
        self._finished = False
        self.simulated: dt.datetime | None = None
        self.events = 0
        self.labels = 0
        self.windows = 0
        self.drifting: list[str] = []
        self.mae: float | None = None
        self.alerts: list[str] = []
        self._last_week_printed: int | None = None

    # -- plain lines ----------------------------------------------------------------------------

    def say(self, text: str) -> None:
        with self._lock:
            self._clear()
            print(text, file=self.out, flush=True)
            self._draw()

    # -- the status line -----------------------------------------------------------------------

    def update(self, **values) -> None:
        with self._lock:
            for key, value in values.items():
                setattr(self, key, value)
            self._live = not self._finished
            if self.tty:
                self._draw()
            elif self.simulated is not None:
                week = self.simulated.toordinal() // 7
                if week != self._last_week_printed:
                    self._last_week_printed = week
                    print(self._text(), file=self.out, flush=True)

    def line(self) -> str:
        """The status line as it is now."""
        with self._lock:
            return self._text()

    def _text(self) -> str:
        when = f"{self.simulated:%a %d %b %Y %H:%M}" if self.simulated else "starting"
        mae = f"{self.mae:.1f}" if self.mae is not None else "-"
        drifting = ", ".join(self.drifting) if self.drifting else "none"
        alerts = ", ".join(self.alerts) if self.alerts else "none"
        return (
            f"[{when}] events {self.events:,}  labels {self.labels:,}  windows analysed {self.windows}  "
            f"drifting: {drifting}  MAE {mae}  alerts: {alerts}"
        )

    def _draw(self) -> None:
        if not self.tty or not self._live:
            return
        self.out.write("\r\x1b[2K" + self._text())
        self.out.flush()
        self._line_shown = True

    def _clear(self) -> None:
        if self.tty and self._line_shown:
            self.out.write("\r\x1b[2K")
            self._line_shown = False

    def finish(self) -> None:
        """End the live line: later messages are plain lines."""
        with self._lock:
            self._live = False
            self._finished = True
            if self.tty and self._line_shown:
                self.out.write("\n")
                self.out.flush()
                self._line_shown = False

    # -- findings ------------------------------------------------------------------------------

    def announce_drift(self, found: WindowFindings) -> None:
        """One plain sentence per window in which features drifted."""
        if not found.drifted:
            return
        parts = [
            f"{d.feature} ({_method_title(d.method)} {d.statistic:.2f} ≥ {_number(d.threshold)})" for d in found.drifted
        ]
        where = f"{self.page_url}?window={found.window.start:%Y-%m-%d}..{found.window.end:%Y-%m-%d}"
        self.say(f"Drift detected in {describe_window(found.window)}: {', '.join(parts)} — open {where}")

    def announce_error(self, start: dt.datetime, mae: float, january: float) -> None:
        window = Window(start, start + dt.timedelta(days=7))
        self.say(
            f"Error rising in {describe_window(window)}: MAE {mae:.1f} riders per hour, "
            f"{mae / january:.1f}x January's {january:.1f} — open {self.page_url}"
        )


def alerts_for(found: WindowFindings | None, maes: list[tuple[dt.datetime, float, int]]) -> list[str]:
    """The alert rules of alerts/rules that these results would fire (on the latest windows)."""
    out = []
    if found is not None:
        if found.persistent:
            out.append(f"FeatureDrift({', '.join(found.persistent)})")
        if found.dataset_drifted:
            out.append("DatasetDrift")
        if found.prediction_drifted:
            out.append("PredictionDrift")
    if len(maes) >= 2:
        (_, before, _), (_, latest, _) = maes[-2], maes[-1]
        if before > 0 and latest > ERROR_INCREASE * before:
            out.append("ModelPredictionErrorIncrease")
    return out


def _number(value: float) -> str:
    return f"{value:.1f}" if value == round(value, 1) else f"{value:g}"


def _method_title(method: str) -> str:
    return {"wasserstein": "Wasserstein", "ks": "KS p-value", "psi": "PSI", "jensenshannon": "Jensen-Shannon"}.get(
        method, method
    )
