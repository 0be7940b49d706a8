"""The worker's retry loop (web.worker._retry_run) on SQLite and PostgreSQL: what it retries, and that a stop
ends its wait. Retries through real playbooks against moto are in tests/integration/test_retries_e2e.py."""
from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.harness.receiver import LOOPBACK_ALLOWED
from web import worker
from web.crypto import new_id
from web.dispatcher import Dispatcher
from web.machines import ProviderLimits
from web.models import Channel, Delivery, Event, Run, RunMachine
from web.notify import Sender
from web.results import MachineResult
from web.runner import ExecResult
from web.runs import interrupt
from web.timemath import parse_instant
from web.worker import Execution, claim, finish, plan

from .conftest import T0

RETRIES = {"max": 3, "delay": 3600, "backoff": 1}


def _planned_run(env, error: str, retries=RETRIES, **fields):
    """A claimed power run on machine i-1 whose first attempt failed with `error`: (run_id, Part)."""
    env.add(now=T0 - timedelta(minutes=1), misfire_grace=86400 * 366, retries=retries, **fields)
    [run_id] = Dispatcher(env.state, lambda ids: None, clock=lambda: T0).claim(T0)
    assert claim(env.state, run_id, T0)
    part, err = plan(env.state, run_id, T0)
    assert err is None and part is not None and part.retries == retries
    with env.state.db.transaction() as s:
        row = s.scalars(select(RunMachine).where(RunMachine.run_id == run_id)).one()
        row.status, row.error = "failed", error
    return run_id, part


def _row(env, run_id) -> RunMachine:
    with env.state.db.session() as s:
        return s.scalars(select(RunMachine).where(RunMachine.run_id == run_id)).one()


def never(*args, **kwargs):
    raise AssertionError("nothing should have been executed")


def _stopped_during_the_wait(env, run_id, part, meanwhile=lambda: None):
    """_retry_run of the run, stopped (a drain) while it waits for retry 1; meanwhile() runs before the stop."""
    execution = Execution(run_id)
    out = {}
    thread = threading.Thread(target=lambda: out.update(outcome=worker._retry_run(
        env.state, execution, part, ("finished", None), never, ProviderLimits.of(env.state.config))))
    thread.start()
    for _ in range(500):  # until the wait is recorded on the run
        if _run_retry_at(env, run_id) is not None:
            break
        threading.Event().wait(0.01)
    meanwhile()
    execution.stop("shutdown", "shutdown: the worker was stopped")
    thread.join(timeout=60)
    assert not thread.is_alive()
    return execution, out["outcome"]


def _run_retry_at(env, run_id):
    with env.state.db.session() as s:
        return s.get(Run, run_id).retry_at


def test_a_stop_during_the_wait_gives_the_run_back_to_the_queue_for_another_worker(env):
    run_id, part = _planned_run(env, "could not stop machine i-1: HTTP 503 Service Unavailable")
    execution, outcome = _stopped_during_the_wait(env, run_id, part)
    assert outcome == (worker.TAKEN, None)
    assert _row(env, run_id).attempts is None  # no attempt began
    with env.state.db.session() as s:
        run = s.get(Run, run_id)
        assert (run.status, run.retry_owner) == ("queued", None) and run.retry_at is not None
        event = s.scalars(select(Event).where(Event.run_id == run_id).order_by(Event.id.desc())).first()
        assert (event.type, event.data["reason"]) == ("retry_handed_on", "shutdown")
    assert env.state.huey.pending_count() == 1  # its message, for the next worker (resume_retry)
    assert finish(env.state, run_id, *outcome, execution=execution) == "queued"  # and nothing ends it here


