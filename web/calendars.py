"""Calendars: named sets of entries that exclude time from the schedules that name them.

An entry is one of (dates and times read in the calendar's timezone):

    {"date": "2026-12-25"}                                   that whole day
    {"from": "2026-12-24", "to": "2027-01-02"}               those whole days, both included
    {"from": "2026-12-24 18:00", "to": "2027-01-02 06:00"}   that span of time, `to` excluded
    {"yearly": "12-25"}                                      that day every year (02-29 in leap years)
    {"weekly": {"from": "fri 18:00", "to": "mon 06:00"}}     that span every week, `to` excluded
    {"holidays": {"country": "GR", "subdivision": null}}     public holidays, from the `holidays` package
    {"ical": "BEGIN:VCALENDAR..."}                           the events of an iCalendar file (RRULEs expanded)

check_entries() validates entries (TimeSpecError naming the entry and the rule) and keeps them as
given, so a client that sends the same entries again compares equal. compile_calendar() turns a
calendar into the object the time math asks "which window holds this instant?": windows are built
one UTC year at a time, merged, and searched by bisection. compiled() loads and caches compiled
calendars by id and updated_at, in one query for all ids (two when some changed).
"""
from __future__ import annotations

import bisect
import re
import threading
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache

from pydantic import ValidationError

from .timemath import TimeSpecError, Window, _shown, _zone, check_timezone, local_to_utc, parse_instant  # noqa: F401
from .validation import format_validation_error

UTC = timezone.utc
MAX_ENTRIES = 1000
MAX_ICAL_CHARS = 512 * 1024
# Windows one year of one calendar may hold; past it the calendar is refused (an iCalendar RRULE firing
# every minute would otherwise make a claim expand half a million events).
MAX_WINDOWS_PER_YEAR = 20_000

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?(Z|[+-]\d{2}:?\d{2})?", re.IGNORECASE)
_YEARLY = re.compile(r"(\d{2})-(\d{2})")
_WEEKLY = re.compile(r"([a-z]+)\s+(\d{1,2}):(\d{2})", re.IGNORECASE)
_DAYS = {name: i for i, name in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}
_DAYS.update({name: i for i, name in enumerate(
    ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))})
KINDS = ("date", "from", "yearly", "weekly", "holidays", "ical")


# --- checking entries ---------------------------------------------------------------------------


def _kind(entry) -> str | None:
    if not isinstance(entry, dict):
        return None
    keys = set(entry)
    for kind in ("date", "yearly", "weekly", "holidays", "ical"):
        if keys == {kind}:
            return kind
    if keys == {"from", "to"}:
        return "from"
    return None


def _structure(kind: str, entry: dict, where: str) -> None:
    from .schemas import CALENDAR_ENTRY_MODELS

    try:
        CALENDAR_ENTRY_MODELS[kind].model_validate(entry)
    except ValidationError as exc:
        message = format_validation_error(exc)
        raise TimeSpecError(where, f"{where}.{message}") from None


def _day(text: str, where: str) -> date:
    if not _DATE.fullmatch(text):
        raise TimeSpecError(where, f"{where}: '{_shown(text)}' is not a date; use YYYY-MM-DD, e.g. '2026-12-25'")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise TimeSpecError(where, f"{where}: '{_shown(text)}' is not a date ({exc})") from None


def _yearly(text: str, where: str) -> tuple[int, int]:
    match = _YEARLY.fullmatch(text)
    if match:
        month, day = int(match.group(1)), int(match.group(2))
        try:
            date(2000, month, day)  # a leap year: 02-29 is a yearly date (it excludes in leap years)
            return month, day
        except ValueError:
            pass
    raise TimeSpecError(where, f"{where}: '{_shown(text)}' is not a month and day; use MM-DD, e.g. '12-25'")


