"""The worker's own bookkeeping, on SQLite and PostgreSQL: targets named twice, interrupted runs, draining."""
from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select, update

from web import worker
from web.crypto import new_id
from web.dispatcher import Dispatcher
from web.models import Cloud, Machine, Run, RunMachine
from web.runs import interrupt
from web.worker import Execution, claim, drain, execute_run, finish, prepare

from .conftest import T0


def _other_cloud(env) -> str:
    cid = new_id()
    with env.state.db.transaction() as s:
        s.add(Cloud(id=cid, org_id=env.org_id, title=f"lab-{cid[:6]}", provider="other", options={},
                    credentials_enc=None, created_at=T0, updated_at=T0))
    return cid


def _declared_machine(env, cloud_id, machine_id="web1") -> str:
    mid = new_id()
    with env.state.db.transaction() as s:
        s.add(Machine(id=mid, org_id=env.org_id, cloud_id=cloud_id, machine_id=machine_id, name=machine_id,
                      host="127.0.0.1", port=22, state="unknown", public_ips=["127.0.0.1"], private_ips=[], tags={},
                      created_at=T0, updated_at=T0))
    return mid


def _script(env) -> str:
    from web.models import Script

    sid = new_id()
    with env.state.db.transaction() as s:
        s.add(Script(id=sid, org_id=env.org_id, name=sid, script="#!/bin/sh\ntrue\n", exec_type="executable",
                     created_at=T0, updated_at=T0))
    return sid


def _one_run(env, **fields) -> str:
    # The run is due at T0 and executed now: a grace of a year keeps it from being recorded missed.
    fields.setdefault("misfire_grace", 86400 * 366)
    env.add(now=T0 - timedelta(minutes=1), **fields)
    [run_id] = Dispatcher(env.state, lambda ids: None, clock=lambda: T0).claim(T0)
    return run_id


def _machines(env, run_id):
    with env.state.db.session() as s:
        return s.scalars(select(RunMachine).where(RunMachine.run_id == run_id).order_by(RunMachine.id)).all()


def _run(env, run_id) -> Run:
    with env.state.db.session() as s:
        return s.get(Run, run_id)


def test_an_unknown_machine_named_twice_is_reported_once(env):
    lab = _other_cloud(env)
    run_id = _one_run(env, action=None, script_id=_script(env), machines_per_cloud=[[lab, "ghost"], [lab, "ghost"]])
    assert execute_run(env.state, run_id) == "failed"
    [row] = _machines(env, run_id)
    assert (row.machine_id, row.status) == ("ghost", "failed") and "not found" in row.error
    assert "IntegrityError" not in (_run(env, run_id).error or "")


def test_a_machine_named_by_id_and_by_a_selector_is_acted_on_once(env):
    lab = _other_cloud(env)
    mid = _declared_machine(env, lab)
    run_id = _one_run(env, action=None, script_id=_script(env), machines_per_cloud=[[lab, "web1"], [lab, "web1"]],
                      selectors=[{"type": "machines", "ids": [mid, mid]}])
    assert execute_run(env.state, run_id) == "failed"  # no SSH key: the run ends without ansible
    [row] = _machines(env, run_id)
    assert row.machine_key == mid and row.error == "no SSH key (set key_id on the machine)"


def test_a_power_run_naming_a_new_machine_twice_renders_it_once(env):
    run_id = _one_run(env, machines_per_cloud=[[env.cloud_id, "i-new"], [env.cloud_id, "i-new"]])
    assert claim(env.state, run_id, T0)
    (rendered, meta), error = prepare(env.state, run_id, T0)
    assert error is None and len(rendered.expected) == 1
    [row] = _machines(env, run_id)
    assert (row.machine_id, row.status) == ("i-new", "running")


def test_finish_leaves_a_run_the_sweep_interrupted_and_ends_its_machines(env):
    run_id = _one_run(env)
    assert claim(env.state, run_id, T0)
    prepare(env.state, run_id, T0)
    with env.state.db.transaction() as s:  # what the sweep does when the heartbeat stops
        interrupt(s, s.get(Run, run_id), T0, "worker_lost", "the worker stopped answering")
    # A result that still comes in afterwards does not undo that.
    worker._record(env.state, run_id, _machines(env, run_id)[0].machine_key,
                   type("R", (), {"status": "succeeded", "rc": 0, "error": None, "duration": 1.0, "stdout": "",
                                  "stderr": "", "state": "stopped"})(), is_script=False)
    assert finish(env.state, run_id, "finished", None) == "interrupted"
    [row] = _machines(env, run_id)
    assert row.status == "interrupted" and row.error == "the worker stopped answering"


