"""Time math for schedules: parse and check time fields, and compute fire times.

Pure functions: the current time is always passed in, never read here. Every datetime
returned is timezone-aware UTC.
"""
from __future__ import annotations

import bisect
import hashlib
import math
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

PERIODS = ("days", "hours", "minutes", "seconds", "microseconds")
CRONTAB_FIELDS = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")

_PERIOD_US = {
    "days": 86_400_000_000,
    "hours": 3_600_000_000,
    "minutes": 60_000_000,
    "seconds": 1_000_000,
    "microseconds": 1,
}
# Beyond a century an interval is a typo, and k * period would soon leave datetime's range.
MAX_INTERVAL = timedelta(days=36525)

_DATE_HELP = ("use 'YYYY-MM-DD HH:MM[:SS]' (in the schedule's timezone), "
              "ISO 8601 such as '2026-11-28T15:00:00Z', or epoch seconds")
_MIST_DATE = re.compile(
    r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2})(\.\d{1,6})?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?",
    re.IGNORECASE,
)
_EPOCH_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


class TimeSpecError(ValueError):
    """A bad time field; .field names the field, str(e) is a full message naming field and rule."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# --- instants and zones -------------------------------------------------------------------


def _shown(value, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _zone(name: str):
    return UTC if name in ("UTC", "Etc/UTC") else ZoneInfo(name)


def check_timezone(name, field="timezone") -> str:
    """Return `name` if it is an IANA time zone of the tzdata package that loads here, else raise TimeSpecError.

    The tzdata package's list, not the system's: every machine that runs cloudcron can load those
    (tzdata is a dependency), while names such as 'localtime' or 'posixrules' are files of one
    system's zone directory that another machine, or a later release, may not have."""
    if not isinstance(name, str) or not name.strip():
        raise TimeSpecError(field, f"{field}: must be an IANA time zone name such as 'Europe/Athens' or 'UTC'")
    known = name in _tzdata_zones()
    try:
        if known:
            ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        known = False
    if not known:
        raise TimeSpecError(
            field, f"{field}: '{_shown(name)}' is not a known IANA time zone; use a name such as 'Europe/Athens' or 'UTC'"
        )
    return name


@lru_cache(maxsize=1)
def _tzdata_zones() -> frozenset:
    from importlib.resources import files

    return frozenset(files("tzdata").joinpath("zones").read_text(encoding="utf-8").split())


def _require_aware(dt: datetime, name: str) -> datetime:
    # A naive datetime here is a caller's bug; guessing its zone would shift the schedule silently.
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {dt!r}")
    return dt


def _exists(naive: datetime, tz) -> bool:
    back = naive.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None)
    return back == naive


