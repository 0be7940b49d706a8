"""Calendars through the API: every entry kind, schedules that exclude them, previews with and without the
excluded instants, recomputed next_run_at, 409 on deleting one in use, and tenancy."""
from __future__ import annotations

import pytest

from tests.unit.test_calendars import ICS

ATHENS_9AM = {"schedule_type": "crontab", "schedule_entry": {"minute": "0", "hour": "9"}, "timezone": "Europe/Athens"}


@pytest.fixture
def greek(api):
    status, body = api.post("calendars", {"name": "greek holidays", "timezone": "Europe/Athens",
                                          "entries": [{"holidays": {"country": "GR"}}]})
    assert status == 200, body
    return body


ENTRY_KINDS = [
    # (entry, a fire of an hourly crontab it excludes, the fire before, the fire after: UTC, calendar in UTC)
    ({"date": "2030-03-05"}, "2030-03-05T10:00:00Z", "2030-03-04T23:00:00Z", "2030-03-06T00:00:00Z"),
    ({"from": "2030-03-05", "to": "2030-03-06"}, "2030-03-06T10:00:00Z", "2030-03-04T23:00:00Z",
     "2030-03-07T00:00:00Z"),
    ({"from": "2030-03-05 10:00", "to": "2030-03-05 12:30"}, "2030-03-05T11:00:00Z", "2030-03-05T09:00:00Z",
     "2030-03-05T13:00:00Z"),
    ({"yearly": "03-05"}, "2030-03-05T10:00:00Z", "2030-03-04T23:00:00Z", "2030-03-06T00:00:00Z"),
    ({"weekly": {"from": "tue 08:00", "to": "tue 20:00"}}, "2030-03-05T10:00:00Z", "2030-03-05T07:00:00Z",
     "2030-03-05T20:00:00Z"),  # 2030-03-05 is a Tuesday
    ({"holidays": {"country": "GR"}}, "2030-03-25T10:00:00Z", "2030-03-24T23:00:00Z", "2030-03-26T00:00:00Z"),
    ({"ical": ICS.replace("20261224T180000Z", "20300305T093000Z").replace("20261227T060000Z", "20300305T110000Z")},
     "2030-03-05T10:00:00Z", "2030-03-05T09:00:00Z", "2030-03-05T11:00:00Z"),
]


@pytest.mark.parametrize("entry, excluded, before, after", ENTRY_KINDS, ids=[next(iter(e[0])) + str(i)
                                                                             for i, e in enumerate(ENTRY_KINDS)])
def test_each_entry_kind_excludes_its_time_from_a_preview(api, entry, excluded, before, after):
    status, calendar = api.post("calendars", {"name": "c", "entries": [entry]})
    assert status == 200, calendar
    assert calendar["entries"] == [entry] and calendar["timezone"] == "UTC"
    hourly = {"schedule_type": "crontab", "schedule_entry": {"minute": "0"}, "exclude_calendars": [calendar["id"]],
              "count": 1000, "after": "2030-03-01T00:00:00Z"}
    status, body = api.post("schedules/preview", hourly)
    assert status == 200, body
    times = body["next_run_times"]
    assert excluded not in times and before in times and after in times
    assert times[times.index(before) + 1] == after  # nothing between: the window is excluded whole
    assert "skipped" not in body


def test_preview_lists_the_excluded_instants_with_the_calendar_that_excluded_them(api, greek):
    body = {**ATHENS_9AM, "exclude_calendars": [greek["id"]], "after": "2026-02-20T00:00:00Z", "count": 3}
    status, plain = api.post("schedules/preview", body)
    assert status == 200, plain
    # 2026-02-23 (Green Monday) is skipped; 09:00 in Athens is 07:00Z in winter.
    assert plain == {"next_run_times": ["2026-02-20T07:00:00Z", "2026-02-21T07:00:00Z", "2026-02-22T07:00:00Z"]}
    status, shown = api.post("schedules/preview", {**body, "after": "2026-02-22T12:00:00Z", "show_skipped": True})
    assert shown["next_run_times"] == ["2026-02-24T07:00:00Z", "2026-02-25T07:00:00Z", "2026-02-26T07:00:00Z"]
    assert shown["skipped"] == [{"at": "2026-02-23T07:00:00Z", "reason": "calendar", "calendar_id": greek["id"],
                                 "calendar": "greek holidays", "entry": "Green Monday (GR)"}]


