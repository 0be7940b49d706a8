"""Schedules: the Mist v1 contract (/api/v1/schedules), made strict."""
from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import db, schedules, state, utcnow
from ..crypto import new_id
from ..errors import Conflict
from ..models import Schedule
from ..runs import on_schedule_created
from ..schemas import PreviewIn
from ..timemath import format_instant
from ..validation import json_body, validate
from . import bp, get_owned, list_response, org_id


def _check_name_free(name: str, except_id: str | None = None) -> None:
    query = select(Schedule.id).where(Schedule.org_id == org_id(), Schedule.name == name)
    existing = db().scalar(query)
    if existing is not None and existing != except_id:
        raise Conflict(f"name: a schedule named '{name}' already exists")


def _commit(schedule: Schedule):
    session = db()
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"name: a schedule named '{schedule.name}' already exists") from None
    state().schedule_changed(schedule.next_run_at)
    return jsonify(schedules.to_json(schedule))


@bp.get("/schedules")
def list_schedules():
    query = select(Schedule).where(Schedule.org_id == org_id())
    if "name" in request.args:
        query = query.where(Schedule.name == request.args["name"])
    return list_response(query, schedules.to_json, (Schedule.created_at.desc(), Schedule.id.desc()))


@bp.post("/schedules")
def create_schedule():
    given = schedules.parse_fields(json_body())
    now = utcnow()
    session = db()
    values = schedules.build(session, org_id(), given, None, now, state().config.min_interval)
    _check_name_free(values["name"])
    schedule = Schedule(id=new_id(), org_id=org_id(), total_run_count=0, created_at=now, updated_at=now,
                        **{c: values[c] for c in schedules.COLUMNS})
    schedule.next_run_at = schedules.next_run_at(schedule, now)
    session.add(schedule)
    run = on_schedule_created(session, schedule, now)
    answer = _commit(schedule)
    if run is not None:
        state().enqueue([run.id])
    return answer


@bp.get("/schedules/<id_>")
def get_schedule(id_):
    return jsonify(schedules.to_json(get_owned(Schedule, id_, "schedule")))


@bp.route("/schedules/<id_>", methods=["PATCH", "PUT", "POST"])
def edit_schedule(id_):
    schedule = get_owned(Schedule, id_, "schedule")
    given = schedules.parse_fields(json_body())
    now = utcnow()
    values = schedules.build(db(), org_id(), given, schedule, now, state().config.min_interval)
    if values["name"] != schedule.name:
        _check_name_free(values["name"], except_id=schedule.id)
    for column in schedules.COLUMNS:
        setattr(schedule, column, values[column])
    schedule.updated_at = now
    schedule.next_run_at = schedules.next_run_at(schedule, now)
    schedule.last_error = None  # the edit passed every check: next_run_at is computed again
    return _commit(schedule)


@bp.delete("/schedules/<id_>")
def delete_schedule(id_):
    schedule = get_owned(Schedule, id_, "schedule")
    session = db()
    session.delete(schedule)
    session.commit()
    return jsonify({"deleted": id_})


@bp.post("/schedules/preview")
def preview_schedule():
    body = json_body()
    extra = {k: body.pop(k) for k in ("after", "count") if k in body}
    given = schedules.parse_fields(body)
    opts = validate(PreviewIn, {k: v for k, v in extra.items() if v not in (None, "")})
    times = schedules.preview_times(given, opts.get("after"), opts.get("count", 5), utcnow(),
                                    state().config.min_interval)
    return jsonify({"next_run_times": [format_instant(t) for t in times]})

