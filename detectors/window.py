"""Time windows: ``START..END`` with ISO-8601 timestamps, half-open ``[start, end)``, in UTC."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from driftwarden.errors import UserError

UTC = dt.UTC


@dataclass(frozen=True, order=True)
class Window:
    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise UserError(f"window {self} is empty or inverted: END must be after START")

    @classmethod
    def parse(cls, text: str, *, name: str = "window") -> Window:
        """Parse ``START..END``; a bound without a zone is taken as UTC."""
        start, sep, end = text.partition("..")
        if not sep or not start or not end:
            raise UserError(f"{name} {text!r} is not START..END, e.g. 2011-01-01..2011-02-01T00:00:00Z")
        return cls(_instant(start, name, text), _instant(end, name, text))

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    def sql(self, column: str = "ts") -> str:
        """A ClickHouse predicate selecting this window on ``column`` (microsecond precision)."""
        return (
            f"{column} >= fromUnixTimestamp64Micro({micros(self.start)}, 'UTC') "
            f"AND {column} < fromUnixTimestamp64Micro({micros(self.end)}, 'UTC')"
        )

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def micros(instant: dt.datetime) -> int:
    """Microseconds since the epoch: how SQL parameters carry an instant without rounding."""
    delta = instant - dt.datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _instant(text: str, name: str, whole: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"{name} {whole!r}: {text!r} is not an ISO-8601 timestamp") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
