"""Behaviour of the schedule time math: parsing, validation and fire times (time always passed in)."""
from datetime import datetime, timedelta, timezone

import pytest

from web.timemath import (
    CRONTAB_FIELDS,
    PERIODS,
    TimeSpecError,
    Timing,
    Window,
    check_timezone,
    count_fires,
    format_instant,
    jitter_offset,
    last_fire_at_or_before,
    min_spacing,
    next_fire,
    normalize_crontab,
    normalize_interval,
    parse_instant,
    preview,
)

UTC = timezone.utc
CREATED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def iso(times):
    return [format_instant(t) for t in times]


def crontab(entry, tz="UTC", **bounds):
    return Timing("crontab", normalize_crontab(entry), CREATED, tz, **bounds)


def interval(every, period, anchor=CREATED, **bounds):
    return Timing("interval", normalize_interval({"every": every, "period": period},
                                                 min_interval=timedelta(microseconds=1)), anchor, **bounds)


# --- parse_instant / format_instant / check_timezone ------------------------------------------


@pytest.mark.parametrize("text, tz, expected", [
    ("2016-3-24 17:20:00", "UTC", "2016-03-24T17:20:00Z"),
    ("2016-3-24 17:20", "UTC", "2016-03-24T17:20:00Z"),
    ("2016-3-4 7:05:09", "Europe/Athens", "2016-03-04T05:05:09Z"),  # EET, +02:00
    ("2026-07-01 12:00:00", "America/New_York", "2026-07-01T16:00:00Z"),  # EDT, -04:00
])
def test_it_reads_mist_style_dates_in_the_schedule_timezone(text, tz, expected):
    assert format_instant(parse_instant(text, tz)) == expected


@pytest.mark.parametrize("text, expected", [
    ("2026-11-28T15:00:00Z", "2026-11-28T15:00:00Z"),
    ("2026-11-28T15:00:00+02:00", "2026-11-28T13:00:00Z"),
    ("2026-11-28T15:00:00-05:30", "2026-11-28T20:30:00Z"),
    ("2026-11-28T15:00:00.25Z", "2026-11-28T15:00:00.250000Z"),
])
def test_it_reads_iso_8601_with_an_offset_whatever_the_timezone(text, expected):
    assert format_instant(parse_instant(text, "Asia/Tokyo")) == expected


def test_it_reads_naive_iso_8601_in_the_schedule_timezone():
    assert parse_instant("2026-11-28T15:00:00", "Asia/Tokyo") == utc(2026, 11, 28, 6, 0)
    assert parse_instant("2026-11-28", "Asia/Tokyo") == utc(2026, 11, 27, 15, 0)  # midnight in Tokyo


@pytest.mark.parametrize("value, expected", [
    (1458839999, utc(2016, 3, 24, 17, 19, 59)),
    (1458839999.25, utc(2016, 3, 24, 17, 19, 59, 250000)),
    ("1458839999", utc(2016, 3, 24, 17, 19, 59)),
    (" 1458839999.5 ", utc(2016, 3, 24, 17, 19, 59, 500000)),
    (0, utc(1970, 1, 1)),
])
def test_it_reads_epoch_seconds_as_utc(value, expected):
    got = parse_instant(value, "Europe/Athens")
    assert got == expected and got.tzinfo is not None and got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("value", [
    True, False, None, "", "tomorrow", "2026-2-30 10:00", "2026-13-01 10:00", "2026-11-28 25:00",
    float("nan"), float("inf"), [2026, 1, 1], {"date": "2026-01-01"}, 10 ** 20,
])
def test_it_rejects_what_is_not_a_date_naming_the_field(value):
    with pytest.raises(TimeSpecError) as caught:
        parse_instant(value, "UTC", field="start_after")
    assert caught.value.field == "start_after"
    assert str(caught.value).startswith("start_after: ")
    assert "epoch seconds" in str(caught.value)


def test_it_moves_a_naive_date_in_a_spring_forward_gap_to_the_end_of_the_gap():
    # America/New_York 2026-03-08: 02:00 EST jumps to 03:00 EDT at 07:00:00Z.
    assert parse_instant("2026-03-08 02:30", "America/New_York") == utc(2026, 3, 8, 7, 0)
    assert parse_instant("2026-03-08 02:30:15.5", "America/New_York") == utc(2026, 3, 8, 7, 0)


def test_it_reads_an_ambiguous_naive_date_as_its_first_occurrence():
    # America/New_York 2026-11-01: 02:00 EDT falls back to 01:00 EST at 06:00:00Z,
    # so 01:30 happens at 05:30Z (EDT) and again at 06:30Z (EST).
    assert parse_instant("2026-11-01 01:30", "America/New_York") == utc(2026, 11, 1, 5, 30)


def test_it_formats_instants_as_utc_with_z_and_microseconds_only_when_set():
    athens = parse_instant("2026-06-01T10:00:00+03:00")
    assert format_instant(athens) == "2026-06-01T07:00:00Z"
    assert format_instant(utc(2026, 6, 1, 7, 0, 0, 250000)) == "2026-06-01T07:00:00.250000Z"
    assert format_instant(None) is None


def test_it_round_trips_formatted_instants():
    when = utc(2031, 2, 3, 4, 5, 6, 7)
    assert parse_instant(format_instant(when), "Pacific/Auckland") == when


