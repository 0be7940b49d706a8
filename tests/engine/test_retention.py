"""Retention on SQLite and PostgreSQL: which runs go, which stay, and that each batch is its own transaction."""
from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select

from web.crypto import new_id
from web.models import Delivery, Event, Run, RunMachine
from web.retention import prune_batch, sweep

from .conftest import T0

NOW = T0 + timedelta(days=100)


def _runs(env, schedule_id, ages_days, status="succeeded"):
    """Add one run per age (days before NOW) with a machine row, an event and a delivery; their ids, in that order."""
    ids = []
    with env.state.db.transaction() as s:
        for age in ages_days:
            at = NOW - timedelta(days=age)
            run = Run(id=new_id(), org_id=env.org_id, schedule_id=schedule_id, trigger="scheduled", scheduled_for=at,
                      created_at=at, status=status, finished_at=None if status in ("queued", "running") else at)
            s.add(run)
            s.add(RunMachine(run_id=run.id, machine_key=f"{run.id}:m", status="succeeded"))
            s.add(Event(org_id=env.org_id, time=at, type="schedule_finished", schedule_id=schedule_id, run_id=run.id,
                        data={}))
            s.add(Delivery(id=new_id(), org_id=env.org_id, run_id=run.id, channel_id=new_id(), channel_name="c",
                           kind="run", event={}, status="delivered", attempts=[], created_at=at))
            ids.append(run.id)
    return ids


def _left(env, model, column, ids):
    with env.state.db.session() as s:
        return set(s.scalars(select(column).where(column.in_(ids))))


def _configure(env, days=30, keep=1000, batch=200):
    env.state.config.retention_days = days
    env.state.config.retention_runs_per_schedule = keep
    env.state.config.retention_batch = batch


def test_runs_older_than_the_retention_go_with_their_rows(env):
    _configure(env, days=30)
    sch = env.add()
    old = _runs(env, sch, [31, 45, 90])
    young = _runs(env, sch, [1, 29])
    pruned = sweep(env.state, NOW)
    assert pruned.runs == 3 and pruned.by_reason == {"age": 3, "count": 0}
    assert _left(env, Run, Run.id, old + young) == set(young)
    assert _left(env, RunMachine, RunMachine.run_id, old) == set()
    assert _left(env, Event, Event.run_id, old) == set() and _left(env, Delivery, Delivery.run_id, old) == set()
    assert _left(env, Event, Event.run_id, young) == set(young)


def test_only_the_newest_runs_of_a_schedule_beyond_the_count_stay(env):
    _configure(env, keep=3, batch=2)  # batches smaller than what goes: several transactions
    busy, quiet = env.add(), env.add()
    ids = _runs(env, busy, [10, 9, 8, 7, 6, 5, 4])
    few = _runs(env, quiet, [10, 9])
    pruned = sweep(env.state, NOW)
    assert pruned.by_reason == {"age": 0, "count": 4} and pruned.batches == 2
    assert _left(env, Run, Run.id, ids + few) == set(ids[-3:]) | set(few)


def test_queued_and_running_runs_are_never_pruned_nor_counted(env):
    _configure(env, days=30, keep=1)
    sch = env.add()
    active = _runs(env, sch, [40], status="running") + _runs(env, sch, [35], status="queued")
    ended = _runs(env, sch, [3, 2])
    sweep(env.state, NOW)
    assert _left(env, Run, Run.id, active + ended) == set(active) | {ended[-1]}


def test_old_events_without_a_run_go_too(env):
    _configure(env, days=30)
    sch = env.add()
    with env.state.db.transaction() as s:
        s.add(Event(org_id=env.org_id, time=NOW - timedelta(days=40), type="schedule_error", schedule_id=sch, data={}))
        s.add(Event(org_id=env.org_id, time=NOW - timedelta(days=2), type="schedule_error", schedule_id=sch, data={}))
    assert sweep(env.state, NOW).events == 1
    with env.state.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Event)) == 1


def test_a_batch_is_one_transaction_of_at_most_the_batch_size(env):
    sch = env.add()
    _runs(env, sch, [40 + i for i in range(5)])
    assert prune_batch(env.state.db, NOW, 30, 1000, 2) == ("age", 2)
    assert prune_batch(env.state.db, NOW, 30, 1000, 2) == ("age", 2)
    assert prune_batch(env.state.db, NOW, 30, 1000, 2) == ("age", 1)
    assert prune_batch(env.state.db, NOW, 30, 1000, 2) is None


def test_a_stopped_sweep_ends_between_batches(env):
    _configure(env, batch=1)
    sch = env.add()
    _runs(env, sch, [40, 41, 42])
    stop = threading.Event()
    stop.set()
    assert sweep(env.state, NOW, stop).runs == 0
