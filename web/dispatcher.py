"""The dispatcher: claims due schedules atomically, writes one run per fire, and hands run ids to the queue.

The database is the one source of truth: the dispatcher keeps no copy of a schedule, so an edit,
disable or delete takes effect at the next claim. A claim is one transaction (BEGIN IMMEDIATE on
SQLite, SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL), so any number of dispatchers can run.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import func, select, update

from . import schedules, timemath
from .models import Run, Schedule
from .runs import add_event, create_run

log = logging.getLogger(__name__)

BATCH = 500                 # schedules claimed per transaction at most
MAX_SLEEP = 1.0             # an edit made by another process is seen within this many seconds
SWEEP_EVERY = 5.0           # how often queued-without-message and dead-worker runs are looked for
REQUEUE_AFTER = timedelta(seconds=60)
STALE_HEARTBEAT = timedelta(seconds=30)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Dispatcher:
    """Claims due schedules; one call of tick() does one unit of work and says when the next is due."""

    def __init__(self, state, enqueue: Callable[[list[str]], None], clock: Callable[[], datetime] = utcnow):
        self.state = state
        self.db = state.db
        self.enqueue = enqueue
        self.clock = clock
        self._wake = threading.Event()
        self._next_sweep = 0.0
        self.claimed = 0

    def wake(self, when=None) -> None:
        """Called after a schedule changed in this process: re-read the next due time now."""
        self._wake.set()

    # ------------------------------------------------------------------ claiming

    def tick(self) -> datetime | None:
        """Claim everything due now; return the earliest next_run_at left (None if nothing is scheduled)."""
        now = self.clock()
        queued = self.claim(now)
        if queued:
            self.enqueue(queued)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_EVERY
            self.sweep(self.clock())
        with self.db.session() as session:
            return session.scalar(select(func.min(Schedule.next_run_at)).where(Schedule.next_run_at.is_not(None)))

    def claim(self, now: datetime) -> list[str]:
        """One claim transaction: due schedules fire, runs are written, next_run_at advances."""
        queued: list[str] = []
        with self.db.transaction() as session:
            query = (select(Schedule).where(Schedule.next_run_at <= now)
                     .order_by(Schedule.next_run_at).limit(BATCH))
            if not self.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            due = session.scalars(query).all()
            if not due:
                return queued
            busy = set(session.scalars(
                select(Run.schedule_id).where(
                    Run.schedule_id.in_([s.id for s in due if s.concurrency == "forbid"]),
                    Run.status.in_(("queued", "running")),
                )
            ))
            for schedule in due:
                run = self._fire(session, schedule, now, busy)
                if run is not None:
                    queued.append(run.id)
        self.claimed += len(queued)
        return queued

    def _fire(self, session, schedule: Schedule, now: datetime, busy: set[str]) -> Run | None:
        due = schedule.next_run_at
        grace = timedelta(seconds=schedule.misfire_grace)
        if now - due <= grace:
            fire_at = due
        else:
            # Too late for this fire: record it, and run only a fire that is still within the grace.
            create_run(session, schedule, "scheduled", due, now, status="missed",
                       error=f"missed by {(now - due).total_seconds():.0f} s (misfire_grace is {schedule.misfire_grace} s)")
            recent = timemath.next_fire(schedules.timing(schedule), now - grace)
            fire_at = recent if recent is not None and recent <= now else None
        run = None
        if fire_at is not None:
            if schedule.id in busy:
                create_run(session, schedule, "scheduled", fire_at, now, status="skipped",
                           error="the previous run of this schedule is still going (concurrency: forbid)")
            else:
                run = create_run(session, schedule, "scheduled", fire_at, now)
                run.enqueued_at = now
                busy.add(schedule.id)
                schedule.total_run_count = (schedule.total_run_count or 0) + 1
                schedule.last_run_at = now
        # Several fires passed while we were away coalesce into the one above: skip to after now.
        schedule.next_run_at = schedules.next_run_at(schedule, now)
        return run

    # ------------------------------------------------------------------ repair

    def sweep(self, now: datetime) -> tuple[int, int]:
        """Re-enqueue queued runs whose message may be lost; mark runs of dead workers interrupted."""
        with self.db.transaction() as session:
            lost = list(session.scalars(
                select(Run.id).where(Run.status == "queued",
                                     (Run.enqueued_at.is_(None)) | (Run.enqueued_at < now - REQUEUE_AFTER))
                .limit(BATCH)
            ))
            if lost:
                session.execute(update(Run).where(Run.id.in_(lost)).values(enqueued_at=now))
            dead = session.scalars(
                select(Run).where(Run.status == "running", Run.heartbeat_at < now - STALE_HEARTBEAT).limit(BATCH)
            ).all()
            for run in dead:
                run.status = "interrupted"
                run.finished_at = now
                run.error = "the worker running this stopped answering (killed or crashed)"
                add_event(session, run, "schedule_interrupted", now, {"error": run.error})
        if lost:
            log.info("re-enqueueing %d queued run(s)", len(lost))
            self.enqueue(lost)
        if dead:
            log.warning("marked %d run(s) interrupted", len(dead))
        return len(lost), len(dead)

    # ------------------------------------------------------------------ loop

    def run(self, stop: threading.Event) -> None:
        """Sleep until the next due time (or a wake-up), claim, repeat, until `stop` is set."""
        log.info("dispatcher started")
        while not stop.is_set():
            try:
                next_due = self.tick()
            except Exception:
                log.exception("dispatcher tick failed; retrying")
                next_due = None
                stop.wait(1.0)
            delay = MAX_SLEEP
            if next_due is not None:
                delay = min(MAX_SLEEP, (next_due - self.clock()).total_seconds())
            if delay > 0:
                self._wake.wait(delay)
            self._wake.clear()
        log.info("dispatcher stopped")