def test_a_stop_during_the_wait_of_a_run_no_longer_its_own_leaves_it_as_it_is(env):
    run_id, part = _planned_run(env, "could not stop machine i-1: HTTP 503 Service Unavailable")

    def interrupted_meanwhile():  # by anything else (here directly): it is no longer running, nor this worker's
        with env.state.db.transaction() as s:
            interrupt(s, s.get(Run, run_id), T0, "worker_lost", "the worker stopped answering")

    execution, outcome = _stopped_during_the_wait(env, run_id, part, interrupted_meanwhile)
    assert outcome == ("cancelled", "shutdown: the worker was stopped")
    assert env.state.huey.pending_count() == 0  # not handed on
    assert finish(env.state, run_id, *outcome, execution=execution) == "interrupted"
    assert _run(env, run_id).error == "the worker stopped answering"


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
    assert out["statuses"] == {done_id: "failed"}  # the one still waiting went back to the queue
    with env.state.db.session() as s:
        assert s.get(Run, waiting_id).status == "queued"


def test_a_run_waiting_to_retry_does_not_hold_the_queue_slot_that_ran_its_batch(env):
    """The batch's call returns while the run waits (an hour here); the wait is an Execution of its own that a
    drain still sees and stops, giving the run back to the queue."""
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
    with env.state.db.session() as s:
        assert s.get(Run, run_id).status == "queued"


def test_no_run_is_detached_while_the_process_drains(env):
    run_id, part = _planned_run(env, "could not stop machine i-1: HTTP 503 Service Unavailable")
    env.state.executions.draining.set()
    try:
        assert worker._detach_retries(env.state, Execution(run_id), [part], {run_id: ("finished", None)}, never,
                                      ProviderLimits.of(env.state.config)) is False
        assert env.state.executions.active() == []
    finally:
        env.state.executions.draining.clear()


# ---------------------------------------------------------------- notify.after_retries

REFUSED = "could not stop machine i-1: HTTP 503 Service Unavailable"


def _hook(env, url) -> None:
    """A webhook channel named 'hook' to `url` (a loopback receiver), reachable from the sender."""
    env.state.config.denied_networks = ()
    with env.state.db.transaction() as s:
        s.add(Channel(id=new_id(), org_id=env.org_id, name="hook", kind="webhook", url_shown="http://127.0.0.1/…",
                      target_enc=env.state.box.seal({"kind": "webhook", "url": url, "secret": "s" * 16}),
                      is_default=False, created_at=T0, updated_at=T0))


def _attempts_then(env, outcomes: list):
    """An executor standing in for ansible-playbook: call n reports outcomes[n] (a MachineResult's status and
    error) for every machine still running, through on_results as the runner does, and ends `finished`."""
    calls = []

    def execute(rendered, *, on_results, **kwargs):
        status, error = outcomes[len(calls)]
        calls.append(rendered)
        on_results([(run_id, key, MachineResult(status=status, error=error, duration=0.1))
                    for run_id, key in _running(env)])
        return ExecResult("finished", None)

    return execute, calls


def _running(env):
    with env.state.db.session() as s:
        return [(r.run_id, r.machine_key) for r in s.scalars(select(RunMachine).where(RunMachine.status == "running"))]


def _deliveries_of(env, run_id):
    with env.state.db.session() as s:
        return s.scalars(select(Delivery).where(Delivery.run_id == run_id)
                         .order_by(Delivery.created_at, Delivery.id)).all()


def _retry_then_finish(env, outcomes, retries, notify):
    """A run whose attempt 1 was refused (503), retried by the worker's loop with `outcomes` for its later
    attempts, then ended: (run_id, final status, how many attempts the executor made)."""
    run_id, part = _planned_run(env, REFUSED, retries=retries, notify=notify)
    execute, calls = _attempts_then(env, outcomes)
    execution = Execution(run_id)
    outcome = worker._retry_run(env.state, execution, part, ("finished", None), execute,
                                ProviderLimits.of(env.state.config))
    return run_id, finish(env.state, run_id, *outcome, execution=execution), len(calls)