def test_it_accepts_iana_timezones():
    assert check_timezone("Europe/Athens") == "Europe/Athens"
    assert check_timezone("UTC") == "UTC"


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "", "   ", "../../etc/passwd", 3, None])
def test_it_rejects_unknown_timezones(name):
    with pytest.raises(TimeSpecError) as caught:
        check_timezone(name)
    assert caught.value.field == "timezone" and str(caught.value).startswith("timezone: ")


@pytest.mark.parametrize("name", ["localtime", "posixrules", "posix/Europe/Athens", "right/UTC", "zone.tab"])
def test_it_rejects_zone_files_that_only_some_systems_have(name):
    # Names of the system's zone directory that the tzdata package (what every install can load) lacks.
    with pytest.raises(TimeSpecError, match=f"'{name}' is not a known IANA time zone"):
        check_timezone(name)


def test_every_zone_of_the_tzdata_package_is_accepted():
    from importlib.resources import files

    zones = files("tzdata").joinpath("zones").read_text().split()
    assert len(zones) > 500
    assert [z for z in zones if check_timezone(z) != z] == []


def test_it_rejects_an_unknown_timezone_when_parsing_a_naive_date():
    with pytest.raises(TimeSpecError, match="timezone"):
        parse_instant("2026-01-01 10:00", "Nowhere/Special")


# --- normalize_interval ---------------------------------------------------------------------


@pytest.mark.parametrize("period", PERIODS)
def test_it_accepts_every_period(period):
    assert normalize_interval({"every": 5, "period": period}, min_interval=timedelta(0)) == \
        {"every": 5, "period": period}


@pytest.mark.parametrize("every", [0, -1, 1.5, 2.0, "10", True, None])
def test_it_rejects_an_every_that_is_not_a_positive_integer(every):
    with pytest.raises(TimeSpecError) as caught:
        normalize_interval({"every": every, "period": "minutes"})
    assert caught.value.field == "schedule_entry.every"
    assert str(caught.value).startswith("schedule_entry.every: ")
    assert "positive integer" in str(caught.value)


def test_it_rejects_an_unknown_period_listing_the_known_ones():
    with pytest.raises(TimeSpecError) as caught:
        normalize_interval({"every": 1, "period": "weeks"})
    assert caught.value.field == "schedule_entry.period"
    assert all(p in str(caught.value) for p in PERIODS)


def test_it_rejects_unknown_interval_keys_naming_them():
    with pytest.raises(TimeSpecError, match="'offset'"):
        normalize_interval({"every": 1, "period": "hours", "offset": 3})


def test_it_rejects_an_interval_shorter_than_the_minimum():
    with pytest.raises(TimeSpecError) as caught:
        normalize_interval({"every": 30, "period": "seconds"}, min_interval=timedelta(minutes=1))
    assert caught.value.field == "schedule_entry" and "minimum" in str(caught.value) and "60" in str(caught.value)
    assert normalize_interval({"every": 1, "period": "minutes"}, min_interval=timedelta(minutes=1))["every"] == 1


def test_it_rejects_an_interval_that_is_not_an_object():
    with pytest.raises(TimeSpecError):
        normalize_interval([10, "minutes"])


# --- normalize_crontab ----------------------------------------------------------------------


def test_it_fills_missing_crontab_fields_with_star_and_returns_strings():
    assert normalize_crontab({"minute": 5, "hour": "*/2"}) == {
        "minute": "5", "hour": "*/2", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"}
    assert set(normalize_crontab({})) == set(CRONTAB_FIELDS)


@pytest.mark.parametrize("field, value, rule", [
    ("minute", "60", "0-59"),
    ("minute", "-1", "0-59"),
    ("hour", 24, "0-23"),
    ("hour", "1-25", "0-23"),
    ("day_of_week", "8", "0-7"),
    ("day_of_week", "funday", "sun-sat"),
    ("day_of_month", "0", "1-31"),
    ("day_of_month", "32", "1-31"),
    ("month_of_year", "13", "1-12"),
    ("month_of_year", "0", "1-12"),
    ("minute", "*/0", "at least 1"),
    ("minute", "1,,2", "0-59"),
    ("minute", "", "'*'"),
    ("hour", True, "string or an integer"),
    ("hour", 1.5, "string or an integer"),
    ("minute", "mon", "0-59"),
])
def test_it_rejects_an_invalid_crontab_field_naming_it_and_its_rule(field, value, rule):
    with pytest.raises(TimeSpecError) as caught:
        normalize_crontab({field: value})
    assert caught.value.field == f"schedule_entry.{field}"
    assert str(caught.value).startswith(f"schedule_entry.{field}: ")
    assert rule in str(caught.value)


def test_it_rejects_unknown_crontab_keys_naming_them():
    with pytest.raises(TimeSpecError, match="'second'"):
        normalize_crontab({"minute": 0, "second": 0})


@pytest.mark.parametrize("entry", [
    {"day_of_month": 31, "month_of_year": 2},
    {"day_of_month": "30", "month_of_year": "feb"},
    {"day_of_month": "31", "month_of_year": "apr,jun,sep,nov"},
])
def test_it_rejects_a_crontab_that_can_never_fire(entry):
    with pytest.raises(TimeSpecError) as caught:
        normalize_crontab(entry)
    assert caught.value.field == "schedule_entry" and "can never fire" in str(caught.value)


def test_it_accepts_february_29th_which_fires_in_leap_years():
    timing = crontab({"minute": 0, "hour": 0, "day_of_month": 29, "month_of_year": 2})
    assert iso(preview(timing, utc(2026, 1, 1), 2)) == ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]


