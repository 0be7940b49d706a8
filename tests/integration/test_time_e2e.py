"""Calendars and pause end to end: the real service process (API, dispatcher and worker) over real HTTP.

A schedule fires every second; a calendar excludes a few seconds of it, and a pause holds it for a few
seconds: no run is recorded for an instant inside either, and runs go on after them. Seconds, not minutes.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.harness.service import wait_until

UTC = timezone.utc


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def wall(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def target(service):
    """An SSH-hosts cloud with one declared machine: a power run of it fails at once, without a playbook."""
    status, cloud = service.api("POST", "clouds", {"title": f"lab-{time.time_ns()}", "provider": "other"})
    assert status == 200, cloud
    status, machine = service.api("POST", f"clouds/{cloud['id']}/machines", {"name": "web1", "host": "127.0.0.1"})
    assert status == 200, machine
    return [[cloud["id"], "web1"]]


def every_second(service, target, name, **fields):
    status, body = service.api("POST", "schedules", {
        "name": f"{name}-{time.time_ns()}", "action": "stop", "machines_per_cloud": target, "schedule_type": "interval",
        "schedule_entry": {"every": 1, "period": "seconds"}, "concurrency": "allow", **fields})
    assert status == 200, body
    return body


def fired(service, schedule_id) -> list[datetime]:
    """Every instant a run was recorded for (whatever its status)."""
    status, runs = service.api("GET", f"schedules/{schedule_id}/runs?limit=1000")
    assert status == 200, runs
    return sorted(iso(r["scheduled_for"]) for r in runs if r["trigger"] == "scheduled")


def test_a_fire_on_a_holiday_is_skipped_by_the_running_service(service, target):
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3)
    holiday_from, holiday_to = start + timedelta(seconds=3), start + timedelta(seconds=6)
    status, cal = service.api("POST", "calendars", {"name": f"holiday-{time.time_ns()}", "entries": [
        {"from": wall(holiday_from), "to": wall(holiday_to)}]})
    assert status == 200, cal
    sched = every_second(service, target, "holiday", start_after=start.isoformat(), exclude_calendars=[cal["id"]])
    assert iso(sched["next_run_at"]) == start

    status, preview = service.api("GET", f"schedules/{sched['id']}/preview?count=6&show_skipped=1&after="
                                         f"{(start - timedelta(seconds=1)).isoformat().replace('+00:00', 'Z')}")
    assert [iso(t) for t in preview["next_run_times"]] == [start + timedelta(seconds=k) for k in (0, 1, 2, 6, 7, 8)]
    assert [(iso(s["at"]), s["calendar_id"]) for s in preview["skipped"]] == [
        (start + timedelta(seconds=k), cal["id"]) for k in (3, 4, 5)]

    end = start + timedelta(seconds=9)
    times = wait_until(lambda: (lambda t: t if t and t[-1] >= end else None)(fired(service, sched["id"])),
                       timeout=60, what="runs after the holiday")
    assert not [t for t in times if holiday_from <= t < holiday_to], times
    assert start in times and start + timedelta(seconds=2) in times  # before the holiday, every second
    assert holiday_to in times and end in times  # and again after it
    assert service.api("DELETE", f"calendars/{cal['id']}")[0] == 409  # in use
    service.api("DELETE", f"schedules/{sched['id']}")


def test_a_paused_schedule_runs_nothing_until_its_pause_ends_then_resumes_on_its_own(service, target):
    sched = every_second(service, target, "paused")
    wait_until(lambda: fired(service, sched["id"]), timeout=60, what="a first run")
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
    status, paused = service.api("POST", f"schedules/{sched['id']}/pause", {"until": until.isoformat(), "note": "e2e"})
    assert status == 200 and paused["paused"] is True, paused
    paused_at, resumed_at = iso(paused["updated_at"]), iso(paused["next_run_at"])
    assert until <= resumed_at < until + timedelta(seconds=1)  # the first fire of the grid at or after until
    times = wait_until(lambda: (lambda t: t if t and t[-1] >= until + timedelta(seconds=2) else None)(
        fired(service, sched["id"])), timeout=60, what="runs after the pause")
    assert not [t for t in times if paused_at < t < until], times
    assert resumed_at in times and resumed_at + timedelta(seconds=1) in times
    status, body = service.api("GET", f"schedules/{sched['id']}")
    assert (body["paused"], body["paused_until"]) == (False, None)
    service.api("DELETE", f"schedules/{sched['id']}")
