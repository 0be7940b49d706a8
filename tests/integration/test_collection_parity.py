"""The schedule module normalises values exactly as the service stores them, or an unchanged playbook
would report a change. Compared here with the service's own time math over many inputs.
"""
from __future__ import annotations

import itertools
import sys
from datetime import datetime, timedelta, timezone

import pytest

from tests.harness.collection import make_collections_path

from web import timemath


@pytest.fixture(scope="module")
def mod(tmp_path_factory):
    """The schedule module, imported from this checkout as the collection."""
    base = make_collections_path(tmp_path_factory.mktemp("parity"))
    sys.path.insert(0, str(base))
    try:
        from ansible_collections.cloudcron.scheduler.plugins.modules import schedule

        yield schedule
    finally:
        sys.path.remove(str(base))


ZONES = ("UTC", "Europe/Athens", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/Sao_Paulo")


def _wall_times():
    """Wall times around every DST transition of 2030 in ZONES, plus plain ones, in the forms users write."""
    from zoneinfo import ZoneInfo

    instants = set()
    for zone in ZONES:
        tz = ZoneInfo(zone)
        hour = datetime(2030, 1, 1, tzinfo=timezone.utc)
        previous = hour.astimezone(tz).utcoffset()
        while hour.year == 2030:
            offset = hour.astimezone(tz).utcoffset()
            if offset != previous:
                local = hour.astimezone(tz).replace(tzinfo=None)
                for minutes in (-90, -45, -30, -1, 0, 1, 15, 30, 59, 60, 90):
                    instants.add(local + timedelta(minutes=minutes))
                previous = offset
            hour += timedelta(hours=1)
    instants.update({datetime(2030, 1, 1, 10, 0), datetime(2030, 7, 15, 3, 30, 15, 250000)})
    forms = []
    for naive in sorted(instants):
        forms.append("%d-%d-%d %d:%02d" % (naive.year, naive.month, naive.day, naive.hour, naive.minute))
        forms.append(naive.isoformat())
        forms.append(naive.isoformat() + "+05:30")
        forms.append(naive.isoformat() + "Z")
    return forms


DATES = _wall_times() + [1893492000, 1893492000.25, "1893492000", "2030-01-01", "2030-01-01T10:00:00-0300"]


def test_dates_normalise_like_the_service_in_every_zone(mod):
    mismatches = []
    for value, zone in itertools.product(DATES, ZONES):
        expected = timemath.format_instant(timemath.parse_instant(value, zone))
        got = mod.normalize_date(value, zone)
        if got != expected:
            mismatches.append((value, zone, got, expected))
    assert mismatches == []


CRONTABS = [
    {"minute": 30, "hour": "2"},
    {"minute": "*/15", "hour": " 1 - 5 ", "day_of_week": "MON-FRI"},
    {"day_of_week": "Sun,sat", "month_of_year": "JAN-mar"},
    {"minute": "0", "hour": "0", "day_of_month": "1,15", "month_of_year": "*/2", "day_of_week": "*"},
    {"day_of_week": 7},
]


@pytest.mark.parametrize("entry", CRONTABS)
def test_crontab_entries_normalise_like_the_service(mod, entry):
    assert mod.normalize_entry("crontab", entry, "UTC") == timemath.normalize_crontab(entry)


@pytest.mark.parametrize("entry", [{"every": 2, "period": "minutes"}, {"every": 10, "period": " Hours "},
                                   {"every": 1, "period": "DAYS"}])
def test_interval_entries_normalise_like_the_service(mod, entry):
    assert mod.normalize_entry("interval", entry, "UTC") == timemath.normalize_interval(entry)
