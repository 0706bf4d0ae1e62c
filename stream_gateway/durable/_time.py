"""Times and durations as durable flows take them: checked once, here.

Every stored time is POSIX seconds within 1970-01-01 and 9999-12-31 (UTC), so it can
always be shown as an ISO 8601 date; durations are finite and non-negative.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from .._errors import InvalidArgumentError

__all__ = ["MAX_TS", "due_time", "epoch", "seconds"]

MAX_TS = 253402300799.0  # 9999-12-31T23:59:59Z, the last time a date can show


def seconds(value: float | timedelta, what: str = "a duration") -> float:
    """A non-negative, finite number of seconds (`InvalidArgumentError` otherwise)."""
    number = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise InvalidArgumentError(f"{what} must be a number of seconds or a timedelta")
    number = float(number)
    if not math.isfinite(number) or not 0 <= number <= MAX_TS:
        raise InvalidArgumentError(f"{what} must be a non-negative number of seconds")
    return number


def epoch(value: float | datetime, what: str = "a time") -> float:
    """POSIX seconds of an aware datetime or a number, within years 1970-9999."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidArgumentError(f"{what} must be a timezone-aware datetime")
        number = value.timestamp()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{what} must be an aware datetime or POSIX seconds")
    else:
        number = float(value)
    if not math.isfinite(number) or not 0 <= number <= MAX_TS:
        raise InvalidArgumentError(f"{what} must be within 1970-01-01 and 9999-12-31 (UTC)")
    return number


def due_time(delay: float | timedelta | None, at: float | datetime | None, now: float) -> float:
    """When to start: ``now``, ``now + delay`` or ``at``; `InvalidArgumentError` for
    both, a negative or non-finite delay, a naive datetime, or a time outside the
    years 1970-9999 (checked before anything is stored)."""
    if delay is not None and at is not None:
        raise InvalidArgumentError("give delay or at, not both")
    if delay is not None:
        when = now + seconds(delay, "delay")
        if when > MAX_TS:
            raise InvalidArgumentError("delay must end before the year 10000")
        return when
    if at is not None:
        return epoch(at, "at")
    return now