def _weekly_point(text: str, where: str) -> tuple[int, time]:
    match = _WEEKLY.fullmatch(text.strip())
    if match and match.group(1).lower() in _DAYS:
        hour, minute = int(match.group(2)), int(match.group(3))
        if hour < 24 and minute < 60:
            return _DAYS[match.group(1).lower()], time(hour, minute)
    raise TimeSpecError(where, f"{where}: '{_shown(text)}' is not a day and time; use e.g. 'fri 18:00' "
                               f"(mon-sun, 24-hour time)")


def _instant(text: str, tz: str, where: str) -> datetime:
    if not _DATETIME.fullmatch(text.strip()):
        raise TimeSpecError(where, f"{where}: '{_shown(text)}' is not a date and time; use 'YYYY-MM-DD HH:MM[:SS]' "
                                   f"(in the calendar's timezone) or ISO 8601 with an offset")
    return parse_instant(text, tz, field=where)


def _range(entry: dict, tz: str, where: str):
    """(kind, start, end): whole days ('days', first day, last day) or a span ('span', start instant, end instant)."""
    start, end = entry["from"], entry["to"]
    if _DATE.fullmatch(start) and _DATE.fullmatch(end):
        first, last = _day(start, f"{where}.from"), _day(end, f"{where}.to")
        if last < first:
            raise TimeSpecError(f"{where}.to", f"{where}.to: {end} is before from ({start})")
        return "days", first, last
    if _DATE.fullmatch(start) or _DATE.fullmatch(end):
        raise TimeSpecError(where, f"{where}: give from and to both as dates (whole days) or both as dates with a time")
    first, last = _instant(start, tz, f"{where}.from"), _instant(end, tz, f"{where}.to")
    if last <= first:
        raise TimeSpecError(f"{where}.to", f"{where}.to: '{end}' is not after from ('{start}')")
    return "span", first, last


@lru_cache(maxsize=1)
def _countries() -> dict:
    import holidays

    return {code.upper(): subdivisions for code, subdivisions in holidays.list_supported_countries().items()}


def _holidays_spec(spec: dict, where: str) -> tuple[str, str | None]:
    country = spec["country"].strip().upper()
    subdivisions = _countries().get(country)
    if subdivisions is None:
        raise TimeSpecError(f"{where}.country", f"{where}.country: '{_shown(spec['country'])}' is not a country the "
                                                f"holidays package knows; use an ISO 3166-1 code such as 'GR', 'US', 'DE'")
    subdivision = spec.get("subdivision")
    if subdivision is not None:
        subdivision = subdivision.strip()
        known = {s.upper(): s for s in subdivisions}
        if subdivision.upper() not in known:
            listed = ", ".join(subdivisions[:12]) + (", ..." if len(subdivisions) > 12 else "")
            raise TimeSpecError(f"{where}.subdivision",
                                f"{where}.subdivision: '{_shown(subdivision)}' is not a subdivision of {country}"
                                + (f"; use one of {listed}" if subdivisions else f"; {country} has none"))
        subdivision = known[subdivision.upper()]
    return country, subdivision


def _parse_ical(text: str, where: str):
    import icalendar

    if len(text) > MAX_ICAL_CHARS:
        raise TimeSpecError(where, f"{where}: at most {MAX_ICAL_CHARS} characters")
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except Exception as exc:  # the parser raises ValueError and friends for anything malformed
        raise TimeSpecError(where, f"{where}: not a valid iCalendar file ({_shown(exc, 200)})") from None
    if not isinstance(calendar, icalendar.Calendar) or not calendar.walk("VEVENT"):
        raise TimeSpecError(where, f"{where}: the iCalendar file holds no event (VEVENT)")
    for event in calendar.walk("VEVENT"):
        summary = _shown(event.get("SUMMARY", "?"))
        if event.get("DTSTART") is None:
            raise TimeSpecError(where, f"{where}: the event '{summary}' has no DTSTART")
        rule = event.get("RRULE")
        for freq in (rule.get("FREQ", []) if rule is not None else []):
            # Expanding costs about 70 us an occurrence: a minutely rule is half a million a year.
            if str(freq).upper() in ("SECONDLY", "MINUTELY"):
                raise TimeSpecError(where, f"{where}: the event '{summary}' repeats {str(freq).upper()}; calendars "
                                           f"take events that repeat at most hourly (use a weekly entry for windows)")
    return calendar


