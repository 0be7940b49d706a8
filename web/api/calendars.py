"""Calendars (/api/v1/calendars): named sets of dates, windows, holidays and iCalendar events that schedules exclude."""
from __future__ import annotations

from flask import jsonify, request

from .. import db, resources, state, utcnow
from ..models import Calendar
from ..resources import STAMPS, calendar_json
from ..schemas import CalendarIn
from ..validation import json_body
from . import bp, get_owned, list_response, org_id


@bp.get("/calendars")
def list_calendars():
    query = resources.calendars_query(org_id(), request.args.get("name"))
    return list_response(query, calendar_json, (Calendar.created_at.desc(), Calendar.id.desc()))


@bp.post("/calendars")
def create_calendar():
    values = resources.fields(CalendarIn, json_body(), STAMPS)
    calendar = resources.store_calendar(state(), db(), org_id(), values, None, utcnow())
    return jsonify(calendar_json(calendar))


@bp.get("/calendars/<id_>")
def get_calendar(id_):
    return jsonify(calendar_json(get_owned(Calendar, id_, "calendar")))


@bp.patch("/calendars/<id_>")
def edit_calendar(id_):
    calendar = get_owned(Calendar, id_, "calendar")
    values = resources.fields(CalendarIn, json_body(), STAMPS)
    resources.store_calendar(state(), db(), org_id(), values, calendar, utcnow())
    return jsonify(calendar_json(calendar))


@bp.delete("/calendars/<id_>")
def delete_calendar(id_):
    resources.delete_calendar(db(), get_owned(Calendar, id_, "calendar"))
    return jsonify({"deleted": id_})
