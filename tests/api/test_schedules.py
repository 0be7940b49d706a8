"""Schedules API: routes, fields and the rules on them (the Mist v1 contract, made strict)."""
from __future__ import annotations

import re
from datetime import datetime

import pytest


HEX32 = re.compile(r"[0-9a-f]{32}")
ANSWER_FIELDS = {"id", "name", "description", "action", "script_id", "params", "machines_per_cloud", "selectors",
                 "schedule_type", "schedule_entry", "enabled", "run_immediately", "start_after", "expires",
                 "max_run_count", "timezone", "misfire_grace", "concurrency", "timeout", "exclude_calendars", "jitter", "notify", "retries",
                 "paused", "paused_until", "pause_note", "skip_next", "active", "next_run_at",
                 "total_run_count", "last_run_at", "last_error", "created_at", "updated_at"}


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def script(api):
    status, body = api.post("scripts", {"name": "uptime", "script": "#!/bin/sh\nuptime\n"})
    assert status == 200, body
    return body


# ------------------------------------------------------------------ routes

def test_it_creates_a_schedule_and_answers_it_with_defaults(api, schedule_body, cloud):
    status, body = api.post("schedules", schedule_body())
    assert status == 200, body
    assert set(body) == ANSWER_FIELDS
    assert HEX32.fullmatch(body["id"])
    assert body["name"] == "nightly" and body["action"] == "stop"
    assert body["machines_per_cloud"] == [[cloud["id"], "i-781daaf3"]]
    assert body["schedule_entry"] == {"every": 2, "period": "minutes"}
    assert (body["enabled"], body["run_immediately"], body["timezone"]) == (True, False, "UTC")
    assert (body["total_run_count"], body["last_run_at"], body["active"]) == (0, None, True)
    assert body["created_at"] == body["updated_at"] and body["created_at"].endswith("Z")


def test_it_gets_a_schedule_by_id(api, schedule):
    assert api.get(f"schedules/{schedule['id']}") == (200, schedule)


@pytest.mark.parametrize("method", ["PATCH", "PUT", "POST"])
def test_every_edit_route_merges_the_given_fields(api, schedule, method):
    status, body, _ = api.call(method, f"schedules/{schedule['id']}", {"description": "only this"})
    assert status == 200, body
    unchanged = {k: v for k, v in schedule.items() if k not in ("description", "updated_at")}
    assert {k: v for k, v in body.items() if k not in ("description", "updated_at")} == unchanged
    assert body["description"] == "only this"
    assert iso(body["updated_at"]) >= iso(schedule["updated_at"])
    assert api.get(f"schedules/{schedule['id']}")[1] == body


@pytest.mark.parametrize("method", ["PATCH", "PUT", "POST"])
def test_every_edit_route_validates_the_merged_result_as_a_whole(api, schedule, script, method):
    # script_id alone: merged with the stored action that is both, which is a 400.
    status, body, _ = api.call(method, f"schedules/{schedule['id']}", {"script_id": script["id"]})
    assert status == 400 and "action" in body["error"] and "script_id" in body["error"]
    # Clearing the action at the same time makes a valid script schedule.
    status, body, _ = api.call(method, f"schedules/{schedule['id']}", {"action": "", "script_id": script["id"]})
    assert status == 200, body
    assert (body["action"], body["script_id"]) == (None, script["id"])
    # Removing the only target is a 400, and nothing is stored.
    status, body, _ = api.call(method, f"schedules/{schedule['id']}", {"machines_per_cloud": []})
    assert status == 400 and "machines_per_cloud" in body["error"]
    assert api.get(f"schedules/{schedule['id']}")[1]["machines_per_cloud"] == schedule["machines_per_cloud"]


def test_an_edit_with_an_empty_body_changes_nothing(api, schedule):
    status, body = api.patch(f"schedules/{schedule['id']}", {})
    assert status == 200 and body["name"] == schedule["name"]


