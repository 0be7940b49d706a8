"""The dispatcher: claims due schedules atomically, writes one run per fire, and hands run ids to the queue.

The database is the one source of truth: the dispatcher keeps no copy of a schedule, so an edit,
disable or delete takes effect at the next claim. A claim is one transaction (BEGIN IMMEDIATE on
SQLite, SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL), so any number of dispatchers can run.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from . import audit, calendars, metrics, schedules, timemath
from .backoff import Backoff, one_line
from .crypto import new_id
from .db import sqlite_statement
from .heartbeats import DISPATCHER, Heartbeat, forget_dead
from .models import Event, Run, Schedule
from .runs import WORKER_LOST, create_run, hand_on, interrupt, lose

log = logging.getLogger(__name__)

BATCH = 500                 # schedules claimed per transaction at most
MAX_SLEEP = 1.0             # an edit made by another process is seen within this many seconds
SWEEP_EVERY = 5.0           # how often queued-without-message and dead-worker runs are looked for
REQUEUE_AFTER = timedelta(seconds=60)
MAX_REQUEUES = 1            # a lost run is re-enqueued this many times; lost again, it ends failed
LOST_AGAIN = ("its queue message was lost: it was re-enqueued once at {at} and no worker took it before the "
              "queue ran empty; nothing was done to its machines")
STALE_HEARTBEAT = timedelta(seconds=30)
SPIN_FLOOR = 0.005          # a due row another dispatcher holds (SKIP LOCKED) is retried after this long
CHECKPOINT_EVERY = 0.05     # SQLite: how often the WAL is checkpointed beside the claims (s)
WAL_RESET_FRAMES = 8192     # SQLite: past this many WAL frames (~32 MB), reset the WAL even if writers wait
ERROR_BACKOFF_CAP = 30.0    # the longest wait between tries while a tick or checkpoint keeps failing (s)
# A schedule whose fire cannot be computed (a stored time zone this machine cannot load, a corrupt entry)
# is tried again this much later; meanwhile it carries the error (last_error) and every other schedule fires.
ERROR_BACKOFF = timedelta(hours=1)
ERROR_CHARS = 500

# The claim is the hot path (10,000 schedules a minute is ~170 claims a second), so it runs statements
# built once, on the tables, over a Core connection (on SQLite, compiled once and run on the DBAPI
# cursor, see db.SqliteStatement): no ORM session, unit of work or identity map.
# Runs that end at once (missed, skipped) are rare and go through runs.create_run, which also records
# their events, in a Session joined to the claim's transaction.
_S, _R = Schedule.__table__, Run.__table__
# Each due row says whether a run of its schedule is still queued or running (concurrency "forbid").
_BUSY = select(_R.c.id).where(_R.c.schedule_id == _S.c.id, (_R.c.status == "queued") | (_R.c.status == "running")) \
    .exists().label("busy")
# The time columns are NULL or 0 for a schedule without calendars, pause or jitter: no value to convert.
_HEAD = select(_S.c.id, _S.c.org_id, _S.c.schedule_type, _S.c.schedule_entry, _S.c.timezone, _S.c.enabled,
               _S.c.start_after, _S.c.expires, _S.c.max_run_count, _S.c.misfire_grace, _S.c.concurrency,
               _S.c.total_run_count, _S.c.last_run_at, _S.c.next_run_at, _S.c.created_at, _S.c.exclude_calendars,
               _S.c.jitter, _S.c.paused_at, _S.c.paused_until, _S.c.pause_note, _S.c.skip_next, _BUSY) \
    .where(_S.c.next_run_at.is_not(None)).order_by(_S.c.next_run_at)
# SQLite (the writer lock is held): walk the next_run_at index from its head; the due rows are the
# claim, and the first row not yet due says when to wake, so no second query is needed.
_HEAD_SQLITE = _HEAD.limit(BATCH + 1)
# PostgreSQL: lock the due rows other dispatchers do not hold; the next due time is read after.
_DUE_LOCKED = _HEAD.where(_S.c.next_run_at <= bindparam("now")).limit(BATCH).with_for_update(of=_S, skip_locked=True)
_NEXT_DUE = select(func.min(_S.c.next_run_at)).where(_S.c.next_run_at.is_not(None))
_INSERT_RUNS = insert(_R)
# A fire computed: the error of an earlier attempt no longer holds.
_ADVANCE = update(_S).where(_S.c.id == bindparam("b_id")).values(
    next_run_at=bindparam("b_next"), total_run_count=bindparam("b_count"), last_run_at=bindparam("b_last"),
    last_error=None, skip_next=bindparam("b_skip"))
_QUARANTINE = update(_S).where(_S.c.id == bindparam("b_id")).values(
    next_run_at=bindparam("b_next"), last_error=bindparam("b_error"))


_INSERT_RUN = insert(_R).values({k: bindparam(k) for k in (
    "id", "org_id", "schedule_id", "trigger", "scheduled_for", "created_at", "enqueued_at", "status")})


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + "..."


class _Due:
    """A due schedule's timing columns, as schedules.decide and runs.create_run read them."""

    def __init__(self, row, error: str | None = None):
        self.__dict__.update(row if isinstance(row, dict) else row._mapping)
        self.ended: list[tuple[str, datetime, str, dict]] = []  # (status, scheduled_for, error, data) of runs not run
        self.calendars: dict = {}  # compiled calendars by id, for a schedule that excludes some
        self.error = error  # why its fire could not be decided: it is quarantined, not fired