def check_entries(entries, tz: str, now: datetime, field: str = "entries") -> list:
    """Validate a calendar's entries (read in `tz`); return them unchanged. TimeSpecError names entry and rule.

    The windows of the years around `now` are built once, so a calendar too dense to use is refused here.
    """
    check_timezone(tz)
    if not isinstance(entries, list):
        raise TimeSpecError(field, f"{field}: must be a list of entries")
    if len(entries) > MAX_ENTRIES:
        raise TimeSpecError(field, f"{field}: at most {MAX_ENTRIES} entries")
    for i, entry in enumerate(entries):
        where = f"{field}.{i}"
        kind = _kind(entry)
        if kind is None:
            raise TimeSpecError(where, f"{where}: an entry is one of {{\"date\"}}, {{\"from\", \"to\"}}, {{\"yearly\"}}, "
                                       f"{{\"weekly\": {{\"from\", \"to\"}}}}, {{\"holidays\": {{\"country\"}}}} "
                                       f"or {{\"ical\"}}")
        _structure(kind, entry, where)
        if kind == "date":
            _day(entry["date"], f"{where}.date")
        elif kind == "from":
            _range(entry, tz, where)
        elif kind == "yearly":
            _yearly(entry["yearly"], f"{where}.yearly")
        elif kind == "weekly":
            start = _weekly_point(entry["weekly"]["from"], f"{where}.weekly.from")
            end = _weekly_point(entry["weekly"]["to"], f"{where}.weekly.to")
            if start == end:
                raise TimeSpecError(f"{where}.weekly", f"{where}.weekly: from and to are the same time; "
                                                       f"a window must have a length")
        elif kind == "holidays":
            _holidays_spec(entry["holidays"], f"{where}.holidays")
        else:
            _parse_ical(entry["ical"], f"{where}.ical")
    compiled = compile_calendar("", "", tz, entries)
    for year in (now.year, now.year + 1):
        compiled.window(datetime(year, 6, 1, tzinfo=UTC))
    return entries


# --- compiled calendars --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Span:
    start: datetime
    end: datetime
    label: str