@pytest.mark.parametrize("notify, final, kinds", [
    # after_retries false: attempts 1 and 2 (of 3) each heard before their retry; attempt 3 is the run's end.
    ({"on": ["failed"], "channels": ["hook"], "after_retries": False}, "failed", ["retry", "retry", "run"]),
    # true (the default): one notification, after the last attempt.
    ({"on": ["failed"], "channels": ["hook"]}, "failed", ["run"]),
    ({"on": ["failed"], "channels": ["hook"], "after_retries": True}, "failed", ["run"]),
    # a failed attempt's status (failed) must be one the schedule asked to hear about.
    ({"on": ["succeeded"], "channels": ["hook"], "after_retries": False}, "succeeded", ["run"]),
])
def test_after_retries_decides_whether_each_failed_attempt_is_notified(env, receiver, notify, final, kinds):
    _hook(env, receiver().url)
    outcomes = [("failed", REFUSED), ("failed", REFUSED)] if final == "failed" \
        else [("failed", REFUSED), ("succeeded", None)]
    run_id, status, made = _retry_then_finish(env, outcomes, {"max": 2, "delay": 0, "backoff": 1}, notify)
    assert (status, made) == (final, 2)
    assert [d.kind for d in _deliveries_of(env, run_id)] == kinds


def test_a_failed_attempt_reaches_the_webhook_with_its_number_and_when_the_retry_is_due(env, receiver):
    env.state.config.notify_denied_networks = LOOPBACK_ALLOWED  # the receiver is on loopback
    hook = receiver()
    _hook(env, hook.url)
    retries = {"max": 2, "delay": 0.2, "backoff": 2}
    run_id, status, _ = _retry_then_finish(env, [("succeeded", None)], retries,
                                           {"on": ["failed", "succeeded"], "channels": ["hook"],
                                            "after_retries": False})
    assert status == "succeeded"
    sender = Sender(env.state)
    while sender.tick():  # the real sender, claiming and posting each due delivery
        pass
    assert all(d.status == "delivered" for d in _deliveries_of(env, run_id))
    sent = [(headers["x-cloudcron-event"], json.loads(body)) for headers, body in hook.requests]
    assert [kind for kind, _ in sent] == ["run.retrying", "run.finished"]
    (_, retrying), (_, finished) = sent
    assert retrying["type"] == "run.retrying" and retrying["run"]["id"] == run_id
    assert retrying["run"]["status"] == "running" and retrying["run"]["finished_at"] is None
    assert {k: retrying["attempt"][k] for k in ("number", "of", "status")} == {"number": 1, "of": 3,
                                                                               "status": "failed"}
    # The wait before retry 1 is delay * backoff ** 0 = 0.2 s after the failed attempt was recorded.
    due = parse_instant(retrying["attempt"]["retry_at"]) - parse_instant(retrying["time"])
    assert due == timedelta(seconds=0.2)
    [machine] = retrying["machines_not_succeeded"]
    assert (machine["machine_id"], machine["error"], machine["retry"]) == ("i-1", REFUSED, True)
    assert finished["run"]["status"] == "succeeded" and "attempt" not in finished
    assert retrying["delivery_id"] != finished["delivery_id"]


# ---------------------------------------------------------------- CLOUDCRON_RETRY_SLOTS


def _overlap_counter(meet: int, patience: float):
    """An executor that counts how many playbooks run at once (peak); each waits up to `patience` seconds for
    `meet` of them to be running together, so any bound below `meet` is reached and shown, not raced."""
    lock = threading.Condition()
    seen = {"active": 0, "peak": 0, "calls": 0}

    def execute(rendered, **kwargs):
        with lock:
            seen["active"] += 1
            seen["calls"] += 1
            seen["peak"] = max(seen["peak"], seen["active"])
            lock.notify_all()
            lock.wait_for(lambda: seen["active"] >= meet, timeout=patience)
            seen["active"] -= 1
        return ExecResult("finished", None)

    return execute, seen