# --- crontab fire times ---------------------------------------------------------------------


def test_it_fires_only_when_day_of_month_and_day_of_week_both_match():
    # Friday the 13th in 2026: February, March and November.
    timing = crontab({"minute": 0, "hour": 9, "day_of_month": 13, "day_of_week": "fri"})
    assert iso(preview(timing, utc(2026, 1, 1), 3)) == \
        ["2026-02-13T09:00:00Z", "2026-03-13T09:00:00Z", "2026-11-13T09:00:00Z"]


@pytest.mark.parametrize("sunday", [0, 7, "0", "7", "sun", "SUN", "sunday"])
def test_it_reads_0_and_7_and_sun_as_sunday(sunday):
    timing = crontab({"minute": 0, "hour": 6, "day_of_week": sunday})
    # 2026-03-01 is a Sunday.
    assert iso(preview(timing, utc(2026, 2, 26), 2)) == ["2026-03-01T06:00:00Z", "2026-03-08T06:00:00Z"]


def test_it_expands_day_name_ranges():
    timing = crontab({"minute": 0, "hour": 0, "day_of_week": "tue-fri"})
    days = [t.strftime("%a") for t in preview(timing, utc(2026, 3, 1), 6)]  # from a Sunday
    assert days == ["Tue", "Wed", "Thu", "Fri", "Tue", "Wed"]


def test_it_wraps_a_reversed_day_range_around_the_week_end():
    timing = crontab({"minute": 0, "hour": 0, "day_of_week": "fri-mon"})
    days = [t.strftime("%a") for t in preview(timing, utc(2026, 3, 3), 5)]  # from a Tuesday
    assert days == ["Fri", "Sat", "Sun", "Mon", "Fri"]


def test_it_expands_minute_steps_and_stepped_ranges():
    every_quarter = crontab({"minute": "*/15", "hour": 10})
    assert iso(preview(every_quarter, utc(2026, 5, 5, 9, 59), 5)) == [
        "2026-05-05T10:00:00Z", "2026-05-05T10:15:00Z", "2026-05-05T10:30:00Z", "2026-05-05T10:45:00Z",
        "2026-05-06T10:00:00Z"]
    stepped = crontab({"minute": "0-30/10,45", "hour": "8"})
    assert iso(preview(stepped, utc(2026, 5, 5), 5)) == [
        "2026-05-05T08:00:00Z", "2026-05-05T08:10:00Z", "2026-05-05T08:20:00Z", "2026-05-05T08:30:00Z",
        "2026-05-05T08:45:00Z"]


def test_it_reads_month_names_and_lists():
    timing = crontab({"minute": 0, "hour": 0, "day_of_month": 1, "month_of_year": "jan,jul"})
    assert iso(preview(timing, utc(2026, 2, 1), 3)) == [
        "2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z", "2027-07-01T00:00:00Z"]


def test_it_fires_strictly_after_the_given_instant():
    timing = crontab({"minute": 30})
    assert next_fire(timing, utc(2026, 5, 5, 10, 30)) == utc(2026, 5, 5, 11, 30)
    assert next_fire(timing, utc(2026, 5, 5, 10, 29, 59, 999999)) == utc(2026, 5, 5, 10, 30)


def test_it_reads_crontab_hours_as_wall_clock_in_the_timezone():
    timing = crontab({"minute": 0, "hour": 9}, tz="Asia/Tokyo")  # +09:00, no DST
    assert next_fire(timing, utc(2026, 5, 5)) == utc(2026, 5, 6, 0, 0)


# DST: Debian cron's rule. An entry whose minute and hour are both fixed (neither starts with '*')
# is a wall-clock appointment: a repeated wall time fires once, at its first occurrence, and one in
# a gap fires at the gap's end. Any other entry follows elapsed time: both copies of a repeated
# hour fire, and a gap adds nothing. Transition instants, from tzdata:
#   America/New_York    2026-03-08 07:00:00Z  02:00 EST   -> 03:00 EDT   (gap 02:00-03:00)
#                       2026-11-01 06:00:00Z  02:00 EDT   -> 01:00 EST   (01:00-02:00 twice)
#   Europe/Athens       2026-03-29 01:00:00Z  03:00 EET   -> 04:00 EEST  (gap 03:00-04:00)
#                       2026-10-25 01:00:00Z  04:00 EEST  -> 03:00 EET   (03:00-04:00 twice)
#                       2027-03-28 01:00:00Z  03:00 EET   -> 04:00 EEST
#   Europe/Berlin       2026-03-29 01:00:00Z  02:00 CET   -> 03:00 CEST
#   Australia/Lord_Howe 2026-04-04 15:00:00Z  02:00 +11   -> 01:30 +1030 (01:30-02:00 twice; 30-minute DST)
#                       2026-10-03 15:30:00Z  02:00 +1030 -> 02:30 +11   (gap 02:00-02:30)
#   Europe/Dublin       2026-03-29 01:00:00Z  01:00 GMT   -> 02:00 IST   (gap 01:00-02:00)
#                       2026-10-25 01:00:00Z  02:00 IST   -> 01:00 GMT   (01:00-02:00 twice)
#   (tzdata models Irish time with IST as standard and a negative DST in winter; only the offsets matter.)