def test_next_run_at_of_a_stored_schedule_skips_excluded_fires(api, schedule_body, greek):
    status, sched = api.post("schedules", schedule_body(**ATHENS_9AM, exclude_calendars=[greek["id"]],
                                                        start_after="2030-12-24T12:00:00Z"))
    assert status == 200, sched
    assert sched["exclude_calendars"] == [greek["id"]]
    # 2030-12-25 and 26 are holidays in Greece: the first fire is on the 27th, 09:00 EET.
    assert sched["next_run_at"] == "2030-12-27T07:00:00Z"
    status, preview = api.get(f"schedules/{sched['id']}/preview?after=2030-12-24T12:00:00Z&count=1&show_skipped=1")
    assert preview["next_run_times"] == ["2030-12-27T07:00:00Z"]
    assert [(s["at"], s["entry"]) for s in preview["skipped"]] == [
        ("2030-12-25T07:00:00Z", "Christmas Day (GR)")]  # one listed: as many as the count asked


def test_editing_a_calendar_recomputes_the_schedules_that_exclude_it(api, schedule_body):
    status, cal = api.post("calendars", {"name": "freeze", "entries": [{"date": "2030-01-01"}]})
    status, sched = api.post("schedules", schedule_body(schedule_type="crontab", schedule_entry={"minute": "0", "hour": "6"},
                                                        start_after="2030-01-01T00:00:00Z", exclude_calendars=[cal["id"]]))
    assert sched["next_run_at"] == "2030-01-02T06:00:00Z"
    status, cal = api.patch(f"calendars/{cal['id']}", {"entries": [{"from": "2030-01-01", "to": "2030-01-03"}]})
    assert status == 200, cal
    assert api.get(f"schedules/{sched['id']}")[1]["next_run_at"] == "2030-01-04T06:00:00Z"
    # In Honolulu (UTC-10) those days run from 2030-01-01T10:00Z: 06:00Z on the 1st is before them.
    status, cal = api.patch(f"calendars/{cal['id']}", {"timezone": "Pacific/Honolulu"})
    assert api.get(f"schedules/{sched['id']}")[1]["next_run_at"] == "2030-01-01T06:00:00Z"


def test_a_schedule_names_calendars_in_order_and_can_drop_them(api, schedule_body, greek):
    status, other = api.post("calendars", {"name": "other", "entries": []})
    status, sched = api.post("schedules", schedule_body(exclude_calendars=[other["id"], greek["id"], other["id"]]))
    assert status == 200 and sched["exclude_calendars"] == [other["id"], greek["id"]]
    status, sched = api.patch(f"schedules/{sched['id']}", {"exclude_calendars": []})
    assert status == 200 and sched["exclude_calendars"] == []
    assert api.delete(f"calendars/{greek['id']}")[0] == 200


def test_deleting_a_calendar_in_use_is_a_409_naming_the_schedule(api, schedule_body, greek):
    status, sched = api.post("schedules", schedule_body(name="office", exclude_calendars=[greek["id"]]))
    status, body = api.delete(f"calendars/{greek['id']}")
    assert status == 409 and "office" in body["error"]
    assert api.get(f"calendars/{greek['id']}")[0] == 200
    assert api.delete(f"schedules/{sched['id']}")[0] == 200
    assert api.delete(f"calendars/{greek['id']}") == (200, {"deleted": greek["id"]})


def test_calendars_are_listed_got_edited_and_named_uniquely(api, greek):
    status, items, resp = api.call("GET", "calendars")
    assert status == 200 and [c["id"] for c in items] == [greek["id"]] and resp.headers["X-Total-Count"] == "1"
    assert api.get("calendars?name=greek%20holidays")[1] == [greek]
    assert api.get(f"calendars/{greek['id']}") == (200, greek)
    status, body = api.post("calendars", {"name": "greek holidays"})
    assert status == 409 and body["error"].startswith("name:")
    status, body = api.patch(f"calendars/{greek['id']}", {"description": "public holidays", "name": "gr"})
    assert status == 200 and (body["name"], body["description"], body["entries"]) == \
        ("gr", "public holidays", greek["entries"])


