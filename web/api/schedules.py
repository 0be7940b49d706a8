"""Schedules: the Mist v1 contract (/api/v1/schedules), made strict; previews, pause and resume."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from .. import apply, db, schedules, state, timemath, utcnow
from ..errors import BadRequest
from ..models import Schedule
from ..schemas import BulkPauseIn, BulkResumeIn, PauseIn, PreviewIn
from ..validation import json_body, query_int, validate
from . import apply_response, check_if_match, get_by_name, get_owned, list_response, org_id, query_flag, with_etag

bp = Blueprint("schedules", __name__)  # registered under /api/v1 by the app factory (web.api.blueprint)

# What a caller manages of a schedule: every writable field (run_immediately means something only at creation).
SCHEDULE_FIELDS = tuple(c for c in schedules.COLUMNS if c != "run_immediately")


@bp.get("/schedules")
def list_schedules():
    query = schedules.query_for_org(org_id(), request.args.get("name"))
    now = utcnow()
    return list_response(query, lambda s: schedules.to_json(s, now), (Schedule.created_at.desc(), Schedule.id.desc()))


@bp.post("/schedules")
def create_schedule():
    given = schedules.parse_fields(json_body())
    now = utcnow()
    schedule = schedules.store(state(), db(), org_id(), given, None, now)
    return with_etag(jsonify(schedules.to_json(schedule, now)), schedule)


@bp.get("/schedules/<id_>")
def get_schedule(id_):
    schedule = get_owned(Schedule, id_, "schedule")
    return with_etag(jsonify(schedules.to_json(schedule, utcnow())), schedule)


@bp.route("/schedules/<id_>", methods=["PATCH", "PUT", "POST"])
def edit_schedule(id_):
    schedule = get_owned(Schedule, id_, "schedule")
    check_if_match(schedule)
    given = schedules.parse_fields(json_body())
    now = utcnow()
    schedules.store(state(), db(), org_id(), given, schedule, now)
    return with_etag(jsonify(schedules.to_json(schedule, now)), schedule)


@bp.delete("/schedules/<id_>")
def delete_schedule(id_):
    schedule = get_owned(Schedule, id_, "schedule")
    check_if_match(schedule)
    schedules.delete(db(), schedule)
    return jsonify({"deleted": id_})


@bp.put("/schedules/by-name/<name:name>")
def apply_schedule(name):
    """Declarative apply: the body is the desired state of the fields the caller manages (see web.apply).

    References may be names: script_id a script's name, a machines_per_cloud cloud its title,
    exclude_calendars calendar names (schedules.resolve_references)."""
    desired = schedules.parse_fields(apply.desired_with_name(json_body(), "name", name))
    desired = schedules.resolve_references(db(), org_id(), desired)
    current = get_by_name(Schedule, Schedule.name, name)
    check_if_match(current)
    now = utcnow()
    kind = apply.Kind("schedule", lambda s: schedules.to_json(s, now), SCHEDULE_FIELDS,
                      create_only=frozenset({"run_immediately"}))

    def store(given, cur, dry):
        if not dry:
            check_if_match(cur)  # again: the trial's rollback ended the first check's transaction
        return schedules.store(state(), db(), org_id(), given, cur, now, dry_run=dry)

    applied = apply.apply(db(), kind, current, desired, store, dry_run=query_flag("dry_run"))
    return apply_response(applied, "schedule")


@bp.post("/schedules/preview")
def preview_schedule():
    body = json_body()
    extra = {k: body.pop(k) for k in ("after", "count", "show_skipped") if k in body}
    given = schedules.parse_fields(body)
    opts = validate(PreviewIn, {k: v for k, v in extra.items() if v not in (None, "")})
    preview = schedules.preview_body(db(), org_id(), given, opts.get("after"), opts.get("count", 5), utcnow(),
                                     state().config.min_interval, bool(opts.get("show_skipped")))
    return jsonify(preview.to_json())


@bp.get("/schedules/<id_>/preview")
def preview_stored_schedule(id_):
    """The next fires of a stored schedule, with its pause, skip_next and jitter (?count, after, show_skipped)."""
    schedule = get_owned(Schedule, id_, "schedule")
    count = query_int("count", 5, 1, 1000)
    after = utcnow()
    if request.args.get("after"):
        after = schedules.checked(timemath.parse_instant, request.args["after"], schedule.timezone, field="after")
    preview = schedules.preview(schedule, after, count, query_flag("show_skipped"),
                                schedules.load_calendars(db(), schedule))
    return jsonify(preview.to_json())


@bp.post("/schedules/<id_>/pause")
def pause_schedule(id_):
    schedule = get_owned(Schedule, id_, "schedule")
    body = json_body()
    validate(PauseIn, {k: v for k, v in body.items() if v not in (None, "")})  # unknown fields named
    now = utcnow()
    schedules.set_pause(state(), db(), [schedule], now, **schedules.pause_values(body, schedule.timezone, now))
    return jsonify(schedules.to_json(schedule, now))


@bp.post("/schedules/<id_>/resume")
def resume_schedule(id_):
    schedule = get_owned(Schedule, id_, "schedule")
    now = utcnow()
    schedules.set_pause(state(), db(), [schedule], now, resume_them=True)
    return jsonify(schedules.to_json(schedule, now))


def _matching(match: dict) -> list[Schedule]:
    if not match.get("name_prefix") and not match.get("tags"):
        raise BadRequest("name_prefix, tags: give at least one, to say which schedules")
    return schedules.matching(db(), org_id(), match.get("name_prefix"), match.get("tags"))


@bp.post("/schedules/pause")
def pause_schedules():
    """Pause every schedule matching name_prefix and/or tags (each until resumed, or until `until`)."""
    body = json_body()
    match = validate(BulkPauseIn, {k: v for k, v in body.items() if v not in (None, "")})
    now = utcnow()
    values = schedules.pause_values(body, "UTC", now)  # refuse a bad body even when nothing matches
    rows = _matching(match)
    by_zone: dict = {}

    def until_of(schedule):  # a date without an offset is read in each schedule's own timezone
        if schedule.timezone not in by_zone:
            by_zone[schedule.timezone] = schedules.pause_values(body, schedule.timezone, now)["until"]
        return by_zone[schedule.timezone]

    schedules.set_pause(state(), db(), rows, now, until_of, values["note"], values["skip_next"])
    return jsonify({"count": len(rows), "ids": [s.id for s in rows]})


@bp.post("/schedules/resume")
def resume_schedules():
    """Resume every schedule matching name_prefix and/or tags."""
    match = validate(BulkResumeIn, {k: v for k, v in json_body().items() if v not in (None, "")})
    now = utcnow()
    rows = _matching(match)
    schedules.set_pause(state(), db(), rows, now, resume_them=True)
    return jsonify({"count": len(rows), "ids": [s.id for s in rows]})
