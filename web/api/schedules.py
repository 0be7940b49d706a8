"""Schedules: the Mist v1 contract (/api/v1/schedules), made strict; previews, pause and resume."""
from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from .. import calendars, db, schedules, state, timemath, utcnow
from ..crypto import new_id
from ..errors import BadRequest, Conflict
from ..models import Machine, Schedule, ScheduleCalendar
from ..runs import on_schedule_created
from ..schemas import BulkPauseIn, BulkResumeIn, PauseIn, PreviewIn
from ..timemath import format_instant
from ..validation import json_body, query_int, validate
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
    return jsonify(schedules.to_json(schedule, utcnow()))


def _link_calendars(schedule: Schedule) -> None:
    """Keep schedule_calendars (the foreign keys that protect calendars in use) in step with exclude_calendars."""
    session = db()
    session.flush()
    session.execute(delete(ScheduleCalendar).where(ScheduleCalendar.schedule_id == schedule.id))
    session.add_all(ScheduleCalendar(schedule_id=schedule.id, calendar_id=c) for c in schedule.exclude_calendars or [])


def _advance(schedule: Schedule, now) -> None:
    schedule.next_run_at = schedules.next_run_at(schedule, now, schedules.load_calendars(db(), schedule))


def _advance_all(rows: list[Schedule], now) -> None:
    """next_run_at of many schedules, their calendars compiled once for all."""
    compiled = calendars.compiled(db(), {c for s in rows for c in s.exclude_calendars or []})
    for schedule in rows:
        schedule.next_run_at = schedules.next_run_at(schedule, now, compiled)


@bp.get("/schedules")
def list_schedules():
    query = select(Schedule).where(Schedule.org_id == org_id())
    if "name" in request.args:
        query = query.where(Schedule.name == request.args["name"])
    now = utcnow()
    return list_response(query, lambda s: schedules.to_json(s, now), (Schedule.created_at.desc(), Schedule.id.desc()))


@bp.post("/schedules")
def create_schedule():
    given = schedules.parse_fields(json_body())
    now = utcnow()
    session = db()
    values = schedules.build(session, org_id(), given, None, now, state().config.min_interval)
    _check_name_free(values["name"])
    schedule = Schedule(id=new_id(), org_id=org_id(), total_run_count=0, skip_next=0, created_at=now, updated_at=now,
                        **{c: values[c] for c in schedules.COLUMNS})
    session.add(schedule)
    _link_calendars(schedule)
    _advance(schedule, now)
    run = on_schedule_created(session, schedule, now)
    answer = _commit(schedule)
    if run is not None:
        state().enqueue([run.id])
    return answer


@bp.get("/schedules/<id_>")
def get_schedule(id_):
    return jsonify(schedules.to_json(get_owned(Schedule, id_, "schedule"), utcnow()))


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
    if "exclude_calendars" in given:
        _link_calendars(schedule)
    schedule.updated_at = now
    _advance(schedule, now)
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
    extra = {k: body.pop(k) for k in ("after", "count", "show_skipped") if k in body}
    given = schedules.parse_fields(body)
    opts = validate(PreviewIn, {k: v for k, v in extra.items() if v not in (None, "")})
    preview = schedules.preview_times(db(), org_id(), given, opts.get("after"), opts.get("count", 5), utcnow(),
                                      state().config.min_interval, bool(opts.get("show_skipped")))
    return jsonify(preview.to_json())


def _flag(name: str) -> bool:
    raw = request.args.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise BadRequest(f"{name}: must be true or false")


@bp.get("/schedules/<id_>/preview")
def preview_stored_schedule(id_):
    """The next fires of a stored schedule, with its pause, skip_next and jitter (?count, after, show_skipped)."""
    schedule = get_owned(Schedule, id_, "schedule")
    now = utcnow()
    count = query_int("count", 5, 1, 1000)
    after = now
    if request.args.get("after"):
        after = schedules.checked(timemath.parse_instant, request.args["after"], schedule.timezone,
                                  field="after")
    preview = schedules.preview(schedule, after, count, _flag("show_skipped"),
                                schedules.load_calendars(db(), schedule))
    return jsonify(preview.to_json())


