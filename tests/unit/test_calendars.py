"""Calendar entries: what each kind excludes, as instants (DST and year ends included), and the errors of bad ones."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from web.calendars import check_entries, compile_calendar
from web.timemath import TimeSpecError, format_instant

UTC = timezone.utc
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def window(entries, tz, t):
    """(start, end, entry label) of the excluded window holding `t`, or None."""
    calendar = compile_calendar("c" * 32, "test", tz, check_entries(entries, tz, NOW))
    w = calendar.window(t)
    return None if w is None else (format_instant(w.start), format_instant(w.end), w.reason["entry"])


def test_a_date_excludes_that_whole_local_day():
    entries = [{"date": "2026-12-25"}]
    # Europe/Athens is UTC+2 in December: the day is 2026-12-24T22:00Z to 2026-12-25T22:00Z.
    assert window(entries, "Europe/Athens", utc(2026, 12, 24, 22, 0)) == (
        "2026-12-24T22:00:00Z", "2026-12-25T22:00:00Z", "2026-12-25")
    assert window(entries, "Europe/Athens", utc(2026, 12, 25, 21, 59, 59)) is not None
    assert window(entries, "Europe/Athens", utc(2026, 12, 24, 21, 59, 59)) is None
    assert window(entries, "Europe/Athens", utc(2026, 12, 25, 22, 0)) is None


def test_a_date_range_excludes_whole_days_both_included_across_the_year_end():
    entries = [{"from": "2026-12-24", "to": "2027-01-02"}]
    expected = ("2026-12-24T00:00:00Z", "2027-01-03T00:00:00Z", "2026-12-24 to 2027-01-02")
    assert window(entries, "UTC", utc(2026, 12, 24)) == expected
    assert window(entries, "UTC", utc(2027, 1, 2, 23, 59)) == expected  # asked from the next year: same span
    assert window(entries, "UTC", utc(2027, 1, 3)) is None


def test_a_range_with_times_excludes_that_span_with_its_end_excluded():
    # Europe/Athens springs forward on 2026-03-29 at 01:00Z (03:00 EET -> 04:00 EEST).
    entries = [{"from": "2026-03-29 02:30", "to": "2026-03-29 05:00"}]
    assert window(entries, "Europe/Athens", utc(2026, 3, 29, 1, 59)) == (
        "2026-03-29T00:30:00Z", "2026-03-29T02:00:00Z", "2026-03-29 02:30 to 2026-03-29 05:00")
    assert window(entries, "Europe/Athens", utc(2026, 3, 29, 2, 0)) is None


def test_a_yearly_date_excludes_that_day_every_year_and_february_29_only_in_leap_years():
    assert window([{"yearly": "12-25"}], "UTC", utc(2031, 12, 25, 12)) == (
        "2031-12-25T00:00:00Z", "2031-12-26T00:00:00Z", "yearly 12-25")
    leap = [{"yearly": "02-29"}]
    assert window(leap, "UTC", utc(2028, 2, 29, 12)) is not None
    assert window(leap, "UTC", utc(2027, 3, 1, 0, 0)) is None and window(leap, "UTC", utc(2027, 2, 28, 12)) is None


def test_a_weekly_window_wraps_over_the_weekend_and_follows_local_time_across_dst():
    entries = [{"weekly": {"from": "fri 18:00", "to": "mon 06:00"}}]
    # America/New_York springs forward on Sunday 2026-03-08: Friday 18:00 EST is 23:00Z, Monday 06:00 EDT is 10:00Z.
    assert window(entries, "America/New_York", utc(2026, 3, 8, 12)) == (
        "2026-03-06T23:00:00Z", "2026-03-09T10:00:00Z", "weekly fri 18:00 to mon 06:00")
    assert window(entries, "America/New_York", utc(2026, 3, 9, 10)) is None
    assert window(entries, "America/New_York", utc(2026, 3, 11, 12)) is None


def test_a_weekly_window_across_the_new_year():
    entries = [{"weekly": {"from": "Thursday 22:00", "to": "fri 02:00"}}]
    # 2026-12-31 is a Thursday.
    assert window(entries, "UTC", utc(2027, 1, 1, 1, 0)) == (
        "2026-12-31T22:00:00Z", "2027-01-01T02:00:00Z", "weekly Thursday 22:00 to fri 02:00")


def test_a_weekly_window_from_a_time_to_an_earlier_time_the_same_day_lasts_almost_a_week():
    entries = [{"weekly": {"from": "wed 12:00", "to": "wed 11:00"}}]
    assert window(entries, "UTC", utc(2026, 6, 8)) == (  # a Monday
        "2026-06-03T12:00:00Z", "2026-06-10T11:00:00Z", "weekly wed 12:00 to wed 11:00")


def test_public_holidays_come_from_the_holidays_package_in_local_days():
    entries = [{"holidays": {"country": "GR"}}]
    assert window(entries, "Europe/Athens", utc(2026, 2, 23, 9)) == (
        "2026-02-22T22:00:00Z", "2026-02-23T22:00:00Z", "Green Monday (GR)")
    # Christmas and the day after are both holidays in Greece: one window of two days.
    assert window(entries, "Europe/Athens", utc(2026, 12, 26, 12)) == (
        "2026-12-24T22:00:00Z", "2026-12-26T22:00:00Z", "Christmas Day (GR)")
    assert window(entries, "Europe/Athens", utc(2026, 2, 24, 9)) is None


def test_public_holidays_of_a_subdivision():
    entries = [{"holidays": {"country": "us", "subdivision": "ca"}}]
    assert window(entries, "America/Los_Angeles", utc(2026, 3, 31, 20)) == (
        "2026-03-31T07:00:00Z", "2026-04-01T07:00:00Z", "Cesar Chavez Day (US-CA)")
    assert window([{"holidays": {"country": "US"}}], "America/Los_Angeles", utc(2026, 3, 31, 20)) is None


ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//cloudcron tests//EN
BEGIN:VEVENT
UID:freeze@example.com
DTSTAMP:20260101T000000Z
SUMMARY:Change freeze
DTSTART:20261224T180000Z
DTEND:20261227T060000Z
END:VEVENT
BEGIN:VEVENT
UID:offsite@example.com
DTSTAMP:20260101T000000Z
SUMMARY:Offsite
DTSTART;VALUE=DATE:20260918
DTEND;VALUE=DATE:20260919
END:VEVENT
BEGIN:VEVENT
UID:maintenance@example.com
DTSTAMP:20260101T000000Z
SUMMARY:Weekly maintenance
DTSTART;TZID=Europe/Berlin:20260107T200000
DTEND;TZID=Europe/Berlin:20260107T220000
RRULE:FREQ=WEEKLY;BYDAY=WE
EXDATE;TZID=Europe/Berlin:20260114T200000
END:VEVENT
BEGIN:VEVENT
UID:floating@example.com
DTSTAMP:20260101T000000Z
SUMMARY:Floating
DTSTART:20260601T090000
DTEND:20260601T100000
END:VEVENT
END:VCALENDAR
"""