def test_a_deleted_schedule_is_gone(api, schedule):
    assert api.delete(f"schedules/{schedule['id']}") == (200, {"deleted": schedule["id"]})
    status, body = api.get(f"schedules/{schedule['id']}")
    assert status == 404 and schedule["id"] in body["error"]
    assert api.delete(f"schedules/{schedule['id']}")[0] == 404
    assert api.patch(f"schedules/{schedule['id']}", {"description": "x"})[0] == 404
    assert api.get("schedules")[1] == []


def test_a_missing_schedule_is_404_on_every_route(api):
    for method in ("GET", "PATCH", "PUT", "POST", "DELETE"):
        status, body, _ = api.call(method, "schedules/" + "0" * 32, {"description": "x"} if method != "GET" else None)
        assert status == 404 and "error" in body


# ------------------------------------------------------------------ name

def test_a_name_is_required(api, schedule_body):
    for body in (schedule_body(name=...), schedule_body(name=""), schedule_body(name=None)):
        status, answer = api.post("schedules", body)
        assert status == 400 and answer["error"] == "name: is required"


def test_a_name_is_at_most_255_characters(api, schedule_body):
    assert api.post("schedules", schedule_body(name="n" * 255))[0] == 200
    status, body = api.post("schedules", schedule_body(name="m" * 256))
    assert status == 400 and body["error"].startswith("name:") and "255" in body["error"]


def test_a_duplicate_name_is_a_409(api, schedule, schedule_body):
    status, body = api.post("schedules", schedule_body())
    assert status == 409 and body["error"].startswith("name:")
    status, other = api.post("schedules", schedule_body(name="other"))
    status, body = api.patch(f"schedules/{other['id']}", {"name": schedule["name"]})
    assert status == 409 and body["error"].startswith("name:")
    assert api.patch(f"schedules/{schedule['id']}", {"name": schedule["name"]})[0] == 200


# ------------------------------------------------------------------ action or script

def test_it_accepts_each_action(api, schedule_body):
    for action in ("start", "stop", "reboot", "destroy"):
        status, body = api.post("schedules", schedule_body(name=action, action=action))
        assert status == 200 and body["action"] == action


def test_shutdown_is_stored_as_stop(api, schedule_body):
    status, body = api.post("schedules", schedule_body(action="shutdown"))
    assert status == 200 and body["action"] == "stop"


def test_it_rejects_both_an_action_and_a_script(api, schedule_body, script):
    status, body = api.post("schedules", schedule_body(script_id=script["id"]))
    assert status == 400 and "action" in body["error"] and "script_id" in body["error"]


def test_it_rejects_neither_an_action_nor_a_script(api, schedule_body):
    for body in (schedule_body(action=...), schedule_body(action="", script_id="")):
        status, answer = api.post("schedules", body)
        assert status == 400 and "action" in answer["error"] and "script_id" in answer["error"]


def test_it_runs_a_script_of_the_org_with_params(api, schedule_body, script):
    status, body = api.post("schedules", schedule_body(action=..., script_id=script["id"], params="-v --all"))
    assert status == 200, body
    assert (body["action"], body["script_id"], body["params"]) == (None, script["id"], "-v --all")


def test_a_script_of_another_org_is_a_400(api, other_api, schedule_body):
    status, theirs = other_api.post("scripts", {"name": "theirs", "script": "x"})
    for script_id in (theirs["id"], "0" * 32):
        status, body = api.post("schedules", schedule_body(action=..., script_id=script_id))
        assert status == 400 and body["error"].startswith("script_id:") and script_id in body["error"]


def test_params_are_only_for_scripts(api, schedule_body):
    status, body = api.post("schedules", schedule_body(params="-v"))
    assert status == 400 and body["error"].startswith("params:")


def test_mist_clients_empty_script_id_means_no_script(api, schedule_body):
    status, body = api.post("schedules", schedule_body(script_id="", expires="", max_run_count="", start_after="",
                                                       description="", params=""))
    assert status == 200, body
    assert [body[k] for k in ("script_id", "expires", "max_run_count", "start_after", "description", "params")] == [None] * 6