# ---- entries with a fixed minute and hour: wall-clock appointments

def test_it_fires_a_new_york_job_in_the_spring_forward_gap_at_the_end_of_the_gap():
    daily = crontab({"minute": 30, "hour": 2}, tz="America/New_York")
    assert iso(preview(daily, utc(2026, 3, 7), 3)) == [
        "2026-03-07T07:30:00Z",  # 02:30 EST
        "2026-03-08T07:00:00Z",  # 02:30 does not exist: 03:00 EDT, the transition instant
        "2026-03-09T06:30:00Z",  # 02:30 EDT
    ]


def test_it_fires_several_fixed_gap_times_once_at_the_end_of_the_gap():
    in_gap = crontab({"minute": "0,20,40", "hour": 2}, tz="America/New_York")
    assert iso(preview(in_gap, utc(2026, 3, 8), 4)) == [
        "2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z", "2026-03-09T06:20:00Z", "2026-03-09T06:40:00Z"]


def test_it_fires_a_fixed_time_in_the_repeated_hour_once_at_its_first_occurrence():
    daily = crontab({"minute": 30, "hour": 1}, tz="America/New_York")
    assert iso(preview(daily, utc(2026, 10, 31, 12, 0), 3)) == [
        "2026-11-01T05:30:00Z",  # 01:30 EDT; 06:30Z (01:30 EST) does not fire
        "2026-11-02T06:30:00Z",  # 01:30 EST
        "2026-11-03T06:30:00Z",
    ]
    # From inside the repeated hour the first occurrence is past: the next fire is the next day.
    assert next_fire(daily, utc(2026, 11, 1, 6, 10)) == utc(2026, 11, 2, 6, 30)


def test_it_fires_an_athens_job_in_the_spring_forward_gap_at_the_transition_instant():
    daily = crontab({"minute": 30, "hour": 3}, tz="Europe/Athens")
    assert iso(preview(daily, utc(2026, 3, 28), 3)) == [
        "2026-03-28T01:30:00Z",  # 03:30 EET
        "2026-03-29T01:00:00Z",  # 03:30 does not exist: 04:00 EEST
        "2026-03-30T00:30:00Z",  # 03:30 EEST
    ]


def test_it_fires_a_fixed_athens_job_at_the_end_of_the_2027_gap_then_as_usual():
    # The issue's unchanged case: after 2027-03-27T12:00Z.
    daily = crontab({"minute": "30", "hour": "3"}, tz="Europe/Athens")
    assert iso(preview(daily, utc(2027, 3, 27, 12, 0), 2)) == ["2027-03-28T01:00:00Z", "2027-03-29T00:30:00Z"]


def test_it_fires_an_athens_job_in_the_repeated_hour_once_at_its_first_occurrence():
    daily = crontab({"minute": 30, "hour": 3}, tz="Europe/Athens")
    assert iso(preview(daily, utc(2026, 10, 24), 3)) == [
        "2026-10-24T00:30:00Z",  # 03:30 EEST
        "2026-10-25T00:30:00Z",  # 03:30 EEST, first occurrence; 01:30Z (03:30 EET) is skipped
        "2026-10-26T01:30:00Z",  # 03:30 EET
    ]


def test_it_fires_a_berlin_job_at_the_transition_instant_when_its_time_is_skipped():
    daily = crontab({"minute": 15, "hour": 2}, tz="Europe/Berlin")
    assert next_fire(daily, utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 0)


def test_it_fires_a_fixed_lord_howe_job_at_the_end_of_its_30_minute_gap():
    daily = crontab({"minute": 15, "hour": 2}, tz="Australia/Lord_Howe")
    assert iso(preview(daily, utc(2026, 10, 2, 12, 0), 3)) == [
        "2026-10-02T15:45:00Z",  # 02:15 +1030
        "2026-10-03T15:30:00Z",  # 02:15 does not exist: 02:30 +11, the transition instant
        "2026-10-04T15:15:00Z",  # 02:15 +11
    ]


def test_it_fires_a_fixed_lord_howe_job_in_the_repeated_half_hour_once():
    daily = crontab({"minute": 45, "hour": 1}, tz="Australia/Lord_Howe")
    assert iso(preview(daily, utc(2026, 4, 3, 12, 0), 3)) == [
        "2026-04-03T14:45:00Z",  # 01:45 +11
        "2026-04-04T14:45:00Z",  # 01:45 +11, first occurrence; 15:15Z (01:45 +1030) does not fire
        "2026-04-05T15:15:00Z",  # 01:45 +1030
    ]


def test_it_fires_a_fixed_dublin_job_across_tzdatas_negative_dst():
    daily = crontab({"minute": 30, "hour": 1}, tz="Europe/Dublin")
    assert iso(preview(daily, utc(2026, 3, 28, 0, 0), 3)) == [
        "2026-03-28T01:30:00Z",  # 01:30 GMT
        "2026-03-29T01:00:00Z",  # 01:30 does not exist: 02:00 IST
        "2026-03-30T00:30:00Z",  # 01:30 IST
    ]
    assert iso(preview(daily, utc(2026, 10, 24, 12, 0), 2)) == [
        "2026-10-25T00:30:00Z",  # 01:30 IST, first occurrence; 01:30Z (01:30 GMT) does not fire
        "2026-10-26T01:30:00Z",  # 01:30 GMT
    ]


