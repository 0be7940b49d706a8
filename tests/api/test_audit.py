"""The audit log through the API: who changed what, field by field, secrets masked, org by org."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text

from tests.api.conftest import Client
from web.auth import create_token
from web.models import AuditEntry, Token

UTC = timezone.utc


@pytest.fixture
def ops(api):
    """A second client of the same org (acme) whose token is labelled 'ops-bot'."""
    with api.state.db.transaction() as session:
        token = create_token(session, "acme", "ops-bot")
    client = Client(api.flask, token)
    client.state = api.state
    return client


def token_id(client) -> str:
    from web.crypto import hash_token

    with client.state.db.session() as s:
        return s.scalar(select(Token.id).where(Token.token_hash == hash_token(client.token)))


def entries(client, **query) -> list[dict]:
    qs = "&".join(f"{k}={v}" for k, v in query.items())
    status, body = client.get("audit" + (f"?{qs}" if qs else ""))
    assert status == 200, body
    return body


def test_a_patch_of_a_schedule_records_who_and_each_changed_fields_before_and_after(ops, schedule_body):
    status, sched = ops.post("schedules", schedule_body())
    assert status == 200, sched
    status, body = ops.patch(f"schedules/{sched['id']}", {"schedule_entry": {"every": 5, "period": "hours"},
                                                         "description": "slower"})
    assert status == 200, body

    newest = entries(ops, resource="schedule", id=sched["id"])[0]
    assert newest["action"] == "update"
    assert newest["resource"] == "schedule" and newest["resource_id"] == sched["id"] and newest["name"] == "nightly"
    assert newest["token_label"] == "ops-bot" and newest["token_id"] == token_id(ops)
    assert newest["changes"] == {
        "description": {"before": None, "after": "slower"},
        "schedule_entry": {"before": {"every": 2, "period": "minutes"}, "after": {"every": 5, "period": "hours"}},
    }


def test_a_create_lists_the_fields_set_and_a_delete_the_fields_it_had(api, schedule_body):
    status, sched = api.post("schedules", schedule_body())
    assert status == 200
    assert api.delete(f"schedules/{sched['id']}")[0] == 200
    deleted, created = entries(api, id=sched["id"])
    assert created["action"] == "create" and deleted["action"] == "delete"
    assert created["changes"]["name"] == {"before": None, "after": "nightly"}
    assert created["changes"]["action"] == {"before": None, "after": "stop"}
    assert deleted["changes"]["name"] == {"before": "nightly", "after": None}
    assert deleted["name"] == "nightly"
    assert "next_run_at" not in created["changes"]  # derived by the service, not a client's choice


def test_an_edit_that_changes_nothing_and_a_refused_edit_record_nothing(api, schedule):
    before = entries(api)
    assert api.patch(f"schedules/{schedule['id']}", {"name": "nightly"})[0] == 200
    assert api.patch(f"schedules/{schedule['id']}", {"expires": "2001-01-01T00:00:00Z"})[0] == 400
    assert entries(api) == before


def test_a_cloud_credential_change_is_masked_and_no_secret_is_stored_in_the_log(api):
    status, cloud = api.post("clouds", {"title": "aws", "provider": "ec2",
                                        "credentials": {"key": "AKIAFIRST", "secret": "first-s3cret"}})
    assert status == 200, cloud
    status, body = api.patch(f"clouds/{cloud['id']}", {"title": "aws-prod",
                                                      "credentials": {"key": "AKIASECOND", "secret": "second-s3cret"}})
    assert status == 200, body

    update, create = entries(api, resource="cloud")
    assert create["changes"]["credentials"] == {"before": None, "after": "***"}
    assert update["changes"] == {"title": {"before": "aws", "after": "aws-prod"},
                                 "credentials": {"before": "***", "after": "***"}}
    with api.state.db.session() as s:
        stored = " ".join(str(v) for v in s.execute(text("SELECT changes FROM audit_log")).scalars())
    for secret in ("AKIAFIRST", "first-s3cret", "AKIASECOND", "second-s3cret"):
        assert secret not in stored


def test_a_keys_private_half_is_masked(api):
    status, key = api.post("keys", {"name": "deploy", "generate": True})
    assert status == 200, key
    assert api.patch(f"keys/{key['id']}", {"generate": True})[0] == 200
    update, create = entries(api, resource="key")
    assert create["changes"]["private"] == {"before": None, "after": "***"}
    assert update["changes"]["private"] == {"before": "***", "after": "***"}
    assert update["changes"]["public"]["before"] == key["public"]  # the public half is not a secret
    assert "PRIVATE KEY" not in str(update) + str(create)


def test_sending_the_same_credentials_or_private_key_again_records_no_change(api):
    """A client that sends a cloud or key back with its secret unchanged has not rotated it: the log must not say so."""
    from web.keys import generate_private

    creds = {"key": "AKIASAME", "secret": "same-s3cret"}
    status, cloud = api.post("clouds", {"title": "aws", "provider": "ec2", "credentials": creds})
    assert status == 200, cloud
    assert api.patch(f"clouds/{cloud['id']}", {"credentials": dict(creds)})[0] == 200
    assert api.patch(f"clouds/{cloud['id']}", {"title": "aws", "credentials": dict(creds)})[0] == 200
    private = generate_private()
    status, key = api.post("keys", {"name": "deploy", "private": private})
    assert status == 200, key
    assert api.patch(f"keys/{key['id']}", {"private": private})[0] == 200

    assert [(e["resource"], e["action"]) for e in entries(api)] == [("key", "create"), ("cloud", "create")]
    # A real change is still one.
    assert api.patch(f"clouds/{cloud['id']}", {"credentials": {**creds, "secret": "rotated"}})[0] == 200
    assert entries(api, action="update")[0]["changes"] == {"credentials": {"before": "***", "after": "***"}}


def test_run_now_pause_skip_next_and_resume_are_recorded(api, schedule):
    sid = schedule["id"]
    status, run = api.post(f"schedules/{sid}/run")
    assert status == 200, run
    assert api.post(f"schedules/{sid}/pause", {"note": "maintenance"})[0] == 200
    assert api.post(f"schedules/{sid}/resume")[0] == 200
    assert api.post(f"schedules/{sid}/pause", {"skip_next": 2, "note": "holiday"})[0] == 200

    skip, resume, pause, run_now, _create = entries(api, id=sid)
    assert run_now["action"] == "run_now"
    assert run_now["changes"] == {"run_id": {"before": None, "after": run["id"]}}
    assert pause["action"] == "pause"
    assert pause["changes"]["pause_note"] == {"before": None, "after": "maintenance"}
    assert pause["changes"]["paused_at"]["before"] is None and pause["changes"]["paused_at"]["after"]
    assert resume["action"] == "resume"
    assert resume["changes"]["pause_note"] == {"before": "maintenance", "after": None}
    assert skip["action"] == "skip_next"
    assert skip["changes"]["skip_next"] == {"before": 0, "after": 2}


def test_a_bulk_pause_records_one_entry_per_schedule(api, schedule_body):
    ids = [api.post("schedules", schedule_body(name=f"batch-{i}"))[1]["id"] for i in range(3)]
    status, body = api.post("schedules/pause", {"name_prefix": "batch-"})
    assert status == 200 and body["count"] == 3
    assert sorted(e["resource_id"] for e in entries(api, action="pause")) == sorted(ids)


def test_every_resource_kind_is_recorded(api, cloud, machine):
    assert api.patch(f"clouds/{cloud['id']}/machines/{machine['id']}", {"port": 2200})[0] == 200
    status, script = api.post("scripts", {"name": "uptime", "script": "#!/bin/sh\nuptime\n"})
    assert status == 200
    assert api.patch(f"scripts/{script['id']}", {"script": "#!/bin/sh\nuptime -p\n"})[0] == 200
    assert api.delete(f"scripts/{script['id']}")[0] == 200
    status, cal = api.post("calendars", {"name": "holidays", "entries": [{"yearly": "12-25"}]})
    assert status == 200, cal
    assert api.delete(f"calendars/{cal['id']}")[0] == 200
    assert api.delete(f"clouds/{cloud['id']}/machines/{machine['id']}")[0] == 200
    assert api.delete(f"clouds/{cloud['id']}")[0] == 200

    seen = [(e["resource"], e["action"]) for e in reversed(entries(api))]
    assert seen == [("cloud", "create"), ("machine", "create"), ("machine", "update"), ("script", "create"),
                    ("script", "update"), ("script", "delete"), ("calendar", "create"), ("calendar", "delete"),
                    ("machine", "delete"), ("cloud", "delete")]
    port = next(e for e in entries(api, resource="machine", action="update"))["changes"]
    assert port == {"port": {"before": 2222, "after": 2200}}
    edit = entries(api, resource="script", action="update")[0]["changes"]
    assert edit == {"script": {"before": "#!/bin/sh\nuptime\n", "after": "#!/bin/sh\nuptime -p\n"}}


def test_filters_by_resource_id_token_and_time(api, ops, schedule_body):
    status, mine = api.post("schedules", schedule_body(name="mine"))
    status, theirs = ops.post("schedules", schedule_body(name="theirs"))
    assert status == 200

    assert [e["name"] for e in entries(api, token="ops-bot")] == ["theirs"]
    assert [e["name"] for e in entries(api, token=token_id(ops))] == ["theirs"]
    assert [e["name"] for e in entries(api, id=mine["id"])] == ["mine"]
    assert {e["resource"] for e in entries(api, resource="cloud")} == {"cloud"}
    assert entries(api, resource="schedule", action="delete") == []

    # Time: move the first entry an hour back and ask around it (since inclusive, until exclusive).
    with api.state.db.transaction() as s:
        first = s.scalar(select(AuditEntry).where(AuditEntry.resource_id == mine["id"]))
        first.time = datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert [e["name"] for e in entries(api, since="2030-01-01T12:00:00Z", until="2030-01-01T12:00:01Z")] == ["mine"]
    assert entries(api, since="2030-01-01T11:00:00Z", until="2030-01-01T12:00:00Z") == []
    assert "mine" not in [e["name"] for e in entries(api, since="2030-01-01T12:00:01Z")]


def test_a_bad_date_filter_says_a_date_without_an_offset_is_utc_not_in_a_schedules_timezone(api):
    status, body = api.get("audit?since=2030-02-30")
    assert status == 400 and "day is out of range" in body["error"]
    assert "schedule" not in body["error"] and "(UTC)" in body["error"]


@pytest.mark.parametrize("query, message", [
    ("since=yesterday", "since:"),
    ("until=2030-13-01T00:00:00Z", "until:"),
    ("since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z", "since, until: since must be before until"),
    ("resource=planet", "resource: 'planet' is not one of"),
    ("action=explode", "action: 'explode' is not one of"),
    ("limit=0", "limit"),
])
def test_bad_filters_are_a_400_naming_the_field(api, query, message):
    status, body = api.get(f"audit?{query}")
    assert status == 400
    assert body["error"].startswith(message), body


def test_pages_newest_first_with_the_total_in_x_total_count(api, schedule_body):
    for i in range(5):
        assert api.post("schedules", schedule_body(name=f"s{i}"))[0] == 200
    status, page, resp = api.call("GET", "audit?resource=schedule&limit=2&offset=1")
    assert status == 200
    assert resp.headers["X-Total-Count"] == "5"
    assert [e["name"] for e in page] == ["s3", "s2"]
    assert page[0]["id"] > page[1]["id"]


def test_another_org_sees_none_of_it(api, other_api, schedule):
    assert api.patch(f"schedules/{schedule['id']}", {"description": "x"})[0] == 200
    assert len(entries(api, id=schedule["id"])) == 2
    status, body, resp = other_api.call("GET", f"audit?id={schedule['id']}")
    assert status == 200 and body == [] and resp.headers["X-Total-Count"] == "0"
    assert entries(other_api) == []
    # and its own changes stay its own
    other_api.post("clouds", {"title": "theirs", "provider": "other"})
    assert [e["name"] for e in entries(other_api)] == ["theirs"]
    assert "theirs" not in [e["name"] for e in entries(api)]


def test_the_audit_log_needs_a_token(api):
    status, body = api.get("audit", token="")
    assert status == 401


def test_the_openapi_description_documents_the_audit_endpoint(api):
    status, doc = api.get("openapi.json", token=None)
    assert status == 200
    assert "get" in doc["paths"]["/audit"]


def test_entries_survive_the_revocation_of_the_token_that_made_them(api, ops, schedule_body):
    from web.auth import revoke_token

    ops.post("schedules", schedule_body(name="by-ops"))
    with api.state.db.transaction() as session:
        assert revoke_token(session, ops.token)
    [entry] = entries(api, token="ops-bot")
    assert entry["name"] == "by-ops"


def test_prune_deletes_entries_past_the_retention_in_batches_and_keeps_the_rest(api, schedule_body, monkeypatch):
    from web import audit
    from web.dispatcher import Dispatcher

    for i in range(7):
        api.post("schedules", schedule_body(name=f"p{i}"))
    now = datetime.now(UTC)
    with api.state.db.transaction() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.resource == "schedule").order_by(AuditEntry.id)).all()
        for i, row in enumerate(rows[:5]):  # five entries past the default retention (365 days)
            row.time = now - timedelta(days=366 + i)
    monkeypatch.setattr(audit, "PRUNE_BATCH", 2)  # 3 transactions: 2 + 2 + 1

    assert audit.prune(api.state, now) == 5
    assert [e["name"] for e in entries(api, resource="schedule")] == ["p6", "p5"]
    assert audit.prune(api.state, now) == 0

    # The dispatcher's sweep is what calls it in a running service.
    with api.state.db.transaction() as s:
        s.scalar(select(AuditEntry).where(AuditEntry.name == "p5")).time = now - timedelta(days=400)
    Dispatcher(api.state, lambda ids: None).sweep(now)
    assert [e["name"] for e in entries(api, resource="schedule")] == ["p6"]


def test_prune_stops_after_its_time_budget_so_the_dispatchers_claims_wait_little(api, schedule_body, monkeypatch):
    """The sweep that prunes runs in the dispatcher's loop: a long backlog of old entries (retention just
    lowered) is deleted a little per sweep, not 10,000 rows at a time while fires wait."""
    from itertools import count

    from web import audit

    for i in range(7):
        api.post("schedules", schedule_body(name=f"b{i}"))
    now = datetime.now(UTC)
    with api.state.db.transaction() as s:
        for row in s.scalars(select(AuditEntry).where(AuditEntry.resource == "schedule")).all():
            row.time = now - timedelta(days=400)
    monkeypatch.setattr(audit, "PRUNE_BATCH", 2)
    seconds = count()  # a clock where each reading is one second after the last: every batch is "slow"

    assert audit.prune(api.state, now, clock=lambda: next(seconds), budget=0.5) == 2  # one batch, then stop
    assert audit.prune(api.state, now, clock=lambda: 0.0, budget=0.5) == 5  # a fast database: all of it
    assert entries(api, resource="schedule") == []


def test_record_filter_and_prune_on_each_database(backend_api):
    """The same entries, filters and pruning on SQLite and PostgreSQL (JSON changes, the time index)."""
    from web import audit

    api = backend_api
    status, cloud = api.post("clouds", {"title": "aws", "provider": "ec2",
                                        "credentials": {"key": "AKIA1", "secret": "s"}})
    assert status == 200, cloud
    status, body = api.patch(f"clouds/{cloud['id']}", {"options": {"region": "eu-west-1"},
                                                      "credentials": {"key": "AKIA2"}})
    assert status == 200, body
    update, create = entries(api, id=cloud["id"])
    assert update["changes"] == {"options": {"before": {}, "after": {"region": "eu-west-1"}},
                                 "credentials": {"before": "***", "after": "***"}}
    assert entries(api, resource="cloud", action="create") == [create]

    now = datetime.now(UTC)
    with api.state.db.transaction() as s:
        s.scalar(select(AuditEntry).where(AuditEntry.id == create["id"])).time = now - timedelta(days=365, seconds=1)
    assert audit.prune(api.state, now) == 1
    assert entries(api, id=cloud["id"]) == [update]


def test_channel_changes_are_recorded_with_the_url_and_secret_masked(api):
    hook = {"name": "audited-hook", "kind": "webhook", "url": "https://hooks.example.com/cron/T0KEN-in-path",
            "secret": "s3cret-s3cret-s3cret"}
    status, channel = api.post("channels", hook)
    assert status in (200, 201), channel
    assert api.patch(f"channels/{channel['id']}", {"name": "renamed-hook"})[0] == 200
    assert api.patch(f"channels/{channel['id']}", {"secret": "another-secret-0123"})[0] == 200
    assert api.delete(f"channels/{channel['id']}")[0] in (200, 204)

    log = entries(api, resource="channel", id=channel["id"])
    assert [e["action"] for e in log] == ["delete", "update", "update", "create"]
    assert log[2]["changes"] == {"name": {"before": "audited-hook", "after": "renamed-hook"}}
    assert log[1]["changes"] == {"url_and_secret": {"before": "***", "after": "***"}}
    assert log[3]["changes"]["url"] == {"before": None, "after": channel["url"]}  # the API's names, masked URL
    assert log[3]["changes"]["default"] == {"before": None, "after": False}
    assert not {"target", "url_shown", "is_default"} & set(log[3]["changes"])
    dumped = repr(log)
    assert "T0KEN" not in dumped and "s3cret" not in dumped and "another-secret" not in dumped