@pytest.mark.parametrize("setting, worker_slots, peak", [
    (None, 2, 2),  # unset: as many as the process's worker slots
    (None, 1, 1),
    (1, 3, 1),     # CLOUDCRON_RETRY_SLOTS below the worker slots
    (3, 1, 3),     # and above them
])
def test_retry_attempts_run_at_most_retry_slots_at_once(env, setting, worker_slots, peak):
    env.state.config.retry_slots, env.state.worker_slots = setting, worker_slots
    planned = [_planned_run(env, REFUSED, retries={"max": 1, "delay": 0, "backoff": 1}) for _ in range(3)]
    execution = Execution(planned[0][0])
    execution.run_ids = [run_id for run_id, _ in planned]
    execute, seen = _overlap_counter(meet=3, patience=1.0)
    statuses = worker._retry_runs(env.state, execution, [part for _, part in planned],
                                  {run_id: ("finished", None) for run_id, _ in planned}, execute,
                                  ProviderLimits.of(env.state.config))
    assert seen["calls"] == 3 and seen["peak"] == peak
    # Nothing came back from the stand-in playbook: each run ends failed after its one retry, none is left running.
    assert set(statuses.values()) == {"failed"}


def test_a_freed_retry_slot_goes_to_each_waiting_org_in_turn():
    # One org with a backlog of retry attempts waiting for a slot must not keep another org's attempt waiting
    # behind all of them: the slot goes round the orgs, oldest waiter of each first.
    slots = worker.FairSlots(1)
    granted, started = [], []
    lock = threading.Lock()

    def attempt(org, n):
        started.append((org, n))
        with slots.take(org):
            with lock:
                granted.append((org, n))

    with slots.take("x"):  # the one slot is held: everyone below waits
        threads = []
        for org, n in [("x", 1), ("x", 2), ("x", 3), ("x", 4), ("y", 1)]:
            threads.append(threading.Thread(target=attempt, args=(org, n)))
            threads[-1].start()
            for _ in range(500):  # each in the queue before the next comes
                if slots.waiting() == len(threads):
                    break
                threading.Event().wait(0.01)
        assert slots.waiting() == 5
    for t in threads:
        t.join(timeout=10)
    assert granted == [("x", 1), ("y", 1), ("x", 2), ("x", 3), ("x", 4)]
    assert slots.waiting() == 0


def test_retry_attempts_take_their_slot_as_their_org(env):
    # _retry_run asks for a slot as the run's org: plan() gives the part its org.
    env.state.config.retry_slots = 1
    run_id, part = _planned_run(env, REFUSED, retries={"max": 1, "delay": 0, "backoff": 1})
    assert part.org_id == env.org_id
    asked = []
    real = env.state.retry_slots

    class Spy:
        def take(self, org):
            asked.append(org)
            return real.take(org)

    env.state._retry_slots = Spy()
    execution = Execution(run_id)
    execution.run_ids = [run_id]
    worker._retry_runs(env.state, execution, [part], {run_id: ("finished", None)},
                       lambda rendered, **kw: ExecResult("finished", None), ProviderLimits.of(env.state.config))
    assert asked == [env.org_id]


# ---------------------------------------------------------------- durable retry waits


def _waiting_run(env, due_in: float):
    """A run whose attempt 1 was refused and which waits to retry (max 2), due `due_in` seconds from now, its
    heartbeat last written at T0 (long ago): (run_id, Part, the Execution that waited)."""
    run_id, part = _planned_run(env, REFUSED, retries={"max": 2, "delay": 3600, "backoff": 1})
    waiter = Execution(run_id)
    assert worker._attempt_failed(env.state, part, 1, due_in, waiter.token) == part.keys
    return run_id, part, waiter


def _sweep(env, seconds_after_the_due_time=60):
    sent = []
    with env.state.db.session() as s:
        due = s.get(Run, s.scalars(select(Run.id).where(Run.retry_at.is_not(None))).first()).retry_at
    counts = Dispatcher(env.state, sent.extend).sweep(due + timedelta(seconds=seconds_after_the_due_time))
    return counts, sent


def _run(env, run_id) -> Run:
    with env.state.db.session() as s:
        return s.get(Run, run_id)