@pytest.mark.parametrize("body, field", [
    ({}, "name"),
    ({"name": "x", "timezone": "Mars/Base"}, "timezone"),
    ({"name": "x", "entries": {"date": "2030-01-01"}}, "entries"),
    ({"name": "x", "entries": [{"date": "01/01/2030"}]}, "entries.0.date"),
    ({"name": "x", "entries": [{"date": "2030-01-01"}, {"weekly": {"from": "fri 18:00", "to": "noon"}}]},
     "entries.1.weekly.to"),
    ({"name": "x", "entries": [{"holidays": {"country": "ZZ"}}]}, "entries.0.holidays.country"),
    ({"name": "x", "entries": [{"ical": "BEGIN:VCALENDAR"}]}, "entries.0.ical"),
    # too costly to expand (every hour since 1900), a broken date, nested past any real calendar
    ({"name": "x", "entries": [{"date": "2030-01-01"}, {"ical": "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:a\n"
                                "DTSTART:19000101T000000Z\nRRULE:FREQ=HOURLY\nEND:VEVENT\nEND:VCALENDAR\n"}]},
     "entries.1.ical"),
    ({"name": "x", "entries": [{"ical": "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:a\nDTSTART:20300101T0000Z\n"
                                        "END:VEVENT\nEND:VCALENDAR\n"}]}, "entries.0.ical"),
    ({"name": "x", "entries": [{"ical": "BEGIN:VCALENDAR\n" + "BEGIN:VEVENT\n" * 5000 + "END:VEVENT\n" * 5000
                                        + "END:VCALENDAR\n"}]}, "entries.0.ical"),
    ({"name": "x", "color": "red"}, "color"),
    ({"name": "x", "id": "a" * 32}, "id"),
])
def test_a_bad_calendar_is_a_400_naming_the_field(api, body, field):
    status, answer = api.post("calendars", body)
    assert status == 400 and answer["error"].startswith(f"{field}:"), answer
    assert api.get("calendars")[1] == []


def test_a_bad_edit_changes_nothing(api, greek):
    status, body = api.patch(f"calendars/{greek['id']}", {"entries": [{"yearly": "12-32"}]})
    assert status == 400 and body["error"].startswith("entries.0.yearly:")
    assert api.get(f"calendars/{greek['id']}") == (200, greek)


def test_a_schedule_cannot_name_an_unknown_or_another_orgs_calendar(api, other_api, schedule_body, greek):
    for ids in (["f" * 32], [greek["id"], "nope"]):
        status, body = api.post("schedules", schedule_body(exclude_calendars=ids))
        assert status == 400 and body["error"].startswith("exclude_calendars:"), body
    status, cloud = other_api.post("clouds", {"title": "lab", "provider": "other"})
    status, body = other_api.post("schedules", {"name": "n", "action": "stop", "machines_per_cloud": [[cloud["id"], "m"]],
                                                "schedule_type": "interval", "schedule_entry": {"every": 1, "period": "hours"},
                                                "exclude_calendars": [greek["id"]]})
    assert status == 400 and body["error"].startswith("exclude_calendars:")
    assert other_api.get(f"calendars/{greek['id']}")[0] == 404
    assert other_api.delete(f"calendars/{greek['id']}")[0] == 404
    assert other_api.get("calendars")[1] == []


def test_a_schedule_whose_every_fire_is_excluded_cannot_be_created(api, schedule_body):
    status, cal = api.post("calendars", {"name": "always", "entries": [{"from": "2000-01-01", "to": "9999-12-31"}]})
    status, body = api.post("schedules", schedule_body(exclude_calendars=[cal["id"]]))
    assert status == 400 and body["error"].startswith("exclude_calendars:") and "never fire" in body["error"]


def test_renaming_a_calendar_to_a_name_in_use_is_a_409_and_changes_nothing(api):
    api.post("calendars", {"name": "taken", "entries": []})
    status, other = api.post("calendars", {"name": "mine", "entries": []})
    status, body = api.patch(f"calendars/{other['id']}", {"name": "taken"})
    assert (status, body) == (409, {"error": "name: a calendar named 'taken' already exists"})
    assert api.get(f"calendars/{other['id']}")[1]["name"] == "mine"
