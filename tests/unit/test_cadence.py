"""A schedule's cadence in words, as the console shows it."""
from __future__ import annotations

import pytest

from web.cadence import describe


def cron(minute="*", hour="*", day_of_week="*", day_of_month="*", month_of_year="*"):
    return {"minute": minute, "hour": hour, "day_of_week": day_of_week, "day_of_month": day_of_month,
            "month_of_year": month_of_year}


@pytest.mark.parametrize("entry, words", [
    ({"every": 2, "period": "hours"}, "every 2 hours"),
    ({"every": 1, "period": "days"}, "every day"),
    ({"every": 90, "period": "seconds"}, "every 90 seconds"),
])
def test_it_says_an_interval_as_every_n_periods(entry, words):
    assert describe("interval", entry) == words


@pytest.mark.parametrize("entry, tz, words", [
    (cron("0", "2"), "Europe/Athens", "every day at 02:00 Europe/Athens"),
    (cron("30", "8", day_of_week="mon-fri"), "UTC", "every Monday to Friday at 08:30 UTC"),
    (cron("0", "9", day_of_week="0,6"), "UTC", "every Sunday and Saturday at 09:00 UTC"),
    (cron("0", "0", day_of_month="1"), "UTC", "on day 1 of every month at 00:00 UTC"),
    (cron("0", "0", day_of_month="1,15", month_of_year="jan"), "UTC", "on days 1 and 15 of the month in January at 00:00 UTC"),
    (cron("*/5"), "UTC", "every 5 minutes UTC"),
    (cron(), "UTC", "every minute UTC"),
    (cron("15", "*/2", day_of_week="7"), "UTC", "every 2 hours at minute 15 on Sunday UTC"),
    (cron("45"), "Asia/Tokyo", "every hour at minute 45 Asia/Tokyo"),
])
def test_it_says_a_crontab_in_words_with_its_timezone(entry, tz, words):
    assert describe("crontab", entry, tz) == words


@pytest.mark.parametrize("entry", [
    cron("0,30", "2"),
    cron("0", "2", day_of_week="mon", day_of_month="13"),
    cron("0", "2", day_of_week="*/2"),
])
def test_it_shows_an_irregular_crontab_as_its_fields_in_cron_order(entry):
    assert describe("crontab", entry, "Europe/Athens") == (
        f"cron {entry['minute']} {entry['hour']} {entry['day_of_month']} {entry['month_of_year']} "
        f"{entry['day_of_week']} Europe/Athens")


def test_it_says_a_one_off_in_the_schedules_timezone():
    assert describe("one_off", "2026-12-24T18:00:00Z", "UTC") == "once on 2026-12-24 18:00 UTC"
    assert describe("one_off", "2026-12-24T18:00:00Z", "Europe/Athens") == "once on 2026-12-24 20:00 Europe/Athens"
    assert describe("one_off", "2026-12-24T18:00:30Z", None) == "once on 2026-12-24 18:00:30 UTC"