@pytest.mark.parametrize("t, expected", [
    (utc(2026, 12, 25, 12), ("2026-12-24T18:00:00Z", "2026-12-27T06:00:00Z", "Change freeze")),
    # An all-day event: the whole local day in the calendar's timezone (Europe/Athens, UTC+3 in September).
    (utc(2026, 9, 17, 21, 30), ("2026-09-17T21:00:00Z", "2026-09-18T21:00:00Z", "Offsite")),
    # A weekly RRULE in Berlin time (CET in January, CEST in July), with one date excluded (EXDATE).
    (utc(2026, 1, 7, 19, 30), ("2026-01-07T19:00:00Z", "2026-01-07T21:00:00Z", "Weekly maintenance")),
    (utc(2026, 1, 14, 19, 30), None),
    (utc(2026, 7, 1, 18, 30), ("2026-07-01T18:00:00Z", "2026-07-01T20:00:00Z", "Weekly maintenance")),
    (utc(2027, 3, 3, 19, 30), ("2027-03-03T19:00:00Z", "2027-03-03T21:00:00Z", "Weekly maintenance")),
    # A floating time: read in the calendar's timezone (Athens, UTC+3 in June).
    (utc(2026, 6, 1, 6, 30), ("2026-06-01T06:00:00Z", "2026-06-01T07:00:00Z", "Floating")),
])
def test_icalendar_events_are_excluded_with_recurrences_expanded(t, expected):
    assert window([{"ical": ICS}], "Europe/Athens", t) == expected


