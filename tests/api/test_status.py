"""GET /api/v1/status: the org's and the service's backlog, live worker slots and the dispatcher's last tick."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from web import utcnow
from web.crypto import new_id
from web.heartbeats import DISPATCHER, STALE, WORKER, Heartbeat
from web.models import Org, ProcessHeartbeat, Run


def add_run(api, org_name, status, age_s):
    now = utcnow()
    with api.state.db.transaction() as s:
        org_id = s.scalar(select(Org.id).where(Org.name == org_name))
        s.add(Run(id=new_id(), org_id=org_id, schedule_id=new_id(), trigger="scheduled", status=status,
                  scheduled_for=now - timedelta(seconds=age_s), created_at=now - timedelta(seconds=age_s)))


def test_it_needs_a_token(api):
    assert api.get("status", token="")[0] == 401


def test_an_idle_service_reports_zeros_and_no_dispatcher(api):
    status, body = api.get("status")
    assert status == 200, body
    assert body["org"] == {"queued": 0, "running": 0, "oldest_queued_age": None}
    assert body["all_orgs"] == body["org"]
    assert body["workers"] == {"live": 0, "slots": 0}
    assert body["dispatchers"] == {"live": 0, "last_tick": None, "last_tick_age": None}


def test_it_counts_the_orgs_backlog_apart_from_the_whole_services(api, other_api):
    add_run(api, "acme", "queued", 30)
    add_run(api, "acme", "queued", 5)
    add_run(api, "acme", "running", 60)
    add_run(api, "acme", "succeeded", 600)
    add_run(api, "globex", "queued", 300)
    _, mine = api.get("status")
    assert (mine["org"]["queued"], mine["org"]["running"]) == (2, 1)
    assert 29 <= mine["org"]["oldest_queued_age"] < 60
    assert (mine["all_orgs"]["queued"], mine["all_orgs"]["running"]) == (3, 1)
    assert 299 <= mine["all_orgs"]["oldest_queued_age"] < 400
    _, theirs = other_api.get("status")
    assert (theirs["org"]["queued"], theirs["org"]["running"]) == (1, 0)
    assert theirs["all_orgs"] == {**mine["all_orgs"], "oldest_queued_age": theirs["all_orgs"]["oldest_queued_age"]}


def test_it_sums_live_worker_slots_and_reports_the_last_tick(api):
    db = api.state.db
    live, dead = Heartbeat(db, WORKER, slots=2), Heartbeat(db, WORKER, slots=8)
    live.start()
    dead.start()
    tick = Heartbeat(db, DISPATCHER)
    tick.start()
    with db.transaction() as s:
        s.execute(update(ProcessHeartbeat).where(ProcessHeartbeat.id.in_([dead.id, tick.id]))
                  .values(beat_at=utcnow() - STALE - timedelta(seconds=5)))
    _, body = api.get("status")
    assert body["workers"] == {"live": 1, "slots": 2}
    assert body["dispatchers"]["live"] == 0  # silent too long: not alive, yet its last tick is told
    assert STALE.total_seconds() < body["dispatchers"]["last_tick_age"] < STALE.total_seconds() + 60
    assert body["dispatchers"]["last_tick"].endswith("Z")
