"""web.schedules without a database: the fire decision (decide), table-tested for grace, coalescing, missed
records, forbid, skip_next, pause, calendars and jitter; and fires_until, the fires of many schedules in one
time order, computed lazily. The time is always passed in."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import islice
from types import SimpleNamespace

import pytest

from web import schedules, timemath
from web.timemath import Window, format_instant, jitter_offset

UTC = timezone.utc
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def schedule(**fields):
    """A schedule as decide() reads it: every minute from T0 (created a minute before), grace 300 s, due at T0."""
    base = dict(id="a" * 32, schedule_type="interval", schedule_entry={"every": 1, "period": "minutes"},
                timezone="UTC", created_at=T0 - MIN, start_after=None, expires=None, jitter=0,
                exclude_calendars=None, paused_at=None, paused_until=None, pause_note=None, skip_next=0,
                misfire_grace=300, total_run_count=0, last_run_at=None, next_run_at=T0, max_run_count=None,
                enabled=True)
    base.update(fields)
    return SimpleNamespace(**base)


class Closed:
    """A compiled calendar stand-in excluding [start, end)."""

    def __init__(self, start, end):
        self.start, self.end = start, end

    def window(self, t):
        if self.start <= t < self.end:
            return Window(self.start, self.end, {"reason": "calendar", "calendar_id": "c" * 32})
        return None


def ended(decision):
    return [(status, format_instant(at)) for status, at, _error, _data in decision.ended]


CASES = [
    # (what, schedule fields, now, busy, run_for, ended, next_run_at, total_run_count)
    ("on time", {}, T0 + timedelta(milliseconds=3), False, T0, [], T0 + MIN, 1),
    ("forbid while a run goes on", {}, T0, True, None, [("skipped", "2026-06-01T12:00:00Z")], T0 + MIN, 0),
    ("fires within the grace coalesce, labelled with the newest", {}, T0 + 3 * MIN + timedelta(seconds=10), False,
     T0 + 3 * MIN, [], T0 + 4 * MIN, 1),
    ("fires older than the grace: one missed record, the newest within the grace runs", {"misfire_grace": 120},
     T0 + timedelta(minutes=10, seconds=30), False, T0 + 10 * MIN, [("missed", "2026-06-01T12:00:00Z")],
     T0 + 11 * MIN, 1),
    ("every fire older than the grace: missed only", {"schedule_type": "crontab",
     "schedule_entry": {"minute": "0", "hour": "*", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"},
     "misfire_grace": 60, "next_run_at": T0 - timedelta(hours=1)}, T0 + 30 * MIN, False, None,
     [("missed", "2026-06-01T11:00:00Z")], T0 + timedelta(hours=1), 0),
    ("skip_next skips and counts down", {"skip_next": 2, "pause_note": "patching"}, T0, False, None,
     [("skipped", "2026-06-01T12:00:00Z")], T0 + MIN, 0),
    ("skip_next wins over forbid", {"skip_next": 1}, T0, True, None, [("skipped", "2026-06-01T12:00:00Z")], T0 + MIN, 0),
    ("max_run_count reached by this run", {"max_run_count": 3, "total_run_count": 2}, T0, False, T0, [], None, 3),
    ("a one_off runs once", {"schedule_type": "one_off", "schedule_entry": "2026-06-01T12:00:00Z"}, T0, False, T0, [],
     None, 1),
    ("a pause that ended runs as usual", {"paused_at": T0 - timedelta(hours=2), "paused_until": T0 - MIN}, T0, False,
     T0, [], T0 + MIN, 1),
    ("a pause set since next_run_at was stored holds the fire", {"paused_at": T0 - MIN, "paused_until": T0 + 5 * MIN},
     T0, False, None, [], T0 + 5 * MIN, 0),
    ("a pause without end leaves no next fire", {"paused_at": T0 - MIN}, T0, False, None, [], None, 0),
]


@pytest.mark.parametrize("what, fields, now, busy, run_for, expected_ended, next_run_at, count", CASES,
                         ids=[c[0] for c in CASES])
def test_the_fire_decision(what, fields, now, busy, run_for, expected_ended, next_run_at, count):
    decision = schedules.decide(schedule(**fields), now, busy)
    assert decision.run_for == run_for
    assert ended(decision) == expected_ended
    assert decision.next_run_at == next_run_at
    assert decision.total_run_count == count
    assert decision.last_run_at == (now if run_for is not None else None)


def test_the_missed_record_carries_the_count_and_the_first_and_last_instant():
    decision = schedules.decide(schedule(misfire_grace=120), T0 + timedelta(minutes=10, seconds=30), False)
    [(status, at, error, data)] = decision.ended
    assert (status, at) == ("missed", T0)
    assert data == {"missed_count": 9, "count_capped": False, "first_missed": "2026-06-01T12:00:00Z",
                    "last_missed": "2026-06-01T12:08:00Z"}
    assert error.startswith("9 fires missed, from 2026-06-01T12:00:00Z to 2026-06-01T12:08:00Z")


def test_a_day_of_missed_fires_every_second_is_counted_exactly():
    sched = schedule(schedule_entry={"every": 1, "period": "seconds"}, created_at=T0 - timedelta(seconds=1))
    decision = schedules.decide(sched, T0 + timedelta(days=1), False)
    [(status, at, _error, data)] = decision.ended
    # Fires T0 .. T0 + 1 day - 301 s are older than the 300 s grace: 86,100 of them.
    assert data["missed_count"] == 86_100 and data["last_missed"] == "2026-06-02T11:54:59Z"
    assert decision.run_for == T0 + timedelta(days=1)


def test_a_single_missed_fire_says_by_how_much():
    sched = schedule(schedule_entry={"every": 1, "period": "hours"}, created_at=T0 - timedelta(hours=1),
                     misfire_grace=60)
    decision = schedules.decide(sched, T0 + 30 * MIN, False)
    assert [(s, e) for s, _, e, _ in decision.ended] == [("missed", "missed by 1800 s (misfire_grace is 60 s)")]
    assert decision.next_run_at == T0 + timedelta(hours=1)


def test_skip_next_records_the_note_and_what_is_left():
    decision = schedules.decide(schedule(skip_next=2, pause_note="patching"), T0, False)
    assert decision.skip_next == 1
    assert decision.ended[0][2] == "skip_next: patching (1 more to skip)"


def test_a_calendar_window_over_the_due_fire_holds_it_and_moves_next_run_at_past_the_window():
    # The calendar changed after next_run_at was stored: the claim's calendars win.
    closed = Closed(T0 - MIN, T0 + 10 * MIN)
    decision = schedules.decide(schedule(exclude_calendars=["c" * 32]), T0, False, {"c" * 32: closed})
    assert decision.run_for is None and decision.ended == []
    assert decision.next_run_at == T0 + 10 * MIN


def test_fires_in_a_calendar_window_are_neither_run_nor_recorded_missed():
    # Down from T0 to T0 + 20 min, grace 60 s; T0 + 1 .. T0 + 15 min were excluded.
    closed = Closed(T0 + MIN, T0 + 15 * MIN)
    decision = schedules.decide(schedule(exclude_calendars=["c" * 32], misfire_grace=60), T0 + 20 * MIN, False,
                                {"c" * 32: closed})
    [(status, at, _error, data)] = decision.ended
    # Missed: T0 and T0 + 15 .. 18 min (5 fires); T0 + 19 and + 20 min are within the grace: one run for + 20.
    assert (status, at, data["missed_count"], data["last_missed"]) == ("missed", T0, 5, "2026-06-01T12:18:00Z")
    assert decision.run_for == T0 + 20 * MIN


def test_a_jittered_schedule_runs_at_its_delayed_instant_and_moves_to_the_next_delayed_one():
    nominal = T0 + MIN
    due = nominal + jitter_offset("a" * 32, nominal, 30)
    decision = schedules.decide(schedule(jitter=30, next_run_at=due), due, False)
    following = T0 + 2 * MIN
    assert decision.run_for == due
    assert decision.next_run_at == following + jitter_offset("a" * 32, following, 30)


# ------------------------------------------------------------------ fires_until

NOW = datetime(2026, 3, 2, 10, 0, 30, tzinfo=timezone.utc)
DAY = NOW + timedelta(hours=24)


def row(name, schedule_type="interval", entry=None, **fields):
    """A stored schedule as the time math reads it (the attributes of the model)."""
    base = {"name": name, "schedule_type": schedule_type, "schedule_entry": entry or {"every": 1, "period": "hours"},
            "created_at": NOW - timedelta(days=3, minutes=7), "timezone": "UTC", "start_after": None,
            "expires": None, "enabled": True, "max_run_count": None, "total_run_count": 0, "id": name,
            "jitter": 0, "exclude_calendars": None, "paused_at": None, "paused_until": None, "pause_note": None,
            "skip_next": 0}
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


def test_it_leaves_out_the_fires_skip_next_skips_and_those_a_pause_holds():
    skipping = row("skipping", skip_next=2)
    paused = row("paused", paused_at=NOW - timedelta(hours=1), paused_until=NOW + timedelta(hours=12, minutes=30))
    got = [(t, s.name) for t, s in schedules.fires_until([skipping, paused], NOW, DAY)]
    assert [t for t, name in got if name == "skipping"] == schedules.upcoming(skipping, NOW, 100)[:22]
    assert len([t for t, name in got if name == "skipping"]) == 22
    assert [t for t, name in got if name == "paused"] == [t for t in schedules.upcoming(paused, NOW, 100) if t < DAY]
    assert min(t for t, name in got if name == "paused") > NOW + timedelta(hours=12, minutes=30)