class CompiledCalendar:
    """A calendar as the time math reads it: window(t) answers the excluded window holding `t`."""

    def __init__(self, calendar_id: str, name: str, tz: str, entries: list):
        self.id = calendar_id
        self.name = name
        self.tz_name = tz
        self.tz = _zone(tz)
        self._entries = entries
        self._years: dict[int, tuple[list, list]] = {}
        self._lock = threading.Lock()
        self._parsed = None

    def _parse(self):
        if self._parsed is None:
            out = []
            for i, entry in enumerate(self._entries):
                kind = _kind(entry)
                where = f"entries.{i}"
                if kind == "date":
                    out.append(("days", _day(entry["date"], where), _day(entry["date"], where), entry["date"]))
                elif kind == "from":
                    form, first, last = _range(entry, self.tz_name, where)
                    out.append((form, first, last, f"{entry['from']} to {entry['to']}"))
                elif kind == "yearly":
                    out.append(("yearly", *_yearly(entry["yearly"], where), f"yearly {entry['yearly']}"))
                elif kind == "weekly":
                    start = _weekly_point(entry["weekly"]["from"], where)
                    end = _weekly_point(entry["weekly"]["to"], where)
                    out.append(("weekly", start, end, f"weekly {entry['weekly']['from']} to {entry['weekly']['to']}"))
                elif kind == "holidays":
                    out.append(("holidays", *_holidays_spec(entry["holidays"], where)))
                elif kind == "ical":
                    out.append(("ical", _parse_ical(entry["ical"], where)))
            self._parsed = out
        return self._parsed

    def _midnight(self, day: date) -> datetime:
        return local_to_utc(datetime(day.year, day.month, day.day), self.tz)

    def _days(self, first: date, last: date, label: str) -> _Span:
        end = self._midnight(last + timedelta(days=1)) if last < date.max else datetime.max.replace(tzinfo=UTC)
        return _Span(self._midnight(first), end, label)

    def _spans(self, lo: date, hi: date, year_start: datetime, year_end: datetime):
        """Every excluded span that may touch local dates lo..hi."""
        for item in self._parse():
            form = item[0]
            if form == "days":
                _, first, last, label = item
                if first <= hi and last >= lo:
                    yield self._days(first, last, label)
            elif form == "span":
                _, start, end, label = item
                if start < year_end and end > year_start:
                    yield _Span(start, end, label)
            elif form == "yearly":
                _, month, day, label = item
                for year in range(lo.year, hi.year + 1):
                    try:
                        when = date(year, month, day)
                    except ValueError:
                        continue  # 02-29 outside a leap year
                    if lo <= when <= hi:
                        yield self._days(when, when, label)
            elif form == "weekly":
                _, (from_day, from_time), (to_day, to_time), label = item
                length = (to_day - from_day) % 7
                if length == 0 and to_time <= from_time:
                    length = 7
                day = lo + timedelta(days=(from_day - lo.weekday()) % 7)
                while day <= hi:
                    start = local_to_utc(datetime.combine(day, from_time), self.tz)
                    end = local_to_utc(datetime.combine(day + timedelta(days=length), to_time), self.tz)
                    yield _Span(start, end, label)
                    day += timedelta(days=7)
            elif form == "holidays":
                import holidays

                _, country, subdivision = item
                found = holidays.country_holidays(country, subdiv=subdivision, years=range(lo.year, hi.year + 1))
                for when, name in sorted(found.items()):
                    if lo <= when <= hi:
                        yield self._days(when, when, f"{name} ({country}{'-' + subdivision if subdivision else ''})")
            elif form == "ical":
                yield from self._ical_spans(item[1], lo, hi)

    def _ical_spans(self, calendar, lo: date, hi: date):
        import recurring_ical_events

        for event in recurring_ical_events.of(calendar).between(lo, hi + timedelta(days=1)):
            start = event.get("DTSTART").dt
            end_prop = event.get("DTEND")
            if end_prop is not None:
                end = end_prop.dt
            elif event.get("DURATION") is not None:
                end = start + event.get("DURATION").dt
            else:
                end = start + timedelta(days=1) if not isinstance(start, datetime) else start
            label = str(event.get("SUMMARY") or "iCalendar event")
            yield _Span(self._ical_instant(start), self._ical_instant(end), label)

    def _ical_instant(self, value) -> datetime:
        if not isinstance(value, datetime):  # an all-day event: local midnight in the calendar's timezone
            return self._midnight(value)
        if value.tzinfo is None:  # a floating time: the calendar's timezone
            return local_to_utc(value, self.tz)
        return value.astimezone(UTC)

    def _year(self, year: int) -> tuple[list, list]:
        cached = self._years.get(year)
        if cached is not None:
            return cached
        year_start = datetime(year, 1, 1, tzinfo=UTC)
        year_end = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else datetime.max.replace(tzinfo=UTC)
        # Local dates a few days around the UTC year: offsets reach ±14 h and a weekly window spans up to 7 days.
        lo = date(year, 1, 1) - timedelta(days=8) if year > 1 else date(1, 1, 1)
        hi = date(year, 12, 31) + timedelta(days=2) if year < 9999 else date(9999, 12, 31)
        spans = sorted((s for s in self._spans(lo, hi, year_start, year_end)
                        if s.end > year_start and s.start < year_end and s.end > s.start),
                       key=lambda s: (s.start, s.end))
        if len(spans) > MAX_WINDOWS_PER_YEAR:
            raise TimeSpecError("entries", f"entries: more than {MAX_WINDOWS_PER_YEAR} excluded spans in {year}; "
                                           f"use fewer, longer ones (a weekly window rather than daily events)")
        merged: list[_Span] = []
        for span in spans:
            if merged and span.start <= merged[-1].end:
                if span.end > merged[-1].end:
                    merged[-1] = _Span(merged[-1].start, span.end, merged[-1].label)
            else:
                merged.append(span)
        result = ([s.start for s in merged], merged)
        with self._lock:
            if len(self._years) >= 8:
                self._years.pop(next(iter(self._years)))
            self._years[year] = result
        return result

    def window(self, t: datetime) -> Window | None:
        """The excluded window [start, end) holding the instant `t`, or None."""
        starts, spans = self._year(t.year)
        i = bisect.bisect_right(starts, t) - 1
        if i >= 0 and spans[i].end > t:
            span = spans[i]
            return Window(span.start, span.end, {"reason": "calendar", "calendar_id": self.id,
                                                 "calendar": self.name, "entry": span.label})
        return None


