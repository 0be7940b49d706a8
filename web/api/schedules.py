"""Schedules: the Mist v1 contract (/api/v1/schedules), made strict."""
from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import db, schedules, state, utcnow
from ..crypto import new_id
from ..errors import BadRequest, Conflict
from ..models import Schedule
from ..runs import on_schedule_created
from ..schemas import PreviewIn
from ..timemath import format_instant, preview
from ..validation import json_body
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
    return list_response(query, Schedule, schedules.to_json, (Schedule.created_at.desc(), Schedule.id.desc()))


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
    opts = schedules.validate(PreviewIn, {k: v for k, v in extra.items() if v not in (None, "")})
    now = utcnow()
    tz = given.get("timezone") or "UTC"
    after = schedules._time(schedules.timemath.parse_instant, opts["after"], tz, field="after") if "after" in opts else now
    count = opts.get("count", 5)
    if not given.get("schedule_type") or given.get("schedule_entry") is None:
        raise BadRequest("schedule_type, schedule_entry: are required for a preview")
    probe = _PreviewSchedule(given, after, tz, state().config.min_interval)
    if schedules.is_exhausted(probe):
        return jsonify({"next_run_times": []})
    times = preview(schedules.timing(probe), after, count)
    if probe.max_run_count is not None:
        times = times[: probe.max_run_count]
    return jsonify({"next_run_times": [format_instant(t) for t in times]})


class _PreviewSchedule:
    """A schedule that is not stored: just enough attributes for the time math."""

    def __init__(self, given: dict, after, tz: str, min_interval):
        parse = schedules.timemath.parse_instant
        self.schedule_type = given["schedule_type"]
        self.timezone = schedules._time(schedules.timemath.check_timezone, tz)
        self.schedule_entry = schedules.normalize_entry(given["schedule_entry"], self.schedule_type, self.timezone,
                                                        min_interval, after, given=False)
        self.start_after = schedules._time(parse, given["start_after"], tz, field="start_after") if given.get("start_after") is not None else None
        self.expires = schedules._time(parse, given["expires"], tz, field="expires") if given.get("expires") is not None else None
        self.created_at = after
        self.enabled = given.get("enabled", True) is not False
        self.max_run_count = given.get("max_run_count")
        self.total_run_count = 0
