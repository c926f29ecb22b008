"""When a scheduled action fires: cron slots in the action's time zone, answered in UTC.

Daylight-saving rules (croniter's, plus one of ours):
- a wall time that does not exist (spring forward) fires at the first moment after the gap;
- a wall time that happens twice (fall back) fires once, at its first occurrence, for expressions
  with a fixed hour; expressions every hour (hour field `*`) fire at every real hour.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import CroniterBadDateError, croniter

# IANA zone names, but not `localtime` (whatever zone the host is set to): an action's slots must not depend
# on which machine the scheduler runs on. Nor `posixrules` or `right/...`, which only some hosts have.
_ZONES = frozenset(available_timezones() - {"localtime"})


def valid_timezone(name: str) -> bool:
    if name not in _ZONES:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def valid_cron(expression: str) -> bool:
    """Five fields, none random (croniter's `R` draws a new value at every reading, so the scheduler and the
    view would disagree on the slot), and a slot that ever comes (`0 0 31 2 *` parses but never fires)."""
    fields = expression.split()
    # R alone or with a range (R(0-29)); no month or weekday name starts with R.
    if len(fields) != 5 or any(part[:1] in "Rr" for field in fields for part in re.split(r"[,/-]", field) if part):
        return False
    if not croniter.is_valid(expression):
        return False
    try:
        next_slot(expression, "UTC", datetime(2000, 1, 1, tzinfo=UTC))
    except CroniterBadDateError:
        return False
    return True


def next_slot(expression: str, tz_name: str, after: datetime) -> datetime:
    """The first slot strictly after `after`, in UTC."""
    return _slot(expression, tz_name, after, forward=True)


def slots_between(expression: str, tz_name: str, after: datetime, upto: datetime) -> list[datetime]:
    """Every slot in (after, upto], in UTC (bounded: a long outage is summarised, not replayed)."""
    slots: list[datetime] = []
    slot = next_slot(expression, tz_name, after)
    while slot <= upto and len(slots) < 10_000:
        slots.append(slot)
        slot = next_slot(expression, tz_name, slot)
    return slots


def previous_slot(expression: str, tz_name: str, before: datetime) -> datetime:
    """The last slot strictly before `before`, in UTC."""
    return _slot(expression, tz_name, before, forward=False)


def _slot(expression: str, tz_name: str, start: datetime, *, forward: bool) -> datetime:
    """The nearest slot after (or before) `start`, skipping the repeat of a wall time at a fall back for
    expressions with a fixed hour: next and previous slots must agree on which occurrence is the slot, or a
    fire is labelled with the repeat, an hour after it happened."""
    tz = ZoneInfo(tz_name)
    hourly = expression.split()[1] == "*"
    slots = croniter(expression, start.astimezone(tz))
    while True:
        slot = slots.get_next(datetime) if forward else slots.get_prev(datetime)
        utc = slot.astimezone(UTC)
        first_occurrence = slot.replace(tzinfo=None).replace(tzinfo=tz, fold=0).astimezone(UTC)
        if utc == first_occurrence or hourly:
            return utc
