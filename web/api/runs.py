"""Runs and logs: what happened on each machine."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from .. import db, state, utcnow
from ..errors import BadRequest
from ..models import Event, Run, Schedule
from ..notify import deliveries_json
from ..runs import event_json, events_query, machines_of, run_json, run_now, runs_query
from ..timemath import TimeSpecError, parse_instant
from . import get_owned, list_response, org_id

bp = Blueprint("runs", __name__)  # registered under /api/v1 by the app factory (web.api.blueprint)


@bp.post("/schedules/<id_>/run")
def run_schedule_now(id_):
    run = run_now(state(), db(), get_owned(Schedule, id_, "schedule"), utcnow())
    return jsonify(run_json(run))


@bp.get("/schedules/<id_>/runs")
def list_runs(id_):
    get_owned(Schedule, id_, "schedule")
    return list_response(runs_query(org_id(), id_), run_json, (Run.created_at.desc(), Run.id.desc()))


@bp.get("/runs/<id_>")
def get_run(id_):
    run = get_owned(Run, id_, "run")
    return jsonify({**run_json(run, machines_of(db(), id_)), "deliveries": deliveries_json(db(), id_)})


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
    query = events_query(org_id(), request.args.get("schedule_id"), request.args.get("run_id"),
                         request.args.get("event_type"), _instant_arg("start"), _instant_arg("stop"))
    return list_response(query, event_json, (Event.time.desc(), Event.id.desc()))