# ---- entries whose minute or hour starts with '*': elapsed time

def test_an_hourly_new_york_job_fires_in_both_copies_of_the_repeated_hour():
    # The issue's case: {"minute": "0"} after 2026-11-01T04:30Z.
    hourly = crontab({"minute": "0"}, tz="America/New_York")
    assert iso(preview(hourly, utc(2026, 11, 1, 4, 30), 4)) == [
        "2026-11-01T05:00:00Z",  # 01:00 EDT
        "2026-11-01T06:00:00Z",  # 01:00 EST
        "2026-11-01T07:00:00Z",  # 02:00 EST
        "2026-11-01T08:00:00Z",  # 03:00 EST
    ]


def test_a_half_hourly_job_in_hour_1_fires_four_times_on_the_fall_back_night():
    # The issue's case: {"minute": "*/30", "hour": "1"} after 2026-11-01T04:00Z, count 5.
    timing = crontab({"minute": "*/30", "hour": "1"}, tz="America/New_York")
    assert iso(preview(timing, utc(2026, 11, 1, 4, 0), 5)) == [
        "2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z", "2026-11-01T06:30:00Z",
        "2026-11-02T06:00:00Z"]


def test_an_hourly_athens_job_adds_nothing_for_the_spring_forward_gap():
    # The issue's case: {"minute": "30"} after 2027-03-28T00:00Z; 03:30 does not exist that night.
    hourly = crontab({"minute": "30"}, tz="Europe/Athens")
    assert iso(preview(hourly, utc(2027, 3, 28, 0, 0), 3)) == [
        "2027-03-28T00:30:00Z",  # 02:30 EET
        "2027-03-28T01:30:00Z",  # 04:30 EEST
        "2027-03-28T02:30:00Z",  # 05:30 EEST
    ]


def test_an_hourly_new_york_job_stays_hourly_across_spring_forward():
    hourly = crontab({"minute": 30}, tz="America/New_York")
    assert iso(preview(hourly, utc(2026, 3, 8, 5, 0), 4)) == [
        "2026-03-08T05:30:00Z",  # 00:30 EST
        "2026-03-08T06:30:00Z",  # 01:30 EST
        "2026-03-08T07:30:00Z",  # 03:30 EDT: 02:30 does not exist and adds nothing
        "2026-03-08T08:30:00Z",  # 04:30 EDT
    ]


@pytest.mark.parametrize("after, expected", [
    (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 30)),     # at 01:30 EDT: next is 01:30 EST
    (utc(2026, 11, 1, 6, 0), utc(2026, 11, 1, 6, 30)),      # at the transition
    (utc(2026, 11, 1, 6, 10), utc(2026, 11, 1, 6, 30)),     # inside the second copy
    (utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7, 30)),
    (utc(2026, 11, 1, 6, 59, 59), utc(2026, 11, 1, 7, 30)),
])
def test_it_finds_the_next_elapsed_fire_from_inside_the_repeated_hour(after, expected):
    hourly = crontab({"minute": 30}, tz="America/New_York")
    assert next_fire(hourly, after) == expected


def test_it_fires_every_minute_of_both_copies_of_the_repeated_hour():
    per_minute = crontab({"minute": "*", "hour": 1}, tz="America/New_York")
    times = preview(per_minute, utc(2026, 11, 1, 4, 59), 121)
    assert times[0] == utc(2026, 11, 1, 5, 0) and times[59] == utc(2026, 11, 1, 5, 59)  # 01:xx EDT
    assert times[60] == utc(2026, 11, 1, 6, 0) and times[119] == utc(2026, 11, 1, 6, 59)  # 01:xx EST
    assert times[120] == utc(2026, 11, 2, 6, 0)


def test_an_elapsed_job_in_the_gap_hour_does_not_fire_that_night():
    in_gap = crontab({"minute": "*/20", "hour": 2}, tz="America/New_York")
    assert iso(preview(in_gap, utc(2026, 3, 8), 2)) == ["2026-03-09T06:00:00Z", "2026-03-09T06:20:00Z"]


def test_a_lord_howe_quarter_hourly_job_fires_in_both_copies_of_the_repeated_half_hour():
    timing = crontab({"minute": "*/15", "hour": "1"}, tz="Australia/Lord_Howe")
    assert iso(preview(timing, utc(2026, 4, 4, 13, 50), 7)) == [
        "2026-04-04T14:00:00Z",  # 01:00 +11
        "2026-04-04T14:15:00Z",
        "2026-04-04T14:30:00Z",  # 01:30 +11
        "2026-04-04T14:45:00Z",  # 01:45 +11
        "2026-04-04T15:00:00Z",  # 01:30 +1030, the second copy
        "2026-04-04T15:15:00Z",  # 01:45 +1030
        "2026-04-05T14:30:00Z",  # next night, 01:00 +1030
    ]


def test_a_lord_howe_quarter_hourly_job_skips_the_30_minute_gap():
    timing = crontab({"minute": "*/15"}, tz="Australia/Lord_Howe")
    assert iso(preview(timing, utc(2026, 10, 3, 14, 50), 5)) == [
        "2026-10-03T15:00:00Z",  # 01:30 +1030
        "2026-10-03T15:15:00Z",  # 01:45 +1030
        "2026-10-03T15:30:00Z",  # 02:30 +11: 02:00 and 02:15 do not exist
        "2026-10-03T15:45:00Z",  # 02:45 +11
        "2026-10-03T16:00:00Z",
    ]