def test_overlapping_entries_merge_into_one_window():
    entries = [{"date": "2026-05-01"}, {"from": "2026-05-01 20:00", "to": "2026-05-03 08:00"}, {"yearly": "05-03"}]
    assert window(entries, "UTC", utc(2026, 5, 3, 12))[:2] == ("2026-05-01T00:00:00Z", "2026-05-04T00:00:00Z")


@pytest.mark.parametrize("entries, field, rule", [
    ("no", "entries", "list"),
    ([{"date": "2026-12-25", "yearly": "12-25"}], "entries.0", "one of"),
    ([{"holiday": "GR"}], "entries.0", "one of"),
    ([{"date": 20261225}], "entries.0.date", "must be a string"),
    ([{"date": "2026-12-5"}], "entries.0.date", "YYYY-MM-DD"),
    ([{"date": "2026-02-30"}], "entries.0.date", "not a date"),
    ([{"from": "2027-01-02", "to": "2026-12-24"}], "entries.0.to", "before from"),
    ([{"from": "2026-12-24", "to": "2026-12-25 10:00"}], "entries.0", "both as dates"),
    ([{"from": "2026-12-24 10:00", "to": "2026-12-24 10:00"}], "entries.0.to", "not after"),
    ([{"from": "tomorrow 10:00", "to": "2026-12-24 10:00"}], "entries.0.from", "date and time"),
    ([{"yearly": "13-01"}], "entries.0.yearly", "MM-DD"),
    ([{"yearly": "2-29"}], "entries.0.yearly", "MM-DD"),
    ([{"weekly": {"from": "fri 18:00"}}], "entries.0.weekly.to", "required"),
    ([{"weekly": {"from": "friday", "to": "mon 06:00"}}], "entries.0.weekly.from", "fri 18:00"),
    ([{"weekly": {"from": "fri 24:00", "to": "mon 06:00"}}], "entries.0.weekly.from", "24-hour"),
    ([{"weekly": {"from": "xyz 10:00", "to": "mon 06:00"}}], "entries.0.weekly.from", "mon-sun"),
    ([{"weekly": {"from": "mon 06:00", "to": "Monday 06:00"}}], "entries.0.weekly", "same time"),
    ([{"holidays": {"country": "Atlantis"}}], "entries.0.holidays.country", "ISO 3166-1"),
    ([{"holidays": {"country": "GR", "subdivision": "XX"}}], "entries.0.holidays.subdivision", "not a subdivision"),
    ([{"holidays": {"country": "GR", "region": "I"}}], "entries.0.holidays.region", "not a known field"),
    ([{"ical": "not a calendar"}], "entries.0.ical", "iCalendar"),
    ([{"ical": "BEGIN:VCALENDAR\nVERSION:2.0\nEND:VCALENDAR\n"}], "entries.0.ical", "no event"),
    ([{"date": "2026-12-25"}, {"weekly": {"from": "sun", "to": "mon"}}], "entries.1.weekly.from", "day and time"),
])
def test_a_bad_entry_is_refused_naming_it_and_the_rule(entries, field, rule):
    with pytest.raises(TimeSpecError) as caught:
        check_entries(entries, "UTC", NOW)
    message = str(caught.value)
    assert message.startswith(field + ":") and rule in message, message


def test_an_icalendar_rule_that_repeats_every_minute_is_refused():
    every_minute = ICS.replace("RRULE:FREQ=WEEKLY;BYDAY=WE", "RRULE:FREQ=MINUTELY")
    with pytest.raises(TimeSpecError, match="repeats MINUTELY"):
        check_entries([{"ical": every_minute}], "UTC", NOW)


