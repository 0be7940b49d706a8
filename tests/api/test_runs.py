"""Runs started by hand and the bookkeeping around them: run-now under concurrency forbid, and last_error."""
from __future__ import annotations

import pytest
from sqlalchemy import update

from web.models import Run, Schedule


def _end(api, run_id, status="succeeded"):
    with api.state.db.transaction() as s:
        s.execute(update(Run).where(Run.id == run_id).values(status=status))


def test_run_now_is_a_409_naming_the_run_while_one_is_queued_or_running(api, schedule):
    status, first = api.post(f"schedules/{schedule['id']}/run")
    assert status == 200 and first["status"] == "queued"
    status, body = api.post(f"schedules/{schedule['id']}/run")
    assert status == 409 and first["id"] in body["error"] and "queued" in body["error"]
    assert body["error"].startswith("concurrency:") and "forbid" in body["error"]
    _end(api, first["id"], "running")
    status, body = api.post(f"schedules/{schedule['id']}/run")
    assert status == 409 and first["id"] in body["error"] and "running" in body["error"]
    _end(api, first["id"])
    status, second = api.post(f"schedules/{schedule['id']}/run")
    assert status == 200 and second["id"] != first["id"]
    assert len(api.get(f"schedules/{schedule['id']}/runs")[1]) == 2


def test_run_now_with_concurrency_allow_starts_a_run_each_time(api, schedule_body):
    status, sched = api.post("schedules", schedule_body(concurrency="allow"))
    assert status == 200, sched
    ids = {api.post(f"schedules/{sched['id']}/run")[1]["id"] for _ in range(3)}
    assert len(ids) == 3


def test_run_now_of_another_orgs_schedule_is_a_404(api, other_api, schedule):
    assert other_api.post(f"schedules/{schedule['id']}/run")[0] == 404


def test_last_error_is_shown_and_a_successful_edit_clears_it(api, schedule):
    assert schedule["last_error"] is None
    with api.state.db.transaction() as s:
        s.execute(update(Schedule).where(Schedule.id == schedule["id"])
                  .values(last_error="cannot compute the next fire (ZoneInfoNotFoundError: 'No time zone')"))
    status, body = api.get(f"schedules/{schedule['id']}")
    assert body["last_error"].startswith("cannot compute the next fire")
    # An edit that fails its checks changes nothing, the error included.
    status, body = api.patch(f"schedules/{schedule['id']}", {"timezone": "localtime"})
    assert status == 400 and body["error"].startswith("timezone:")
    assert api.get(f"schedules/{schedule['id']}")[1]["last_error"] is not None
    status, body = api.patch(f"schedules/{schedule['id']}", {"description": "fixed"})
    assert status == 200 and body["last_error"] is None
    assert api.get(f"schedules/{schedule['id']}")[1]["last_error"] is None


@pytest.mark.parametrize("zone", ["localtime", "posixrules"])
def test_zone_files_outside_tzdata_are_a_400_on_create_and_preview(api, schedule_body, zone):
    body = schedule_body(schedule_type="crontab", schedule_entry={"minute": "0"}, timezone=zone)
    status, answer = api.post("schedules", body)
    assert status == 400 and answer["error"].startswith(f"timezone: '{zone}'")
    status, answer = api.post("schedules/preview", {"schedule_type": "crontab", "schedule_entry": {"minute": "0"},
                                                    "timezone": zone})
    assert status == 400 and answer["error"].startswith(f"timezone: '{zone}'")