def _event_types(env, run_id) -> list[str]:
    with env.state.db.session() as s:
        return list(s.scalars(select(Event.type).where(Event.run_id == run_id).order_by(Event.id)))


def test_the_sweep_hands_on_a_run_whose_worker_died_while_it_waited_to_retry(env):
    run_id, _, waiter = _waiting_run(env, due_in=30)
    run = _run(env, run_id)
    assert run.status == "running" and run.retry_owner == waiter.token
    due = run.retry_at
    # A run whose worker died during an attempt (no retry_at) is still interrupted.
    busy_id, _ = _planned_run(env, REFUSED)
    (requeued, ended), sent = _sweep(env)
    assert (requeued, ended, sent) == (1, 1, [run_id])
    run = _run(env, run_id)
    assert (run.status, run.retry_at, run.retry_owner) == ("queued", due, None)
    assert _event_types(env, run_id)[-1] == "retry_handed_on"
    assert _run(env, busy_id).status == "interrupted"
    # Handed on, it is no ordinary queued run: a batch's claim leaves it to resume_retry.
    claimed, missed = worker.claim_batch(env.state, run_id, T0)
    assert (claimed, missed) == ([], []) and _run(env, run_id).status == "queued"


def _take_over(env, run_id, execute):
    """A second worker's resume_retry of a handed-on run, under an execution of its own; returns what it answers."""
    taker = env.state.executions.begin(run_id)
    try:
        return worker.resume_retry(env.state, taker, run_id, execute)
    finally:
        env.state.executions.end(taker)


def test_a_handed_on_run_is_taken_over_and_retried_when_due_and_its_first_worker_stays_out(env):
    run_id, part, waiter = _waiting_run(env, due_in=1.0)
    _sweep(env)
    due = _run(env, run_id).retry_at
    execute, calls = _attempts_then(env, [("succeeded", None)])
    assert _take_over(env, run_id, execute) == "running"
    assert env.state.executions.wait_idle(60)  # the taken-over wait runs detached, then the attempt
    run = _run(env, run_id)
    assert run.status == "succeeded" and (run.retry_at, run.retry_owner) == (None, None)
    assert len(calls) == 1
    row = _row(env, run_id)
    assert [(a["attempt"], a["status"]) for a in row.attempts] == [(1, "failed")] and row.status == "succeeded"
    types = _event_types(env, run_id)
    assert types.index("retry_handed_on") < types.index("retry_resumed") < types.index("machine_retried")
    with env.state.db.session() as s:  # the new worker waited until the attempt was due
        began = s.scalars(select(Event.time).where(Event.run_id == run_id, Event.type == "machine_retried")).one()
    assert began >= due
    # The worker that waited first, were it alive, makes no attempt and does not end the run.
    assert worker._begin_attempt(env.state, run_id, part.keys, 2, 0.0, waiter.token) is None
    assert worker.resume_retry(env.state, Execution(run_id), run_id, never) is None  # a duplicate message


def test_the_first_worker_leaves_a_run_taken_over_while_it_waited(env):
    run_id, part, waiter = _waiting_run(env, due_in=3600)
    _sweep(env)
    with env.state.db.transaction() as s:  # what resume_retry's claim writes
        run = s.get(Run, run_id)
        run.status, run.retry_owner = "running", "another-workers-token"
    assert worker._begin_attempt(env.state, run_id, part.keys, 2, 0.0, waiter.token) is None
    assert finish(env.state, run_id, "cancelled", "stopped", execution=waiter) == "running"
    run = _run(env, run_id)
    assert (run.status, run.retry_owner) == ("running", "another-workers-token")
    assert _row(env, run_id).attempts is None


