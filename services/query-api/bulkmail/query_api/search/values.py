"""Reading query values as typed things: numbers, yes/no, dates (absolute and relative), words.

Dates follow Close's documented meaning: an absolute date is a whole day in the requesting user's
time zone and compares chronologically; a relative date (`today`, `3 days ago`) compares the
*age* of the record, so `last_called < "3 days ago"` means "called less than three days ago".
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_RELATIVE = re.compile(
    r"(?P<n>\d{1,6})\s*(?P<unit>minutes|minute|mins|min|hours|hour|days|day|weeks|week|months|month|years|year)"
    r"\s+ago",
    re.I,
)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_YES = {"yes", "true", "1", "y"}
_NO = {"no", "false", "0", "n"}


@dataclass(frozen=True, slots=True)
class DateRange:
    """[start, end): a day or a single instant (start == end); ``relative`` flips comparisons."""

    start: datetime
    end: datetime
    relative: bool


def zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def parse_date(text: str, *, now: datetime, tz: tzinfo) -> DateRange | None:
    """The range a date value denotes, or None when it is not a date."""
    raw = " ".join(text.strip().lower().split())
    local_now = now.astimezone(tz)
    if raw in ("today", "yesterday"):
        day = local_now.date() - timedelta(days=1 if raw == "yesterday" else 0)
        start, end = _day_bounds(day, tz)
        return DateRange(start, end, relative=True)
    match = _RELATIVE.fullmatch(raw)
    if match:
        instant = _ago(local_now, int(match["n"]), match["unit"])
        if instant is None:
            return None
        return DateRange(instant, instant, relative=True)
    if _ISO_DATE.fullmatch(raw):
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            return None
        start, end = _day_bounds(day, tz)
        return DateRange(start, end, relative=False)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    moment = moment.astimezone(UTC)
    return DateRange(moment, moment, relative=False)


def day_of(instant: datetime, tz: tzinfo) -> tuple[datetime, datetime]:
    """The user's calendar day around an instant (`last_called:"3 days ago"` = during that day)."""
    return _day_bounds(instant.astimezone(tz).date(), tz)


def _day_bounds(day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    nxt = day + timedelta(days=1)
    end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def _ago(now: datetime, n: int, unit: str) -> datetime | None:
    unit = unit.rstrip("s")
    try:
        if unit in ("min", "minute"):
            return (now - timedelta(minutes=n)).astimezone(UTC)
        if unit == "hour":
            return (now - timedelta(hours=n)).astimezone(UTC)
        if unit == "day":
            return (now - timedelta(days=n)).astimezone(UTC)
        if unit == "week":
            return (now - timedelta(weeks=n)).astimezone(UTC)
        months = n * (12 if unit == "year" else 1)
        # Calendar months: "1 month ago" on 31 March is 28/29 February, not 3 March.
        year, month = divmod(now.year * 12 + now.month - 1 - months, 12)
        day = min(now.day, calendar.monthrange(year, month + 1)[1])
        return now.replace(year=year, month=month + 1, day=day).astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def parse_number(text: str) -> Decimal | None:
    try:
        number = Decimal(text.strip().replace("_", ""))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() and abs(number) < Decimal(10) ** 14 else None


def parse_count(text: str) -> int | None:
    raw = text.strip()
    return int(raw) if raw.isdigit() and len(raw) <= 9 else None


def parse_bool(text: str) -> bool | None:
    raw = text.strip().lower()
    return True if raw in _YES else False if raw in _NO else None


# The punctuation build_search_text (bulkmail.shared.counters) also splits words at, so that a
# typed `acme.com` finds the "acme com" the search text holds as well as the whole address.
SPLIT_CHARS = "@.-_/:+()"


def normalise_words(text: str) -> str:
    return " ".join(text.lower().split())


def split_words(text: str) -> str:
    cleaned = text.lower()
    for ch in SPLIT_CHARS:
        cleaned = cleaned.replace(ch, " ")
    return " ".join(cleaned.split())


def like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())