def test_an_hourly_dublin_job_follows_elapsed_time_across_negative_dst():
    hourly = crontab({"minute": "0"}, tz="Europe/Dublin")
    assert iso(preview(hourly, utc(2026, 3, 28, 23, 30), 3)) == [
        "2026-03-29T00:00:00Z",  # 00:00 GMT
        "2026-03-29T01:00:00Z",  # 02:00 IST (01:00 does not exist)
        "2026-03-29T02:00:00Z",  # 03:00 IST
    ]
    assert iso(preview(hourly, utc(2026, 10, 24, 23, 30), 3)) == [
        "2026-10-25T00:00:00Z",  # 01:00 IST
        "2026-10-25T01:00:00Z",  # 01:00 GMT, the second copy
        "2026-10-25T02:00:00Z",  # 02:00 GMT
    ]


def test_an_elapsed_job_months_ahead_finds_the_first_copy_of_a_repeated_hour():
    # From January (EST) to a fire only in 01:xx on November 1st: the EDT copy comes first.
    timing = crontab({"minute": "*/30", "hour": "1", "day_of_month": "1", "month_of_year": "11"},
                     tz="America/New_York")
    assert iso(preview(timing, utc(2026, 1, 10), 5)) == [
        "2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z", "2026-11-01T06:30:00Z",
        "2027-11-01T05:00:00Z"]


def test_it_never_fires_a_crontab_before_start_after_but_may_fire_at_it():
    timing = crontab({"minute": 0}, start_after=utc(2026, 6, 1, 10, 0))
    assert next_fire(timing, utc(2026, 5, 1)) == utc(2026, 6, 1, 10, 0)
    later = crontab({"minute": 0}, start_after=utc(2026, 6, 1, 10, 0, 1))
    assert next_fire(later, utc(2026, 5, 1)) == utc(2026, 6, 1, 11, 0)


def test_it_stops_a_crontab_at_expires():
    timing = crontab({"minute": 0}, expires=utc(2026, 6, 1, 12, 0))
    assert iso(preview(timing, utc(2026, 6, 1, 9, 30), 10)) == [
        "2026-06-01T10:00:00Z", "2026-06-01T11:00:00Z"]  # 12:00 itself is not strictly before expires
    assert next_fire(timing, utc(2026, 6, 1, 12, 0)) is None


# --- interval fire times --------------------------------------------------------------------


def test_it_anchors_an_interval_at_creation_without_firing_at_creation():
    timing = interval(10, "minutes")
    assert next_fire(timing, CREATED) == CREATED + timedelta(minutes=10)
    assert next_fire(timing, CREATED - timedelta(days=1)) == CREATED + timedelta(minutes=10)
    assert next_fire(timing, CREATED + timedelta(minutes=10)) == CREATED + timedelta(minutes=20)
    assert next_fire(timing, CREATED + timedelta(minutes=25, seconds=1)) == CREATED + timedelta(minutes=30)


def test_it_anchors_an_interval_at_start_after_and_fires_at_start_after():
    start = utc(2026, 2, 1, 8, 7, 3)
    timing = interval(3, "hours", start_after=start)
    assert next_fire(timing, CREATED) == start
    assert next_fire(timing, start) == start + timedelta(hours=3)
    assert next_fire(timing, start + timedelta(hours=4)) == start + timedelta(hours=6)


def test_it_keeps_the_interval_grid_a_year_after_the_anchor():
    timing = interval(7, "minutes")
    after = CREATED + timedelta(days=400, seconds=17)
    fire = next_fire(timing, after)
    assert fire > after and fire - after <= timedelta(minutes=7)
    assert (fire - CREATED) % timedelta(minutes=7) == timedelta(0)


def test_it_counts_microsecond_intervals_exactly():
    timing = interval(7, "microseconds")
    after = CREATED + timedelta(days=365)
    # 365 days = 31_536_000_000_000 us = 7 * 4_505_142_857_142 + 6, so the grid is 1 us ahead.
    assert next_fire(timing, after) == after + timedelta(microseconds=1)
    assert iso(preview(timing, CREATED, 3)) == [
        "2026-01-01T12:00:00.000007Z", "2026-01-01T12:00:00.000014Z", "2026-01-01T12:00:00.000021Z"]


def test_it_treats_an_interval_day_as_24_hours_across_dst():
    timing = interval(1, "days", anchor=utc(2026, 3, 7, 12, 0))
    assert next_fire(timing, utc(2026, 3, 8, 13, 0)) == utc(2026, 3, 9, 12, 0)


def test_it_stops_an_interval_at_expires():
    timing = interval(1, "hours", expires=CREATED + timedelta(hours=2, minutes=30))
    assert iso(preview(timing, CREATED, 5)) == ["2026-01-01T13:00:00Z", "2026-01-01T14:00:00Z"]


def test_it_gives_no_fire_time_beyond_the_calendar():
    timing = interval(36500, "days", anchor=utc(9990, 1, 1))
    assert next_fire(timing, utc(9995, 1, 1)) is None


# --- one_off fire times ---------------------------------------------------------------------


