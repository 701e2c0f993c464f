"""Dates for the ``date`` and ``currentdate`` tests (RFC 5260), pure.

:func:`header_datetime` finds the RFC 2822 date-time in a header value (the
whole value, or what follows the last ``;`` as in ``Received:``) and refuses
dates the calendar does not have.  :func:`date_part` renders one of the date
parts of RFC 5260 4.2 (``year`` .. ``weekday``) in a given zone.
"""
from __future__ import annotations

import datetime as dt
import email.utils
import re

DATE_PARTS = ("year", "month", "day", "date", "julian", "hour", "minute", "second", "time",
              "iso8601", "std11", "zone", "weekday")

_ZONE = re.compile(r"^([+-])(\d\d)(\d\d)$")
_MJD_EPOCH = dt.date(1858, 11, 17).toordinal()


def parse_zone(text: str) -> dt.timezone | None:
    """``+hhmm`` / ``-hhmm`` → a fixed zone; None when malformed."""
    m = _ZONE.match(text.strip())
    if not m:
        return None
    hours, minutes = int(m.group(2)), int(m.group(3))
    if minutes > 59 or hours > 23:
        return None
    delta = dt.timedelta(hours=hours, minutes=minutes)
    return dt.timezone(-delta if m.group(1) == "-" else delta)


def header_datetime(value: str) -> dt.datetime | None:
    """The aware datetime a header value holds, or None."""
    text = value.rsplit(";", 1)[-1].strip() if ";" in value else value.strip()
    parsed = email.utils.parsedate_tz(text)
    if parsed is None and text != value.strip():
        parsed = email.utils.parsedate_tz(value.strip())
    if parsed is None:
        return None
    year, month, day, hour, minute, second = parsed[:6]
    offset = parsed[9] or 0
    try:
        if second == 60:  # a leap second: keep it representable
            second = 59
        return dt.datetime(year, month, day, hour, minute, second,
                           tzinfo=dt.timezone(dt.timedelta(seconds=offset)))
    except (ValueError, OverflowError):
        return None


def _zone_text(when: dt.datetime) -> str:
    off = when.utcoffset() or dt.timedelta(0)
    total = int(off.total_seconds()) // 60
    sign = "-" if total < 0 else "+"
    total = abs(total)
    return f"{sign}{total // 60:02d}{total % 60:02d}"


def date_part(when: dt.datetime, part: str) -> str:
    """One date part of RFC 5260 4.2 for an aware datetime (already in the wanted zone)."""
    if part == "year":
        return f"{when.year:04d}"
    if part == "month":
        return f"{when.month:02d}"
    if part == "day":
        return f"{when.day:02d}"
    if part == "date":
        return f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
    if part == "julian":
        return str(when.date().toordinal() - _MJD_EPOCH)
    if part == "hour":
        return f"{when.hour:02d}"
    if part == "minute":
        return f"{when.minute:02d}"
    if part == "second":
        return f"{when.second:02d}"
    if part == "time":
        return f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
    if part == "iso8601":
        zone = _zone_text(when)
        zone = "Z" if zone == "+0000" else f"{zone[:3]}:{zone[3:]}"
        return f"{when.year:04d}-{when.month:02d}-{when.day:02d}T{when.hour:02d}:{when.minute:02d}:{when.second:02d}{zone}"
    if part == "std11":
        return email.utils.format_datetime(when)
    if part == "zone":
        return _zone_text(when)
    if part == "weekday":
        return str((when.weekday() + 1) % 7)  # 0 is Sunday
    raise ValueError(f"unknown date part {part!r}")
