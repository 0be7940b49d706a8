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
# What an iCalendar file may cost before it is parsed and expanded. Nesting: VCALENDAR > VEVENT > VALARM,
# VTIMEZONE > STANDARD are 3 deep; components and events per file; dates an RDATE or EXDATE may list.
MAX_ICAL_DEPTH = 5
MAX_ICAL_COMPONENTS = 5_000
MAX_ICAL_EVENTS = 2_000
MAX_ICAL_ZONE_PARTS = 100  # STANDARD and DAYLIGHT parts of all VTIMEZONEs (real zones: a few dozen at most)
MAX_ICAL_DATES = 5_000
# Steps (periods of its FREQ) expanding one RRULE may walk from its DTSTART to the years checked: the
# expander (dateutil) walks every period from DTSTART on, about 5 us each, even to reach a later year.
MAX_RULE_STEPS = 200_000
_PERIODS_PER_YEAR = {"YEARLY": 1, "MONTHLY": 12, "WEEKLY": 53, "DAILY": 366, "HOURLY": 8784}
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

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


def _ical_shape(text: str, where: str) -> None:
    """Refuse, before parsing, a file nested deeper or holding more components than any real calendar, and
    time zone definitions (VTIMEZONE) the parser would take for ever to expand.

    Lines are unfolded first (RFC 5545 3.1: a line break followed by a space or a tab continues the line), as
    the parser reads them. The parser expands a VTIMEZONE's STANDARD and DAYLIGHT rules from their DTSTART
    when it reads a time in that zone, with no bound: a rule repeating every second never ends. Real zones
    change offsets at most once a year per part (RRULE FREQ=YEARLY), in a few dozen parts at most."""
    depth = components = zone_parts = 0
    stack: list[str] = []
    zone = "?"
    for line in re.sub(r"\r?\n[ \t]", "", text).splitlines():
        head = line[:6].upper()
        if head == "BEGIN:":
            name = line[6:].strip().upper()
            stack.append(name)
            depth += 1
            components += 1
            if depth > MAX_ICAL_DEPTH:
                raise TimeSpecError(where, f"{where}: components nested more than {MAX_ICAL_DEPTH} deep")
            if components > MAX_ICAL_COMPONENTS:
                raise TimeSpecError(where, f"{where}: more than {MAX_ICAL_COMPONENTS} components (BEGIN:...)")
            if "VTIMEZONE" in stack[:-1]:
                zone_parts += 1
                if zone_parts > MAX_ICAL_ZONE_PARTS:
                    raise TimeSpecError(where, f"{where}: its time zones (VTIMEZONE) have more than "
                                               f"{MAX_ICAL_ZONE_PARTS} STANDARD and DAYLIGHT parts")
        elif line[:4].upper() == "END:":
            depth = max(0, depth - 1)
            if stack:
                stack.pop()
        elif "VTIMEZONE" in stack:
            key, _, value = line.partition(":")
            key = key.split(";", 1)[0].strip().upper()
            if key == "TZID" and stack[-1] == "VTIMEZONE":
                zone = _shown(value.strip())
            elif key in ("RRULE", "EXRULE"):
                freq = re.search(r"(?:^|;)\s*FREQ\s*=\s*([A-Za-z]*)", value)
                freq_name = freq.group(1).upper() if freq else ""
                if freq_name != "YEARLY":
                    raise TimeSpecError(where, f"{where}: the time zone '{zone}' repeats {freq_name or 'without a FREQ'}"
                                               f"; a time zone's STANDARD and DAYLIGHT rules must repeat YEARLY")