def test_it_fires_a_one_off_once_in_the_future():
    when = utc(2026, 7, 4, 15, 0)
    timing = Timing("one_off", when, CREATED)
    assert next_fire(timing, CREATED) == when
    assert next_fire(timing, when) is None
    assert preview(timing, CREATED, 3) == [when]


def test_it_keeps_a_one_off_within_start_after_and_expires():
    when = utc(2026, 7, 4, 15, 0)
    assert next_fire(Timing("one_off", when, CREATED, start_after=when + timedelta(seconds=1)), CREATED) is None
    assert next_fire(Timing("one_off", when, CREATED, start_after=when), CREATED) == when
    assert next_fire(Timing("one_off", when, CREATED, expires=when), CREATED) is None
    assert next_fire(Timing("one_off", when, CREATED, expires=when + timedelta(seconds=1)), CREATED) == when


# --- preview and inputs ---------------------------------------------------------------------


def test_it_previews_the_requested_number_of_times_in_order():
    timing = crontab({"minute": "0", "hour": "*/6"})
    times = preview(timing, utc(2026, 1, 1, 1, 0), 4)
    assert iso(times) == ["2026-01-01T06:00:00Z", "2026-01-01T12:00:00Z", "2026-01-01T18:00:00Z",
                          "2026-01-02T00:00:00Z"]
    assert preview(timing, utc(2026, 1, 1), 0) == []


def test_it_returns_aware_utc_whatever_the_input_offset():
    athens = timezone(timedelta(hours=3))
    fire = next_fire(interval(1, "hours"), datetime(2026, 1, 1, 15, 30, tzinfo=athens))
    assert fire == utc(2026, 1, 1, 13, 0) and fire.tzinfo == UTC


def test_it_rejects_a_naive_after():
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire(interval(1, "hours"), datetime(2026, 1, 1))


# --- jitter ---------------------------------------------------------------------------------


def jittered(jitter, key="3bb46efc882c4b44b21826e5e98f7c28", **kw):
    return Timing("interval", normalize_interval({"every": 1, "period": "hours"}), CREATED, jitter=jitter, key=key, **kw)


def test_jitter_delays_each_fire_by_a_stable_offset_below_the_jitter():
    timing = jittered(600)
    nominal = [CREATED + timedelta(hours=k) for k in range(1, 201)]
    times = preview(timing, CREATED, 200)
    delays = [t - n for t, n in zip(times, nominal)]
    assert all(timedelta(0) <= d < timedelta(seconds=600) for d in delays)
    assert len(set(delays)) > 150  # spread, not one offset for all
    assert preview(timing, CREATED, 200) == times  # the same answer every time
    # Within 600 s, a uniform spread puts about half of the delays in each half.
    assert 60 < sum(d < timedelta(seconds=300) for d in delays) < 140


def test_jitter_offsets_are_written_down_so_they_never_change_between_releases():
    # BLAKE2b-64 of "<key>|<microseconds since the epoch>", modulo jitter in microseconds.
    assert jitter_offset("3bb46efc882c4b44b21826e5e98f7c28", utc(2026, 1, 1, 13, 0), 600) == \
        jitter_offset("3bb46efc882c4b44b21826e5e98f7c28", utc(2026, 1, 1, 13, 0), 600)
    import hashlib
    digest = hashlib.blake2b(b"3bb46efc882c4b44b21826e5e98f7c28|1767272400000000", digest_size=8).digest()
    expected = int.from_bytes(digest, "big") % 600_000_000
    assert jitter_offset("3bb46efc882c4b44b21826e5e98f7c28", utc(2026, 1, 1, 13, 0), 600) == \
        timedelta(microseconds=expected)


def test_jitter_differs_between_schedules_and_is_zero_without_jitter():
    a, b = preview(jittered(3600, key="a" * 32), CREATED, 5), preview(jittered(3600, key="b" * 32), CREATED, 5)
    assert a != b
    assert preview(jittered(0), CREATED, 2) == [CREATED + timedelta(hours=1), CREATED + timedelta(hours=2)]


def test_next_fire_with_jitter_is_the_next_delayed_instant_from_anywhere():
    timing = jittered(1800)
    times = preview(timing, CREATED, 10)
    for earlier, later in zip(times, times[1:]):
        assert next_fire(timing, earlier) == later
        assert next_fire(timing, earlier + (later - earlier) / 2) == later
        assert next_fire(timing, later - timedelta(microseconds=1)) == later


def test_a_delayed_fire_past_expires_does_not_fire():
    timing = jittered(3599, expires=CREATED + timedelta(hours=1, seconds=1))
    fire = next_fire(jittered(3599), CREATED)
    expected = [fire] if fire < CREATED + timedelta(hours=1, seconds=1) else []
    assert preview(timing, CREATED, 3) == expected


def test_min_spacing_is_the_period_or_the_shortest_crontab_gap():
    assert min_spacing(interval(90, "seconds")) == timedelta(seconds=90)
    assert min_spacing(crontab({"minute": "0,45"})) == timedelta(minutes=15)
    assert min_spacing(crontab({"minute": "30", "hour": "2"})) == timedelta(days=1)
    assert min_spacing(crontab({"minute": "0", "hour": "23,1"})) == timedelta(hours=2)  # across midnight
    assert min_spacing(Timing("one_off", CREATED, CREATED)) is None


# --- blocks (calendars, pause) ---------------------------------------------------------------


