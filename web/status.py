"""What the engine is doing now, read from the database: queue depth, runs running, the oldest queued run's
age, live workers and their slots, the dispatchers' last tick. GET /api/v1/status, /readyz and /metrics read
it, so every API process answers the same whatever process it is."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from .heartbeats import Fleet, fleet
from .models import Run
from .timemath import format_instant


@dataclass
class Backlog:
    """Runs waiting for a worker (status queued) and executing (running); the oldest queued one's age (s)."""

    queued: int
    running: int
    oldest_queued_age: float | None  # seconds since the oldest queued run was created; None when none is


def backlog(session, now: datetime, org_id: str | None = None) -> Backlog:
    """The backlog of one org, or of every org when org_id is None; one query over the status index."""
    query = select(Run.status, func.count(), func.min(Run.created_at)).where(Run.status.in_(("queued", "running")))
    if org_id is not None:
        query = query.where(Run.org_id == org_id)
    rows = {status: (n, oldest) for status, n, oldest in session.execute(query.group_by(Run.status))}
    queued, oldest = rows.get("queued", (0, None))
    age = None if oldest is None else max(0.0, (now - oldest).total_seconds())
    return Backlog(queued=queued, running=rows.get("running", (0, None))[0], oldest_queued_age=age)


def _backlog_json(b: Backlog) -> dict:
    return {"queued": b.queued, "running": b.running,
            "oldest_queued_age": None if b.oldest_queued_age is None else round(b.oldest_queued_age, 3)}


def status_json(session, now: datetime, org_id: str) -> dict:
    """The body of GET /api/v1/status for a token of `org_id` (seconds as numbers, instants ISO 8601 UTC).

    `org` counts that org's runs; `all_orgs` the whole service's (counts only: which orgs wait is not told)."""
    procs: Fleet = fleet(session, now)
    tick_age = None if procs.last_tick is None else round(max(0.0, (now - procs.last_tick).total_seconds()), 3)
    return {
        "time": format_instant(now),
        "org": _backlog_json(backlog(session, now, org_id)),
        "all_orgs": _backlog_json(backlog(session, now)),
        "workers": {"live": procs.workers, "slots": procs.slots},
        "dispatchers": {"live": procs.dispatchers, "last_tick": format_instant(procs.last_tick),
                        "last_tick_age": tick_age},
    }