def _rule_cost(rule, summary: str, start, now: datetime | None, where: str) -> int:
    """Occurrences a year an RRULE may make (an upper bound), refusing rules too costly to expand.

    Refused: repeating more often than hourly (counting what BYHOUR, BYMINUTE, BYSECOND... add to the
    FREQ), walking more than MAX_RULE_STEPS periods from DTSTART to next year, and parts that can never
    coincide (BYMONTHDAY past every BYMONTH's length, BYSETPOS past a period's candidates), for which the
    expander would walk every period to the year 9999 looking for one. The walk from DTSTART is checked
    only when `now` is given (when an entry is written): it grows with the years, and a calendar stored
    once must still compile later."""
    def values(key):
        return list(rule.get(key, []))

    freqs = [str(f).upper() for f in values("FREQ")]
    if len(freqs) != 1 or freqs[0] not in (*_PERIODS_PER_YEAR, "SECONDLY", "MINUTELY"):
        raise TimeSpecError(where, f"{where}: the event '{summary}' has an RRULE without one FREQ of YEARLY, MONTHLY, "
                                   f"WEEKLY, DAILY or HOURLY")
    freq = freqs[0]
    if freq in ("SECONDLY", "MINUTELY"):
        # Expanding costs about 70 us an occurrence: a minutely rule is half a million a year.
        raise TimeSpecError(where, f"{where}: the event '{summary}' repeats {freq}; calendars "
                                   f"take events that repeat at most hourly (use a weekly entry for windows)")
    try:
        interval = max(1, int((values("INTERVAL") or [1])[0]))
    except (TypeError, ValueError):
        raise TimeSpecError(where, f"{where}: the event '{summary}' has an INTERVAL that is not a whole number") from None
    periods = max(1, -(-_PERIODS_PER_YEAR[freq] // interval))
    n = {key: len(values(key)) for key in ("BYMONTH", "BYWEEKNO", "BYYEARDAY", "BYMONTHDAY", "BYDAY", "BYHOUR",
                                           "BYMINUTE", "BYSECOND")}
    # Parts finer than FREQ add occurrences to each period (RFC 5545 3.3.10, "expand"); the others only filter.
    per_period = 1
    if freq == "YEARLY":
        for key in ("BYMONTH", "BYYEARDAY", "BYMONTHDAY"):
            per_period *= max(1, n[key])
        per_period *= max(1, n["BYWEEKNO"] * 7)
        per_period *= max(1, n["BYDAY"] * (5 if n["BYMONTH"] or n["BYWEEKNO"] else 53))
    elif freq == "MONTHLY":
        per_period *= max(1, n["BYMONTHDAY"]) * max(1, n["BYDAY"] * 5)
    elif freq == "WEEKLY":
        per_period *= max(1, n["BYDAY"])
    sub_day = (max(1, n["BYHOUR"]) if freq != "HOURLY" else 1) * max(1, n["BYMINUTE"]) * max(1, n["BYSECOND"])
    per_year = periods * per_period * sub_day
    if per_year > _PERIODS_PER_YEAR["HOURLY"]:
        raise TimeSpecError(where, f"{where}: the event '{summary}' repeats up to {per_year} times a year, more often "
                                   f"than hourly; calendars take events that repeat at most hourly")
    first_year = start.year if isinstance(start, date) else (now.year if now else 1)
    steps = periods * max(1, now.year + 2 - first_year) if now is not None else 0
    if steps > MAX_RULE_STEPS:
        raise TimeSpecError(where, f"{where}: the event '{summary}' repeats {freq} from {first_year}: expanding it to "
                                   f"{now.year + 1} walks {steps} periods (at most {MAX_RULE_STEPS}); give it a DTSTART "
                                   f"closer to today")
    month_days = values("BYMONTHDAY")
    if month_days:
        longest = max(_MONTH_DAYS[int(m) - 1] for m in values("BYMONTH") if 1 <= int(m) <= 12) \
            if values("BYMONTH") else 31
        if all(abs(int(d)) > longest for d in month_days):
            raise TimeSpecError(where, f"{where}: the event '{summary}' never occurs: no month it names has the day "
                                       f"of the month it asks for (BYMONTHDAY)")
    positions = values("BYSETPOS")
    if positions and freq in ("WEEKLY", "DAILY", "HOURLY"):
        candidates = per_period * sub_day
        if all(abs(int(p)) > candidates for p in positions):
            raise TimeSpecError(where, f"{where}: the event '{summary}' never occurs: BYSETPOS asks for a position "
                                       f"past the {candidates} candidate(s) of each period")
    return per_year


def _parse_ical(text: str, where: str, now: datetime | None = None, costs: list | None = None):
    """Parse an `ical` entry's text and refuse what would be too costly to expand (TimeSpecError naming `where`).

    Returns the icalendar.Calendar; appends to `costs` (when given) the excluded spans a year its events
    may make at most."""
    import icalendar

    if len(text) > MAX_ICAL_CHARS:
        raise TimeSpecError(where, f"{where}: at most {MAX_ICAL_CHARS} characters")
    _ical_shape(text, where)
    try:
        calendar = icalendar.Calendar.from_ical(text)
        events = calendar.walk("VEVENT") if isinstance(calendar, icalendar.Calendar) else []
    except RecursionError:
        raise TimeSpecError(where, f"{where}: components nested too deep") from None
    except Exception as exc:  # the parser raises ValueError and friends for anything malformed
        raise TimeSpecError(where, f"{where}: not a valid iCalendar file ({_shown(exc, 200)})") from None
    if not events:
        raise TimeSpecError(where, f"{where}: the iCalendar file holds no event (VEVENT)")
    if len(events) > MAX_ICAL_EVENTS:
        raise TimeSpecError(where, f"{where}: more than {MAX_ICAL_EVENTS} events (VEVENT)")
    per_year = dates = 0
    for event in events:
        summary = _shown(event.get("SUMMARY", "?"))
        if event.get("DTSTART") is None:
            raise TimeSpecError(where, f"{where}: the event '{summary}' has no DTSTART")
        try:
            # A value the parser could not read stays in the event as a broken property that fails when used.
            start = event.get("DTSTART").dt
            for name in ("DTEND", "DURATION"):
                if event.get(name) is not None:
                    event.get(name).dt  # noqa: B018 - read to find a broken value now, not in a claim
            rule = event.get("RRULE")
            if isinstance(rule, list):
                raise TimeSpecError(where, f"{where}: the event '{summary}' has more than one RRULE")
            if rule is not None:
                rule.get("FREQ")
            for name in ("RDATE", "EXDATE"):
                for prop in (event.get(name) if isinstance(event.get(name), list) else [event.get(name)]):
                    if prop is not None:
                        dates += len(prop.dts)
        except TimeSpecError:
            raise
        except Exception as exc:  # noqa: BLE001 - icalendar's broken-property errors and friends
            raise TimeSpecError(where, f"{where}: the event '{summary}' has a value that cannot be read "
                                       f"({_shown(exc, 200)})") from None
        if dates > MAX_ICAL_DATES:
            raise TimeSpecError(where, f"{where}: more than {MAX_ICAL_DATES} dates in RDATE and EXDATE")
        try:
            per_year += 1 if rule is None else _rule_cost(rule, summary, start, now, where)
        except (TypeError, ValueError) as exc:  # a part that is not a number where one is needed
            raise TimeSpecError(where, f"{where}: the event '{summary}' has an RRULE that cannot be read "
                                       f"({_shown(exc, 200)})") from None
    if per_year + dates > MAX_WINDOWS_PER_YEAR:
        raise TimeSpecError(where, f"{where}: its events make up to {per_year + dates} excluded spans a year, more than "
                                   f"{MAX_WINDOWS_PER_YEAR} excluded spans; use fewer, longer ones")
    if costs is not None:
        costs.append(per_year + dates)
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
    ical_spans = 0
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
            costs: list[int] = []
            _parse_ical(entry["ical"], f"{where}.ical", now, costs)
            ical_spans += costs[0]
            if ical_spans > MAX_WINDOWS_PER_YEAR:
                # Refused before anything is expanded: together the files would be too many spans a year.
                raise TimeSpecError(f"{where}.ical", f"{where}.ical: with the entries before it, iCalendar events make "
                                                     f"up to {ical_spans} excluded spans a year, more than "
                                                     f"{MAX_WINDOWS_PER_YEAR} excluded spans; use fewer, longer ones")
    compiled = compile_calendar("", "", tz, entries)
    try:
        for year in (now.year, now.year + 1):
            compiled.window(datetime(year, 6, 1, tzinfo=UTC))
    except Exception as exc:  # noqa: BLE001 - find the entry to name: each iCalendar file expanded alone
        for i, entry in enumerate(entries):
            if _kind(entry) == "ical":
                _expands(entry, tz, now, f"{field}.{i}.ical")
        if isinstance(exc, TimeSpecError):
            raise
        raise TimeSpecError(field, f"{field}: cannot be expanded ({_shown(exc, 200)})") from None
    return entries


def _expands(entry: dict, tz: str, now: datetime, where: str) -> None:
    """Expand one `ical` entry for this year and the next; anything it raises is a 400 naming `where`."""
    try:
        single = compile_calendar("", "", tz, [entry])
        for year in (now.year, now.year + 1):
            single.window(datetime(year, 6, 1, tzinfo=UTC))
    except TimeSpecError as exc:
        raise TimeSpecError(where, f"{where}: {str(exc).split(': ', 1)[-1]}") from None
    except RecursionError:
        raise TimeSpecError(where, f"{where}: components nested too deep") from None
    except Exception as exc:  # noqa: BLE001 - the expander's errors on a file it parsed
        raise TimeSpecError(where, f"{where}: its events cannot be expanded ({_shown(exc, 200)})") from None


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
        spans = []
        for s in self._spans(lo, hi, year_start, year_end):
            if s.end > year_start and s.start < year_end and s.end > s.start:
                spans.append(s)
                if len(spans) > MAX_WINDOWS_PER_YEAR:  # stop expanding at once, not after a million more
                    raise TimeSpecError("entries", f"entries: more than {MAX_WINDOWS_PER_YEAR} excluded spans in "
                                                   f"{year}; use fewer, longer ones (a weekly window rather than daily "
                                                   f"events)")
        spans.sort(key=lambda s: (s.start, s.end))
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
