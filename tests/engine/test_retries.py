"""The worker's retry loop (web.worker._retry_run) on SQLite and PostgreSQL: what it retries, and that a stop
ends its wait. Retries through real playbooks against moto are in tests/integration/test_retries_e2e.py."""
from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from web import worker
from web.dispatcher import Dispatcher
from web.machines import ProviderLimits
from web.models import Run, RunMachine
from web.runs import interrupt
from web.worker import Execution, claim, finish, plan

from .conftest import T0

RETRIES = {"max": 3, "delay": 3600, "backoff": 1}


def _planned_run(env, error: str):
    """A claimed power run on machine i-1 whose first attempt failed with `error`: (run_id, Part)."""
    env.add(now=T0 - timedelta(minutes=1), misfire_grace=86400 * 366, retries=RETRIES)
    [run_id] = Dispatcher(env.state, lambda ids: None, clock=lambda: T0).claim(T0)
    assert claim(env.state, run_id, T0)
    part, err = plan(env.state, run_id, T0)
    assert err is None and part is not None and part.retries == RETRIES
    with env.state.db.transaction() as s:
        row = s.scalars(select(RunMachine).where(RunMachine.run_id == run_id)).one()
        row.status, row.error = "failed", error
    return run_id, part


def _row(env, run_id) -> RunMachine:
    with env.state.db.session() as s:
        return s.scalars(select(RunMachine).where(RunMachine.run_id == run_id)).one()


def never(*args, **kwargs):
    raise AssertionError("nothing should have been executed")


def test_a_stop_during_the_wait_ends_the_retry_and_the_run_is_interrupted(env):
    run_id, part = _planned_run(env, "could not stop machine i-1: HTTP 503 Service Unavailable")
    execution = Execution(run_id)
    out = {}
    thread = threading.Thread(target=lambda: out.update(outcome=worker._retry_run(
        env.state, execution, part, ("finished", None), never, ProviderLimits.of(env.state.config))))
    thread.start()
    execution.stop("shutdown", "shutdown: the worker was stopped")
    thread.join(timeout=60)
    assert not thread.is_alive() and out["outcome"] == ("cancelled", "shutdown: the worker was stopped")
    assert _row(env, run_id).attempts is None  # no attempt began
    assert finish(env.state, run_id, *out["outcome"], execution=execution) == "interrupted"


def test_a_final_failure_is_not_retried(env):
    run_id, part = _planned_run(env, "machine i-1 not found")
    outcome = worker._retry_run(env.state, Execution(run_id), part, ("finished", None), never,
                                ProviderLimits.of(env.state.config))
    assert outcome == ("finished", None)
    assert finish(env.state, run_id, *outcome) == "failed"
    row = _row(env, run_id)
    assert row.attempts is None and row.error == "machine i-1 not found"


def test_an_attempt_does_not_begin_on_a_run_interrupted_meanwhile(env):
    run_id, part = _planned_run(env, "could not stop machine i-1: HTTP 503 Service Unavailable")
    assert worker._retryable(env.state, run_id) == part.keys
    with env.state.db.transaction() as s:
        interrupt(s, s.get(Run, run_id), T0, "worker_lost", "the worker stopped answering")
    assert not worker._begin_attempt(env.state, run_id, part.keys, 2, 0.0)
    assert _row(env, run_id).attempts is None


def test_an_attempt_keeps_the_last_ones_outcome_and_puts_the_machine_back_to_running(env):
    run_id, part = _planned_run(env, "could not stop machine i-1: HTTP 503 Service Unavailable")
    assert worker._begin_attempt(env.state, run_id, part.keys, 2, 1.5)
    row = _row(env, run_id)
    assert row.status == "running" and row.error is None
    assert row.attempts == [{"attempt": 1, "status": "failed", "duration": None,
                             "error": "could not stop machine i-1: HTTP 503 Service Unavailable"}]
    assert part.only({"no-such-key"}) is None and part.only(part.keys).keys == part.keys


def test_a_retried_run_ending_does_not_stop_another_still_waiting(env, monkeypatch):
    monkeypatch.setattr(worker, "HEARTBEAT_EVERY", 0.02)
    waiting_id, waiting = _planned_run(env, "could not stop machine i-1: HTTP 503 Service Unavailable")
    done_id, done = _planned_run(env, "machine i-1 not found")
    execution = Execution(waiting_id)
    execution.run_ids = [waiting_id, done_id]
    out = {}
    thread = threading.Thread(target=lambda: out.update(statuses=worker._retry_runs(
        env.state, execution, [waiting, done], {waiting_id: ("finished", None), done_id: ("finished", None)},
        never, ProviderLimits.of(env.state.config))))
    thread.start()
    try:
        def ended():
            with env.state.db.session() as s:
                return s.get(Run, done_id).status == "failed"
        for _ in range(500):
            if ended():
                break
            execution.cancel.wait(0.02)
        assert ended()
        # Many heartbeats later the waiting run is still waiting: its neighbour's end is not a lost run.
        assert not execution.cancel.wait(1.0)
    finally:
        execution.stop("shutdown", "shutdown: the worker was stopped")
        thread.join(timeout=60)
    assert out["statuses"] == {done_id: "failed", waiting_id: "interrupted"}
    assert _run_error(env, waiting_id) == "shutdown: the worker was stopped"


def _run_error(env, run_id):
    with env.state.db.session() as s:
        return s.get(Run, run_id).error


def test_a_run_waiting_to_retry_does_not_hold_the_queue_slot_that_ran_its_batch(env):
    """The batch's call returns while the run waits (an hour here); the wait is an Execution of its own that a
    drain still sees and stops, ending the run interrupted."""
    run_id, part = _planned_run(env, "could not stop machine i-1: HTTP 503 Service Unavailable")
    batch = env.state.executions.begin(run_id)
    batch.run_ids = [run_id]
    try:
        returned = worker._detach_retries(env.state, batch, [part], {run_id: ("finished", None)}, never,
                                          ProviderLimits.of(env.state.config))
    finally:
        env.state.executions.end(batch)
    assert returned is True and batch.run_ids == []
    [waiting] = env.state.executions.active()  # the batch's slot is free; the wait is still tracked
    assert waiting is not batch and waiting.run_ids == [run_id]
    with env.state.db.session() as s:
        assert s.get(Run, run_id).status == "running"
    waiting.stop("shutdown", "shutdown: the worker was stopped")
    assert env.state.executions.wait_idle(60)
    assert _run_error(env, run_id) == "shutdown: the worker was stopped"
    with env.state.db.session() as s:
        assert s.get(Run, run_id).status == "interrupted"


def test_no_run_is_detached_while_the_process_drains(env):
    run_id, part = _planned_run(env, "could not stop machine i-1: HTTP 503 Service Unavailable")
    env.state.executions.draining.set()
    try:
        assert worker._detach_retries(env.state, Execution(run_id), [part], {run_id: ("finished", None)}, never,
                                      ProviderLimits.of(env.state.config)) is False
        assert env.state.executions.active() == []
    finally:
        env.state.executions.draining.clear()
