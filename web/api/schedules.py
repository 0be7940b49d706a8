"""Schedules: the Mist v1 contract (/api/v1/schedules), made strict."""
from __future__ import annotations

from flask import jsonify, request

from .. import db, schedules, state, utcnow
from ..models import Schedule
from ..schemas import PreviewIn
from ..timemath import format_instant
from ..validation import json_body, validate
from . import bp, get_owned, list_response, org_id


@bp.get("/schedules")
def list_schedules():
    query = schedules.query_for_org(org_id(), request.args.get("name"))
    return list_response(query, schedules.to_json, (Schedule.created_at.desc(), Schedule.id.desc()))


@bp.post("/schedules")
def create_schedule():
    given = schedules.parse_fields(json_body())
    schedule = schedules.store(state(), db(), org_id(), given, None, utcnow())
    return jsonify(schedules.to_json(schedule))


@bp.get("/schedules/<id_>")
def get_schedule(id_):
    return jsonify(schedules.to_json(get_owned(Schedule, id_, "schedule")))


@bp.route("/schedules/<id_>", methods=["PATCH", "PUT", "POST"])
def edit_schedule(id_):
    schedule = get_owned(Schedule, id_, "schedule")
    given = schedules.parse_fields(json_body())
    schedules.store(state(), db(), org_id(), given, schedule, utcnow())
    return jsonify(schedules.to_json(schedule))


@bp.delete("/schedules/<id_>")
def delete_schedule(id_):
    schedules.delete(db(), get_owned(Schedule, id_, "schedule"))
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