def test_empty_strings_clear_stored_values_on_edit(api, schedule_body):
    status, sched = api.post("schedules", schedule_body(expires="2031-01-01T00:00:00Z", max_run_count=3,
                                                        description="d", start_after="2030-06-01T00:00:00Z"))
    assert status == 200, sched
    status, body = api.patch(f"schedules/{sched['id']}", {"expires": "", "max_run_count": "", "description": "",
                                                          "start_after": ""})
    assert status == 200, body
    assert [body[k] for k in ("expires", "max_run_count", "description", "start_after")] == [None] * 4


# ------------------------------------------------------------------ targets

def test_at_least_one_target_is_required(api, schedule_body):
    for body in (schedule_body(machines_per_cloud=...), schedule_body(machines_per_cloud=[]),
                 schedule_body(machines_per_cloud=[], selectors=[])):
        status, answer = api.post("schedules", body)
        assert status == 400 and "machines_per_cloud" in answer["error"] and "selectors" in answer["error"]


def test_a_cloud_of_another_org_is_a_400_naming_it(api, other_api, schedule_body, cloud):
    status, theirs = other_api.post("clouds", {"title": "theirs", "provider": "other"})
    for cloud_id in (theirs["id"], "0" * 32):
        body = schedule_body(machines_per_cloud=[[cloud["id"], "i-1"], [cloud_id, "i-2"]])
        status, answer = api.post("schedules", body)
        assert status == 400 and answer["error"].startswith("machines_per_cloud:") and cloud_id in answer["error"]


def test_a_provider_machine_id_not_seen_yet_is_accepted(api, schedule_body, cloud):
    status, body = api.post("schedules", schedule_body(machines_per_cloud=[[cloud["id"], "i-never-seen-0001"]]))
    assert status == 200 and body["machines_per_cloud"] == [[cloud["id"], "i-never-seen-0001"]]


def test_it_targets_machines_by_our_ids(api, schedule_body, machine):
    selectors = [{"type": "machines", "ids": [machine["id"]]}]
    status, body = api.post("schedules", schedule_body(machines_per_cloud=..., selectors=selectors))
    assert status == 200, body
    assert body["selectors"] == selectors and body["machines_per_cloud"] == []


def test_it_targets_machines_by_tags(api, schedule_body):
    selectors = [{"type": "tags", "include": {"env": "dev", "team": "ops"}}]
    status, body = api.post("schedules", schedule_body(machines_per_cloud=..., selectors=selectors))
    assert status == 200 and body["selectors"] == selectors


def test_selectors_and_machines_per_cloud_may_be_combined(api, schedule_body, machine):
    selectors = [{"type": "machines", "ids": [machine["id"]]}, {"type": "tags", "include": {"env": "dev"}}]
    status, body = api.post("schedules", schedule_body(selectors=selectors))
    assert status == 200 and body["selectors"] == selectors and len(body["machines_per_cloud"]) == 1


def test_a_machine_of_another_org_in_a_selector_is_a_400(api, other_api, schedule_body):
    status, cloud = other_api.post("clouds", {"title": "theirs", "provider": "other"})
    status, theirs = other_api.post(f"clouds/{cloud['id']}/machines", {"name": "m", "host": "h"})
    status, body = api.post("schedules", schedule_body(selectors=[{"type": "machines", "ids": [theirs["id"]]}]))
    assert status == 400 and body["error"].startswith("selectors.0.ids:") and theirs["id"] in body["error"]


BAD_SELECTORS = [
    "machines", {"type": "tags"}, [5], [{}], [{"type": "cloud", "ids": ["a"]}], [{"type": "machines"}],
    [{"type": "machines", "ids": []}], [{"type": "machines", "ids": "abc"}], [{"type": "tags"}],
    [{"type": "tags", "include": {}}], [{"type": "tags", "include": {"env": 1}}], [{"type": "tags", "include": ["env"]}],
    [{"type": "tags", "include": {"env": "dev"}, "exclude": {"a": "b"}}],

]