def _pause_values(body: dict, tz: str, now) -> dict:
    values = validate(PauseIn, {k: v for k, v in body.items() if k in PauseIn.model_fields and v not in (None, "")})
    until = values.get("until")
    if until is not None:
        until = schedules.checked(timemath.parse_instant, until, tz, field="until")
        if until <= now:
            raise BadRequest(f"until: {format_instant(until)} is not in the future")
        if values.get("skip_next"):
            raise BadRequest("until, skip_next: give one of them (a pause until an instant, or a number of fires to skip)")
    return {"until": until, "note": values.get("note"), "skip_next": values.get("skip_next")}


@bp.post("/schedules/<id_>/pause")
def pause_schedule(id_):
    schedule = get_owned(Schedule, id_, "schedule")
    body = json_body()
    validate(PauseIn, {k: v for k, v in body.items() if v not in (None, "")})  # unknown fields named
    now = utcnow()
    values = _pause_values(body, schedule.timezone, now)
    schedules.pause(schedule, now, values["until"], values["note"], values["skip_next"])
    schedule.updated_at = now
    _advance(schedule, now)
    return _commit(schedule)


@bp.post("/schedules/<id_>/resume")
def resume_schedule(id_):
    schedule = get_owned(Schedule, id_, "schedule")
    now = utcnow()
    schedules.resume(schedule)
    schedule.updated_at = now
    _advance(schedule, now)
    return _commit(schedule)


def _matching(match: dict) -> list[Schedule]:
    """The org's schedules whose name starts with name_prefix and/or one of whose targets has all `tags`."""
    prefix, tags = match.get("name_prefix"), match.get("tags")
    if not prefix and not tags:
        raise BadRequest("name_prefix, tags: give at least one, to say which schedules")
    session = db()
    query = select(Schedule).where(Schedule.org_id == org_id())
    if prefix:
        query = query.where(Schedule.name.startswith(prefix, autoescape=True))
    rows = session.scalars(query.order_by(Schedule.name)).all()
    if not tags:
        return rows
    tagged = [m for m in session.execute(select(Machine.id, Machine.cloud_id, Machine.machine_id, Machine.tags)
                                         .where(Machine.org_id == org_id()))
              if all((m.tags or {}).get(k) == v for k, v in tags.items())]
    ids = {m.id for m in tagged}
    pairs = {(m.cloud_id, m.machine_id) for m in tagged}

    def targets_tagged(s: Schedule) -> bool:
        if any(tuple(pair) in pairs for pair in s.machines_per_cloud or []):
            return True
        for sel in s.selectors or []:
            if sel["type"] == "machines" and ids & set(sel["ids"]):
                return True
            if sel["type"] == "tags":
                include = sel["include"]
                # Every machine this selector picks has the tags, or one machine it picks now has them.
                if all(include.get(k) == v for k, v in tags.items()):
                    return True
                if any(all((m.tags or {}).get(k) == v for k, v in include.items()) for m in tagged):
                    return True
        return False

    return [s for s in rows if targets_tagged(s)]


def _bulk_answer(rows: list[Schedule], now):
    """Commit a bulk change and answer which schedules it touched."""
    session = db()
    session.commit()
    soonest = min((s.next_run_at for s in rows if s.next_run_at is not None), default=None)
    state().schedule_changed(soonest)
    return jsonify({"count": len(rows), "ids": [s.id for s in rows]})


@bp.post("/schedules/pause")
def pause_schedules():
    """Pause every schedule matching name_prefix and/or tags (each until resumed, or until `until`)."""
    body = json_body()
    match = validate(BulkPauseIn, {k: v for k, v in body.items() if v not in (None, "")})
    now = utcnow()
    _pause_values(body, "UTC", now)  # refuse a bad body even when nothing matches
    rows = _matching(match)
    for schedule in rows:
        values = _pause_values(body, schedule.timezone, now)
        schedules.pause(schedule, now, values["until"], values["note"], values["skip_next"])
        schedule.updated_at = now
    _advance_all(rows, now)
    return _bulk_answer(rows, now)


@bp.post("/schedules/resume")
def resume_schedules():
    """Resume every schedule matching name_prefix and/or tags."""
    match = validate(BulkResumeIn, {k: v for k, v in json_body().items() if v not in (None, "")})
    now = utcnow()
    rows = _matching(match)
    for schedule in rows:
        schedules.resume(schedule)
        schedule.updated_at = now
    _advance_all(rows, now)
    return _bulk_answer(rows, now)
