"""Five-field cron expressions (``minute hour day-of-month month day-of-week``) and
their next firing time in a timezone.

Fields take ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists
``a,b``, month names (``jan``) and day names (``mon``; ``0`` and ``7`` are Sunday).
As in classic cron, when both day-of-month and day-of-week are restricted, a day
matching either fires. Times are wall-clock times of the timezone: a time skipped by
a daylight-saving jump does not fire that day; a time that occurs twice (clocks
going back) fires once, at its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .._errors import InvalidArgumentError

__all__ = ["Cron", "zone"]

_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
_DAYS = "sun mon tue wed thu fri sat".split()
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES: tuple[list[str] | None, ...] = (None, None, None, _MONTHS, _DAYS)
_HORIZON_DAYS = 366 * 5  # no match within 5 years: the expression never fires


def zone(name: str) -> ZoneInfo:
    """The IANA timezone ``name`` (`InvalidArgumentError` if unknown)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArgumentError(f"unknown timezone {name!r} (an IANA name)") from None


def _value(text: str, index: int) -> int:
    names = _NAMES[index]
    if names is not None and text.lower() in names:
        return names.index(text.lower()) + (1 if index == 3 else 0)
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def _field(text: str, index: int) -> frozenset[int]:
    low, high = _BOUNDS[index]
    found: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step_text and (not step_text.isdigit() or step < 1):
            raise ValueError(part)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            start, end = _value(a, index), _value(b, index)
        else:
            start = _value(body, index)
            end = high if step_text else start
        if not low <= start <= end <= high:
            raise ValueError(part)
        found.update(range(start, end + 1, step))
    if index == 4 and 7 in found:
        found = (found - {7}) | {0}
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed cron expression; `next_after` gives its next firing time."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """Parse ``expression`` (`InvalidArgumentError` naming the bad field)."""
        parts = expression.split() if isinstance(expression, str) else []
        if len(parts) != 5:
            raise InvalidArgumentError(
                f"a cron expression has 5 fields (minute hour day month weekday): {expression!r}"
            )
        fields = []
        for index, (part, what) in enumerate(
            zip(parts, ("minute", "hour", "day of month", "month", "day of week"), strict=True)
        ):
            try:
                fields.append(_field(part, index))
            except ValueError:
                raise InvalidArgumentError(
                    f"bad {what} field {part!r} in cron expression {expression!r}"
                ) from None
        minutes, hours, days, months, weekdays = fields
        return cls(
            " ".join(parts),
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day=parts[2] == "*",
            any_weekday=parts[4] == "*",
        )

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def next_after(self, after: float, tz: ZoneInfo) -> float | None:
        """The first firing time strictly after ``after`` (POSIX seconds), or
        ``None`` if the expression never fires (e.g. February 30th)."""
        local = datetime.fromtimestamp(after, UTC).astimezone(tz).replace(tzinfo=None)
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        for _ in range(_HORIZON_DAYS):
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        wall = day.replace(hour=hour, minute=minute)
                        if wall <= local - timedelta(hours=3):
                            continue
                        when = _instant(wall, tz)
                        if when is not None and when > after:
                            return when
            day += timedelta(days=1)
        return None


def _instant(wall: datetime, tz: ZoneInfo) -> float | None:
    """The instant of the wall-clock time ``wall`` in ``tz``: its first occurrence
    if it occurs twice, ``None`` if a daylight-saving jump skips it."""
    aware = wall.replace(tzinfo=tz, fold=0)
    if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall:
        return None
    when = aware.timestamp()
    # A repeated wall time fires once: its second occurrence (fold=1) is skipped
    # because it is later than the first, which `next_after` returned before.
    return when