def _attempt_begun_while_swept(env, monkeypatch, attempt_first: bool):
    """The first worker begins its attempt (_begin_attempt) while the sweep, which found its heartbeat stale, hands
    the run on, the two transactions overlapping: the one named first has written and waits before its commit
    while the other starts. Returns (the run afterwards, what _begin_attempt answered)."""
    from web import dispatcher as dispatcher_module
    from web import runs as runs_module

    run_id, part, waiter = _waiting_run(env, due_in=0)
    written, go = threading.Event(), threading.Event()

    def pause(session):
        session.flush()  # the row is written (locked, on PostgreSQL) ...
        written.set()
        assert go.wait(30)  # ... and stays uncommitted until the other transaction has started

    if attempt_first:
        real = worker.add_event

        def add_event(session, *args, **kwargs):
            real(session, *args, **kwargs)
            pause(session)
        monkeypatch.setattr(worker, "add_event", add_event)
    else:
        def hand_on(session, run, now, *args):
            runs_module.hand_on(session, run, now, *args)
            pause(session)
        monkeypatch.setattr(dispatcher_module, "hand_on", hand_on)
    began = {}
    first = threading.Thread(target=(lambda: began.update(value=worker._begin_attempt(
        env.state, run_id, part.keys, 2, 0.0, waiter.token))) if attempt_first else (lambda: _sweep(env)))
    second = threading.Thread(target=(lambda: _sweep(env)) if attempt_first else (lambda: began.update(
        value=worker._begin_attempt(env.state, run_id, part.keys, 2, 0.0, waiter.token))))
    first.start()
    assert written.wait(30)
    second.start()
    second.join(1.0)  # it waits for the first's lock (or has read around it)
    go.set()
    first.join(60)
    second.join(60)
    assert not first.is_alive() and not second.is_alive()
    return _run(env, run_id), began["value"]


@pytest.mark.parametrize("attempt_first", [True, False])
def test_an_attempt_begun_while_the_sweep_hands_its_run_on_happens_once(env, monkeypatch, attempt_first):
    # Either the first worker makes the attempt and the run is not handed on, or the run is handed on (queued,
    # retry_at kept, for resume_retry) and the first worker leaves it: never a queued run without retry_at,
    # which any batch would claim as a new run and execute a second time beside the first worker's attempt.
    run, began = _attempt_begun_while_swept(env, monkeypatch, attempt_first)
    if began:
        assert run.status != "queued", (run.status, run.retry_at)
    else:
        assert began is None and run.status == "queued" and run.retry_at is not None
    claimed, _ = worker.claim_batch(env.state, run.id, T0)
    assert claimed == []


def test_a_handed_on_retry_taken_over_past_the_schedules_grace_is_not_made(env):
    # Every worker was down for hours: the attempt a run waited for is past due by more than its schedule's
    # misfire_grace. As a run that waited that long in the queue is recorded missed, the late attempt is not made
    # (a nightly "stop" retried at noon); the run ends with what its attempts came to.
    from web.models import Schedule

    run_id, part, waiter = _waiting_run(env, due_in=-7200)
    with env.state.db.transaction() as s:
        s.get(Schedule, _run(env, run_id).schedule_id).misfire_grace = 300
    _sweep(env)
    status = _take_over(env, run_id, never)
    assert env.state.executions.wait_idle(30)
    run = _run(env, run_id)
    assert status == run.status == "failed" and (run.retry_at, run.retry_owner) == (None, None)
    assert "the schedule's misfire_grace (300 s)" in run.error and "the retry due at" in run.error, run.error
    assert _row(env, run_id).attempts is None and "machine_retried" not in _event_types(env, run_id)


def test_a_handed_on_retry_taken_over_within_the_grace_is_made(env):
    from web.models import Schedule

    run_id, part, waiter = _waiting_run(env, due_in=-60)
    with env.state.db.transaction() as s:
        s.get(Schedule, _run(env, run_id).schedule_id).misfire_grace = 300
    _sweep(env)
    execute, calls = _attempts_then(env, [("succeeded", None)])
    assert _take_over(env, run_id, execute) == "running"
    assert env.state.executions.wait_idle(60)
    assert _run(env, run_id).status == "succeeded" and len(calls) == 1
