"""schedules.fires_until: the fires of many schedules in one time order, computed lazily."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import islice
from types import SimpleNamespace

from web import schedules, timemath

NOW = datetime(2026, 3, 2, 10, 0, 30, tzinfo=timezone.utc)
DAY = NOW + timedelta(hours=24)


def row(name, schedule_type="interval", entry=None, **fields):
    """A stored schedule as the time math reads it (the attributes of the model)."""
    base = {"name": name, "schedule_type": schedule_type, "schedule_entry": entry or {"every": 1, "period": "hours"},
            "created_at": NOW - timedelta(days=3, minutes=7), "timezone": "UTC", "start_after": None,
            "expires": None, "enabled": True, "max_run_count": None, "total_run_count": 0}
    return SimpleNamespace(**{**base, **fields})


def test_it_merges_the_fires_of_all_rows_in_time_order_within_the_window():
    hourly = row("hourly")
    nightly = row("nightly", "crontab", {"minute": "0", "hour": "2", "day_of_week": "*", "day_of_month": "*",
                                        "month_of_year": "*"})
    once = row("once", "one_off", "2026-03-02T18:00:00Z")
    got = list(schedules.fires_until([hourly, nightly, once], NOW, DAY))
    expected = sorted((t, s.name) for s in (hourly, nightly, once)
                      for t in schedules.upcoming(s, NOW, 100) if t < DAY)
    assert [(t, s.name) for t, s in got] == expected
    assert len(got) == 24 + 1 + 1


def test_it_stops_a_row_at_what_is_left_of_its_max_run_count_and_skips_inactive_rows():
    rows = [row("two-left", max_run_count=5, total_run_count=3), row("used-up", max_run_count=2, total_run_count=2),
            row("disabled", enabled=False), row("expired", expires=NOW - timedelta(days=1))]
    assert [s.name for _t, s in schedules.fires_until(rows, NOW, DAY)] == ["two-left", "two-left"]


def test_it_computes_one_fire_per_fire_taken_plus_one_per_row(monkeypatch):
    calls = []
    real = timemath.next_fire

    def counted(timing, after):
        calls.append(after)
        return real(timing, after)

    monkeypatch.setattr(timemath, "next_fire", counted)
    rows = [row(f"every-minute-{i}", entry={"every": 1, "period": "minutes"}) for i in range(100)]
    taken = list(islice(schedules.fires_until(rows, NOW, DAY), 20))
    assert len(taken) == 20 and taken == sorted(taken, key=lambda pair: pair[0])
    assert len(calls) <= 100 + 20


def test_a_row_that_cannot_be_computed_is_reported_and_the_others_still_fire():
    broken = row("broken", timezone="Not/A_Zone", schedule_type="crontab", entry={"minute": "0"})
    errors = []
    got = list(schedules.fires_until([broken, row("hourly")], NOW, DAY, errors=errors))
    assert len(got) == 24 and {s.name for _t, s in got} == {"hourly"}
    assert [(s.name, "Not/A_Zone" in str(exc)) for s, exc in errors] == [("broken", True)]
