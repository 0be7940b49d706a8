"""Calendars (/api/v1/calendars): named sets of dates, windows, holidays and iCalendar events that schedules exclude."""
from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import calendars, db, schedules, state, utcnow
from ..crypto import new_id
from ..errors import BadRequest, Conflict
from ..models import Calendar, Schedule, ScheduleCalendar
from ..schemas import CalendarIn
from ..timemath import format_instant
from ..validation import check_fields, json_body, validate
from . import bp, get_owned, list_response, org_id

READ_ONLY = {"id", "created_at", "updated_at"}


def calendar_json(c: Calendar) -> dict:
    return {"id": c.id, "name": c.name, "description": c.description, "timezone": c.timezone,
            "entries": c.entries or [], "created_at": format_instant(c.created_at),
            "updated_at": format_instant(c.updated_at)}


def _fields() -> dict:
    data = check_fields(json_body(), set(CalendarIn.model_fields), READ_ONLY)
    typed = validate(CalendarIn, {k: v for k, v in data.items() if v is not None})
    return {k: typed.get(k) for k in data}


def _commit(calendar: Calendar):
    session = db()
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"name: a calendar named '{calendar.name}' already exists") from None


@bp.get("/calendars")
def list_calendars():
    query = select(Calendar).where(Calendar.org_id == org_id())
    if "name" in request.args:
        query = query.where(Calendar.name == request.args["name"])
    return list_response(query, calendar_json, (Calendar.created_at.desc(), Calendar.id.desc()))


@bp.post("/calendars")
def create_calendar():
    values = _fields()
    if not values.get("name"):
        raise BadRequest("name: is required")
    tz = schedules.checked(calendars.check_timezone, values.get("timezone") or "UTC")
    now = utcnow()
    entries = schedules.checked(calendars.check_entries, values.get("entries") or [], tz, now)
    calendar = Calendar(id=new_id(), org_id=org_id(), name=values["name"], description=values.get("description"),
                        timezone=tz, entries=entries, created_at=now, updated_at=now)
    db().add(calendar)
    _commit(calendar)
    calendars.remember(calendar, now)
    return jsonify(calendar_json(calendar))


@bp.get("/calendars/<id_>")
def get_calendar(id_):
    return jsonify(calendar_json(get_owned(Calendar, id_, "calendar")))


@bp.patch("/calendars/<id_>")
def edit_calendar(id_):
    calendar = get_owned(Calendar, id_, "calendar")
    values = _fields()
    now = utcnow()
    if values.get("name"):
        calendar.name = values["name"]
    if "description" in values:
        calendar.description = values["description"]
    if values.get("timezone") is not None or "entries" in values:
        tz = schedules.checked(calendars.check_timezone, values.get("timezone") or calendar.timezone)
        entries = values["entries"] if values.get("entries") is not None else (
            [] if "entries" in values else calendar.entries or [])
        calendar.entries = schedules.checked(calendars.check_entries, entries, tz, now)
        calendar.timezone = tz
    calendar.updated_at = now
    _recompute_users(calendar, now)
    _commit(calendar)
    calendars.remember(calendar, now)
    return jsonify(calendar_json(calendar))


def _recompute_users(calendar: Calendar, now) -> None:
    """next_run_at of every schedule excluding this calendar, with its new entries (same transaction)."""
    session = db()
    session.flush()
    users = session.scalars(select(Schedule).join(ScheduleCalendar, ScheduleCalendar.schedule_id == Schedule.id)
                            .where(ScheduleCalendar.calendar_id == calendar.id)).all()
    if not users:
        return
    compiled = calendars.compiled(session, {c for s in users for c in s.exclude_calendars or []})
    for schedule in users:
        schedule.next_run_at = schedules.next_run_at(schedule, now, compiled)
    state().schedule_changed(min((s.next_run_at for s in users if s.next_run_at is not None), default=None))


@bp.delete("/calendars/<id_>")
def delete_calendar(id_):
    calendar = get_owned(Calendar, id_, "calendar")
    session = db()
    user = session.scalar(select(Schedule.name).join(ScheduleCalendar, ScheduleCalendar.schedule_id == Schedule.id)
                          .where(ScheduleCalendar.calendar_id == id_).limit(1))
    if user is not None:
        raise Conflict(f"calendar '{id_}' is excluded by schedule '{user}'; change or delete that schedule first")
    session.delete(calendar)
    try:
        session.commit()
    except IntegrityError:  # a schedule started using it meanwhile
        session.rollback()
        raise Conflict(f"calendar '{id_}' is excluded by a schedule; change or delete that schedule first") from None
    return jsonify({"deleted": id_})
