"""Decision logic of cloudcron.scheduler.schedule: normalising the task's values and choosing what to send.

The service is replaced by a recording in-memory client here; the real service is exercised by
tests/integration/test_collection_playbooks.py.
"""
from __future__ import annotations

import copy

import pytest

from ansible_collections.cloudcron.scheduler.plugins.module_utils._client import CloudcronError
from ansible_collections.cloudcron.scheduler.plugins.modules import schedule as mod

CLOUD = "c" * 32
SCRIPT = "5" * 32
ATHENS = "Europe/Athens"


class RecordingClient:
    """Holds schedules, clouds and scripts in memory and records every call like the real client's."""

    def __init__(self, schedules=(), clouds=(), scripts=(), calendars=()):
        self.schedules = {s["id"]: copy.deepcopy(s) for s in schedules}
        self.clouds = list(clouds)
        self.scripts = list(scripts)
        self.calendars = list(calendars)
        self.calls = []

    @property
    def writes(self):
        return [c for c in self.calls if c[0] != "GET"]

    def find_one(self, collection, field, value):
        self.calls.append(("GET", collection, {field: value}))
        items = {"schedules": list(self.schedules.values()), "clouds": self.clouds, "scripts": self.scripts,
                 "calendars": self.calendars}[collection]
        found = [i for i in items if i.get(field) == value]
        return copy.deepcopy(found[0]) if found else None

    def find(self, collection, field, value, what):
        item = self.find_one(collection, field, value)
        if item is None:
            raise CloudcronError("%s: no %s with %s or id '%s' in this org" % (what, what, field, value), status=404)
        return item

    def post(self, path, body):
        self.calls.append(("POST", path, body))
        created = dict(body, id="n" * 32)
        self.schedules[created["id"]] = created
        return copy.deepcopy(created)

    def patch(self, path, body):
        self.calls.append(("PATCH", path, body))
        ident = path.split("/")[1]
        self.schedules[ident].update(body)
        return copy.deepcopy(self.schedules[ident])

    def delete(self, path):
        self.calls.append(("DELETE", path, None))
        del self.schedules[path.split("/")[1]]
        return {"deleted": path.split("/")[1]}


