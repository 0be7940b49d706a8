"""Process heartbeats on SQLite and PostgreSQL: rows written, beaten, counted while fresh, removed at exit."""
from __future__ import annotations

import os
import threading
import time
from datetime import timedelta

from sqlalchemy import select, update

from web.dispatcher import Dispatcher
from web.heartbeats import DISPATCHER, STALE, WORKER, Beater, Heartbeat, fleet, forget_dead, utcnow
from web.models import ProcessHeartbeat


def rows(env):
    with env.state.db.session() as s:
        return s.scalars(select(ProcessHeartbeat)).all()


def age(env, heartbeat_id, seconds):
    """Move a row's beat back in time, as if its process had been silent that long."""
    with env.state.db.transaction() as s:
        s.execute(update(ProcessHeartbeat).where(ProcessHeartbeat.id == heartbeat_id)
                  .values(beat_at=utcnow() - timedelta(seconds=seconds)))


def test_a_worker_heartbeat_is_counted_with_its_slots_while_fresh(env):
    a, b = Heartbeat(env.state.db, WORKER, slots=2), Heartbeat(env.state.db, WORKER, slots=3)
    a.start()
    b.start()
    [row, _] = sorted(rows(env), key=lambda r: r.slots)
    assert (row.kind, row.pid, row.slots) == (WORKER, os.getpid(), 2) and row.host
    with env.state.db.session() as s:
        now = fleet(s, utcnow())
    assert (now.workers, now.slots, now.dispatchers, now.last_tick) == (2, 5, 0, None)
    age(env, b.id, STALE.total_seconds() + 1)
    with env.state.db.session() as s:
        now = fleet(s, utcnow())
    assert (now.workers, now.slots) == (1, 2)


def test_a_beat_moves_the_row_forward_and_writes_it_again_when_it_was_forgotten(env):
    h = Heartbeat(env.state.db, DISPATCHER)
    h.start()
    assert h.beat() is False  # not due yet: no write every loop
    age(env, h.id, 120)
    assert h.beat(force=True) is True
    [row] = rows(env)
    assert utcnow() - row.beat_at < timedelta(seconds=30)
    with env.state.db.transaction() as s:
        s.query(ProcessHeartbeat).delete()
    assert h.beat(force=True) is True and [r.id for r in rows(env)] == [h.id]
    h.stop()
    assert rows(env) == []


def test_forgetting_removes_only_long_silent_processes(env):
    old, fresh = Heartbeat(env.state.db, WORKER), Heartbeat(env.state.db, WORKER)
    old.start()
    fresh.start()
    age(env, old.id, 2 * 3600)
    with env.state.db.transaction() as s:
        assert forget_dead(s, utcnow()) == 1
    assert [r.id for r in rows(env)] == [fresh.id]


def test_a_running_dispatcher_records_its_ticks_and_removes_its_row_when_it_stops(env):
    d = Dispatcher(env.state, lambda ids: None, pending=lambda: 0)
    stop = threading.Event()
    t = threading.Thread(target=d.run, args=(stop,), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not rows(env) and time.monotonic() < deadline:
            time.sleep(0.05)
        [row] = rows(env)
        assert row.kind == DISPATCHER and row.id == d.heartbeat.id
        with env.state.db.session() as s:
            assert fleet(s, utcnow()).dispatchers == 1
    finally:
        stop.set()
        d.wake()
        t.join(timeout=10)
    assert rows(env) == []


def test_a_beater_thread_writes_its_row_at_once_and_deletes_it_at_stop(env):
    b = Beater(env.state.db, WORKER, slots=4).start()
    try:
        [row] = rows(env)
        assert row.slots == 4
    finally:
        b.stop()
    assert rows(env) == []