def local_to_utc(naive: datetime, tz) -> datetime:
    """A wall time in `tz` as aware UTC: in a DST gap the gap's end, when ambiguous the first occurrence."""
    if tz is UTC:
        return naive.replace(tzinfo=UTC)
    first = naive.replace(tzinfo=tz, fold=0)
    if _exists(naive, tz):
        return first.astimezone(UTC)
    # In a gap, fold=0 reads the wall time with the offset from before the jump (an instant
    # at or after the transition) and fold=1 with the offset from after it (an instant
    # before the transition); the transition lies between, found to the second because
    # tzdata transitions and offsets are whole seconds.
    whole = naive.replace(microsecond=0)
    after_offset = whole.replace(tzinfo=tz, fold=1).utcoffset()
    hi = whole.replace(tzinfo=tz, fold=0).astimezone(UTC)
    lo = whole.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if lo > hi:
        lo, hi = hi, lo
    one = timedelta(seconds=1)
    while hi - lo > one:
        mid = lo + timedelta(seconds=max(1, (hi - lo) // one // 2))
        if mid.astimezone(tz).utcoffset() == after_offset:
            hi = mid
        else:
            lo = mid
    return hi


def _from_epoch(value, raw, field: str) -> datetime:
    try:
        # Decimal keeps "1458839999.25" exact where float arithmetic would drift by a microsecond.
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        if not number.is_finite():
            raise InvalidOperation
        micros = int((number * 1_000_000).to_integral_value())
        return EPOCH + timedelta(microseconds=micros)
    except (InvalidOperation, OverflowError, ValueError):
        raise TimeSpecError(field, f"{field}: '{_shown(raw)}' is not a date; {_DATE_HELP}") from None


def _offset(text: str) -> timezone:
    if text.upper() == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def parse_instant(value, tz="UTC", field="date") -> datetime:
    """Parse a Mist-style date, ISO 8601 or epoch seconds (naive times read in `tz`) into aware UTC."""
    bad = f"{field}: '{_shown(value)}' is not a date; {_DATE_HELP}"
    if isinstance(value, bool) or value is None:
        raise TimeSpecError(field, bad)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise TimeSpecError(field, bad)
        return _from_epoch(value, value, field)
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        if _EPOCH_NUMBER.fullmatch(text):
            return _from_epoch(text, value, field)
        parsed = _parse_text(text, value, field)
    else:
        raise TimeSpecError(field, bad)
    try:
        if parsed.tzinfo is None:
            return local_to_utc(parsed, _zone(check_timezone(tz)))
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, TimeSpecError):
            raise
        raise TimeSpecError(field, f"{field}: '{_shown(value)}' is out of the supported date range") from None


def _parse_text(text: str, raw, field: str) -> datetime:
    match = _MIST_DATE.fullmatch(text)
    if match:
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        try:
            micro = int((fraction or ".0")[1:].ljust(6, "0"))
            parsed = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0),
                              int(second or 0), micro)
            if offset:
                parsed = parsed.replace(tzinfo=_offset(offset))
            return parsed
        except ValueError as exc:
            raise TimeSpecError(field, f"{field}: '{_shown(raw)}' is not a date ({exc}); {_DATE_HELP}") from None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise TimeSpecError(field, f"{field}: '{_shown(raw)}' is not a date; {_DATE_HELP}") from None


def format_instant(dt) -> str | None:
    """ISO 8601 UTC with a 'Z' (microseconds only when non-zero); None stays None."""
    if dt is None:
        return None
    dt = _require_aware(dt, "format_instant's argument").astimezone(UTC)
    text = dt.replace(tzinfo=None, microsecond=0).isoformat()
    if dt.microsecond:
        text += f".{dt.microsecond:06d}"
    return text + "Z"


# --- entries ------------------------------------------------------------------------------


def normalize_interval(entry, min_interval: timedelta = timedelta(seconds=1), field="schedule_entry") -> dict:
    """Check an interval entry {"every": n, "period": p} and return it in stored form."""
    if not isinstance(entry, dict):
        raise TimeSpecError(field, f"{field}: an interval entry is an object like {{\"every\": 10, \"period\": \"minutes\"}}")
    unknown = sorted(str(k) for k in entry if k not in ("every", "period"))
    if unknown:
        raise TimeSpecError(field, f"{field}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
                                   f"an interval entry takes only 'every' and 'period'")
    every, period = entry.get("every"), entry.get("period")
    if every is None:
        raise TimeSpecError(f"{field}.every", f"{field}.every: is required (a positive integer)")
    if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
        raise TimeSpecError(f"{field}.every", f"{field}.every: must be a positive integer, got {_shown(repr(every))}")
    if period is None:
        raise TimeSpecError(f"{field}.period", f"{field}.period: is required; use one of {', '.join(PERIODS)}")
    if not isinstance(period, str) or period.strip().lower() not in PERIODS:
        raise TimeSpecError(f"{field}.period",
                            f"{field}.period: '{_shown(period)}' is not a period; use one of {', '.join(PERIODS)}")
    period = period.strip().lower()
    length_us = every * _PERIOD_US[period]
    if length_us > MAX_INTERVAL // timedelta(microseconds=1):
        raise TimeSpecError(field, f"{field}: every {every} {period} is longer than the maximum of {MAX_INTERVAL.days} days")
    if length_us < min_interval // timedelta(microseconds=1):
        raise TimeSpecError(field, f"{field}: every {every} {period} is shorter than the minimum interval of "
                                   f"{min_interval.total_seconds():g} seconds")
    return {"every": every, "period": period}


