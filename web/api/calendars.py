"""Calendars (/api/v1/calendars): named sets of dates, windows, holidays and iCalendar events that schedules exclude."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from .. import apply, db, resources, state, utcnow
from ..models import Calendar
from ..resources import STAMPS, calendar_json
from ..schemas import CalendarIn
from ..validation import json_body
from . import apply_response, body, check_if_match, get_by_name, get_owned, list_response, org_id, query_flag, with_etag

bp = Blueprint("calendars", __name__)  # registered under /api/v1 by the app factory (web.api.blueprint)


@bp.get("/calendars")
def list_calendars():
    query = resources.calendars_query(org_id(), request.args.get("name"))
    return list_response(query, calendar_json, (Calendar.created_at.desc(), Calendar.id.desc()))


@bp.post("/calendars")
def create_calendar():
    values = body(CalendarIn, STAMPS)
    calendar = resources.store_calendar(state(), db(), org_id(), values, None, utcnow())
    return with_etag(jsonify(calendar_json(calendar)), calendar)


@bp.get("/calendars/<id_>")
def get_calendar(id_):
    calendar = get_owned(Calendar, id_, "calendar")
    return with_etag(jsonify(calendar_json(calendar)), calendar)


@bp.patch("/calendars/<id_>")
def edit_calendar(id_):
    calendar = get_owned(Calendar, id_, "calendar")
    check_if_match(calendar)
    values = body(CalendarIn, STAMPS)
    resources.store_calendar(state(), db(), org_id(), values, calendar, utcnow())
    return with_etag(jsonify(calendar_json(calendar)), calendar)


@bp.delete("/calendars/<id_>")
def delete_calendar(id_):
    calendar = get_owned(Calendar, id_, "calendar")
    check_if_match(calendar)
    resources.delete_calendar(db(), calendar)
    return jsonify({"deleted": id_})


CALENDAR = apply.Kind("calendar", calendar_json, ("name", "description", "timezone", "entries"), model=Calendar)


@bp.put("/calendars/by-name/<name:name>")
def apply_calendar(name):
    """Declarative apply of a calendar (see web.apply); ?dry_run=true writes nothing."""
    desired = body(CalendarIn, STAMPS, apply.desired_with_name(json_body(), "name", name))
    current = get_by_name(Calendar, Calendar.name, name)
    check_if_match(current)
    now = utcnow()

    def store(values, cur, dry):
        if not dry:
            check_if_match(cur)
        return resources.store_calendar(state(), db(), org_id(), values, cur, now, dry_run=dry)

    applied = apply.apply(db(), CALENDAR, current, desired, store, dry_run=query_flag("dry_run"))
    return apply_response(applied, "calendar")
