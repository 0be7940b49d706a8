"""cloudcron.scheduler.schedule: one apply request per task, answered by the real API in process (FlaskOpener)."""
from __future__ import annotations

import datetime

import pytest

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import CloudcronError
from ansible_collections.cloudcron.scheduler.plugins.modules import schedule as mod


def params(**given):
    """The module's params as AnsibleModule would hand them over: every option, unset ones None."""
    out = dict((name, None) for name in mod.argument_spec())
    out.update(state="present")
    out.update(given)
    return out


@pytest.fixture
def lab(service):
    status, cloud = service.api("POST", "clouds", {"title": "lab", "provider": "other"})
    assert status == 200, cloud
    return cloud


NIGHTLY = dict(name="nightly", action="shutdown", machines=[{"cloud": "lab", "machine": "web1"}],
               schedule_type="crontab", schedule_entry={"minute": 30, "hour": 2, "day_of_week": "MON-FRI"},
               timezone="Europe/Athens", expires="2030-1-1 10:00")


def test_it_creates_then_reports_unchanged_with_one_request_each(service, lab):
    client = service.client()
    result = mod.ensure(client, params(**NIGHTLY), check_mode=False)
    assert result["changed"] is True and result["schedule"]["action"] == "stop"
    assert result["schedule"]["machines_per_cloud"] == [[lab["id"], "web1"]]
    assert result["schedule"]["expires"] == "2030-01-01T08:00:00Z"
    assert service.opener.calls == [("PUT", "/api/v1/schedules/by-name/nightly")]
    again = mod.ensure(client, params(**NIGHTLY), check_mode=False)
    assert (again["changed"], again["changed_fields"]) == (False, [])
    assert len(service.opener.calls) == 2


def test_check_mode_predicts_the_change_and_next_run_at_exactly_and_writes_nothing(service, lab):
    client = service.client()
    stored = mod.ensure(client, params(**NIGHTLY), check_mode=False)["schedule"]
    moved = {**NIGHTLY, "schedule_entry": {"minute": 45, "hour": 2, "day_of_week": "MON-FRI"}}
    predicted = mod.ensure(client, params(**moved), check_mode=True)
    assert predicted["changed"] is True and predicted["changed_fields"] == ["schedule_entry"]
    assert predicted["diff"]["before"]["schedule_entry"]["minute"] == "30"
    assert predicted["diff"]["after"]["schedule_entry"]["minute"] == "45"
    assert service.api("GET", "schedules/" + stored["id"])[1] == stored
    applied = mod.ensure(client, params(**moved), check_mode=False)
    assert predicted["schedule"]["next_run_at"] == applied["schedule"]["next_run_at"] != stored["next_run_at"]
    assert predicted["schedule"]["next_run_at"].endswith(":45:00Z")


def test_run_immediately_on_an_existing_schedule_is_not_a_change(service, lab):
    client = service.client()
    mod.ensure(client, params(**NIGHTLY), check_mode=False)
    result = mod.ensure(client, params(run_immediately=True, **NIGHTLY), check_mode=False)
    assert result["changed"] is False
    assert [c[0] for c in service.opener.calls] == ["PUT", "PUT"]


def test_script_id_the_apis_name_is_accepted_as_an_alias_of_script():
    spec = mod.argument_spec()
    assert "script_id" in spec["script"]["aliases"]


def test_a_script_by_name_and_a_calendar_by_name_are_resolved_by_the_service(service, lab):
    status, script = service.api("POST", "scripts", {"name": "uptime", "script": "#!/bin/sh\nuptime\n"})
    status, calendar = service.api("POST", "calendars", {"name": "xmas", "entries": [{"date": "2026-12-25"}]})
    selectors = [{"type": "tags", "include": {"env": "dev"}, "ids": None}]
    task = params(name="report", script="uptime", params="-p", selectors=selectors,
                  schedule_type="interval", schedule_entry={"every": "2", "period": "hours"},
                  exclude_calendars=["xmas"])
    result = mod.ensure(service.client(), task, check_mode=False)
    stored = result["schedule"]
    assert (stored["script_id"], stored["exclude_calendars"], stored["schedule_entry"]["every"]) == \
        (script["id"], [calendar["id"]], 2)
    assert stored["selectors"] == [{"type": "tags", "include": {"env": "dev"}}]
    assert mod.ensure(service.client(), task, check_mode=False)["changed"] is False