def stored(**overrides):
    """A schedule as the service answers it."""
    base = {
        "id": "a" * 32, "name": "nightly", "description": None, "action": "stop", "script_id": None, "params": None,
        "machines_per_cloud": [[CLOUD, "i-1"]], "selectors": [], "schedule_type": "crontab",
        "schedule_entry": {"minute": "30", "hour": "2", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"},
        "enabled": True, "run_immediately": False, "start_after": None, "expires": "2030-01-01T08:00:00Z",
        "max_run_count": None, "timezone": ATHENS, "misfire_grace": 300, "concurrency": "forbid", "timeout": 3600,
        "exclude_calendars": [], "jitter": 0, "paused": False, "paused_until": None, "pause_note": None,
        "skip_next": 0,
        "active": True, "next_run_at": "2029-06-02T23:30:00Z", "total_run_count": 0, "last_run_at": None,
        "created_at": "2029-06-01T10:00:00Z", "updated_at": "2029-06-01T10:00:00Z",
    }
    base.update(overrides)
    return base


def params(**given):
    """Module parameters as AnsibleModule hands them over: every option present, unset ones None."""
    out = {name: spec.get("default") for name, spec in mod.argument_spec().items()}
    out.update(url="http://127.0.0.1:8080", token="t")
    out.update(given)
    return out


TASK = dict(name="nightly", action="shutdown", machines_per_cloud=[[CLOUD, "i-1"]], schedule_type="crontab",
            schedule_entry={"minute": 30, "hour": "2"}, expires="2030-1-1 10:00", timezone=ATHENS)


# ------------------------------------------------------------------ dates


@pytest.mark.parametrize("value, tz, expected", [
    ("2030-1-1 10:00", ATHENS, "2030-01-01T08:00:00Z"),
    ("2030-01-01T10:00:00", "UTC", "2030-01-01T10:00:00Z"),
    ("2030-01-01T10:00:00+02:00", ATHENS, "2030-01-01T08:00:00Z"),
    ("2030-01-01 10:00:00Z", ATHENS, "2030-01-01T10:00:00Z"),
    ("2030-01-01T10:00:00.250000Z", "UTC", "2030-01-01T10:00:00.250000Z"),
    (1893492000, ATHENS, "2030-01-01T10:00:00Z"),
    ("1893492000.5", "UTC", "2030-01-01T10:00:00.500000Z"),
    # Spring forward in Athens, 2030-03-31 03:00 -> 04:00: a wall time in the gap is the gap's end.
    ("2030-03-31 03:30", ATHENS, "2030-03-31T01:00:00Z"),
    ("2030-03-31 02:59", ATHENS, "2030-03-31T00:59:00Z"),
    # Fall back, 2030-10-27 04:00 -> 03:00: a repeated wall time is its first occurrence.
    ("2030-10-27 03:30", ATHENS, "2030-10-27T00:30:00Z"),
])
def test_dates_are_compared_in_the_services_utc_form(value, tz, expected):
    assert mod.normalize_date(value, tz) == expected


@pytest.mark.parametrize("value", ["", None])
def test_an_empty_date_means_unset(value):
    assert mod.normalize_date(value, ATHENS) is None


@pytest.mark.parametrize("value", ["next tuesday", "2030-13-01 10:00", True])
def test_a_date_the_module_cannot_read_is_left_for_the_service_to_refuse(value):
    assert mod.normalize_date(value, "UTC") == value


def test_a_naive_date_in_an_unknown_zone_is_left_as_given():
    assert mod.normalize_date("2030-1-1 10:00", "Mars/Olympus") == "2030-1-1 10:00"


# ------------------------------------------------------------------ entries


def test_crontab_entries_get_all_five_fields_as_strings():
    assert mod.normalize_entry("crontab", {"minute": 30, "hour": " 2 ", "day_of_week": "MON-FRI"}, "UTC") == {
        "minute": "30", "hour": "2", "day_of_week": "mon-fri", "day_of_month": "*", "month_of_year": "*",
    }


def test_crontab_entries_given_as_json_text_are_read():
    assert mod.normalize_entry("crontab", '{"minute": "5"}', "UTC")["minute"] == "5"


def test_a_crontab_entry_with_an_unknown_key_is_sent_as_given():
    entry = {"minute": "5", "second": "1"}
    assert mod.normalize_entry("crontab", entry, "UTC") == entry


def test_interval_entries_take_templated_numbers_and_any_case_period():
    assert mod.normalize_entry("interval", {"every": "2", "period": " Hours"}, "UTC") == {"every": 2, "period": "hours"}


def test_one_off_entries_are_dates_in_the_schedules_timezone():
    assert mod.normalize_entry("one_off", "2031-01-01 00:00", ATHENS) == "2030-12-31T22:00:00Z"
    assert mod.normalize_entry("one_off", {"entry": "2031-01-01 00:00"}, "UTC") == "2031-01-01T00:00:00Z"


# ------------------------------------------------------------------ desired fields


def test_shutdown_is_wanted_as_stop_and_clears_a_script():
    want = mod.desired_fields(params(**TASK), stored(), mod.Resolver(RecordingClient(), stored()))
    assert want["action"] == "stop" and want["script_id"] is None and want["params"] is None


def test_a_script_by_name_replaces_the_action():
    client = RecordingClient(scripts=[{"id": SCRIPT, "name": "uptime"}])
    want = mod.desired_fields(params(name="nightly", script="uptime", params="-a"), stored(),
                              mod.Resolver(client, stored()))
    assert want["script_id"] == SCRIPT and want["action"] is None and want["params"] == "-a"


def test_a_script_the_schedule_already_uses_costs_no_request():
    client = RecordingClient()
    current = stored(action=None, script_id=SCRIPT)
    mod.desired_fields(params(name="nightly", script=SCRIPT), current, mod.Resolver(client, current))
    assert client.calls == []


def test_clouds_by_title_are_looked_up_once_each():
    client = RecordingClient(clouds=[{"id": "d" * 32, "title": "aws"}])
    task = params(name="n", machines=[{"cloud": "aws", "machine": "i-1"}, {"cloud": "aws", "machine": "i-2"}])
    want = mod.desired_fields(task, None, mod.Resolver(client, None))
    assert want["machines_per_cloud"] == [["d" * 32, "i-1"], ["d" * 32, "i-2"]]
    assert want["selectors"] == []
    assert len(client.calls) == 1


def test_an_unknown_cloud_title_fails_naming_it():
    with pytest.raises(CloudcronError) as err:
        mod.desired_fields(params(name="n", machines=[{"cloud": "nowhere", "machine": "i-1"}]), None,
                           mod.Resolver(RecordingClient(), None))
    assert "'nowhere'" in err.value.message


def test_targets_are_set_as_a_whole():
    task = params(name="n", selectors=[{"type": "tags", "include": {"env": "dev", "tier": 1}, "ids": None}])
    want = mod.desired_fields(task, stored(), mod.Resolver(RecordingClient(), stored()))
    assert want["machines_per_cloud"] == []
    assert want["selectors"] == [{"type": "tags", "include": {"env": "dev", "tier": "1"}}]


def test_unset_options_are_not_managed_and_clearing_values_map_to_null():
    want = mod.desired_fields(params(name="n", description="", max_run_count=0, run_timeout=60), stored(),
                              mod.Resolver(RecordingClient(), stored()))
    assert want == {"description": None, "max_run_count": None, "timeout": 60}


# ------------------------------------------------------------------ ensure


def test_an_unchanged_task_reads_once_and_writes_nothing():
    client = RecordingClient(schedules=[stored()])
    result = mod.ensure(client, params(**TASK), check_mode=False)
    assert result["changed"] is False and result["changed_fields"] == []
    assert client.calls == [("GET", "schedules", {"name": "nightly"})]


def test_check_mode_predicts_the_change_and_writes_nothing():
    client = RecordingClient(schedules=[stored()])
    result = mod.ensure(client, params(**dict(TASK, enabled=False)), check_mode=True)
    assert result["changed"] is True and result["changed_fields"] == ["enabled"]
    assert result["schedule"]["enabled"] is False
    assert client.writes == []
    assert client.schedules["a" * 32]["enabled"] is True


def test_a_change_patches_only_the_differing_fields_and_shows_them_in_the_diff():
    client = RecordingClient(schedules=[stored()])
    result = mod.ensure(client, params(**dict(TASK, misfire_grace=60)), check_mode=False)
    assert client.writes == [("PATCH", "schedules/" + "a" * 32, {"misfire_grace": 60})]
    assert result["diff"] == {"before": {"misfire_grace": 300}, "after": {"misfire_grace": 60}}


def test_an_entry_change_travels_with_its_type():
    client = RecordingClient(schedules=[stored()])
    entry = {"minute": "0", "hour": "3"}
    task = dict(TASK)
    task["schedule_entry"] = entry
    mod.ensure(client, params(**task), check_mode=False)
    assert len(client.writes) == 1
    body = client.writes[0][2]
    assert body["schedule_type"] == "crontab" and body["schedule_entry"]["hour"] == "3"
    assert set(body) == {"schedule_type", "schedule_entry"}


def test_a_new_schedule_is_created_with_the_given_fields_only():
    client = RecordingClient()
    result = mod.ensure(client, params(**TASK), check_mode=False)
    (method, path, body), = client.writes
    assert (method, path) == ("POST", "schedules")
    assert body == {"name": "nightly", "action": "stop", "machines_per_cloud": [[CLOUD, "i-1"]], "selectors": [],
                    "schedule_type": "crontab", "expires": "2030-01-01T08:00:00Z", "timezone": ATHENS,
                    "schedule_entry": {"minute": "30", "hour": "2", "day_of_week": "*", "day_of_month": "*",
                                       "month_of_year": "*"}}
    assert result["changed"] is True and result["diff"]["before"] == {}


def test_a_new_schedule_without_timing_or_action_fails_naming_what_is_missing():
    with pytest.raises(CloudcronError) as err:
        mod.ensure(RecordingClient(), params(name="n", machines_per_cloud=[[CLOUD, "i-1"]]), check_mode=False)
    assert err.value.message == "schedule 'n' does not exist; to create it give schedule_type and schedule_entry, action or script"


def test_absent_deletes_once_and_then_reports_no_change():
    client = RecordingClient(schedules=[stored()])
    assert mod.ensure(client, params(name="nightly", state="absent"), check_mode=False)["changed"] is True
    assert client.writes == [("DELETE", "schedules/" + "a" * 32, None)]
    again = mod.ensure(client, params(name="nightly", state="absent"), check_mode=False)
    assert again["changed"] is False and len(client.writes) == 1


def test_absent_in_check_mode_keeps_the_schedule():
    client = RecordingClient(schedules=[stored()])
    assert mod.ensure(client, params(name="nightly", state="absent"), check_mode=True)["changed"] is True
    assert client.writes == [] and "a" * 32 in client.schedules


# ------------------------------------------------------------------ calendars and jitter


def test_excluded_calendars_by_name_are_resolved_to_ids_once_each_without_repeats():
    client = RecordingClient()
    client.calendars = [{"id": "1" * 32, "name": "greek-holidays"}, {"id": "2" * 32, "name": "weekends"}]
    task = params(name="n", exclude_calendars=["greek-holidays", "weekends", "1" * 32], jitter=300)
    want = mod.desired_fields(task, stored(exclude_calendars=["1" * 32]), mod.Resolver(client, stored(exclude_calendars=["1" * 32])))
    assert want["exclude_calendars"] == ["1" * 32, "2" * 32] and want["jitter"] == 300
    assert [c[1] for c in client.calls] == ["calendars", "calendars"]  # the id already excluded costs nothing


def test_unchanged_calendars_and_jitter_write_nothing():
    current = stored(exclude_calendars=["1" * 32], jitter=300)
    client = RecordingClient(schedules=[current])
    client.calendars = [{"id": "1" * 32, "name": "greek-holidays"}]
    result = mod.ensure(client, params(**dict(TASK, exclude_calendars=["1" * 32], jitter=300)), check_mode=False)
    assert result["changed"] is False and client.writes == []
    result = mod.ensure(client, params(**dict(TASK, exclude_calendars=[], jitter=0)), check_mode=False)
    assert client.writes == [("PATCH", "schedules/" + "a" * 32, {"exclude_calendars": [], "jitter": 0})]


# ------------------------------------------------------------------ retries


def test_retries_are_sent_with_the_services_defaults_filled_in_and_unchanged_ones_write_nothing():
    client = RecordingClient(schedules=[stored()])
    result = mod.ensure(client, params(**dict(TASK, retries={"max": 2, "delay": None, "backoff": None})),
                        check_mode=False)
    assert result["changed"] is True
    assert client.writes == [("PATCH", "schedules/" + "a" * 32, {"retries": {"max": 2, "delay": 60, "backoff": 2}})]
    client.calls.clear()
    result = mod.ensure(client, params(**dict(TASK, retries={"max": 2, "delay": 60.0, "backoff": 2.0})),
                        check_mode=False)
    assert result["changed"] is False and client.writes == []


def test_retries_with_max_0_remove_them():
    client = RecordingClient(schedules=[stored(retries={"max": 3, "delay": 5, "backoff": 1})])
    mod.ensure(client, params(**dict(TASK, retries={"max": 0, "delay": None, "backoff": None})), check_mode=False)
    assert client.writes == [("PATCH", "schedules/" + "a" * 32, {"retries": None})]