class Blocks:
    """A stand-in for a compiled calendar: fixed windows."""

    def __init__(self, *spans, reason="test"):
        self.spans = spans
        self.reason = reason
        self.asked = 0

    def window(self, t):
        self.asked += 1
        for start, end in self.spans:
            if start <= t and (end is None or t < end):
                return Window(start, end, {"reason": self.reason})
        return None


def test_a_fire_inside_a_window_is_not_a_fire():
    block = Blocks((utc(2026, 1, 1, 14, 0), utc(2026, 1, 1, 16, 0)))
    timing = Timing("interval", normalize_interval({"every": 1, "period": "hours"}), CREATED, blocks=(block,))
    assert iso(preview(timing, CREATED, 3)) == ["2026-01-01T13:00:00Z", "2026-01-01T16:00:00Z", "2026-01-01T17:00:00Z"]


def test_a_long_window_is_jumped_over_not_walked_through():
    # Every second, with a week excluded: the search asks the window once, not 604,800 times.
    block = Blocks((utc(2026, 1, 2), utc(2026, 1, 9)))
    timing = Timing("interval", normalize_interval({"every": 1, "period": "seconds"}), CREATED, blocks=(block,))
    assert next_fire(timing, utc(2026, 1, 1, 23, 59, 59)) == utc(2026, 1, 9)
    assert block.asked <= 3


def test_a_window_without_end_leaves_no_fire():
    timing = Timing("interval", normalize_interval({"every": 1, "period": "hours"}), CREATED,
                    blocks=(Blocks((utc(2026, 1, 1, 15, 0), None)),))
    assert iso(preview(timing, CREATED, 5)) == ["2026-01-01T13:00:00Z", "2026-01-01T14:00:00Z"]


def test_preview_can_list_the_blocked_fires_with_their_reason():
    timing = Timing("interval", normalize_interval({"every": 1, "period": "hours"}), CREATED,
                    blocks=(Blocks((utc(2026, 1, 1, 14, 0), utc(2026, 1, 1, 16, 0)), reason="holiday"),))
    skipped = []
    assert iso(preview(timing, CREATED, 2, skipped)) == ["2026-01-01T13:00:00Z", "2026-01-01T16:00:00Z"]
    assert [(format_instant(t), r["reason"]) for t, r in skipped] == [
        ("2026-01-01T14:00:00Z", "holiday"), ("2026-01-01T15:00:00Z", "holiday")]


def test_blocks_see_the_delayed_instant():
    # A fire whose delay lands it inside a window does not fire: blackout windows hold for the real instant.
    timing = jittered(3599)
    fire = next_fire(timing, CREATED)
    blocked_timing = jittered(3599, blocks=(Blocks((fire, fire + timedelta(microseconds=1))),))
    assert next_fire(blocked_timing, CREATED) == next_fire(timing, fire)


# --- last fire, counting --------------------------------------------------------------------


@pytest.mark.parametrize("t, expected", [
    (utc(2026, 1, 1, 13, 0), utc(2026, 1, 1, 13, 0)),
    (utc(2026, 1, 1, 13, 59), utc(2026, 1, 1, 13, 0)),
    (utc(2026, 3, 1, 0, 30), utc(2026, 3, 1, 0, 0)),
    (utc(2027, 1, 1, 12, 0), utc(2027, 1, 1, 12, 0)),
])
def test_last_fire_at_or_before_finds_the_newest_fire(t, expected):
    assert last_fire_at_or_before(interval(1, "hours"), t, utc(2026, 1, 1, 13, 0)) == expected


def test_last_fire_at_or_before_skips_blocked_fires():
    timing = Timing("crontab", normalize_crontab({"minute": "*/10"}), CREATED,
                    blocks=(Blocks((utc(2026, 1, 1, 14, 0), utc(2026, 1, 2)),),))
    assert last_fire_at_or_before(timing, utc(2026, 1, 1, 20, 0), utc(2026, 1, 1, 13, 0)) == utc(2026, 1, 1, 13, 50)


def test_count_fires_counts_in_the_half_open_span():
    assert count_fires(interval(1, "minutes"), CREATED + timedelta(minutes=1), CREATED + timedelta(minutes=10)) == (9, False)
    assert count_fires(crontab({"minute": "*/15"}), utc(2026, 1, 1, 13, 0), utc(2026, 1, 1, 15, 0)) == (8, False)
    assert count_fires(crontab({"minute": "*"}), utc(2026, 1, 1), utc(2026, 1, 2), cap=100) == (100, True)
    # The interval shortcut agrees with counting one by one.
    hourly = interval(7, "minutes")
    assert count_fires(hourly, CREATED + timedelta(minutes=7), CREATED + timedelta(days=2))[0] == \
        len(preview(hourly, CREATED, 1000)) - len([t for t in preview(hourly, CREATED, 1000) if t >= CREATED + timedelta(days=2)])


def test_an_elapsed_fire_past_the_transition_table_still_gets_the_right_offset(monkeypatch):
    import web.timemath as tm

    # As if New York's change of 2026-03-08 were further away than the years searched for transitions.
    monkeypatch.setattr(tm, "TRANSITION_HORIZON", -1)
    timing = crontab({"minute": "*/30", "hour": "9", "day_of_month": "1", "month_of_year": "7"}, tz="America/New_York")
    assert next_fire(timing, utc(2026, 1, 10)) == utc(2026, 7, 1, 13, 0)  # 09:00 EDT, not 09:00 EST
