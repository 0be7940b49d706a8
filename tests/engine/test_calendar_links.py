"""schedule_calendars on SQLite and PostgreSQL: a calendar in use cannot be deleted, even behind the API's back,
and deleting an org still removes everything of it in one cascade."""
from __future__ import annotations

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from web.models import Calendar, Org, Schedule, ScheduleCalendar

from .conftest import T0
from .test_dispatcher import add_calendar


def link(env, schedule_id, calendar_id):
    with env.state.db.transaction() as s:
        s.add(ScheduleCalendar(schedule_id=schedule_id, calendar_id=calendar_id))


def test_the_database_refuses_to_delete_a_calendar_in_use(env):
    cid = add_calendar(env, [{"date": "2026-12-25"}])
    link(env, env.add(exclude_calendars=[cid]), cid)
    with pytest.raises(IntegrityError):
        with env.state.db.transaction() as s:
            s.execute(delete(Calendar).where(Calendar.id == cid))
    with env.state.db.session() as s:
        assert s.get(Calendar, cid) is not None


def test_deleting_a_schedule_frees_its_calendars(env):
    cid = add_calendar(env, [])
    sid = env.add(exclude_calendars=[cid])
    link(env, sid, cid)
    with env.state.db.transaction() as s:
        s.execute(delete(Schedule).where(Schedule.id == sid))
    with env.state.db.transaction() as s:
        s.execute(delete(Calendar).where(Calendar.id == cid))
        assert s.scalar(select(func.count()).select_from(ScheduleCalendar)) == 0


def test_deleting_an_org_removes_its_schedules_links_and_calendars(env):
    cid = add_calendar(env, [])
    link(env, env.add(now=T0, exclude_calendars=[cid]), cid)
    with env.state.db.transaction() as s:
        s.execute(delete(Org).where(Org.id == env.org_id))
    with env.state.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Calendar)) == 0
        assert s.scalar(select(func.count()).select_from(ScheduleCalendar)) == 0
