"""The dispatcher's claim, on SQLite and PostgreSQL: one run per fire, never twice, edits seen at once."""
from __future__ import annotations

import threading

import pytest
from collections import Counter
from datetime import timedelta

from sqlalchemy import select, update

from web import make_state
from web.dispatcher import ERROR_BACKOFF, Dispatcher
from web.models import Event, Run, Schedule
from web.worker import claim as worker_claim

from .conftest import T0


def runs_of(env, schedule_id):
    with env.state.db.session() as s:
        return s.scalars(select(Run).where(Run.schedule_id == schedule_id).order_by(Run.created_at, Run.id)).all()


def dispatcher(env, sink=None):
    sink = sink if sink is not None else []
    return Dispatcher(env.state, sink.extend, clock=lambda: T0), sink


def test_it_fires_a_due_schedule_once_and_advances_it_in_the_same_claim(env):
    sid = env.add(now=T0 - timedelta(minutes=1))
    d, sink = dispatcher(env)
    queued = d.claim(T0 + timedelta(milliseconds=5))
    assert len(queued) == 1
    sch = env.schedule(sid)
    assert sch.next_run_at == T0 + timedelta(minutes=1)
    assert sch.total_run_count == 1 and sch.last_run_at == T0 + timedelta(milliseconds=5)
    [run] = runs_of(env, sid)
    assert (run.status, run.trigger, run.scheduled_for) == ("queued", "scheduled", T0)
    assert d.claim(T0 + timedelta(seconds=30)) == []


def test_it_does_not_claim_what_is_not_due_or_disabled(env):
    env.add(now=T0)  # first fire at T0 + 1 min
    env.add(now=T0 - timedelta(minutes=5), enabled=False)
    d, _ = dispatcher(env)
    assert d.claim(T0 + timedelta(seconds=59)) == []


def test_an_edit_takes_effect_at_the_next_claim(env):
    sid = env.add(now=T0 - timedelta(minutes=1))
    with env.state.db.transaction() as s:
        s.execute(update(Schedule).where(Schedule.id == sid).values(next_run_at=None, enabled=False))
    d, _ = dispatcher(env)
    assert d.claim(T0 + timedelta(seconds=1)) == []


