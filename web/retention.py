"""Retention: old run records are pruned in the background, a small batch per short transaction.

What goes (settings in web.config):

- runs that ended (a final status: never queued or running ones) created before
  CLOUDCRON_RETENTION_DAYS ago, and those beyond the newest CLOUDCRON_RETENTION_RUNS_PER_SCHEDULE of
  their schedule, with their machine rows, events and notification deliveries;
- events without a run (a schedule's `schedule_error`) and test deliveries older than the same age.

Each batch (at most CLOUDCRON_RETENTION_BATCH runs) is found with a read, then deleted in one transaction
that only deletes rows by primary key or run id, so on SQLite the write lock is held for a few milliseconds and the API,
dispatchers and workers keep writing between batches. The loop runs beside each dispatcher: several
dispatchers prune the same rows harmlessly (a delete of rows already gone deletes nothing).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, func, select

from .backoff import Backoff
from .models import Delivery, Event, Run, RunMachine
from .runs import FINAL

log = logging.getLogger(__name__)

PAUSE = 0.05  # seconds between two batches of one sweep: other writers take the lock in between


@dataclass
class Pruned:
    """What one sweep removed."""

    runs: int = 0
    events: int = 0
    deliveries: int = 0
    batches: int = 0
    by_reason: dict = field(default_factory=lambda: {"age": 0, "count": 0})

    def __bool__(self) -> bool:
        return bool(self.runs or self.events or self.deliveries)


def _delete_runs(session, ids: list[str]) -> int:
    """Delete runs (ended ones only) with their machine rows, events and deliveries; how many runs went."""
    session.execute(delete(RunMachine).where(RunMachine.run_id.in_(ids)))
    session.execute(delete(Event).where(Event.run_id.in_(ids)))
    session.execute(delete(Delivery).where(Delivery.run_id.in_(ids)))
    return session.execute(delete(Run).where(Run.id.in_(ids), Run.status.in_(FINAL))).rowcount


def _next_batch(session, cutoff: datetime, keep: int, batch: int) -> tuple[str, list] | None:
    """What to prune next: (reason, ids), or None. Read only."""
    ids = session.scalars(select(Run.id).where(Run.created_at < cutoff, Run.status.in_(FINAL))
                          .order_by(Run.created_at).limit(batch)).all()
    if ids:
        return "age", list(ids)
    # A schedule with more ended runs than kept (queued and running ones are never counted nor pruned).
    over = session.execute(select(Run.schedule_id).where(Run.status.in_(FINAL)).group_by(Run.schedule_id)
                           .having(func.count() > keep).limit(1)).first()
    if over is not None:
        ids = session.scalars(select(Run.id).where(Run.schedule_id == over.schedule_id, Run.status.in_(FINAL))
                              .order_by(Run.created_at.desc(), Run.id.desc()).offset(keep).limit(batch)).all()
        if ids:
            return "count", list(ids)
    ids = session.scalars(select(Event.id).where(Event.run_id.is_(None), Event.time < cutoff).limit(batch)).all()
    if ids:
        return "events", list(ids)
    ids = session.scalars(select(Delivery.id).where(Delivery.run_id.is_(None), Delivery.created_at < cutoff,
                                                    Delivery.next_attempt_at.is_(None)).limit(batch)).all()
    if ids:
        return "deliveries", list(ids)
    return None


def prune_batch(db, now: datetime, days: float, keep: int, batch: int) -> tuple[str, int] | None:
    """Prune one batch; returns (reason, rows deleted) or None when nothing is left to prune.

    reason is "age" (runs older than `days`), "count" (runs beyond the newest `keep` of a schedule), or
    "events" / "deliveries" (old rows without a run). The rows are found with a read (no write lock: the
    grouped count scans the runs table), then deleted by id in one short write transaction; a row that
    went meanwhile is simply not deleted again. `now` is aware UTC."""
    with db.session() as read:
        found = _next_batch(read, now - timedelta(days=days), keep, batch)
    if found is None:
        return None
    reason, ids = found
    with db.transaction() as session:
        if reason in ("age", "count"):
            return reason, _delete_runs(session, ids)
        model = Event if reason == "events" else Delivery
        return reason, session.execute(delete(model).where(model.id.in_(ids))).rowcount


def sweep(state, now: datetime, stop: threading.Event | None = None, pause: float = PAUSE) -> Pruned:
    """Prune batch after batch until nothing is left (or `stop` is set), pausing `pause` s between batches."""
    config = state.config
    pruned = Pruned()
    while stop is None or not stop.is_set():
        done = prune_batch(state.db, now, config.retention_days, config.retention_runs_per_schedule,
                           config.retention_batch)
        if done is None:
            break
        reason, rows = done
        pruned.batches += 1
        if reason in ("age", "count"):
            pruned.runs += rows
            pruned.by_reason[reason] += rows
        elif reason == "events":
            pruned.events += rows
        else:
            pruned.deliveries += rows
        if rows == 0:  # another process pruned the same rows meanwhile: look again at the next sweep
            break
        if pause and stop is not None:
            stop.wait(pause)
    return pruned


def run(state, stop: threading.Event) -> None:
    """Sweep every CLOUDCRON_RETENTION_EVERY seconds until `stop` is set (the first sweep at start)."""
    errors = Backoff("pruning old runs", log, first=1.0, cap=30.0)
    wait = 0.0
    while not stop.wait(wait):
        try:
            pruned = sweep(state, datetime.now(timezone.utc), stop)
        except Exception:  # noqa: BLE001 - the database went away: try again later
            wait = errors.failed()
            continue
        errors.succeeded()
        if pruned:
            log.info("pruned %d run(s) (%d by age, %d beyond the per-schedule count), %d event(s), %d delivery(ies)",
                     pruned.runs, pruned.by_reason["age"], pruned.by_reason["count"], pruned.events, pruned.deliveries)
        wait = state.config.retention_every


def start(state, stop: threading.Event) -> threading.Thread:
    """The retention loop's thread (daemon), for a dispatcher's process."""
    thread = threading.Thread(target=run, args=(state, stop), daemon=True, name="retention")
    thread.start()
    return thread
