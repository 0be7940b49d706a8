"""Process heartbeats: every dispatcher and worker process keeps a row in process_heartbeats saying it is alive.

A row is written when the process starts (kind, host, pid, started_at, slots), its beat_at is moved forward
every BEAT_EVERY seconds, and it is deleted when the process stops cleanly. A dispatcher beats from its claim
loop, so its beat_at is its last tick: a dispatcher stuck in a claim stops beating. A worker beats from a
thread of its own. A row not beaten for STALE is a dead process (killed, crashed, host gone); the
dispatcher's sweep deletes such rows after FORGET_AFTER. GET /api/v1/status, /readyz and /metrics read them.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, func, select, update

from .backoff import Backoff
from .crypto import new_id
from .models import ProcessHeartbeat

log = logging.getLogger(__name__)

BEAT_EVERY = 5.0                      # seconds between two beats of a process
STALE = timedelta(seconds=30)         # a process not heard from for this long is not counted as alive
FORGET_AFTER = timedelta(hours=1)     # the sweep deletes rows of processes silent this long
DISPATCHER, WORKER = "dispatcher", "worker"


def utcnow() -> datetime:
    """The wall clock, aware UTC."""
    return datetime.now(timezone.utc)


class Heartbeat:
    """One process's row. start() writes it, beat() moves beat_at (at most every BEAT_EVERY s unless forced),
    stop() deletes it. Times are the wall clock (liveness is about real time, not a test's clock)."""

    def __init__(self, db, kind: str, slots: int = 0):
        self.db = db
        self.kind = kind
        self.slots = slots
        self.id = new_id()
        self._next = 0.0  # monotonic time of the next beat due

    def _row(self, now: datetime) -> ProcessHeartbeat:
        return ProcessHeartbeat(id=self.id, kind=self.kind, host=socket.gethostname()[:255], pid=os.getpid(),
                                started_at=now, beat_at=now, slots=self.slots)

    def start(self) -> None:
        """Write the row (raises the database's error: a process that cannot write should not start)."""
        now = utcnow()
        with self.db.transaction() as session:
            session.add(self._row(now))
        self._next = time.monotonic() + BEAT_EVERY

    def beat(self, force: bool = False) -> bool:
        """Move beat_at to now when a beat is due (or `force`); True when written. Raises database errors.

        A row deleted meanwhile (the process was silent past FORGET_AFTER, e.g. a suspended VM) is written again."""
        if not force and time.monotonic() < self._next:
            return False
        now = utcnow()
        with self.db.transaction() as session:
            moved = session.execute(update(ProcessHeartbeat).where(ProcessHeartbeat.id == self.id)
                                    .values(beat_at=now)).rowcount
            if moved == 0:
                session.add(self._row(now))
        self._next = time.monotonic() + BEAT_EVERY
        return True

    def stop(self) -> None:
        """Delete the row: a process that stopped cleanly is not reported as a dead one. Never raises."""
        try:
            with self.db.transaction() as session:
                session.execute(delete(ProcessHeartbeat).where(ProcessHeartbeat.id == self.id))
        except Exception as exc:  # noqa: BLE001 - stopping anyway; the row goes stale and the sweep removes it
            log.warning("could not remove the %s heartbeat row: %s", self.kind, exc)


class Beater:
    """A Heartbeat beaten from a daemon thread (workers: their slots are busy with runs, not a loop of ours)."""

    def __init__(self, db, kind: str, slots: int = 0):
        self.heartbeat = Heartbeat(db, kind, slots)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"{kind}-heartbeat")

    def start(self) -> Beater:
        """Write the row now, then beat it every BEAT_EVERY s until stop()."""
        self.heartbeat.start()
        self._thread.start()
        return self

    def _run(self) -> None:
        errors = Backoff(f"{self.heartbeat.kind} heartbeat", log, first=1.0, cap=BEAT_EVERY)
        wait = BEAT_EVERY
        while not self._stop.wait(wait):
            try:
                self.heartbeat.beat(force=True)
            except Exception:  # noqa: BLE001 - logged by Backoff; the process keeps working meanwhile
                wait = errors.failed()
                continue
            errors.succeeded()
            wait = BEAT_EVERY

    def stop(self) -> None:
        """Stop beating and delete the row."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.heartbeat.stop()


def start_worker(db, slots: int) -> Beater:
    """A worker process's heartbeat with its number of slots, beating until stop()."""
    return Beater(db, WORKER, slots).start()


@dataclass
class Fleet:
    """What the heartbeats say at one instant: live workers and their slots, live dispatchers, last tick."""

    workers: int
    slots: int
    dispatchers: int
    last_tick: datetime | None  # the newest beat of any dispatcher, alive or not (None: never one)


def fleet(session, now: datetime) -> Fleet:
    """Read the live processes (beaten within STALE of `now`) in one query per kind."""
    cut = now - STALE
    H = ProcessHeartbeat
    workers, slots = session.execute(select(func.count(), func.coalesce(func.sum(H.slots), 0))
                                     .where(H.kind == WORKER, H.beat_at >= cut)).one()
    dispatchers = session.scalar(select(func.count()).where(H.kind == DISPATCHER, H.beat_at >= cut))
    last_tick = session.scalar(select(func.max(H.beat_at)).where(H.kind == DISPATCHER))
    return Fleet(workers=workers, slots=int(slots), dispatchers=dispatchers, last_tick=last_tick)


def forget_dead(session, now: datetime) -> int:
    """Delete the rows of processes silent for FORGET_AFTER; returns how many."""
    return session.execute(delete(ProcessHeartbeat).where(ProcessHeartbeat.beat_at < now - FORGET_AFTER)).rowcount
