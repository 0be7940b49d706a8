"""Run records: created by the dispatcher, by run_immediately and by manual starts; read by the API."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from .crypto import new_id
from .models import Event, Run, Schedule
from .timemath import format_instant

FINAL = ("succeeded", "failed", "partial", "skipped", "missed", "interrupted", "timed_out")


def create_run(session: Session, schedule: Schedule, trigger: str, scheduled_for: datetime | None,
               now: datetime, status: str = "queued", error: str | None = None, data: dict | None = None) -> Run:
    """Add a run row for `schedule`; queued runs are picked up by the enqueue sweep after commit.

    A run that ends at once (missed, skipped) gets its event, carrying `data` as well (a missed record's count).
    """
    run = Run(id=new_id(), org_id=schedule.org_id, schedule_id=schedule.id, trigger=trigger,
              scheduled_for=scheduled_for, created_at=now, status=status, error=error)
    if status in FINAL:
        run.finished_at = now
    session.add(run)
    if status != "queued":  # a queued run gets its events from the worker; claims stay cheap
        add_event(session, run, "schedule_" + status, now,
                  {"trigger": trigger, **({"error": error} if error else {}), **(data or {})})
    return run


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
