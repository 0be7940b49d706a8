"""The run queue on SQLite and Redis: a real Huey consumer picks up a run id and a worker finishes the run."""
from __future__ import annotations

import time
from datetime import datetime, timezone

from sqlalchemy import select

from web import make_state
from web.auth import ensure_org
from web.config import load_config
from web.crypto import new_id
from web.dispatcher import Dispatcher
from web.migrate import upgrade
from web.models import Cloud, Event, Run, RunMachine, Schedule
from web.queue import consumer
from web.schedules import build, next_run_at


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_queued_run_reaches_a_worker_and_finishes(tmp_path, queue_url):
    state = make_state(load_config({"CLOUDCRON_DATA_DIR": str(tmp_path / "data"), "CLOUDCRON_QUEUE_URL": queue_url}))
    upgrade(state.db)
    now = datetime.now(timezone.utc)
    with state.db.transaction() as s:
        org = ensure_org(s, "acme")
        cloud = Cloud(id=new_id(), org_id=org.id, title="lab", provider="other", options={}, created_at=now, updated_at=now)
        s.add(cloud)
        s.flush()
        # The target was never declared: the run must still finish, failed, naming the machine.
        values = build(s, org.id, {"name": "n", "action": "stop", "machines_per_cloud": [[cloud.id, "web1"]],
                                   "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "seconds"}},
                       None, now, state.config.min_interval)
        sch = Schedule(id=new_id(), org_id=org.id, total_run_count=0, created_at=now, updated_at=now, **values)
        sch.next_run_at = next_run_at(sch, now)
        s.add(sch)
    c = consumer(state.huey, workers=1, embedded=True)
    c.start()
    try:
        d = Dispatcher(state, state.enqueue)
        state.enqueue(wait_for(lambda: d.claim(datetime.now(timezone.utc)), timeout=5))
        with state.db.session() as s:
            run_id = s.scalar(select(Run.id))

        def finished():
            with state.db.session() as s:
                run = s.get(Run, run_id)
                return run if run.status not in ("queued", "running") else None

        run = wait_for(finished)
        assert run.status == "failed" and run.started_at is not None
        with state.db.session() as s:
            [machine] = s.scalars(select(RunMachine).where(RunMachine.run_id == run_id)).all()
            types = [e.type for e in s.scalars(select(Event).where(Event.run_id == run_id).order_by(Event.id))]
        assert machine.status == "failed" and "'web1' not found" in machine.error
        assert types == ["schedule_started", "machine_action_failed", "schedule_finished"]
    finally:
        c.stop(graceful=False)
        state.db.dispose()


def test_the_queue_executes_runs_with_the_handler_it_was_made_with(tmp_path, queue_url):
    """The task calls the handler given to make_huey: no state bound to the module afterwards."""
    from web.queue import make_huey

    config = load_config({"CLOUDCRON_DATA_DIR": str(tmp_path / "data"), "CLOUDCRON_QUEUE_URL": queue_url})
    seen = []
    huey = make_huey(config, handler=seen.append)
    other = make_huey(config)  # a second queue in the same process shares no handler with the first
    huey.execute_run.call_local("r1")
    assert seen == ["r1"]
    try:
        other.execute_run.call_local("r2")
    except RuntimeError as exc:
        assert "without a run handler" in str(exc)
    else:
        raise AssertionError("a queue without a handler executed a run")
    assert seen == ["r1"]