_DOW_NAMES = {n: i for i, n in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_DOW_LONG = {n: i for i, n in enumerate(("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"))}
_MONTH_NAMES = {n: i + 1 for i, n in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_MONTH_LONG = {n: i + 1 for i, n in enumerate(
    ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"))}
# field: (lowest, highest accepted, names, what the message tells the user)
_CRON_RULES = {
    "minute": (0, 59, {}, "0-59"),
    "hour": (0, 23, {}, "0-23"),
    "day_of_week": (0, 7, {**_DOW_NAMES, **_DOW_LONG}, "0-7 (0 and 7 are Sunday) or sun-sat"),
    "day_of_month": (1, 31, {}, "1-31"),
    "month_of_year": (1, 12, {**_MONTH_NAMES, **_MONTH_LONG}, "1-12 or jan-dec"),
}
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ITEM = re.compile(r"(\*|\w+)(?:-(\w+))?(?:/(\w+))?")


def _digits(token: str) -> bool:
    return token.isascii() and token.isdigit()


def _expand_field(name: str, text: str, where: str) -> frozenset:
    low, high, names, allowed = _CRON_RULES[name]
    dow = name == "day_of_week"
    last_day = 6 if dow else high  # 7 is an alias of Sunday, not an eighth day
    syntax = f"use {allowed}, '*', ranges (a-b), lists (a,b) and steps (*/n, a-b/n)"

    def number(token: str) -> int:
        value = names.get(token)
        if value is None:
            if not _digits(token):
                raise TimeSpecError(where, f"{where}: '{token}' is not valid here; {syntax}")
            value = int(token)
        if not low <= value <= high:
            raise TimeSpecError(where, f"{where}: {value} is out of range; {syntax}")
        return value

    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if not match:
            raise TimeSpecError(where, f"{where}: '{_shown(item or text)}' is not valid; {syntax}")
        start, end, step = match.groups()
        if step is not None and (not _digits(step) or int(step) < 1):
            raise TimeSpecError(where, f"{where}: step '{step}' must be a whole number of at least 1")
        if start == "*":
            if end is not None:
                raise TimeSpecError(where, f"{where}: '{item}' is not valid; {syntax}")
            run = list(range(low, last_day + 1))
        else:
            first = number(start)
            if end is not None:
                last = number(end)
                # Celery wraps a reversed range around the field's end: fri-mon is fri, sat, sun, mon.
                run = list(range(first, last + 1)) if first <= last else \
                    list(range(first, last_day + 1)) + list(range(low, last + 1))
            elif step is not None:
                run = list(range(first, last_day + 1))  # a/n: from a to the field's end, as cron reads it
            else:
                run = [first]
        values.update(run[:: int(step)] if step else run)
    if dow and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values)


def _field_text(value, where: str) -> str:
    if value is None:
        return "*"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TimeSpecError(where, f"{where}: must be a string or an integer, got {_shown(repr(value))}")
    text = re.sub(r"\s+", "", str(value)).lower()
    if not text:
        raise TimeSpecError(where, f"{where}: must not be empty; use '*' for any")
    return text


@dataclass(frozen=True)
class _Crontab:
    expression: str  # croniter's five-field form, built from the expanded sets
    lock: threading.Lock
    iterator: croniter
    # Debian cron's DST rule: an entry whose minute and hour fields are both fixed (neither starts
    # with '*') is a wall-clock appointment; any other entry follows elapsed time.
    fixed: bool
    min_gap: timedelta  # the shortest wall-clock time between two fires (day fields only lengthen it)


_NAIVE_EPOCH = datetime(1970, 1, 1)


@lru_cache(maxsize=4096)
def _compile(fields: tuple, field: str) -> _Crontab:
    """Validate the five field texts and build a reusable croniter (shared under a lock)."""
    sets = {name: _expand_field(name, text, f"{field}.{name}") for name, text in zip(CRONTAB_FIELDS, fields)}
    possible = any(day <= _DAYS_IN_MONTH[month - 1] for month in sets["month_of_year"] for day in sets["day_of_month"])
    if not possible:
        raise TimeSpecError(field, f"{field}: day_of_month '{fields[3]}' with month_of_year '{fields[4]}' can never "
                                   f"fire: none of those months has such a day")
    full = {"minute": 60, "hour": 24, "day_of_week": 7, "day_of_month": 31, "month_of_year": 12}

    def part(name):
        values = sets[name]
        return "*" if len(values) == full[name] else ",".join(str(v) for v in sorted(values))

    expression = " ".join(part(n) for n in ("minute", "hour", "day_of_month", "month_of_year", "day_of_week"))
    # Fixed start time so croniter never reads the clock; each use passes its own start.
    iterator = croniter(expression, _NAIVE_EPOCH, day_or=False)
    fixed = not fields[0].startswith("*") and not fields[1].startswith("*")
    day = sorted(h * 60 + m for h in sets["hour"] for m in sets["minute"])
    gaps = [b - a for a, b in zip(day, day[1:])] + [day[0] + 1440 - day[-1]]
    return _Crontab(expression, threading.Lock(), iterator, fixed, timedelta(minutes=min(gaps)))


def _crontab_fields(entry, field: str) -> tuple:
    if not isinstance(entry, dict):
        raise TimeSpecError(field, f"{field}: a crontab entry is an object with any of {', '.join(CRONTAB_FIELDS)}")
    unknown = sorted(str(k) for k in entry if k not in CRONTAB_FIELDS)
    if unknown:
        raise TimeSpecError(field, f"{field}: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
                                   f"a crontab entry takes {', '.join(CRONTAB_FIELDS)}")
    return tuple(_field_text(entry.get(name), f"{field}.{name}") for name in CRONTAB_FIELDS)


def normalize_crontab(entry, field="schedule_entry") -> dict:
    """Check a Celery-style crontab entry and return all five fields as strings."""
    fields = _crontab_fields(entry, field)
    _compile(fields, field)
    return dict(zip(CRONTAB_FIELDS, fields))


# --- zone transitions -----------------------------------------------------------------------


@lru_cache(maxsize=512)
def _transitions(zone: str, year: int) -> tuple:
    """The instants in a UTC year at which `zone`'s UTC offset changes, ascending.

    zoneinfo does not list its transitions, so the offset is sampled once a day and each change
    is narrowed down to the second (tzdata transitions are whole seconds; no zone changes its
    offset twice within a day).
    """
    tz = _zone(zone)
    if tz is UTC:
        return ()
    day = timedelta(days=1)
    t = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else datetime(9999, 12, 31, tzinfo=UTC)
    found = []
    before = t.astimezone(tz).utcoffset()
    while t < end:
        n = min(t + day, end)
        after = n.astimezone(tz).utcoffset()
        if after != before:
            lo, hi = t, n
            while hi - lo > timedelta(seconds=1):
                mid = lo + timedelta(seconds=(hi - lo) // timedelta(seconds=1) // 2)
                if mid.astimezone(tz).utcoffset() == before:
                    lo = mid
                else:
                    hi = mid
            found.append(hi)
        before, t = after, n
    return tuple(found)


TRANSITION_HORIZON = 4  # years searched for a zone's next offset change before calling it none


def _next_transition(zone: str, t: datetime) -> datetime | None:
    """The first instant after `t`, within TRANSITION_HORIZON years, at which `zone`'s offset changes."""
    for year in range(t.year, min(t.year + TRANSITION_HORIZON, 9999) + 1):
        table = _transitions(zone, year)
        i = bisect.bisect_right(table, t)
        if i < len(table):
            return table[i]
    return None


def _change_between(tz, lo: datetime, hi: datetime, offset: timedelta) -> datetime:
    """The first instant in (lo, hi] whose offset differs from `offset` (the offset at lo), to the second."""
    while hi - lo > timedelta(seconds=1):
        mid = lo + timedelta(seconds=(hi - lo) // timedelta(seconds=1) // 2)
        if mid.astimezone(tz).utcoffset() == offset:
            lo = mid
        else:
            hi = mid
    return hi


# --- fire times ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A span of time [start, end) in which no fire happens; end None means for ever.

    `reason` says why, in the form preview answers carry (e.g. {"reason": "calendar", ...}).
    """

    start: datetime
    end: datetime | None
    reason: dict


@dataclass(frozen=True)
class Timing:
    """What decides a schedule's fire times.

    blocks: objects with window(t) -> Window | None (compiled calendars, a pause); a fire whose
    instant falls in a window is not a fire. jitter: seconds; each fire is delayed by a stable
    offset in [0, jitter) derived from `key` (the schedule id) and the undelayed fire time.
    """

    schedule_type: str  # "interval" | "crontab" | "one_off"
    entry: object  # normalized dict for interval/crontab; aware datetime for one_off
    anchor: datetime  # creation time; the interval grid anchor when start_after is None
    timezone: str = "UTC"  # applies to crontab
    start_after: datetime | None = None
    expires: datetime | None = None
    jitter: int = 0
    key: str = ""
    blocks: tuple = ()


_ONE_US = timedelta(microseconds=1)
# A search that crosses more blocked windows than this finds no fire: the schedule is then inactive
# (a calendar that excludes every fire for centuries, one window at a time).
MAX_WINDOWS = 100_000


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _next_interval(timing: Timing, after: datetime) -> datetime:
    entry = timing.entry
    period = int(entry["every"]) * _PERIOD_US[entry["period"]]
    if timing.start_after is not None:
        base, k_min = _require_aware(timing.start_after, "start_after"), 0
    else:
        base, k_min = _require_aware(timing.anchor, "anchor"), 1
    elapsed = _micros(after - base)
    k = max(k_min, elapsed // period + 1 if elapsed >= 0 else 0)
    return (base + timedelta(microseconds=k * period)).astimezone(UTC)


def _next_crontab(timing: Timing, after: datetime) -> datetime | None:
    cron = _compile(_crontab_fields(timing.entry, "schedule_entry"), "schedule_entry")
    zone = timing.timezone or "UTC"
    tz = _zone(zone)
    if cron.fixed or tz is UTC:
        return _next_wall_clock(cron, tz, after)
    return _next_elapsed(cron, zone, tz, after)


def _next_wall_clock(cron: _Crontab, tz, after: datetime) -> datetime:
    """A fixed entry: each matching wall time fires once, a repeated one at its first occurrence and
    one inside a DST gap at the gap's end (Debian cron's rule for entries with a fixed minute and hour)."""
    # The next minute strictly after `after` is the next one after its minute's start; cutting
    # seconds here also keeps croniter's float timestamps away from microsecond rounding.
    cursor = after.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
    # Wall-clock matches map to instants monotonically (gap -> end of gap, repeat -> first
    # occurrence), so the first match whose instant is past `after` is the answer. Only a
    # start inside a repeated hour skips matches: those of that hour's first occurrence.
    while True:
        with cron.lock:
            try:
                cursor = cron.iterator.get_next(datetime, start_time=cursor)
            except ValueError:  # croniter stepping past year 9999 ("year 10000 is out of range")
                raise OverflowError("no crontab match before year 10000") from None
        fire = local_to_utc(cursor, tz)
        if fire > after:
            return fire


def _next_elapsed(cron: _Crontab, zone: str, tz, after: datetime) -> datetime:
    """An entry whose minute or hour starts with '*': it fires at every instant whose local time
    matches, so both copies of a repeated hour fire and a DST gap adds nothing (Debian cron's rule).

    Between two transitions the offset is constant and local time is elapsed time shifted; the
    first match in the current stretch is the answer, else the search goes on from the transition.
    """
    t, strict = after, True
    while True:
        offset = t.astimezone(tz).utcoffset()
        change = _next_transition(zone, t)
        local = t.replace(tzinfo=None) + offset
        # croniter answers the first whole minute strictly after its start: from `after` itself a
        # fire must be later; from a transition instant, that instant may fire.
        cursor = (local if strict else local - _ONE_US).replace(second=0, microsecond=0)
        with cron.lock:
            try:
                match = cron.iterator.get_next(datetime, start_time=cursor)
            except ValueError:  # croniter stepping past year 9999 ("year 10000 is out of range")
                raise OverflowError("no crontab match before year 10000") from None
        fire = (match - offset).replace(tzinfo=UTC)
        if change is None and fire.astimezone(tz).utcoffset() != offset:
            change = _change_between(tz, t, fire, offset)  # a change beyond the searched years
        if change is None or fire < change:
            return fire
        t, strict = change, False


def _next_nominal(timing: Timing, after: datetime) -> datetime | None:
    """The schedule's own next fire time after `after` (no jitter, blocks or expires), or None."""
    start_after = timing.start_after
    if timing.schedule_type == "one_off":
        fire = _require_aware(timing.entry, "one_off entry").astimezone(UTC)
        if fire <= after or (start_after is not None and fire < start_after):
            return None
        return fire
    if timing.schedule_type == "interval":
        return _next_interval(timing, after)
    if timing.schedule_type == "crontab":
        floor = after
        if start_after is not None and _require_aware(start_after, "start_after") > after:
            floor = start_after.astimezone(UTC) - _ONE_US  # start_after itself may fire
        return _next_crontab(timing, floor)
    raise ValueError(f"unknown schedule_type {timing.schedule_type!r}")


def jitter_offset(key: str, nominal: datetime, jitter: int) -> timedelta:
    """The stable delay in [0, jitter) seconds of the fire `nominal` of the schedule `key`.

    A keyed hash (BLAKE2b) of the schedule id and the fire's instant in microseconds: the same in
    every process and release, different from one schedule and one fire to the next.
    """
    if jitter <= 0:
        return timedelta(0)
    digest = hashlib.blake2b(f"{key}|{_micros(nominal - EPOCH)}".encode(), digest_size=8).digest()
    return timedelta(microseconds=int.from_bytes(digest, "big") % (jitter * 1_000_000))


def _next_candidate(timing: Timing, after: datetime) -> datetime | None:
    """The first (jittered) fire instant after `after` and before expires, blocks not considered."""
    expires = timing.expires
    if not timing.jitter:
        fire = _next_nominal(timing, after)
        return fire if fire is None or expires is None or fire < expires else None
    # Fire times are the set {n + offset(n)}: any nominal n within jitter before `after` may land
    # after it, and a later n may land earlier than an earlier one's delayed instant.
    spread = timedelta(seconds=timing.jitter)
    best = None
    nominal = _next_nominal(timing, after - spread)
    while nominal is not None and (best is None or nominal < best) and (expires is None or nominal < expires):
        fire = nominal + jitter_offset(timing.key, nominal, timing.jitter)
        if fire > after and (best is None or fire < best) and (expires is None or fire < expires):
            best = fire
        nominal = _next_nominal(timing, nominal)
    return best


def blocked(timing: Timing, t: datetime) -> Window | None:
    """The window of `timing`'s blocks (calendars, pause) that holds the instant `t`, if any."""
    for block in timing.blocks:
        window = block.window(t)
        if window is not None:
            return window
    return None


def _next(timing: Timing, after: datetime, skipped: list | None = None, limit: int = 0) -> datetime | None:
    t = after
    for _ in range(MAX_WINDOWS):
        fire = _next_candidate(timing, t)
        if fire is None or not timing.blocks:
            return fire
        window = blocked(timing, fire)
        if window is None:
            return fire
        if skipped is not None and len(skipped) < limit:
            skipped.append((fire, window.reason))
            t = fire
        elif window.end is None:
            return None
        else:
            t = max(fire, window.end - _ONE_US)  # every fire inside the window is blocked: jump past it
    return None


def next_fire(timing: Timing, after: datetime) -> datetime | None:
    """The first fire time strictly after `after`, or None when there is none.

    Applies, in this order: the schedule's own times (interval grid, crontab with Debian cron's DST
    rule, one_off) from start_after on; the jitter delay; fires at or after expires dropped; fires
    inside a block's window (calendar exclusion, pause) dropped.
    """
    after = _require_aware(after, "after").astimezone(UTC)
    if timing.expires is not None and _require_aware(timing.expires, "expires") <= after:
        return None
    try:
        return _next(timing, after)
    except (OverflowError, CroniterError):
        return None  # no fire time representable before year 9999 (or within croniter's search window)


def last_fire_at_or_before(timing: Timing, t: datetime, known: datetime) -> datetime:
    """The newest fire time <= `t`, given `known`, a fire time <= `t`.

    Bisects the instants between `known` and `t` (about 40 next_fire calls at most), so it stays
    cheap however many fires lie in between.
    """
    lo, hi = known, t  # lo: a fire <= t; no fire in (hi, t]
    while True:
        nxt = next_fire(timing, lo)
        if nxt is None or nxt > t:
            return lo
        if nxt > hi - (hi - lo) / 2:
            lo = nxt
            continue
        mid = lo + (hi - lo) / 2
        probe = next_fire(timing, mid)
        if probe is None or probe > t:
            hi = mid
        else:
            lo = probe


def count_fires(timing: Timing, first: datetime, before: datetime, cap: int = 10_000) -> tuple[int, bool]:
    """How many fire times lie in [first, before): (count, whether counting stopped at `cap`).

    A plain interval is counted by arithmetic; anything else one fire at a time, up to `cap`.
    """
    if first >= before:
        return 0, False
    if timing.schedule_type == "interval" and not timing.jitter and not timing.blocks and timing.expires is None:
        period = int(timing.entry["every"]) * _PERIOD_US[timing.entry["period"]]
        base = timing.start_after if timing.start_after is not None else timing.anchor
        k_first = -(-_micros(first - base) // period)  # ceil
        k_last = (_micros(before - base) - 1) // period
        return max(0, k_last - max(k_first, 0 if timing.start_after is not None else 1) + 1), False  # exact, no cap
    count, t = 0, first - _ONE_US
    while count < cap:
        fire = next_fire(timing, t)
        if fire is None or fire >= before:
            return count, False
        count, t = count + 1, fire
    more = next_fire(timing, t)
    return count, more is not None and more < before


def min_spacing(timing: Timing) -> timedelta | None:
    """A lower bound of the wall-clock time between two fires (None for a one_off, which fires once)."""
    if timing.schedule_type == "interval":
        return timedelta(microseconds=int(timing.entry["every"]) * _PERIOD_US[timing.entry["period"]])
    if timing.schedule_type == "crontab":
        return _compile(_crontab_fields(timing.entry, "schedule_entry"), "schedule_entry").min_gap
    return None


def preview(timing: Timing, after: datetime, count: int, skipped: list | None = None) -> list[datetime]:
    """The next `count` fire times strictly after `after` (fewer when the schedule ends).

    With a `skipped` list, the blocked fire instants met on the way are appended to it as
    (instant, reason), at most `count` of them; past that, blocked windows are jumped over.
    """
    after = _require_aware(after, "after").astimezone(UTC)
    times: list[datetime] = []
    t = after
    while len(times) < count:
        if timing.expires is not None and timing.expires <= t:
            break
        try:
            fire = _next(timing, t, skipped, count)
        except (OverflowError, CroniterError):
            break
        if fire is None:
            break
        times.append(fire)
        t = fire
    return times
