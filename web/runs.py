"""Run records: which statuses a run has, who sets each one, and the session-level steps that set them.

    queued       created: the dispatcher at a fire (create_run), run_immediately and "run now" (start_now)
    running      claimed by a worker: claim_ready (a batch, one conditional UPDATE ... RETURNING)
    queued again hand_on(): for a run waiting to retry (retry_at set), the sweep when its worker stopped
                 answering, or its worker when stopped (drain); web.worker.resume_retry claims it back to
                 running (claim_ready skips it)
    missed       the dispatcher, for fires older than misfire_grace at fire time (create_run); claim_ready,
                 for runs that waited in the queue past their grace (nothing is done to their machines)
    skipped      the dispatcher: skip_next, and concurrency forbid while a run is active (create_run)
    succeeded, partial, failed, timed_out
                 the worker, from the run's per-machine results (end_run; record_result per machine)
    interrupted  interrupt(): the sweep when the heartbeat stopped (worker_lost), the drain at SIGTERM
                 (shutdown), or end_run for a run whose worker was told to stop it

Transactions, provider calls and playbooks are the callers' (web/worker.py, web/dispatcher.py); the
functions here take a session and only read and write rows.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from . import metrics
from .crypto import new_id
from .models import Event, Run, RunMachine, Schedule
from .notify import on_event as notify_on_event
from .timemath import format_instant

FINAL = ("succeeded", "failed", "partial", "skipped", "missed", "interrupted", "timed_out")
ACTIVE = ("queued", "running")
# Why a run was interrupted, as its schedule_interrupted event says (data.reason).
WORKER_LOST = "worker_lost"   # no heartbeat: the worker was killed, crashed or could not write
SHUTDOWN = "shutdown"         # the worker was stopped (SIGTERM) and its drain period ended first


def create_run(session: Session, schedule: Schedule, trigger: str, scheduled_for: datetime | None,
               now: datetime, status: str = "queued", error: str | None = None, data: dict | None = None) -> Run:
    """Add a run row for `schedule`; queued runs are picked up by the enqueue sweep after commit.

    A run that ends at once (missed, skipped) gets its event, carrying `data` as well (a missed record's count).
    """
    run = Run(id=new_id(), org_id=schedule.org_id, schedule_id=schedule.id, trigger=trigger,
              scheduled_for=scheduled_for, created_at=now, status=status, error=error)
    if status in FINAL:
        run.finished_at = now
        metrics.run_ended(run)
    session.add(run)
    if status != "queued":  # a queued run gets its events from the worker; claims stay cheap
        add_event(session, run, "schedule_" + status, now,
                  {"trigger": trigger, **({"error": error} if error else {}), **(data or {})})
    return run


def interrupt(session: Session, run: Run, now: datetime, reason: str, error: str) -> None:
    """End a running run as `interrupted`: its machines still running end too, and an event says why.

    reason is WORKER_LOST or SHUTDOWN; the caller holds the run row (in its write transaction)."""
    run.status = "interrupted"
    run.finished_at = now
    run.error = error
    session.execute(update(RunMachine).where(RunMachine.run_id == run.id, RunMachine.status == "running")
                    .values(status="interrupted", error=error))
    add_event(session, run, "schedule_interrupted", now, {"reason": reason, "error": error})
    metrics.run_ended(run)


def hand_on(session: Session, run: Run, now: datetime, reason: str = WORKER_LOST) -> None:
    """Put a run that waits to retry (run.retry_at set) back to `queued`; the caller enqueues its id after the
    commit, and a worker takes it over (web.worker.resume_retry).

    Instead of interrupt(), for a wait is no work in progress and nothing is lost by carrying it on elsewhere:
    the sweep's, when the worker stopped answering (WORKER_LOST), and the worker's own when it is stopped during
    the wait (SHUTDOWN: a drain). retry_at is kept (when the next attempt is due); retry_owner is cleared, so
    the worker that waited, should it still be alive, makes no attempt of its own."""
    run.status = "queued"
    run.enqueued_at = now
    run.retry_owner = None
    add_event(session, run, "retry_handed_on", now, {"reason": reason, "retry_at": format_instant(run.retry_at)})


def lose(session: Session, run: Run, now: datetime, error: str) -> None:
    """End a queued run whose queue message was lost for good as `failed`: it never started, nothing was done.

    Called by the dispatcher's sweep once re-enqueueing it did not help; the caller holds the run row."""
    run.status = "failed"
    run.finished_at = now
    run.error = error
    add_event(session, run, "schedule_finished", now, {"status": "failed", "error": error})
    metrics.run_ended(run)


def record_result(session: Session, run: Run, row: RunMachine, result, is_script: bool, now: datetime,
                  machine=None) -> None:
    """Write one machine's result (a web.results.MachineResult) on its row, with its event.

    A power result also updates the machine's known state (`machine`, a Machine row) when the cloud said."""
    row.status, row.rc, row.error, row.duration = result.status, result.rc, result.error, result.duration
    row.stdout, row.stderr = result.stdout, result.stderr
    if is_script:
        type_ = "script_finished"
        data = {"rc": result.rc, "status": result.status, **({"error": result.error} if result.error else {})}
    else:
        type_ = "machine_action_succeeded" if result.status == "succeeded" else "machine_action_failed"
        data = {"status": result.status, **({"error": result.error} if result.error else {})}
        if machine is not None and result.state:
            machine.state = result.state
    if row.attempts:  # a retried machine: which attempt this result is (web.worker._retry_run)
        data["attempt"] = len(row.attempts) + 1
    add_event(session, run, type_, now, data, row.cloud_id, row.machine_id)


def end_run(session: Session, run: Run, rows: list[RunMachine], exec_status: str | None, error: str | None,
            now: datetime, stopped: tuple[str, str | None] | None = None) -> str:
    """Give a running run its final status from its machines' rows; returns the status.

    exec_status is how its playbook ended ("finished" | "timed_out" | "cancelled" | "error" | None when
    nothing was executed); machines still `running` end timed_out or failed with it. stopped: (reason,
    error) when the worker was told to stop the run (SHUTDOWN or WORKER_LOST): unless the playbook had
    finished, the run ends `interrupted`. A run no longer `running` (the sweep interrupted it) keeps its
    status; only its machines still marked running are closed."""
    if run.status != "running":
        for row in rows:
            if row.status == "running":
                row.status, row.error = "interrupted", run.error or "the run ended before this machine"
        return run.status
    if exec_status == "cancelled" or (stopped is not None and exec_status not in ("finished", "timed_out")):
        reason, why = stopped if stopped is not None else (SHUTDOWN, None)
        interrupt(session, run, now, reason, why or error or "the run was stopped before it finished")
        return run.status
    rows = sorted(rows, key=lambda r: r.id or 0)
    for row in rows:
        if row.status == "running":
            row.status = "timed_out" if exec_status == "timed_out" else "failed"
            row.error = row.error or ("the run timed out" if exec_status == "timed_out" else "no result came back")
    ok = sum(1 for r in rows if r.status == "succeeded")
    if exec_status == "timed_out":
        status = "timed_out"
    elif rows and ok == len(rows):
        status = "succeeded"
    elif ok:
        status = "partial"
    else:
        status = "failed"
    run.status = status
    run.finished_at = now
    run.error = error or (None if status == "succeeded" else _summary(rows))
    add_event(session, run, "schedule_finished", now, {"status": status, **({"error": run.error} if run.error else {})})
    metrics.run_ended(run)
    return run.status


def _summary(rows) -> str | None:
    bad = [r for r in rows if r.status != "succeeded"]
    if not rows:
        return "no machine to act on"
    return f"{len(bad)} of {len(rows)} machine(s) did not succeed" if bad else None


def active_run(session: Session, schedule_id: str) -> Run | None:
    """A queued or running run of the schedule (the oldest), or None."""
    return session.scalars(select(Run).where(Run.schedule_id == schedule_id, Run.status.in_(ACTIVE))
                           .order_by(Run.created_at, Run.id).limit(1)).first()


def add_event(session: Session, run: Run, type_: str, now: datetime, data: dict | None = None,
              cloud_id: str | None = None, machine_id: str | None = None) -> None:
    session.add(Event(org_id=run.org_id, time=now, type=type_, schedule_id=run.schedule_id, run_id=run.id,
                      cloud_id=cloud_id, machine_id=machine_id, data=data or {}))
    notify_on_event(session, run, type_, now)  # the event that ends a run queues its notifications (outbox)


def start_now(session: Session, schedule: Schedule, trigger: str, now: datetime) -> Run:
    """A run outside the schedule's timing (immediate or manual); the caller enqueues it after commit.

    Such runs do not count toward max_run_count, so run_immediately never uses up a one_off.
    """
    run = create_run(session, schedule, trigger, now, now)
    run.enqueued_at = now
    schedule.last_run_at = now
    return run


def run_now(state, session: Session, schedule: Schedule, now: datetime) -> Run:
    """A manual run of `schedule` ("run now"): written, committed, then enqueued (queue I/O after the commit).

    With concurrency forbid, Conflict (409) naming the run while one is queued or running. The check
    and the insert hold the schedule row: `session` must be a writer (on SQLite its BEGIN IMMEDIATE
    is the lock; on PostgreSQL SELECT ... FOR UPDATE, which the dispatcher's claim skips), so parallel
    calls make one run. The audit entry (run_now, with the run's id) is committed with the run."""
    from . import audit
    from .errors import Conflict

    schedule = session.scalars(select(Schedule).where(Schedule.id == schedule.id).with_for_update()
                               .execution_options(populate_existing=True)).one()
    if schedule.concurrency == "forbid":
        running = active_run(session, schedule.id)
        if running is not None:
            raise Conflict(f"concurrency: run '{running.id}' of this schedule is still {running.status} "
                           "(concurrency: forbid); wait for it to end, or set concurrency to allow")
    run = start_now(session, schedule, "manual", now)
    audit.record(session, schedule, "run_now", now=now, extra={"run_id": {"before": None, "after": run.id}})
    session.commit()
    state.enqueue([run.id])
    return run


def machines_of(session: Session, run_id: str) -> list[RunMachine]:
    """A run's per-machine results, in the order they were recorded."""
    return session.scalars(select(RunMachine).where(RunMachine.run_id == run_id).order_by(RunMachine.id)).all()


def runs_query(org_id: str, schedule_id: str):
    """The select of one schedule's runs in an org (order it newest first: created_at, id descending)."""
    return select(Run).where(Run.schedule_id == schedule_id, Run.org_id == org_id)


def events_query(org_id: str, schedule_id: str | None = None, run_id: str | None = None,
                 event_type: str | None = None, start: datetime | None = None, stop: datetime | None = None):
    """The select of an org's log events with the API's filters (start and stop inclusive, aware UTC)."""
    query = select(Event).where(Event.org_id == org_id)
    if schedule_id:
        query = query.where(Event.schedule_id == schedule_id)
    if run_id:
        query = query.where(Event.run_id == run_id)
    if event_type:
        query = query.where(Event.type == event_type)
    if start:
        query = query.where(Event.time >= start)
    if stop:
        query = query.where(Event.time <= stop)
    return query


def recent_outcomes(session: Session, org_id: str, schedule_ids, count: int = 10) -> dict[str, list[Run]]:
    """The newest `count` runs of each schedule (any status), newest first: {schedule_id: [Run, ...]}."""
    ids = list(schedule_ids)
    if not ids:
        return {}
    rank = func.row_number().over(partition_by=Run.schedule_id,
                                  order_by=(Run.created_at.desc(), Run.id.desc())).label("rank")
    ranked = select(Run.id, rank).where(Run.org_id == org_id, Run.schedule_id.in_(ids)).subquery()
    rows = session.scalars(select(Run).join(ranked, ranked.c.id == Run.id).where(ranked.c.rank <= count)
                           .order_by(Run.schedule_id, Run.created_at.desc(), Run.id.desc())).all()
    out: dict[str, list[Run]] = {i: [] for i in ids}
    for run in rows:
        out[run.schedule_id].append(run)
    return out


def last_finished(session: Session, org_id: str) -> dict[str, Run]:
    """Each schedule's newest finished run (a status in FINAL): {schedule_id: Run}."""
    rank = func.row_number().over(partition_by=Run.schedule_id,
                                  order_by=(Run.created_at.desc(), Run.id.desc())).label("rank")
    ranked = select(Run.id, rank).where(Run.org_id == org_id, Run.status.in_(FINAL)).subquery()
    rows = session.scalars(select(Run).join(ranked, ranked.c.id == Run.id).where(ranked.c.rank == 1)).all()
    return {run.schedule_id: run for run in rows}


def status_counts(session: Session, org_id: str, since: datetime) -> dict[str, int]:
    """How many of an org's runs created at or after `since` have each status."""
    rows = session.execute(select(Run.status, func.count()).where(Run.org_id == org_id, Run.created_at >= since)
                           .group_by(Run.status))
    return {status: n for status, n in rows}


def backlog(session: Session, org_id: str) -> tuple[int, datetime | None]:
    """An org's runs waiting in the queue (status queued): how many, and when the oldest was created."""
    n, oldest = session.execute(select(func.count(), func.min(Run.created_at))
                                .where(Run.org_id == org_id, Run.status == "queued")).one()
    return n, oldest  # min() keeps the column's type, so this is aware UTC


def on_schedule_created(session: Session, schedule: Schedule, now: datetime) -> Run | None:
    """run_immediately: one run at creation, only when the schedule is enabled."""
    if schedule.enabled and schedule.run_immediately:
        return start_now(session, schedule, "immediate", now)
    return None


def run_json(run: Run, machines=None) -> dict:
    """A run as the API answers it; `machines` adds the per-machine results."""
    out = {
        "id": run.id, "schedule_id": run.schedule_id, "trigger": run.trigger,
        "scheduled_for": format_instant(run.scheduled_for), "created_at": format_instant(run.created_at),
        "started_at": format_instant(run.started_at), "finished_at": format_instant(run.finished_at),
        "status": run.status, "error": run.error,
        # When a run waiting to retry is due its next attempt; null when it is not waiting (web.worker._retry_run).
        "retry_at": format_instant(run.retry_at) if run.status in ("queued", "running") else None,
    }
    if machines is not None:
        out["machines"] = [{
            "machine_key": m.machine_key, "cloud_id": m.cloud_id, "machine_id": m.machine_id, "status": m.status,
            "rc": m.rc, "stdout": m.stdout, "stderr": m.stderr, "error": m.error, "duration": m.duration,
            # Every attempt, the last one (this row's own fields) included: [{"attempt", "status", "error",
            # "duration"}]; one entry for a machine tried once.
            "attempts": [*(m.attempts or []), {"attempt": len(m.attempts or []) + 1, "status": m.status,
                                               "error": m.error, "duration": m.duration}],
        } for m in machines]
    return out


def event_json(e: Event) -> dict:
    return {"id": e.id, "time": format_instant(e.time), "type": e.type, "schedule_id": e.schedule_id,
            "run_id": e.run_id, "cloud_id": e.cloud_id, "machine_id": e.machine_id, **(e.data or {})}


def lateness_error(waited: float, grace: float, setting: str) -> str:
    """The error of a run recorded missed because it waited too long in the queue."""
    return f"waited {waited:.0f} s in the queue, longer than {setting} ({grace:g} s): nothing was done"


def _named(pairs, selectors) -> int:
    """How many machines a schedule names, as the batch bound counts them (a tags selector counts as one)."""
    return len(pairs or []) + sum(len(s.get("ids") or []) or 1 for s in selectors or [])


def claim_ready(session: Session, first_id: str, now: datetime, *, batching: bool, max_runs: int,
                max_machines: int, manual_grace: float) -> tuple[list[str], list[str]]:
    """Claim the run `first_id` and, with batching, every other ready run up to the bounds: (claimed, missed).

    The caller holds a write transaction. Runs are taken round-robin by org (each org's oldest first, then
    each org's second ...), so one org's thousand queued runs never keep another org's single run waiting.
    max_machines bounds the machines the runs name (machines_per_cloud pairs, and selector ids; a tags
    selector counts as one). The claim is one conditional UPDATE (queued -> running) over all chosen rows:
    RETURNING tells which rows this worker won, so two workers never take the same run.

    A run claimed after waiting past its grace (a scheduled run: its schedule's misfire_grace; a manual or
    immediate run: manual_grace, CLOUDCRON_MANUAL_GRACE) is recorded `missed` at once and is not returned
    in `claimed`: cloudcron never acts late."""
    chosen = [first_id]
    if batching and max_runs > 1:
        rank = func.row_number().over(partition_by=Run.org_id, order_by=(Run.created_at, Run.id)).label("rank")
        ready = (select(Run.id, Run.schedule_id, rank).where(Run.status == "queued", Run.id != first_id,
                                                             Run.retry_at.is_(None))
                 .subquery())
        rows = session.execute(select(ready.c.id, Schedule.machines_per_cloud, Schedule.selectors)
                               .join(Schedule, Schedule.id == ready.c.schedule_id)
                               .order_by(ready.c.rank, ready.c.id).limit(max_runs - 1)).all()
        first = session.execute(select(Schedule.machines_per_cloud, Schedule.selectors)
                                .join(Run, Run.schedule_id == Schedule.id).where(Run.id == first_id)).first()
        machines = _named(*first) if first is not None else 0
        for run_id, pairs, selectors in rows:
            named = _named(pairs, selectors)
            if machines + named > max_machines:
                break
            machines += named
            chosen.append(run_id)
    # A queued run with retry_at is one handed on while it waited to retry: web.worker.resume_retry takes it.
    won = set(session.scalars(update(Run).where(Run.id.in_(chosen), Run.status == "queued", Run.retry_at.is_(None))
                              .values(status="running", started_at=now, heartbeat_at=now)
                              .returning(Run.id).execution_options(synchronize_session=False)).all())
    if not won:
        return [], []
    claimed, missed = [], []
    rows = session.execute(select(Run, Schedule.misfire_grace).outerjoin(Schedule, Schedule.id == Run.schedule_id)
                           .where(Run.id.in_(won)).execution_options(populate_existing=True)).all()
    by_id = {run.id: (run, grace) for run, grace in rows}
    for run_id in chosen:
        if run_id not in by_id:
            continue
        run, misfire_grace = by_id[run_id]
        if run.trigger == "scheduled":
            grace, setting = float(misfire_grace if misfire_grace is not None else 300), "the schedule's misfire_grace"
        else:
            grace, setting = float(manual_grace), "CLOUDCRON_MANUAL_GRACE"
        since = run.scheduled_for or run.created_at
        waited = (now - since).total_seconds() if since is not None else 0.0
        if waited > grace:
            error = lateness_error(waited, grace, setting)
            run.status, run.finished_at, run.error = "missed", now, error
            add_event(session, run, "schedule_missed", now, {"trigger": run.trigger, "error": error,
                                                             "waited": round(waited, 3)})
            metrics.run_ended(run)
            missed.append(run_id)
        else:
            claimed.append(run_id)
    return claimed, missed
