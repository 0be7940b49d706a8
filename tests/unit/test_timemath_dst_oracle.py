"""The crontab time math against cronsim, an independent implementation of Debian cron's DST rules.

cronsim ORs the two day fields when both are restricted (cron's rule) where cloudcron ANDs them
(Celery's), so the generated entries restrict at most one of them; around every DST transition of
several zones, the next fire times must be the same instants.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from web.timemath import Timing, normalize_crontab, preview

UTC = timezone.utc
# Australia/Lord_Howe is left out: cronsim 2.8 gets its 30-minute shifts wrong (after 2026-04-04T13:07Z,
# {"minute": "*/20", "hour": "2"} fires at 15:30Z, 02:00 +1030, where cronsim answers 16:10Z; after
# 2026-10-03T14:34Z, {"minute": "*", "hour": "23"} fires at 2026-10-04T12:00Z, 23:00 +11, where cronsim
# answers 12:30Z). Its instants are written down in test_timemath.py instead. Pacific/Chatham (+1245/+1345)
# likewise: after 2026-09-26T14:02Z (03:47 +1345, just after its gap), {"minute": "5,35", "hour": "*/2"}
# fires at 14:20Z, 04:05 +1345, where cronsim answers 16:20Z.
ZONES = ["America/New_York", "Europe/Athens", "Europe/Dublin", "America/Santiago", "Pacific/Auckland",
         "Asia/Tehran", "Europe/London", "America/Havana", "UTC"]
MINUTES = ["0", "30", "*/15", "*", "5,35", "*/20", "0-10/5", "45", "15,45"]
HOURS = ["*", "1", "2", "*/2", "1,2,3", "0-3", "3", "23", "0"]
DAYS_OF_MONTH = ["*", "*", "1,15", "28-31"]
MONTHS = ["*", "*", "3,4,10,11", "9-12"]
DAYS_OF_WEEK = ["*", "*", "1-5", "0,6"]


def transitions(zone: str, years=(2026, 2027)) -> list[datetime]:
    """The instants at which `zone` changes its offset (found by bisection; written down in test_timemath.py for some)."""
    tz = ZoneInfo(zone)
    found = []
    for year in years:
        t = datetime(year, 1, 1, tzinfo=UTC)
        while t.year == year:
            n = t + timedelta(hours=6)
            if t.astimezone(tz).utcoffset() != n.astimezone(tz).utcoffset():
                lo, hi = t, n
                while hi - lo > timedelta(seconds=1):
                    mid = lo + (hi - lo) / 2
                    lo, hi = (mid, hi) if mid.astimezone(tz).utcoffset() == t.astimezone(tz).utcoffset() else (lo, mid)
                found.append(hi)
            t = n
    return found


def cases(seed=20261101, per_zone=40):
    rng = random.Random(seed)
    for zone in ZONES:
        moments = transitions(zone) or [datetime(2026, 3, 29, 1, tzinfo=UTC)]
        for _ in range(per_zone):
            entry = {"minute": rng.choice(MINUTES), "hour": rng.choice(HOURS), "month_of_year": rng.choice(MONTHS)}
            if rng.random() < 0.5:
                entry["day_of_month"] = rng.choice(DAYS_OF_MONTH)
            else:
                entry["day_of_week"] = rng.choice(DAYS_OF_WEEK)
            start = rng.choice(moments) + timedelta(minutes=rng.randint(-300, 180), seconds=rng.choice([0, 0, 17]))
            yield zone, entry, start


def cronsim_times(entry: dict, zone: str, after: datetime, count: int) -> list[datetime]:
    fields = normalize_crontab(entry)
    expression = " ".join(fields[k] for k in ("minute", "hour", "day_of_month", "month_of_year", "day_of_week"))
    it = CronSim(expression, after.astimezone(ZoneInfo(zone)))
    # Started inside the second copy of a repeated hour, cronsim first yields a fixed entry's first
    # occurrence, which is already past: keep only what is strictly after `after`, as next_fire does.
    times = (t.astimezone(UTC) for t in it)
    return [t for t, _ in zip((t for t in times if t > after), range(count))]


@pytest.mark.parametrize("zone, entry, start", list(cases()))
def test_it_agrees_with_cronsim_around_dst_transitions(zone, entry, start):
    timing = Timing("crontab", normalize_crontab(entry), datetime(2020, 1, 1, tzinfo=UTC), zone)
    ours = preview(timing, start, 12)
    assert ours == cronsim_times(entry, zone, start, 12), (zone, entry, start)