def test_it_rejects_bad_selectors(api, schedule_body):
    for selectors in BAD_SELECTORS:
        status, body = api.post("schedules", schedule_body(selectors=selectors))
        assert status == 400 and body["error"].startswith("selectors"), (selectors, body)


def test_it_rejects_bad_machines_per_cloud(api, schedule_body):
    for mpc in ("abc", [["only-cloud"]], [["c", "m", "x"]], [[1, 2]], ["cm"], {"c": "m"}, [["", "m"]]):
        status, body = api.post("schedules", schedule_body(machines_per_cloud=mpc))
        assert status == 400 and body["error"].startswith("machines_per_cloud"), (mpc, body)


# ------------------------------------------------------------------ read-only, unknown and legacy fields

READ_ONLY = ["id", "active", "next_run_at", "total_run_count", "last_run_at", "last_error", "created_at", "updated_at",
             "paused", "paused_until", "pause_note", "skip_next"]


def test_a_read_only_field_is_a_400_naming_it_on_create_and_edit(api, schedule_body, schedule):
    for field in READ_ONLY:
        status, body = api.post("schedules", schedule_body(name="another", **{field: "x"}))
        assert status == 400 and body["error"] == f"{field}: is read-only"
        for method in ("PATCH", "PUT", "POST"):
            status, body, _ = api.call(method, f"schedules/{schedule['id']}", {field: schedule[field]})
            assert status == 400 and body["error"] == f"{field}: is read-only", (method, field)
    assert api.get(f"schedules/{schedule['id']}")[1] == schedule


def test_an_unknown_field_is_a_400_naming_it(api, schedule_body, schedule):
    for field in ("colour", "task_type", "after", "count", "org_id", "Name"):
        status, body = api.post("schedules", schedule_body(name="another", **{field: 1}))
        assert status == 400 and body["error"] == f"{field}: is not a known field"
        status, body = api.patch(f"schedules/{schedule['id']}", {field: 1})
        assert status == 400 and body["error"] == f"{field}: is not a known field"


def test_it_accepts_the_legacy_cronjob_and_task_enabled_names(api, schedule_body):
    body = schedule_body(schedule_type=..., schedule_entry=..., cronjob_type="crontab",
                         cronjob_entry={"minute": "30", "hour": "2"}, task_enabled=False)
    status, answer = api.post("schedules", body)
    assert status == 200, answer
    assert answer["schedule_type"] == "crontab" and answer["schedule_entry"]["hour"] == "2"
    assert answer["enabled"] is False and "cronjob_type" not in answer
    status, edited = api.patch(f"schedules/{answer['id']}", {"cronjob_type": "interval",
                                                             "cronjob_entry": {"every": 3, "period": "hours"},
                                                             "task_enabled": True})
    assert status == 200, edited
    assert (edited["schedule_type"], edited["schedule_entry"], edited["enabled"]) == \
        ("interval", {"every": 3, "period": "hours"}, True)


def test_a_field_given_under_both_names_is_a_400(api, schedule_body):
    for legacy, name in [("cronjob_type", "schedule_type"), ("cronjob_entry", "schedule_entry"), ("task_enabled", "enabled")]:
        body = schedule_body(enabled=True)
        body[legacy] = body[name]
        status, answer = api.post("schedules", body)
        assert status == 400 and legacy in answer["error"] and name in answer["error"], legacy


def test_a_schedule_type_and_entry_are_required(api, schedule_body):
    status, body = api.post("schedules", schedule_body(schedule_type=...))
    assert status == 400 and body["error"].startswith("schedule_type")
    status, body = api.post("schedules", schedule_body(schedule_entry=...))
    assert status == 400 and body["error"].startswith("schedule_entry")