def test_two_dispatchers_never_create_the_same_run_twice(env, database_url):
    ids = [env.add(now=T0 - timedelta(minutes=1)) for _ in range(60)]
    other = make_state(env.state.config)  # a second engine: its own connections, like another process
    claimed: list[str] = []
    lock = threading.Lock()

    def work(state):
        d = Dispatcher(state, lambda run_ids: None)
        for _ in range(5):
            got = d.claim(T0 + timedelta(seconds=1))
            with lock:
                claimed.extend(got)

    threads = [threading.Thread(target=work, args=(st,)) for st in (env.state, other, env.state, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.db.dispose()
    assert len(claimed) == len(set(claimed)) == 60
    with env.state.db.session() as s:
        per_schedule = Counter(s.scalars(select(Run.schedule_id)))
    assert set(per_schedule) == set(ids) and set(per_schedule.values()) == {1}


def test_fires_missed_within_the_grace_coalesce_into_one_run_labelled_with_the_newest(env):
    sid = env.add(now=T0 - timedelta(minutes=1))  # due at T0, then every minute
    d, _ = dispatcher(env)
    now = T0 + timedelta(minutes=3, seconds=10)  # four fires passed, the oldest 190 s ago (< 300 s)
    assert len(d.claim(now)) == 1
    [run] = runs_of(env, sid)
    assert run.status == "queued" and run.scheduled_for == T0 + timedelta(minutes=3)
    assert env.schedule(sid).next_run_at == T0 + timedelta(minutes=4)


def test_fires_older_than_the_grace_are_recorded_missed_and_not_run(env):
    sid = env.add(now=T0 - timedelta(hours=2), schedule_type="crontab",
                  schedule_entry={"minute": "0", "hour": "*"}, misfire_grace=60)
    with env.state.db.transaction() as s:  # the service was down: the fire at T0 - 1 h never happened
        s.execute(update(Schedule).where(Schedule.id == sid).values(next_run_at=T0 - timedelta(hours=1)))
    d, _ = dispatcher(env)
    assert d.claim(T0 + timedelta(minutes=30)) == []
    [run] = runs_of(env, sid)
    assert run.status == "missed" and run.scheduled_for == T0 - timedelta(hours=1)
    assert env.schedule(sid).next_run_at == T0 + timedelta(hours=1)


def test_a_late_fire_records_every_fire_older_than_the_grace_and_runs_the_newest(env):
    sid = env.add(now=T0 - timedelta(minutes=1), misfire_grace=120)
    d, _ = dispatcher(env)
    # Due at T0, every minute; at T0 + 10:30 the grace reaches back to T0 + 8:30: T0 .. T0 + 8:00 (9 fires)
    # are missed, T0 + 9:00 and T0 + 10:00 coalesce into one run for T0 + 10:00.
    assert len(d.claim(T0 + timedelta(minutes=10, seconds=30))) == 1
    statuses = sorted((r.status, r.scheduled_for) for r in runs_of(env, sid))
    assert statuses == [("missed", T0), ("queued", T0 + timedelta(minutes=10))]
    with env.state.db.session() as s:
        [event] = s.scalars(select(Event).where(Event.schedule_id == sid, Event.type == "schedule_missed")).all()
    assert (event.data["missed_count"], event.data["first_missed"], event.data["last_missed"]) == \
        (9, "2026-06-01T12:00:00Z", "2026-06-01T12:08:00Z")
    assert "9 fires missed" in [r.error for r in runs_of(env, sid) if r.status == "missed"][0]
    assert env.schedule(sid).next_run_at == T0 + timedelta(minutes=11)


def test_a_one_off_runs_once_then_turns_inactive(env):
    sid = env.add(now=T0 - timedelta(minutes=1), schedule_type="one_off",
                  schedule_entry="2026-06-01 12:00:00")
    d, _ = dispatcher(env)
    assert len(d.claim(T0 + timedelta(seconds=1))) == 1
    assert env.schedule(sid).next_run_at is None
    assert d.claim(T0 + timedelta(days=1)) == []


def test_max_run_count_stops_the_schedule(env):
    sid = env.add(now=T0 - timedelta(minutes=1), max_run_count=2, concurrency="allow")
    d, _ = dispatcher(env)
    assert len(d.claim(T0)) == 1
    assert len(d.claim(T0 + timedelta(minutes=1))) == 1
    assert env.schedule(sid).next_run_at is None
    assert d.claim(T0 + timedelta(minutes=2)) == []


def test_forbid_records_a_skipped_fire_while_the_previous_run_goes_on(env):
    sid = env.add(now=T0 - timedelta(minutes=1))
    d, _ = dispatcher(env)
    [first] = d.claim(T0)
    assert worker_claim(env.state, first, T0)  # the worker has it: running
    assert d.claim(T0 + timedelta(minutes=1)) == []
    assert [r.status for r in runs_of(env, sid)] == ["running", "skipped"]


def test_allow_runs_fires_side_by_side(env):
    sid = env.add(now=T0 - timedelta(minutes=1), concurrency="allow")
    d, _ = dispatcher(env)
    d.claim(T0)
    d.claim(T0 + timedelta(minutes=1))
    assert [r.status for r in runs_of(env, sid)] == ["queued", "queued"]


def test_a_duplicate_message_does_nothing(env):
    env.add(now=T0 - timedelta(minutes=1))
    d, _ = dispatcher(env)
    [run_id] = d.claim(T0)
    assert worker_claim(env.state, run_id, T0) is True
    assert worker_claim(env.state, run_id, T0) is False


def test_the_sweep_requeues_lost_messages_and_interrupts_dead_workers(env):
    sid = env.add(now=T0 - timedelta(minutes=1), concurrency="allow")
    d, sink = dispatcher(env)
    lost, dead = d.claim(T0), d.claim(T0 + timedelta(minutes=1))
    assert worker_claim(env.state, dead[0], T0 + timedelta(minutes=1))
    requeued, interrupted = d.sweep(T0 + timedelta(minutes=5))
    assert (requeued, interrupted) == (1, 1)
    assert sink == lost
    statuses = {r.id: r.status for r in runs_of(env, sid)}
    assert statuses == {lost[0]: "queued", dead[0]: "interrupted"}


def test_the_sweep_requeues_a_lost_run_once_then_fails_it_when_the_queue_is_empty(env):
    sid = env.add(now=T0 - timedelta(minutes=1))
    sink, pending = [], [0]
    d = Dispatcher(env.state, sink.extend, clock=lambda: T0, pending=lambda: pending[0])
    [run_id] = d.claim(T0)
    sink.clear()  # the claim's message: taken by nobody from here on, as if lost
    assert d.sweep(T0 + timedelta(minutes=2)) == (1, 0)
    assert sink == [run_id]
    # Lost again; while the queue still holds messages it may only be waiting in a backlog: left queued.
    pending[0] = 3
    assert d.sweep(T0 + timedelta(minutes=4)) == (0, 0)
    assert sink == [run_id]  # not re-enqueued a second time
    [run] = runs_of(env, sid)
    assert (run.status, run.requeues) == ("queued", 1)
    # The queue ran empty and the run is still queued: its message is gone, it ends failed.
    pending[0] = 0
    assert d.sweep(T0 + timedelta(minutes=6)) == (0, 1)
    [run] = runs_of(env, sid)
    assert run.status == "failed" and run.finished_at == T0 + timedelta(minutes=6)
    assert "re-enqueued once" in run.error and "nothing was done" in run.error
    [event] = events_of(env, sid, "schedule_finished")
    assert event.data["status"] == "failed"
    assert d.sweep(T0 + timedelta(minutes=8)) == (0, 0) and sink == [run_id]


def test_the_sweep_gives_up_on_no_run_when_the_queue_cannot_be_counted(env):
    env.add(now=T0 - timedelta(minutes=1))
    sink = []

    def unreachable():
        raise ConnectionError("queue down")

    d = Dispatcher(env.state, sink.extend, clock=lambda: T0, pending=unreachable)
    d.claim(T0)
    assert d.sweep(T0 + timedelta(minutes=2)) == (1, 0)
    assert d.sweep(T0 + timedelta(minutes=4)) == (0, 0)


def test_the_claim_stores_times_in_the_same_form_as_the_orm(env, database_url):
    """The SQLite claim writes through the DBAPI cursor: its datetimes must read and compare like the ORM's."""
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL stores timestamps, not text; its claim goes through SQLAlchemy Core")
    import re
    import sqlite3

    sid = env.add(now=T0 - timedelta(minutes=1))  # whole seconds: the case that once lost its .000000
    d, _ = dispatcher(env)
    d.claim(T0)
    raw = sqlite3.connect(database_url.split("///", 1)[1])
    (created,) = raw.execute("SELECT created_at FROM schedules WHERE id = ?", (sid,)).fetchone()
    (next_run,) = raw.execute("SELECT next_run_at FROM schedules WHERE id = ?", (sid,)).fetchone()
    (scheduled,) = raw.execute("SELECT scheduled_for FROM runs WHERE schedule_id = ?", (sid,)).fetchone()
    raw.close()
    form = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")
    assert form.fullmatch(created) and form.fullmatch(next_run) and form.fullmatch(scheduled)
    with env.state.db.session() as s:  # a range filter on the stored text finds the run at its exact time
        assert s.scalar(select(Run.id).where(Run.scheduled_for >= T0, Run.scheduled_for <= T0)) is not None


# ------------------------------------------------------------------ one bad schedule never stops the others

def _poison(env, sid, **values):
    """Write values straight into a stored schedule, as a bad migration or an older release could have."""
    with env.state.db.transaction() as s:
        s.execute(update(Schedule).where(Schedule.id == sid).values(**values))


def events_of(env, schedule_id, type_):
    from web.models import Event

    with env.state.db.session() as s:
        return s.scalars(select(Event).where(Event.schedule_id == schedule_id, Event.type == type_)).all()


def test_a_schedule_whose_zone_cannot_be_loaded_is_quarantined_and_the_others_fire(env):
    bad = env.add(now=T0 - timedelta(minutes=1), schedule_type="crontab", schedule_entry={"minute": "*"},
                  timezone="Europe/Athens", concurrency="allow")
    good = [env.add(now=T0 - timedelta(minutes=1), concurrency="allow") for _ in range(3)]
    _poison(env, bad, timezone="Not/A_Zone", next_run_at=T0)
    d, _ = dispatcher(env)
    now = T0 + timedelta(seconds=1)
    queued = d.claim(now)
    assert len(queued) == 3 and all(len(runs_of(env, g)) == 1 for g in good)
    sch = env.schedule(bad)
    assert runs_of(env, bad) == [] and sch.total_run_count == 0
    assert sch.next_run_at == now + ERROR_BACKOFF
    assert "cannot compute the next fire" in sch.last_error and "Not/A_Zone" in sch.last_error
    [event] = events_of(env, bad, "schedule_error")
    assert event.data["error"] == sch.last_error and event.org_id == env.org_id
    # The next claims fire the healthy schedules again and leave the quarantined one alone.
    assert len(d.claim(T0 + timedelta(minutes=1))) == 3
    assert env.schedule(bad).next_run_at == now + ERROR_BACKOFF


def test_a_quarantined_schedule_that_computes_again_fires_and_its_error_is_cleared(env):
    sid = env.add(now=T0 - timedelta(minutes=1), schedule_type="crontab", schedule_entry={"minute": "*"})
    _poison(env, sid, timezone="Not/A_Zone", next_run_at=T0)
    d, _ = dispatcher(env)
    d.claim(T0)
    assert env.schedule(sid).last_error
    _poison(env, sid, timezone="UTC", next_run_at=T0 + timedelta(minutes=1))  # an operator repaired the row
    assert len(d.claim(T0 + timedelta(minutes=1))) == 1
    sch = env.schedule(sid)
    assert sch.last_error is None and sch.next_run_at == T0 + timedelta(minutes=2)


def test_a_corrupt_entry_is_quarantined_and_the_others_fire(env):
    bad = env.add(now=T0 - timedelta(minutes=1))
    good = env.add(now=T0 - timedelta(minutes=1))
    _poison(env, bad, schedule_entry={"every": "often"})  # valid JSON, not an interval
    d, _ = dispatcher(env)
    assert len(d.claim(T0)) == 1 and len(runs_of(env, good)) == 1
    assert env.schedule(bad).last_error and env.schedule(bad).next_run_at == T0 + ERROR_BACKOFF


def test_a_row_that_cannot_even_be_read_is_quarantined_on_sqlite(env, database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's json column cannot hold text that is not JSON")
    import sqlite3

    bad = env.add(now=T0 - timedelta(minutes=1))
    good = env.add(now=T0 - timedelta(minutes=1))
    raw = sqlite3.connect(database_url.split("///", 1)[1])
    with raw:
        raw.execute("UPDATE schedules SET schedule_entry = '{not json' WHERE id = ?", (bad,))
    raw.close()
    d, _ = dispatcher(env)
    assert len(d.claim(T0)) == 1 and len(runs_of(env, good)) == 1
    raw = sqlite3.connect(database_url.split("///", 1)[1])
    last_error, next_run = raw.execute("SELECT last_error, next_run_at FROM schedules WHERE id = ?", (bad,)).fetchone()
    raw.close()
    assert "cannot be read" in last_error and next_run.startswith((T0 + ERROR_BACKOFF).strftime("%Y-%m-%d %H:%M:%S"))


def test_the_sweep_ends_the_machines_of_an_interrupted_run(env):
    from web.models import RunMachine

    sid = env.add(now=T0 - timedelta(minutes=1))
    d, _ = dispatcher(env)
    [run_id] = d.claim(T0)
    assert worker_claim(env.state, run_id, T0)
    with env.state.db.transaction() as s:
        s.add(RunMachine(run_id=run_id, machine_key="m1", cloud_id=env.cloud_id, machine_id="i-1", status="running"))
        s.add(RunMachine(run_id=run_id, machine_key="m2", cloud_id=env.cloud_id, machine_id="i-2", status="succeeded"))
    assert d.sweep(T0 + timedelta(minutes=5)) == (0, 1)
    with env.state.db.session() as s:
        machines = {m.machine_key: m for m in s.scalars(select(RunMachine).where(RunMachine.run_id == run_id))}
    assert machines["m1"].status == "interrupted" and "stopped answering" in machines["m1"].error
    assert machines["m2"].status == "succeeded"
    [event] = events_of(env, sid, "schedule_interrupted")
    assert event.data["reason"] == "worker_lost"


class Statements:
    """Counts the SQL statements SQLAlchemy sends on an engine that mention a table."""

    def __init__(self, engine, table):
        from sqlalchemy import event

        self.engine, self.table, self.seen = engine, table, []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany):
        if self.table in statement:
            self.seen.append(statement)

    def close(self):
        from sqlalchemy import event

        event.remove(self.engine, "before_cursor_execute", self._record)


def add_calendar(env, entries, tz="UTC"):
    from web.calendars import check_entries
    from web.crypto import new_id
    from web.models import Calendar

    with env.state.db.transaction() as s:
        cid = new_id()
        s.add(Calendar(id=cid, org_id=env.org_id, name=cid, timezone=tz, entries=check_entries(entries, tz, T0),
                       created_at=T0, updated_at=T0))
    return cid


def test_a_claim_skips_fires_a_calendar_excludes_reading_calendars_once_per_claim(env):
    cid = add_calendar(env, [{"from": "2026-06-01 12:01", "to": "2026-06-01 12:05"}])
    with_calendar = [env.add(now=T0 - timedelta(minutes=1), exclude_calendars=[cid], concurrency="allow")
                     for _ in range(3)]
    plain = env.add(now=T0 - timedelta(minutes=1), concurrency="allow")
    d, _ = dispatcher(env)
    watch = Statements(env.state.db.writer, "FROM calendars")
    try:
        assert len(d.claim(T0)) == 4
        queries = len(watch.seen)
        assert 1 <= queries <= 2  # updated_at of all three schedules' calendar; its entries when not cached yet
        assert all(env.schedule(sid).next_run_at == T0 + timedelta(minutes=5) for sid in with_calendar)
        assert env.schedule(plain).next_run_at == T0 + timedelta(minutes=1)
        watch.seen.clear()
        assert len(d.claim(T0 + timedelta(minutes=1))) == 1  # only the plain schedule is due
        assert watch.seen == []  # no schedule with calendars was due: no calendar query at all
        assert len(d.claim(T0 + timedelta(minutes=5))) == 4
        assert len(watch.seen) == 1  # compiled calendars are cached by id and updated_at
    finally:
        watch.close()


def test_a_claim_sees_a_calendar_changed_after_next_run_at_was_stored(env):
    from web.models import Calendar

    cid = add_calendar(env, [])
    sid = env.add(now=T0 - timedelta(minutes=1), exclude_calendars=[cid])
    d, _ = dispatcher(env)
    assert len(d.claim(T0)) == 1
    with env.state.db.transaction() as s:  # another process edits the calendar without touching next_run_at
        cal = s.get(Calendar, cid)
        cal.entries = [{"from": "2026-06-01 12:00", "to": "2026-06-01 12:10"}]
        cal.updated_at = T0 + timedelta(seconds=1)
    assert d.claim(T0 + timedelta(minutes=1)) == []
    assert env.schedule(sid).next_run_at == T0 + timedelta(minutes=10)
    assert [r.status for r in runs_of(env, sid)] == ["queued"]


def test_skip_next_is_counted_down_in_the_claim(env):
    sid = env.add(now=T0 - timedelta(minutes=1), concurrency="allow")
    with env.state.db.transaction() as s:
        s.execute(update(Schedule).where(Schedule.id == sid).values(skip_next=1, pause_note="maintenance"))
    d, _ = dispatcher(env)
    assert d.claim(T0) == []
    assert env.schedule(sid).skip_next == 0
    assert len(d.claim(T0 + timedelta(minutes=1))) == 1
    assert [(r.status, r.error) for r in runs_of(env, sid)] == [
        ("skipped", "skip_next: maintenance (0 more to skip)"), ("queued", None)]