def compile_calendar(calendar_id: str, name: str, tz: str, entries: list) -> CompiledCalendar:
    """The compiled form of a calendar's (already checked) entries."""
    return CompiledCalendar(calendar_id, name, tz, entries)


# --- loading, with a cache by id and updated_at ------------------------------------------------

_CACHE: dict[str, tuple[datetime, CompiledCalendar]] = {}
_CACHE_SIZE = 1024
_CACHE_LOCK = threading.Lock()  # the API's threads and the dispatcher share the cache


def _cache(calendar_id: str, updated_at: datetime, calendar: CompiledCalendar) -> None:
    with _CACHE_LOCK:
        if len(_CACHE) >= _CACHE_SIZE and calendar_id not in _CACHE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[calendar_id] = (updated_at, calendar)


def remember(row, now: datetime) -> None:
    """Compile a calendar just written (a Calendar row) and cache it, with the windows around `now` built.

    The dispatcher of this process then finds it ready instead of compiling inside a claim.
    """
    calendar = compile_calendar(row.id, row.name, row.timezone, row.entries or [])
    calendar.window(now)
    _cache(row.id, row.updated_at, calendar)


def compiled(conn, ids, errors: dict | None = None) -> dict[str, CompiledCalendar]:
    """Compiled calendars by id, read on `conn` (a Core connection or a Session).

    One query reads every id's updated_at; only calendars that changed since they were cached are
    read whole and compiled again. Ids that no longer exist are left out. A stored calendar that
    cannot be compiled raises, or, when `errors` is a dict, is left out and put there as id -> exception
    (the dispatcher's claim must not fail for every schedule because one calendar is broken).
    """
    from sqlalchemy import select

    from .models import Calendar

    ids = set(ids)
    if not ids:
        return {}
    table = Calendar.__table__
    stamps = dict(conn.execute(select(table.c.id, table.c.updated_at).where(table.c.id.in_(ids))).all())
    out, stale = {}, []
    for cid, updated in stamps.items():
        cached = _CACHE.get(cid)
        if cached is not None and cached[0] == updated:
            out[cid] = cached[1]
        else:
            stale.append(cid)
    if stale:
        rows = conn.execute(select(table.c.id, table.c.name, table.c.timezone, table.c.entries, table.c.updated_at)
                            .where(table.c.id.in_(stale))).all()
        for row in rows:
            try:
                calendar = compile_calendar(row.id, row.name, row.timezone, row.entries or [])
            except Exception as exc:  # noqa: BLE001 - a stored row may hold anything: contain it
                if errors is None:
                    raise
                errors[row.id] = exc
                continue
            _cache(row.id, row.updated_at, calendar)
            out[row.id] = calendar
    return out