def test_the_heartbeat_stops_an_execution_whose_run_was_interrupted(env, monkeypatch):
    monkeypatch.setattr(worker, "HEARTBEAT_EVERY", 0.05)
    run_id = _one_run(env)
    assert claim(env.state, run_id, T0)
    execution, stop = Execution(run_id), threading.Event()
    beat = threading.Thread(target=worker._heartbeat, args=(env.state, execution, stop), daemon=True)
    beat.start()
    try:
        assert not execution.cancel.wait(0.5)  # running: the heartbeat only beats
        with env.state.db.transaction() as s:
            s.execute(update(Run).where(Run.id == run_id).values(status="interrupted"))
        assert execution.cancel.wait(30)
        assert execution.reason == "worker_lost" and "interrupted" in execution.error
    finally:
        stop.set()
        beat.join(timeout=10)


def test_a_stopped_execution_ends_its_run_interrupted_with_its_reason(env):
    run_id = _one_run(env)
    assert claim(env.state, run_id, T0)
    prepare(env.state, run_id, T0)
    execution = Execution(run_id)
    execution.stop("shutdown", "shutdown: the worker was stopped")
    assert finish(env.state, run_id, "cancelled", "the run was stopped before it finished", execution) == "interrupted"
    run = _run(env, run_id)
    assert run.error == "shutdown: the worker was stopped" and run.finished_at is not None
    assert {m.status for m in _machines(env, run_id)} == {"interrupted"}


def test_drain_waits_for_runs_then_stops_the_rest_and_takes_no_new_one(env):
    run_id = _one_run(env)
    executions = env.state.executions
    ended = threading.Event()
    execution = executions.begin(run_id)

    def executing():  # a run that only ends when stopped
        execution.cancel.wait(60)
        executions.end(execution)
        ended.set()

    threading.Thread(target=executing, daemon=True).start()
    taken = []
    assert drain(env.state, grace=0.2, stop_taking=lambda: taken.append(True)) == 1
    assert taken == [True] and ended.is_set()
    assert execution.reason == "shutdown" and "CLOUDCRON_DRAIN_SECONDS" in execution.error
    # While draining, a message taken from the queue goes back on it: the run stays queued.
    other = _one_run(env, name="later")
    handed_back = []
    env.state.enqueue = handed_back.extend
    assert execute_run(env.state, other) is None
    assert handed_back == [other] and _run(env, other).status == "queued"


def test_drain_marks_a_run_that_does_not_stop_interrupted(env):
    run_id = _one_run(env)
    assert claim(env.state, run_id, T0)
    execution = env.state.executions.begin(run_id)  # never ends: stuck in a provider call, say
    assert drain(env.state, grace=0.1, settle=0.1) == 1
    run = _run(env, run_id)
    assert run.status == "interrupted" and run.error.startswith("shutdown:")
    env.state.executions.end(execution)


def test_drain_marks_every_run_of_a_stuck_batch_interrupted(env):
    first, second = _one_run(env), _one_run(env, name="second")
    execution = env.state.executions.begin(first)  # the message named the first; the batch holds both
    assert claim(env.state, first, T0) and claim(env.state, second, T0)
    execution.run_ids = [first, second]
    assert drain(env.state, grace=0.1, settle=0.1) == 1
    assert {_run(env, r).status for r in (first, second)} == {"interrupted"}
    env.state.executions.end(execution)


def test_a_run_whose_listing_is_cut_records_it_as_an_event(env, moto_server):
    from web.models import Event

    moto_server.create_machines(3, tags={"team": "cut"})
    cid = new_id()
    with env.state.db.transaction() as s:
        s.add(Cloud(id=cid, org_id=env.org_id, title="moto", provider="ec2", options=dict(moto_server.options),
                    credentials_enc=env.state.box.seal(dict(moto_server.credentials)), created_at=T0, updated_at=T0))
    env.state.config.max_machines_per_cloud = 2
    run_id = _one_run(env, machines_per_cloud=[], selectors=[{"type": "tags", "include": {"team": "cut"}}])
    assert claim(env.state, run_id, T0)
    prepared, error = prepare(env.state, run_id, T0)
    assert error is None
    with env.state.db.session() as s:
        [event] = s.scalars(select(Event).where(Event.run_id == run_id, Event.type == "machines_truncated")).all()
        stored = s.scalars(select(Machine).where(Machine.cloud_id == cid)).all()
    assert event.cloud_id == cid and event.data["kept"] == 2 and event.data["listed"] >= 3
    assert "CLOUDCRON_MAX_MACHINES_PER_CLOUD" in event.data["error"]
    assert len(stored) == 2
