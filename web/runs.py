"""Run records: created by the dispatcher, by run_immediately and by manual starts; read by the API."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from .crypto import new_id
from .models import Event, Run, RunMachine, Schedule
from .timemath import format_instant

FINAL = ("succeeded", "failed", "partial", "skipped", "missed", "interrupted", "timed_out")
ACTIVE = ("queued", "running")
# Why a run was interrupted, as its schedule_interrupted event says (data.reason).
WORKER_LOST = "worker_lost"   # no heartbeat: the worker was killed, crashed or could not write
SHUTDOWN = "shutdown"         # the worker was stopped (SIGTERM) and its drain period ended first


def create_run(session: Session, schedule: Schedule, trigger: str, scheduled_for: datetime | None,
               now: datetime, status: str = "queued", error: str | None = None) -> Run:
    """Add a run row for `schedule`; queued runs are picked up by the enqueue sweep after commit."""
    run = Run(id=new_id(), org_id=schedule.org_id, schedule_id=schedule.id, trigger=trigger,
              scheduled_for=scheduled_for, created_at=now, status=status, error=error)
    if status in FINAL:
        run.finished_at = now
    session.add(run)
    if status != "queued":  # a queued run gets its events from the worker; claims stay cheap
        add_event(session, run, "schedule_" + status, now, {"trigger": trigger, **({"error": error} if error else {})})
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


def active_run(session: Session, schedule_id: str) -> Run | None:
    """A queued or running run of the schedule (the oldest), or None."""
    return session.scalars(select(Run).where(Run.schedule_id == schedule_id, Run.status.in_(ACTIVE))
                           .order_by(Run.created_at, Run.id).limit(1)).first()


def add_event(session: Session, run: Run, type_: str, now: datetime, data: dict | None = None,
              cloud_id: str | None = None, machine_id: str | None = None) -> None:
    session.add(Event(org_id=run.org_id, time=now, type=type_, schedule_id=run.schedule_id, run_id=run.id,
                      cloud_id=cloud_id, machine_id=machine_id, data=data or {}))


def start_now(session: Session, schedule: Schedule, trigger: str, now: datetime) -> Run:
    """A run outside the schedule's timing (immediate or manual); the caller enqueues it after commit.

    Such runs do not count toward max_run_count, so run_immediately never uses up a one_off.
    """
    run = create_run(session, schedule, trigger, now, now)
    run.enqueued_at = now
    schedule.last_run_at = now
    return run


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
    }
    if machines is not None:
        out["machines"] = [{
            "machine_key": m.machine_key, "cloud_id": m.cloud_id, "machine_id": m.machine_id, "status": m.status,
            "rc": m.rc, "stdout": m.stdout, "stderr": m.stderr, "error": m.error, "duration": m.duration,
        } for m in machines]
    return out


def event_json(e: Event) -> dict:
    return {"id": e.id, "time": format_instant(e.time), "type": e.type, "schedule_id": e.schedule_id,
            "run_id": e.run_id, "cloud_id": e.cloud_id, "machine_id": e.machine_id, **(e.data or {})}
