"""Pause and resume through the API: until an instant (then it resumes on its own) or indefinitely, with a
note; skip_next recorded as skipped with the reason; bulk by name prefix or by a tag of the targets.

Fires are claimed by the real dispatcher on the app's database, at instants the tests choose."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from web.dispatcher import Dispatcher
from web.models import Event, Run

UTC = timezone.utc


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def claim(api, now: datetime) -> list[str]:
    return Dispatcher(api.state, lambda ids: None).claim(now)


def runs(api, schedule_id):
    with api.state.db.session() as s:
        return [(r.status, r.scheduled_for, r.error) for r in
                s.scalars(select(Run).where(Run.schedule_id == schedule_id).order_by(Run.scheduled_for))]


@pytest.fixture
def every_minute(api, schedule_body):
    status, body = api.post("schedules", schedule_body(schedule_entry={"every": 1, "period": "minutes"},
                                                       concurrency="allow"))
    assert status == 200, body
    return body


def test_a_pause_until_an_instant_holds_fires_then_resumes_on_its_own(api, every_minute):
    sid = every_minute["id"]
    first = iso(every_minute["next_run_at"])
    until = first + timedelta(minutes=3, seconds=30)
    status, paused = api.post(f"schedules/{sid}/pause", {"until": until.isoformat(), "note": "DB migration"})
    assert status == 200, paused
    assert (paused["paused"], paused["pause_note"]) == (True, "DB migration")
    assert iso(paused["paused_until"]) == until
    # The fires before `until` are not fires: the next one is the first at or after it.
    assert iso(paused["next_run_at"]) == first + timedelta(minutes=4)
    assert claim(api, first + timedelta(minutes=3)) == []
    assert runs(api, sid) == []
    assert len(claim(api, first + timedelta(minutes=4))) == 1
    assert [(s, t) for s, t, _ in runs(api, sid)] == [("queued", first + timedelta(minutes=4))]


def test_the_answer_shows_the_pause_ended_once_until_passes(api, every_minute):
    until = datetime.now(UTC) + timedelta(seconds=1)
    status, paused = api.post(f"schedules/{every_minute['id']}/pause", {"until": until.isoformat()})
    assert paused["paused"] is True
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.05)
    status, body = api.get(f"schedules/{every_minute['id']}")
    assert (body["paused"], body["paused_until"], body["pause_note"]) == (False, None, None)
    assert body["active"] is True and iso(body["next_run_at"]) >= until


def test_a_pause_without_until_lasts_until_resumed(api, every_minute):
    sid = every_minute["id"]
    status, paused = api.post(f"schedules/{sid}/pause", {"note": "until the incident is over"})
    assert (paused["paused"], paused["paused_until"], paused["next_run_at"], paused["active"]) == (True, None, None, False)
    assert claim(api, datetime.now(UTC) + timedelta(days=30)) == []
    status, preview = api.get(f"schedules/{sid}/preview?count=3&show_skipped=true")
    assert preview["next_run_times"] == []
    assert [s["reason"] for s in preview["skipped"]] == ["paused"] * 3
    assert preview["skipped"][0]["note"] == "until the incident is over"
    status, resumed = api.post(f"schedules/{sid}/resume")
    assert (resumed["paused"], resumed["pause_note"], resumed["active"]) == (False, None, True)
    assert iso(resumed["next_run_at"]) > datetime.now(UTC)


def test_the_preview_of_a_paused_schedule_shows_the_fires_it_will_skip(api, every_minute):
    first = iso(every_minute["next_run_at"])
    until = first + timedelta(minutes=2)
    api.post(f"schedules/{every_minute['id']}/pause", {"until": until.isoformat(), "note": "freeze"})
    status, preview = api.get(f"schedules/{every_minute['id']}/preview?count=2&show_skipped=1")
    assert status == 200, preview
    assert [iso(t) for t in preview["next_run_times"]] == [first + timedelta(minutes=2), first + timedelta(minutes=3)]
    assert [(iso(s["at"]), s["reason"], s["note"]) for s in preview["skipped"]] == [
        (first, "paused", "freeze"), (first + timedelta(minutes=1), "paused", "freeze")]
    assert api.get(f"schedules/{every_minute['id']}/preview?count=2")[1] == {"next_run_times": preview["next_run_times"]}


def test_skip_next_skips_that_many_fires_recording_each_as_skipped_with_the_reason(api, every_minute):
    sid = every_minute["id"]
    first = iso(every_minute["next_run_at"])
    status, body = api.post(f"schedules/{sid}/pause", {"skip_next": 2, "note": "patch window"})
    assert status == 200, body
    assert (body["skip_next"], body["paused"], body["pause_note"]) == (2, False, "patch window")
    status, preview = api.get(f"schedules/{sid}/preview?count=1&show_skipped=1")
    assert [iso(t) for t in preview["next_run_times"]] == [first + timedelta(minutes=2)]
    assert [(iso(s["at"]), s["reason"]) for s in preview["skipped"]] == [(first, "skip_next")]
    for k in range(3):
        claim(api, first + timedelta(minutes=k))
    assert runs(api, sid) == [
        ("skipped", first, "skip_next: patch window (1 more to skip)"),
        ("skipped", first + timedelta(minutes=1), "skip_next: patch window (0 more to skip)"),
        ("queued", first + timedelta(minutes=2), None)]
    assert api.get(f"schedules/{sid}")[1]["skip_next"] == 0
    status, logs = api.get(f"logs?schedule_id={sid}&event_type=schedule_skipped")
    assert [e["error"] for e in logs][-1] == "skip_next: patch window (1 more to skip)"


def test_resume_forgets_fires_left_to_skip(api, every_minute):
    api.post(f"schedules/{every_minute['id']}/pause", {"skip_next": 5})
    status, body = api.post(f"schedules/{every_minute['id']}/resume")
    assert body["skip_next"] == 0


@pytest.mark.parametrize("body, field", [
    ({"until": "2016-3-24 17:20:00"}, "until"),
    ({"until": "soon"}, "until"),
    ({"until": "2030-01-01T00:00:00Z", "skip_next": 2}, "until, skip_next"),
    ({"skip_next": 0}, "skip_next"),
    ({"skip_next": "2"}, "skip_next"),
    ({"note": "x" * 2001}, "note"),
    ({"until": "2030-01-01T00:00:00Z", "for": "1h"}, "for"),
])
def test_a_bad_pause_is_a_400_naming_the_field_and_changes_nothing(api, every_minute, body, field):
    status, answer = api.post(f"schedules/{every_minute['id']}/pause", body)
    assert status == 400 and answer["error"].startswith(f"{field}:"), answer
    assert api.get(f"schedules/{every_minute['id']}")[1] == every_minute


def test_pause_fields_cannot_be_written_by_an_edit(api, every_minute):
    for field, value in (("paused", True), ("paused_until", "2030-01-01T00:00:00Z"), ("skip_next", 3)):
        status, body = api.patch(f"schedules/{every_minute['id']}", {field: value})
        assert status == 400 and body["error"] == f"{field}: is read-only"


def test_a_pause_of_another_orgs_schedule_is_a_404(other_api, every_minute):
    assert other_api.post(f"schedules/{every_minute['id']}/pause", {})[0] == 404
    assert other_api.post(f"schedules/{every_minute['id']}/resume")[0] == 404


@pytest.fixture
def fleet(api, cloud, schedule_body):
    """Machines web1 (env=dev), web2 (env=prod) and schedules targeting them in every way there is."""
    machines = {}
    for name, env in (("web1", "dev"), ("web2", "prod")):
        status, m = api.post(f"clouds/{cloud['id']}/machines", {"name": name, "host": "127.0.0.1", "tags": {"env": env}})
        assert status == 200, m
        machines[name] = m
    made = {}
    for name, targets in (
        ("dev-by-pair", {"machines_per_cloud": [[cloud["id"], "web1"]]}),
        ("dev-by-selector", {"machines_per_cloud": [], "selectors": [{"type": "tags", "include": {"env": "dev"}}]}),
        ("dev-by-id", {"machines_per_cloud": [], "selectors": [{"type": "machines", "ids": [machines["web1"]["id"]]}]}),
        ("prod-by-pair", {"machines_per_cloud": [[cloud["id"], "web2"]]}),
        ("nightly-prod", {"machines_per_cloud": [], "selectors": [{"type": "tags", "include": {"env": "prod"}}]}),
    ):
        status, body = api.post("schedules", schedule_body(name=name, **targets))
        assert status == 200, body
        made[name] = body["id"]
    return made


def paused_names(api):
    return sorted(s["name"] for s in api.get("schedules")[1] if s["paused"])


def test_bulk_pause_and_resume_by_a_tag_of_the_targets(api, other_api, fleet):
    status, body = api.post("schedules/pause", {"tags": {"env": "dev"}, "note": "dev freeze"})
    assert status == 200, body
    assert body["count"] == 3 and set(body["ids"]) == {fleet["dev-by-pair"], fleet["dev-by-selector"], fleet["dev-by-id"]}
    assert paused_names(api) == ["dev-by-id", "dev-by-pair", "dev-by-selector"]
    assert {s["pause_note"] for s in api.get("schedules")[1] if s["paused"]} == {"dev freeze"}
    status, body = api.post("schedules/resume", {"tags": {"env": "dev"}})
    assert body["count"] == 3 and paused_names(api) == []


def test_bulk_pause_by_name_prefix_and_tag_together(api, fleet):
    status, body = api.post("schedules/pause", {"name_prefix": "nightly", "until": "2099-01-01T00:00:00Z"})
    assert body["ids"] == [fleet["nightly-prod"]]
    status, body = api.post("schedules/pause", {"name_prefix": "prod", "tags": {"env": "dev"}})
    assert body == {"count": 0, "ids": []}
    status, body = api.post("schedules/resume", {"name_prefix": "nightly-"})
    assert body["ids"] == [fleet["nightly-prod"]] and paused_names(api) == []


def test_a_name_prefix_is_literal(api, fleet):
    assert api.post("schedules/pause", {"name_prefix": "dev_"})[1]["count"] == 0
    assert api.post("schedules/pause", {"name_prefix": "%"})[1]["count"] == 0


def test_bulk_pause_touches_no_other_org(api, other_api, fleet):
    assert other_api.post("schedules/pause", {"name_prefix": "dev"})[1] == {"count": 0, "ids": []}
    assert paused_names(api) == []


@pytest.mark.parametrize("body, field", [
    ({}, "name_prefix, tags"),
    ({"note": "all of them"}, "name_prefix, tags"),
    ({"tags": {}}, "tags"),
    ({"tags": {"env": 1}}, "tags.env"),
    ({"name_prefix": "dev", "until": "yesterday"}, "until"),
])
def test_a_bad_bulk_pause_is_a_400(api, fleet, body, field):
    status, answer = api.post("schedules/pause", body)
    assert status == 400 and answer["error"].startswith(f"{field}:"), answer
    assert paused_names(api) == []