class Dispatcher:
    """Claims due schedules; one call of tick() does one unit of work and says when the next is due."""

    def __init__(self, state, enqueue: Callable[[list[str]], None], clock: Callable[[], datetime] = utcnow,
                 pending: Callable[[], int] | None = None):
        """`enqueue` puts run ids on the queue; `pending` counts the messages in it (default: the state's
        queue), which the sweep asks before it gives up on a run whose message was lost twice."""
        self.state = state
        self.db = state.db
        self.enqueue = enqueue
        self.pending = pending if pending is not None else (lambda: state.huey.pending_count())
        self.clock = clock
        self._wake = threading.Event()
        self._next_sweep = 0.0
        self._last_due = 0  # due rows the last claim took (0 with rows due means another dispatcher has them)
        self._own = None    # SQLite, inside run(): the claim connection, kept and free of WAL checkpoints
        self.claimed = 0
        self.wal_resets = 0
        self.heartbeat = Heartbeat(state.db, DISPATCHER)  # written by run(): a loop that ticks

    def wake(self, when=None) -> None:
        """Called after a schedule changed in this process: re-read the next due time now."""
        self._wake.set()

    # ------------------------------------------------------------------ claiming

    def tick(self) -> datetime | None:
        """Claim everything due now; return the earliest next_run_at left (None if nothing is scheduled)."""
        now = self.clock()
        queued, next_due = self._claim(now)
        if queued:
            self.enqueue(queued)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + SWEEP_EVERY
            self.sweep(self.clock())
        return next_due

    def claim(self, now: datetime) -> list[str]:
        """One claim transaction: due schedules fire, runs are written, next_run_at advances."""
        return self._claim(now)[0]

    def _claim(self, now: datetime) -> tuple[list[str], datetime | None]:
        """claim(), also returning the earliest next_run_at after it, read in the same transaction."""
        queued: list[str] = []
        session = None
        with self._transaction() as conn:  # BEGIN IMMEDIATE on SQLite
            if self.db.is_sqlite:
                head, insert_run, advance = (sqlite_statement(conn, s) for s in (_HEAD_SQLITE, _INSERT_RUN, _ADVANCE))
                due, next_due = [], None
                with head.rows(conn) as rows:
                    for row, unreadable in rows:  # read lazily: stops at the first not due
                        if row["next_run_at"] is not None and (row["next_run_at"] > now or len(due) == BATCH):
                            next_due = row["next_run_at"]
                            break
                        if unreadable is not None:
                            unreadable = f"the stored schedule cannot be read ({unreadable})"
                        due.append(_Due(row, unreadable))
            else:
                due = [_Due(row) for row in conn.execute(_DUE_LOCKED, {"now": now})]
                next_due = None
            self._last_due = len(due)
            if due:
                self._attach_calendars(conn, due)
                busy = {s.id for s in due if s.busy and s.concurrency == "forbid"}
                runs: list[dict] = []
                advances: list[dict] = []
                quarantined: list[dict] = []
                for schedule in due:
                    run = self._fire_contained(schedule, now, busy)
                    if schedule.error is not None:
                        quarantined.append(self._quarantine(schedule, now))
                        continue
                    if run is not None:
                        runs.append(run)
                        queued.append(run["id"])
                    for status, fire_at, error, data in schedule.ended:
                        metrics.fire_ended(status, data)
                        if session is None:
                            session = Session(bind=conn)
                        create_run(session, schedule, "scheduled", fire_at, now, status=status, error=error, data=data)
                    advances.append({"b_id": schedule.id, "b_next": schedule.next_run_at,
                                     "b_count": schedule.total_run_count, "b_last": schedule.last_run_at,
                                     "b_skip": schedule.skip_next})
                if self.db.is_sqlite:
                    insert_run.execute_many(conn, runs)
                    advance.execute_many(conn, advances)
                else:
                    if runs:
                        conn.execute(_INSERT_RUNS, runs)
                    if advances:
                        conn.execute(_ADVANCE, advances)
                if quarantined:  # rare: through SQLAlchemy, in the same transaction
                    conn.execute(_QUARANTINE, quarantined)
                    if session is None:
                        session = Session(bind=conn)
                    for q in quarantined:
                        session.add(Event(org_id=q["org_id"], time=now, type="schedule_error", schedule_id=q["b_id"],
                                          data={"error": q["b_error"], "retry_at": timemath.format_instant(q["b_next"])}))
                if session is not None:
                    session.flush()
                    session.close()
                if self.db.is_sqlite:
                    soonest = min((s.next_run_at for s in due if s.next_run_at is not None), default=None)
                    if soonest is not None and (next_due is None or soonest < next_due):
                        next_due = soonest
            if not self.db.is_sqlite:
                next_due = conn.scalar(_NEXT_DUE)
        self.claimed += len(queued)
        return queued, next_due

    @contextmanager
    def _transaction(self):
        if self._own is None:
            with self.db.writer.begin() as conn:
                yield conn
        else:
            with self._own.begin():
                yield self._own

    def _fire_contained(self, schedule: _Due, now: datetime, busy: set[str]) -> dict | None:
        """_fire() for one schedule, contained: when it raises, the schedule gets an error and fires nothing.

        One row that cannot be computed must never roll back the claim of every other schedule."""
        if schedule.error is not None:
            return None
        counters = (schedule.total_run_count, schedule.last_run_at)
        try:
            return self._fire(schedule, now, busy)
        except Exception as exc:  # noqa: BLE001 - whatever it is, it belongs to this schedule only
            schedule.total_run_count, schedule.last_run_at = counters
            schedule.ended = []
            schedule.error = f"cannot compute the next fire ({_describe(exc)})"
            return None

    def _quarantine(self, schedule: _Due, now: datetime) -> dict:
        """The row values of a schedule whose fire failed: tried again after ERROR_BACKOFF, with its error."""
        schedule.next_run_at = now + ERROR_BACKOFF
        log.warning("schedule %s: %s; trying again at %s", schedule.id, schedule.error,
                    timemath.format_instant(schedule.next_run_at), extra={"schedule_id": schedule.id})
        return {"b_id": schedule.id, "b_next": schedule.next_run_at, "b_error": schedule.error,
                "org_id": schedule.org_id}

    @staticmethod
    def _attach_calendars(conn, due: list[_Due]) -> None:
        """Give each due schedule that excludes calendars their compiled form: one query for the whole claim
        (two when a calendar changed since it was compiled), none when no due schedule names a calendar."""
        ids = {c for s in due if s.exclude_calendars for c in s.exclude_calendars}
        if ids:
            broken: dict = {}
            compiled = calendars.compiled(conn, ids, broken)
            for s in due:
                if s.exclude_calendars:
                    s.calendars = compiled
                    bad = next((c for c in s.exclude_calendars if c in broken), None)
                    if bad is not None and s.error is None:  # quarantined like any row that cannot be computed
                        s.error = f"calendar '{bad}' cannot be compiled ({_describe(broken[bad])})"

    def _fire(self, schedule: _Due, now: datetime, busy: set[str]) -> dict | None:
        """Apply the fire decision (schedules.decide) to one due schedule: returns the queued run's row (None
        when nothing runs), puts runs that end at once in schedule.ended, and advances its counters."""
        decision = schedules.decide(schedule, now, schedule.id in busy, schedule.calendars)
        schedule.ended = decision.ended
        schedule.next_run_at = decision.next_run_at
        schedule.total_run_count = decision.total_run_count
        schedule.last_run_at = decision.last_run_at
        schedule.skip_next = decision.skip_next
        if decision.run_for is None:
            return None
        busy.add(schedule.id)
        metrics.dispatched((now - decision.run_for).total_seconds())
        # The row runs.create_run writes for a queued run, plus enqueued_at.
        return {"id": new_id(), "org_id": schedule.org_id, "schedule_id": schedule.id, "trigger": "scheduled",
                "scheduled_for": decision.run_for, "created_at": now, "enqueued_at": now, "status": "queued"}

    # ------------------------------------------------------------------ repair

    def sweep(self, now: datetime) -> tuple[int, int]:
        """Re-enqueue queued runs whose message may be lost (once each); give up on those lost again; mark runs
        of dead workers interrupted, except those that were waiting to retry (retry_at set), which go back to
        the queue for another worker (web.runs.hand_on); forget heartbeat rows of long-dead processes. Returns
        (re-enqueued, ended).

        A run still queued REQUEUE_AFTER after it was enqueued may only be waiting in a long backlog, so it is
        re-enqueued once (a duplicate message finds nothing to claim). Still queued REQUEUE_AFTER after that,
        while the queue holds no message at all, its message was lost again: it ends `failed`, untouched,
        rather than being re-enqueued every minute for ever. The queue is asked before the transaction opens."""
        cut = now - REQUEUE_AFTER
        waiting = (Run.status == "queued") & ((Run.enqueued_at.is_(None)) | (Run.enqueued_at < cut))
        again = waiting & (Run.requeues >= MAX_REQUEUES)
        with self.db.session() as session:  # the queue is asked only when a run may be given up
            drained = session.scalar(select(Run.id).where(again).limit(1)) is not None and self._queue_drained()
        with self.db.transaction() as session:
            lost = list(session.scalars(select(Run.id).where(waiting, Run.requeues < MAX_REQUEUES).limit(BATCH)))
            if lost:
                session.execute(update(Run).where(Run.id.in_(lost))
                                .values(enqueued_at=now, requeues=Run.requeues + 1))
            given_up = []
            if drained:
                # Locked (PostgreSQL): a worker's claim of one of them waits, then finds it no longer queued.
                given_up = session.scalars(select(Run).where(again).limit(BATCH)
                                           .with_for_update(skip_locked=True)).all()
                for run in given_up:
                    lose(session, run, now, LOST_AGAIN.format(at=timemath.format_instant(run.enqueued_at)))
            # Locked (PostgreSQL), skipping rows a worker holds: a worker beginning its retry attempt (clearing
            # retry_at) at this moment must not have the run handed on as well, which would leave it queued without
            # retry_at, claimed as a new run by any batch and executed beside the attempt. A skipped run is
            # looked at again by the next sweep.
            dead = session.scalars(
                select(Run).where(Run.status == "running", Run.heartbeat_at < now - STALE_HEARTBEAT).limit(BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            resumed = [run.id for run in dead if run.retry_at is not None]
            for run in dead:
                if run.retry_at is not None:
                    hand_on(session, run, now)
                else:
                    interrupt(session, run, now, WORKER_LOST,
                              "the worker running this stopped answering (killed, crashed or unable to write)")
            dead = [run for run in dead if run.retry_at is None]
            forget_dead(session, now)
        if lost:
            log.info("re-enqueueing %d queued run(s)", len(lost))
            self.enqueue(lost)
        if resumed:
            log.warning("handing %d run(s) waiting to retry to another worker: theirs stopped answering", len(resumed))
            self.enqueue(resumed)
        if given_up:
            log.warning("marked %d run(s) failed: their queue message was lost after a re-enqueue", len(given_up))
        if dead:
            log.warning("marked %d run(s) interrupted", len(dead))
        audit.prune(self.state, now)  # audit entries past CLOUDCRON_AUDIT_RETENTION_DAYS, in short batches
        return len(lost) + len(resumed), len(given_up) + len(dead)

    def _queue_drained(self) -> bool:
        """True when the queue holds no message; False when it holds some or cannot be asked."""
        try:
            return self.pending() == 0
        except Exception as exc:  # noqa: BLE001 - unknown: no run is given up this time
            log.warning("cannot count the queue's messages: %s", one_line(exc))
            return False

    # ------------------------------------------------------------------ loop

    def run(self, stop: threading.Event) -> None:
        """Sleep until the next due time (or a wake-up), claim, repeat, until `stop` is set."""
        log.info("dispatcher started")
        checkpoints = None
        if self.db.is_sqlite:
            # A commit that crosses SQLite's auto-checkpoint threshold copies the WAL into the database
            # (and syncs) before it returns: ~1 claim in 100 at 170 claims/s, each 10-30 ms late. The claim
            # connection therefore never checkpoints; a helper thread does it on its own connection.
            checkpoints = threading.Thread(target=self._checkpoints, args=(stop,), daemon=True,
                                           name="dispatcher-checkpoint")
            checkpoints.start()
        errors = Backoff("dispatcher tick", log, first=1.0, cap=ERROR_BACKOFF_CAP)
        beats = Backoff("dispatcher heartbeat", log, first=1.0, cap=ERROR_BACKOFF_CAP)
        try:
            while not stop.is_set():
                try:
                    if self.db.is_sqlite and self._own is None:
                        self._own = self._claim_connection()
                    next_due = self.tick()
                except Exception:
                    self._close_own()
                    stop.wait(errors.failed())
                    continue
                errors.succeeded()
                # After a tick that worked: the heartbeat row's beat_at is this dispatcher's last tick.
                try:
                    self.heartbeat.beat()
                    beats.succeeded()
                except Exception:  # noqa: BLE001 - a missed beat is logged; claiming goes on
                    beats.failed()
                delay = MAX_SLEEP
                if next_due is not None:
                    delay = min(MAX_SLEEP, (next_due - self.clock()).total_seconds())
                    if delay <= 0 and not self._last_due:
                        delay = SPIN_FLOOR  # due, yet nothing was ours to claim: another dispatcher holds it
                if delay > 0:
                    self._wake.wait(delay)
                self._wake.clear()
        finally:
            self._close_own()
            self.heartbeat.stop()
            if checkpoints is not None:
                checkpoints.join(timeout=5)
        log.info("dispatcher stopped")

    def _claim_connection(self):
        """A writer connection of the dispatcher's own (out of the pool), with auto-checkpoints off."""
        conn = self.db.writer.connect()
        conn.detach()  # closed, not pooled, when the dispatcher stops: nobody else gets it without checkpoints
        conn.connection.dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    def _close_own(self) -> None:
        own, self._own = self._own, None
        if own is not None:
            try:
                own.close()
            except Exception as exc:  # after a failed tick, often: one line, the tick's failure has the traceback
                log.warning("closing the claim connection failed: %s", one_line(exc))

    def _checkpoints(self, stop: threading.Event) -> None:
        """SQLite: copy the WAL into the database every CHECKPOINT_EVERY s, off the claim's path."""
        conn = None
        errors = Backoff("WAL checkpoint", log, first=1.0, cap=ERROR_BACKOFF_CAP)
        wait = CHECKPOINT_EVERY
        while not stop.wait(wait):
            try:
                if conn is None:
                    conn = self.db.reader.connect()
                    conn.detach()
                # PASSIVE copies what it can without waiting for, or blocking, readers and writers; the next
                # write then starts the WAL over when everything was copied. Should writes never leave it
                # a gap, RESTART waits for one (the claims wait meanwhile) so the WAL stays bounded.
                raw = conn.connection.dbapi_connection
                _, frames, _ = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if frames >= WAL_RESET_FRAMES:
                    raw.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                    self.wal_resets += 1
                errors.succeeded()
                wait = CHECKPOINT_EVERY
            except Exception:
                wait = errors.failed()
                if conn is not None:
                    conn.close()
                    conn = None
        if conn is not None:
            conn.close()