def test_a_calendar_with_more_windows_a_year_than_the_limit_is_refused():
    # Hourly events with gaps between them (10 minutes of each hour): 8,760 a year, and 3 such events.
    hourly = "".join(f"""BEGIN:VEVENT
UID:h{i}@example.com
DTSTAMP:20260101T000000Z
SUMMARY:h{i}
DTSTART:20260101T00{i}000Z
DTEND:20260101T00{i}500Z
RRULE:FREQ=HOURLY
END:VEVENT
""" for i in range(3))
    text = "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//t//EN\n" + hourly + "END:VCALENDAR\n"
    with pytest.raises(TimeSpecError, match="more than 20000 excluded spans"):
        check_entries([{"ical": text}], "UTC", NOW)


def test_entries_are_kept_as_given():
    entries = [{"weekly": {"from": "Fri 18:00", "to": "mon 06:00"}}, {"holidays": {"country": "gr"}}]
    assert check_entries(entries, "UTC", NOW) == entries


def _ics(*events: str) -> str:
    return "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//t//EN\n" + "".join(events) + "END:VCALENDAR\n"


def _event(start: str = "20260101T000000Z", rule: str | None = None, extra: str = "", name: str = "e") -> str:
    return (f"BEGIN:VEVENT\nUID:{name}@example.com\nSUMMARY:{name}\nDTSTART:{start}\nDURATION:PT10M\n"
            + (f"RRULE:{rule}\n" if rule else "") + extra + "END:VEVENT\n")


@pytest.mark.parametrize("text, rule", [
    # DTSTART long ago: the expander walks every hour since 1900 to reach this year
    (_ics(_event("19000101T000000Z", "FREQ=HOURLY")), "walks 1124352 periods (at most 200000)"),
    # DAILY, but 24 x 60 times a day: minutely in all but name
    (_ics(_event(rule="FREQ=DAILY;BYHOUR=" + ",".join(map(str, range(24))) + ";BYMINUTE="
                 + ",".join(map(str, range(60))))), "more often than hourly"),
    (_ics(_event(rule="FREQ=YEARLY;BYMONTH=1,2,3,4,5,6,7,8,9,10,11,12;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR=" + ",".join(map(str, range(24))) + ";BYMINUTE=0,30")),
     "more often than hourly"),
    # parts that never coincide: the expander would look for one until the year 9999
    (_ics(_event(rule="FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=30")), "never occurs"),
    (_ics(_event(rule="FREQ=DAILY;BYSETPOS=2")), "never occurs"),
    # the file's own shape
    ("BEGIN:VCALENDAR\n" + "BEGIN:X\n" * 50 + "END:X\n" * 50 + _event() + "END:VCALENDAR\n", "nested more than 5 deep"),
    (_ics(*(_event(name=f"e{i}") for i in range(2001))), "more than 2000 events"),
    (_ics(_event(extra="RDATE:" + ",".join([f"2026{m:02d}{d:02d}T000000Z" for m in range(1, 13) for d in range(1, 29)]
                                           * 20) + "\n")), "more than 5000 dates"),
    # values the parser could not read: refused now, not failing later in a claim
    (_ics(_event(start="notadate")), "cannot be read"),
    (_ics(_event(rule="FREQ=WEEKLY;BYDAY=XX")), "cannot be read"),
    (_ics(_event(rule="INTERVAL=2")), "without one FREQ"),
])
def test_an_icalendar_file_too_costly_to_expand_or_unreadable_is_refused_naming_it(text, rule):
    with pytest.raises(TimeSpecError) as caught:
        check_entries([{"date": "2026-12-25"}, {"ical": text}], "UTC", NOW)
    message = str(caught.value)
    assert message.startswith("entries.1.ical:") and rule in message, message


