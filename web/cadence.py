"""A schedule's timing in words ("every day at 02:00 Europe/Athens", "every 2 hours",
"once on 2026-12-24 18:00 UTC"), for people reading the console. Pure functions of the stored fields.
"""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from .timemath import parse_instant

_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_DAY_ABBR = {d[:3].lower(): i for i, d in enumerate(_DAYS)}
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_MONTH_ABBR = {m[:3].lower(): i + 1 for i, m in enumerate(_MONTHS)}
_SINGULAR = {"days": "day", "hours": "hour", "minutes": "minute", "seconds": "second", "microseconds": "microsecond"}


def describe(schedule_type: str, entry, timezone: str | None = "UTC") -> str:
    """The cadence of a stored schedule (its schedule_type, normalised schedule_entry and timezone) in words.

    A crontab too irregular to say simply is shown as its fields ("cron 0 2 1,15 * * Europe/Athens",
    in cron's order: minute hour day_of_month month_of_year day_of_week).
    """
    tz = timezone or "UTC"
    if schedule_type == "interval":
        every, period = int(entry["every"]), entry["period"]
        return f"every {_SINGULAR[period]}" if every == 1 else f"every {every} {period}"
    if schedule_type == "one_off":
        when = parse_instant(entry, "UTC", field="schedule_entry").astimezone(ZoneInfo(tz))
        return f"once on {_clock(when, date=True)} {tz}"
    if schedule_type == "crontab":
        return _crontab(entry, tz)
    return str(schedule_type)


def _clock(dt: datetime, date: bool = False) -> str:
    text = dt.strftime("%H:%M" if not dt.second else "%H:%M:%S")
    return f"{dt:%Y-%m-%d} {text}" if date else text


def _int(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def _step(text: str) -> int | None:
    """n for '*/n', else None."""
    return _int(text[2:]) if text.startswith("*/") else None


def _days(text: str) -> str | None:
    """day_of_week as names: 'mon-fri' -> 'Monday to Friday', '1,3' -> 'Monday and Wednesday'."""
    def name(token: str) -> str | None:
        value = _int(token) if _int(token) is not None else _DAY_ABBR.get(token[:3])
        return None if value is None or value > 7 else _DAYS[value % 7]

    parts = []
    for item in text.split(","):
        if "/" in item:
            return None
        if "-" in item:
            first, last = (name(t) for t in item.split("-", 1))
            if first is None or last is None:
                return None
            parts.append(f"{first} to {last}")
        else:
            one = name(item)
            if one is None:
                return None
            parts.append(one)
    return _join(parts)


def _months(text: str) -> str | None:
    names = []
    for item in text.split(","):
        value = _int(item) if _int(item) is not None else _MONTH_ABBR.get(item[:3])
        if value is None or not 1 <= value <= 12:
            return None
        names.append(_MONTHS[value - 1])
    return _join(names)


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _crontab(entry: dict, tz: str) -> str:
    minute, hour = entry.get("minute", "*"), entry.get("hour", "*")
    dow, dom, month = entry.get("day_of_week", "*"), entry.get("day_of_month", "*"), entry.get("month_of_year", "*")
    fallback = f"cron {minute} {hour} {dom} {month} {dow} {tz}"

    m, h = _int(minute), _int(hour)
    if m is not None and h is not None:
        when = f"at {h:02d}:{m:02d}"
    elif m is not None and hour == "*":
        when = f"every hour at minute {m}"
    elif m is not None and _step(hour):
        when = f"every {_step(hour)} hours at minute {m}"
    elif minute == "*" and hour == "*":
        when = "every minute"
    elif _step(minute) and hour == "*":
        when = f"every {_step(minute)} minutes"
    else:
        return fallback

    days = ""
    if dow != "*" and dom != "*":
        return fallback  # both day fields restricted (Celery: both must match) says too much for a phrase
    if dow != "*":
        named = _days(dow)
        if named is None:
            return fallback
        days = f"every {named}"
    elif dom != "*":
        nums = [_int(d) for d in dom.split(",")]
        if any(n is None for n in nums):
            return fallback
        days = ("on day " if len(nums) == 1 else "on days ") + _join([str(n) for n in nums]) + (" of the month" if month != "*" else " of every month")
    if month != "*":
        named = _months(month)
        if named is None:
            return fallback
        days = (days + " " if days else "") + f"in {named}"

    if when.startswith("at "):
        lead = "every day" if not days else days
        return f"{lead} {when} {tz}"
    days = days.replace("every ", "on ", 1) if days.startswith("every ") else days
    return f"{when}{' ' + days if days else ''} {tz}"