def test_an_action_replaces_a_script(service, lab):
    service.api("POST", "scripts", {"name": "uptime", "script": "#!/bin/sh\nuptime\n"})
    base = dict(name="swap", machines=[{"cloud": "lab", "machine": "web1"}], schedule_type="interval",
                schedule_entry={"every": 2, "period": "hours"})
    mod.ensure(service.client(), params(script="uptime", params="-p", **base), check_mode=False)
    result = mod.ensure(service.client(), params(action="stop", **base), check_mode=False)
    assert (result["schedule"]["action"], result["schedule"]["script_id"], result["schedule"]["params"]) == \
        ("stop", None, None)
    assert set(result["changed_fields"]) == {"action", "script_id", "params"}


def test_yaml_dates_travel_as_iso_text(service, lab):
    task = params(**{**NIGHTLY, "expires": datetime.datetime(2030, 1, 1, 10, 0)})
    result = mod.ensure(service.client(), task, check_mode=False)
    assert result["schedule"]["expires"] == "2030-01-01T08:00:00Z"  # read in the schedule's timezone


def test_absent_deletes_and_then_has_nothing_to_do(service, lab):
    client = service.client()
    mod.ensure(client, params(**NIGHTLY), check_mode=False)
    assert mod.ensure(client, params(name="nightly", state="absent"), check_mode=True)["changed"] is True
    assert service.api("GET", "schedules?name=nightly")[1] != []
    assert mod.ensure(client, params(name="nightly", state="absent"), check_mode=False)["changed"] is True
    assert service.api("GET", "schedules?name=nightly")[1] == []
    assert mod.ensure(client, params(name="nightly", state="absent"), check_mode=False)["changed"] is False


def test_a_refusal_is_raised_with_the_services_message_and_status(service, lab):
    with pytest.raises(CloudcronError) as caught:
        mod.ensure(service.client(), params(**{**NIGHTLY, "timezone": "Mars/Olympus"}), check_mode=False)
    assert caught.value.status == 400 and "timezone" in caught.value.message
    assert "PUT schedules/by-name/nightly failed (400)" in caught.value.message


def test_retries_get_the_services_defaults_unchanged_ones_write_nothing_and_max_0_removes_them(service, lab):
    client = service.client()
    mod.ensure(client, params(**NIGHTLY), check_mode=False)
    result = mod.ensure(client, params(**NIGHTLY, retries={"max": 2, "delay": None, "backoff": None}),
                        check_mode=False)
    assert result["changed"] is True and result["changed_fields"] == ["retries"]
    assert result["schedule"]["retries"] == {"max": 2, "delay": 60, "backoff": 2}
    again = mod.ensure(client, params(**NIGHTLY, retries={"max": 2, "delay": 60.0, "backoff": 2.0}), check_mode=False)
    assert again["changed"] is False
    removed = mod.ensure(client, params(**NIGHTLY, retries={"max": 0, "delay": None, "backoff": None}),
                         check_mode=False)
    assert removed["changed"] is True and removed["schedule"]["retries"] is None


def test_notify_is_passed_through_with_channels_by_name_and_compares_equal_to_the_stored_ids(service, lab):
    status, channel = service.api("POST", "channels", {"name": "ops", "kind": "webhook",
                                                       "url": "https://hooks.example.com/cron",
                                                       "secret": "s3cret-s3cret-s3cret"})
    assert status == 200, channel
    # As AnsibleModule hands a dict option over: unset suboptions are None (the service's defaults apply).
    notify = {"on": ["failed", "partial"], "channels": ["ops"], "after_retries": None}
    result = mod.ensure(service.client(), params(notify=notify, **NIGHTLY), check_mode=False)
    assert result["schedule"]["notify"] == {"on": ["failed", "partial"], "channels": [channel["id"]],
                                            "after_retries": True}
    again = mod.ensure(service.client(), params(notify=notify, **NIGHTLY), check_mode=False)
    assert again["changed"] is False
    more = dict(notify, on=["failed"], after_retries=False)
    predicted = mod.ensure(service.client(), params(notify=more, **NIGHTLY), check_mode=True)
    assert predicted["changed_fields"] == ["notify"]
    assert predicted["diff"]["after"]["notify"] == {"on": ["failed"], "channels": [channel["id"]], "after_retries": False}


def test_a_notify_naming_an_unknown_channel_fails_naming_the_field(service, lab):
    with pytest.raises(CloudcronError) as err:
        mod.ensure(service.client(), params(notify={"channels": ["nope"], "on": None, "after_retries": None},
                                            **NIGHTLY), check_mode=False)
    assert "(400): notify.channels.0: no channel 'nope' in this org" in err.value.message
