"""Runs and logs: what happened on each machine."""
from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import select

from .. import db, state, utcnow
from ..errors import BadRequest, Conflict
from ..models import Event, Run, RunMachine, Schedule
from ..runs import active_run, event_json, run_json, start_now
from ..timemath import TimeSpecError, parse_instant
from . import bp, get_owned, list_response, org_id

EVENT_FILTERS = {"schedule_id": Event.schedule_id, "run_id": Event.run_id, "event_type": Event.type}


@bp.post("/schedules/<id_>/run")
def run_schedule_now(id_):
    """Start a run now. With concurrency forbid, a 409 naming the run while one is queued or running.

    The check and the insert are one transaction that holds the schedule row: on SQLite the writer's
    BEGIN IMMEDIATE, on PostgreSQL SELECT ... FOR UPDATE (the dispatcher's claim skips a locked row), so
    parallel calls make one run."""
    get_owned(Schedule, id_, "schedule")
    session = db()
    schedule = session.scalars(select(Schedule).where(Schedule.id == id_).with_for_update()
                               .execution_options(populate_existing=True)).one()
    if schedule.concurrency == "forbid":
        running = active_run(session, schedule.id)
        if running is not None:
            raise Conflict(f"concurrency: run '{running.id}' of this schedule is still {running.status} "
                           "(concurrency: forbid); wait for it to end, or set concurrency to allow")
    run = start_now(session, schedule, "manual", utcnow())
    session.commit()
    state().enqueue([run.id])
    return jsonify(run_json(run))


@bp.get("/schedules/<id_>/runs")
def list_runs(id_):
    get_owned(Schedule, id_, "schedule")
    query = select(Run).where(Run.schedule_id == id_, Run.org_id == org_id())
    return list_response(query, run_json, (Run.created_at.desc(), Run.id.desc()))


@bp.get("/runs/<id_>")
def get_run(id_):
    run = get_owned(Run, id_, "run")
    machines = db().scalars(select(RunMachine).where(RunMachine.run_id == id_).order_by(RunMachine.id)).all()
    return jsonify(run_json(run, machines))


def _instant_arg(name):
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        return parse_instant(raw, "UTC", field=name)
    except TimeSpecError as exc:
        raise BadRequest(str(exc)) from None


@bp.get("/logs")
def list_logs():
    """Events, newest first, like Mist's logs: filter by schedule_id, run_id, event_type, start, stop."""
    query = select(Event).where(Event.org_id == org_id())
    for name, column in EVENT_FILTERS.items():
        if request.args.get(name):
            query = query.where(column == request.args[name])
    start, stop = _instant_arg("start"), _instant_arg("stop")
    if start:
        query = query.where(Event.time >= start)
    if stop:
        query = query.where(Event.time <= stop)
    return list_response(query, event_json, (Event.time.desc(), Event.id.desc()))