def test_files_each_within_bounds_are_refused_together_before_any_is_expanded():
    hourly = _ics(_event(rule="FREQ=HOURLY"))
    check_entries([{"ical": hourly}, {"ical": hourly}], "UTC", NOW)  # 17,568 spans a year: within 20,000
    with pytest.raises(TimeSpecError, match=r"^entries\.2\.ical: with the entries before it, .* 26352 excluded spans"):
        check_entries([{"ical": hourly}, {"ical": hourly}, {"ical": hourly}], "UTC", NOW)


def test_ordinary_recurrences_are_accepted():
    for rule in ("FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR", "FREQ=MONTHLY;BYDAY=-1FR", "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29",
                 "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1", "FREQ=DAILY;BYHOUR=9,17", "FREQ=HOURLY;INTERVAL=2"):
        check_entries([{"ical": _ics(_event("20100104T090000Z", rule))}], "UTC", NOW)


def _zone(rule: str, parts: int = 1) -> str:
    """A VTIMEZONE 'Evil/Zone' with `parts` STANDARD/DAYLIGHT pairs repeating by `rule`."""
    pairs = "".join(f"BEGIN:STANDARD\nDTSTART:19700101T00{i:02d}00\nRRULE:{rule}\nTZOFFSETFROM:+0100\nTZOFFSETTO:+0000\n"
                    f"END:STANDARD\nBEGIN:DAYLIGHT\nDTSTART:19700101T00{i:02d}01\nRRULE:{rule}\nTZOFFSETFROM:+0000\n"
                    f"TZOFFSETTO:+0100\nEND:DAYLIGHT\n" for i in range(parts))
    return "BEGIN:VTIMEZONE\nTZID:Evil/Zone\n" + pairs + "END:VTIMEZONE\n"


def _zoned_event() -> str:
    return "BEGIN:VEVENT\nUID:z@example.com\nSUMMARY:z\nDTSTART;TZID=Evil/Zone:20260101T000000\nDURATION:PT10M\nEND:VEVENT\n"


@pytest.mark.parametrize("text, rule", [
    # The parser expands a VTIMEZONE's rules from DTSTART on when it reads a time in that zone: every second
    # since 1970 never ends. Time zone rules change offsets once a year.
    (_ics(_zone("FREQ=SECONDLY"), _zoned_event()), "time zone 'Evil/Zone' repeats SECONDLY"),
    (_ics(_zone("FREQ=MONTHLY"), _zoned_event()), "time zone 'Evil/Zone' repeats MONTHLY"),
    (_ics(_zone("FREQ=YEARLY", parts=60), _zoned_event()), "more than 100 STANDARD and DAYLIGHT parts"),
    # A folded line (RFC 5545 3.1: CRLF and a space continue it) is read as the parser reads it.
    (_ics(_zone("FREQ=SECONDLY").replace("RRULE:FREQ=SECONDLY", "RRU\n LE:FREQ=SEC\n ONDLY"), _zoned_event()),
     "repeats SECONDLY"),
    ("BEGIN:VCALENDAR\n" + "BEG\n IN:X\n" * 50 + "END:X\n" * 50 + _event() + "END:VCALENDAR\n", "nested more than 5 deep"),
])
@pytest.mark.timeout(20)
def test_an_icalendar_time_zone_too_costly_to_expand_is_refused(text, rule):
    with pytest.raises(TimeSpecError) as caught:
        check_entries([{"ical": text}], "UTC", NOW)
    message = str(caught.value)
    assert message.startswith("entries.0.ical:") and rule in message, message


def test_an_ordinary_time_zone_definition_is_accepted():
    athens = ("BEGIN:VTIMEZONE\nTZID:Europe/Athens\nBEGIN:STANDARD\nDTSTART:19701025T040000\n"
              "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\nTZOFFSETFROM:+0300\nTZOFFSETTO:+0200\nEND:STANDARD\n"
              "BEGIN:DAYLIGHT\nDTSTART:19700329T030000\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\nTZOFFSETFROM:+0200\n"
              "TZOFFSETTO:+0300\nEND:DAYLIGHT\nEND:VTIMEZONE\n")
    event = _zoned_event().replace("Evil/Zone", "Europe/Athens")
    check_entries([{"ical": _ics(athens, event)}], "UTC", NOW)
