"""Schedule timing through the API: entries in every form, dates, next_run_at, preview, and list paging."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.api.conftest import Client
from web import create_app, make_state
from web.auth import create_token
from web.config import load_config
from web.migrate import upgrade
from web.models import Schedule

PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def set_stored(api, schedule_id, **columns):
    """Change a stored schedule behind the API's back (what the dispatcher or the passing of time would do)."""
    with api.state.db.transaction() as session:
        row = session.get(Schedule, schedule_id)
        for name, value in columns.items():
            setattr(row, name, value)


# ------------------------------------------------------------------ entries

CRON_FULL = {"minute": "30", "hour": "2", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"}


ENTRY_FORMS = [
    ("interval", {"every": 2, "period": "minutes"}, {"every": 2, "period": "minutes"}),
    ("interval", json.dumps({"every": 2, "period": "hours"}), {"every": 2, "period": "hours"}),  # JSON.stringify
    ("interval", {"every": 1, "period": "days"}, {"every": 1, "period": "days"}),
    ("interval", {"every": 90, "period": "seconds"}, {"every": 90, "period": "seconds"}),
    ("interval", {"every": 1500000, "period": "microseconds"}, {"every": 1500000, "period": "microseconds"}),
    ("crontab", CRON_FULL, CRON_FULL),
    ("crontab", json.dumps(CRON_FULL), CRON_FULL),
    ("crontab", {"minute": "30", "hour": "2"}, CRON_FULL),
    ("crontab", {"minute": 0, "hour": "*/6", "day_of_week": "mon-fri"},
     {"minute": "0", "hour": "*/6", "day_of_week": "mon-fri", "day_of_month": "*", "month_of_year": "*"}),
    ("one_off", "2030-2-28 16:20:00", "2030-02-28T16:20:00Z"),
    ("one_off", {"entry": "2030-2-28 16:20:00"}, "2030-02-28T16:20:00Z"),
    ("one_off", json.dumps({"entry": "2030-2-28 16:20:00"}), "2030-02-28T16:20:00Z"),
    ("one_off", "2030-02-28T18:20:00+02:00", "2030-02-28T16:20:00Z"),
    ("one_off", 1898526000, "2030-02-28T16:20:00Z"),
]


def test_it_accepts_each_entry_form(api, schedule_body):
    for i, (schedule_type, entry, stored) in enumerate(ENTRY_FORMS):
        status, body = api.post("schedules", schedule_body(name=f"s{i}", schedule_type=schedule_type, schedule_entry=entry))
        assert status == 200, (entry, body)
        assert body["schedule_entry"] == stored, entry


BAD_ENTRIES = [
    ("interval", {"every": 2}, "schedule_entry.period"),
    ("interval", {"period": "minutes"}, "schedule_entry.every"),
    ("interval", {"every": 2, "period": "weeks"}, "schedule_entry.period"),
    ("interval", {"every": 2, "period": "minutes", "at": 1}, "schedule_entry"),
    ("interval", "every 2 minutes", "schedule_entry"),
    ("interval", [2, "minutes"], "schedule_entry"),
    ("interval", "2030-1-1 00:00:00", "schedule_entry"),
    ("crontab", {"minute": "60"}, "schedule_entry.minute"),
    ("crontab", {"hour": "24"}, "schedule_entry.hour"),
    ("crontab", {"day_of_week": "funday"}, "schedule_entry.day_of_week"),
    ("crontab", {"minute": "*/0"}, "schedule_entry.minute"),
    ("crontab", {"minute": "0", "second": "0"}, "schedule_entry"),
    ("crontab", {"minute": ""}, "schedule_entry.minute"),
    ("one_off", "not a date", "schedule_entry"),
    ("one_off", "2030-13-01 00:00:00", "schedule_entry"),
    ("one_off", {"entry": "2030-1-1 00:00:00", "also": 1}, "schedule_entry"),
    ("one_off", {"when": "2030-1-1 00:00:00"}, "schedule_entry"),
    ("one_off", True, "schedule_entry"),
]


def test_it_rejects_a_bad_entry_naming_it(api, schedule_body):
    for schedule_type, entry, field in BAD_ENTRIES:
        status, body = api.post("schedules", schedule_body(schedule_type=schedule_type, schedule_entry=entry))
        assert status == 400 and body["error"].startswith(f"{field}:"), (entry, body)


def test_every_must_be_a_positive_integer(api, schedule_body):
    for every in (0, -1, 1.5, "2", True, None, [2]):
        status, body = api.post("schedules", schedule_body(schedule_entry={"every": every, "period": "minutes"}))
        assert status == 400 and body["error"].startswith("schedule_entry.every:"), every


def test_a_crontab_that_can_never_fire_is_a_400(api, schedule_body):
    entry = {"minute": "0", "hour": "0", "day_of_month": "31", "month_of_year": "2"}
    status, body = api.post("schedules", schedule_body(schedule_type="crontab", schedule_entry=entry))
    assert status == 400 and body["error"].startswith("schedule_entry:") and "never" in body["error"]
    entry = {"minute": "0", "hour": "0", "day_of_month": "31", "month_of_year": "4,6,9,11"}
    assert api.post("schedules", schedule_body(schedule_type="crontab", schedule_entry=entry))[0] == 400


def test_an_interval_under_one_second_by_default_is_a_400(api, schedule_body):
    status, body = api.post("schedules", schedule_body(schedule_entry={"every": 999999, "period": "microseconds"}))
    assert status == 400 and body["error"].startswith("schedule_entry:") and "minimum" in body["error"]
    assert api.post("schedules", schedule_body(schedule_entry={"every": 1, "period": "seconds"}))[0] == 200


@pytest.fixture
def slow_api(tmp_path, migrated_db):
    """A service started with CLOUDCRON_MIN_INTERVAL=60."""
    import shutil

    data = tmp_path / "slow"
    data.mkdir()
    shutil.copyfile(migrated_db, data / "cloudcron.db")
    st = make_state(load_config({"CLOUDCRON_DATA_DIR": str(data), "CLOUDCRON_MIN_INTERVAL": "60"}))
    upgrade(st.db)
    with st.db.transaction() as session:
        token = create_token(session, "acme")
    client = Client(create_app(state=st).test_client(), token)
    client.state = st
    yield client
    st.db.dispose()


def test_an_interval_shorter_than_cloudcron_min_interval_is_a_400(slow_api):
    status, cloud = slow_api.post("clouds", {"title": "lab", "provider": "other"})
    body = {"name": "n", "action": "stop", "machines_per_cloud": [[cloud["id"], "i-1"]], "schedule_type": "interval"}
    status, answer = slow_api.post("schedules", {**body, "schedule_entry": {"every": 59, "period": "seconds"}})
    assert status == 400 and "60" in answer["error"] and answer["error"].startswith("schedule_entry:")
    status, answer = slow_api.post("schedules", {**body, "schedule_entry": {"every": 1, "period": "minutes"}})
    assert status == 200, answer
    status, answer = slow_api.patch(f"schedules/{answer['id']}", {"schedule_entry": {"every": 30, "period": "seconds"}})
    assert status == 400


# ------------------------------------------------------------------ dates

DATE_FORMS = [
    ("2030-3-24 17:20:00", None),            # Mist's form, UTC
    ("2030-03-24 17:20", None),
    ("2030-03-24T17:20:00Z", None),          # ISO with offset
    ("2030-03-24T19:20:00+02:00", None),
    ("2030-03-24T12:20:00-05:00", "Asia/Tokyo"),  # an offset wins over the timezone
    ("2030-03-24T17:20:00", None),           # ISO without offset: the schedule's timezone, UTC by default
    ("2030-03-24T19:20:00", "Europe/Athens"),
    ("2030-3-24 19:20:00", "Europe/Athens"),
    (1900603200, None),                      # epoch seconds
    ("1900603200", None),
    (1900603200.0, None),
]


@pytest.mark.parametrize("field", ["start_after", "expires"])
def test_it_accepts_dates_in_each_form_and_answers_iso_utc_z(api, schedule_body, field):
    for i, (given, tz) in enumerate(DATE_FORMS):
        extra = {"timezone": tz} if tz else {}
        status, body = api.post("schedules", schedule_body(name=f"s{i}", **{field: given}, **extra))
        assert status == 200, (given, body)
        assert body[field] == "2030-03-24T17:20:00Z", (given, tz)


def test_it_keeps_fractions_of_a_second(api, schedule_body):
    for i, given in enumerate(["2030-03-24T17:20:00.250000Z", 1900603200.25, "1900603200.25"]):
        status, body = api.post("schedules", schedule_body(name=f"s{i}", start_after=given))
        assert status == 200 and body["start_after"] == "2030-03-24T17:20:00.250000Z", given


def test_it_rejects_a_bad_date_naming_the_field(api, schedule_body):
    for field in ("start_after", "expires"):
        for given in ("tomorrow", "2030-02-30 00:00:00", "24/03/2030", True, [], {}, "1e3", float("inf")):
            status, body = api.post("schedules", schedule_body(**{field: given}))
            assert status == 400 and body["error"].startswith(f"{field}:"), (field, given, body)


def test_it_rejects_a_one_off_not_in_the_future_on_create(api, schedule_body):
    for when in ("2016-3-24 17:20:00", 0, "2020-01-01T00:00:00Z"):
        status, body = api.post("schedules", schedule_body(schedule_type="one_off", schedule_entry=when))
        assert status == 400 and body["error"].startswith("schedule_entry:") and "future" in body["error"]


def test_it_rejects_an_expires_not_in_the_future_on_create(api, schedule_body):
    status, body = api.post("schedules", schedule_body(expires="2016-3-24 17:20:00"))
    assert status == 400 and body["error"].startswith("expires:") and "future" in body["error"]


def test_a_start_after_in_the_past_is_accepted(api, schedule_body):
    status, body = api.post("schedules", schedule_body(start_after="2016-3-24 17:20:00"))
    assert status == 200 and body["start_after"] == "2016-03-24T17:20:00Z"


def test_it_rejects_start_after_after_expires(api, schedule_body, schedule):
    status, body = api.post("schedules", schedule_body(name="x", start_after="2031-01-01T00:00:00Z",
                                                       expires="2030-01-01T00:00:00Z"))
    assert status == 400 and body["error"].startswith("start_after:")
    status, ok = api.post("schedules", schedule_body(name="y", expires="2030-01-01T00:00:00Z"))
    assert status == 200
    status, body = api.patch(f"schedules/{ok['id']}", {"start_after": "2031-01-01T00:00:00Z"})
    assert status == 400 and body["error"].startswith("start_after:")


def test_it_rejects_past_dates_sent_in_an_edit(api, schedule):
    status, body = api.patch(f"schedules/{schedule['id']}", {"expires": "2016-3-24 17:20:00"})
    assert status == 400 and body["error"].startswith("expires:")
    status, body = api.patch(f"schedules/{schedule['id']}", {"schedule_type": "one_off", "schedule_entry": "2016-3-24 17:20:00"})
    assert status == 400 and body["error"].startswith("schedule_entry:")


def test_editing_the_description_of_an_expired_schedule_works(api, schedule):
    set_stored(api, schedule["id"], expires=PAST, start_after=PAST - timedelta(days=1))
    status, body = api.patch(f"schedules/{schedule['id']}", {"description": "kept for the record"})
    assert status == 200, body
    assert body["description"] == "kept for the record" and body["expires"] == "2020-01-01T00:00:00Z"
    assert body["next_run_at"] is None and body["active"] is False


def test_editing_a_one_off_whose_date_passed_works(api, schedule_body):
    status, sched = api.post("schedules", schedule_body(schedule_type="one_off", schedule_entry="2030-1-1 00:00:00"))
    set_stored(api, sched["id"], schedule_entry="2020-01-01T00:00:00Z")
    status, body = api.post(f"schedules/{sched['id']}", {"description": "done"})
    assert status == 200, body
    assert body["schedule_entry"] == "2020-01-01T00:00:00Z" and body["next_run_at"] is None


# ------------------------------------------------------------------ next_run_at

def test_next_run_at_of_an_interval_is_one_period_after_creation(api, schedule):
    assert iso(schedule["next_run_at"]) - iso(schedule["created_at"]) == timedelta(minutes=2)
    assert schedule["active"] is True


def test_next_run_at_of_an_interval_is_its_start_after(api, schedule_body):
    status, body = api.post("schedules", schedule_body(start_after="2030-01-01T00:00:00Z"))
    assert body["next_run_at"] == "2030-01-01T00:00:00Z"


def test_next_run_at_of_a_crontab_is_in_its_timezone(api, schedule_body):
    status, body = api.post("schedules", schedule_body(schedule_type="crontab", schedule_entry={"minute": "30", "hour": "2"},
                                                       timezone="Europe/Athens", start_after="2030-01-01T00:00:00Z"))
    assert status == 200, body
    assert body["next_run_at"] == "2030-01-01T00:30:00Z"  # 02:30 in Athens, UTC+2 in winter


def test_next_run_at_of_a_one_off_is_its_date(api, schedule_body):
    status, body = api.post("schedules", schedule_body(schedule_type="one_off", schedule_entry="2030-2-28 16:20:00"))
    assert body["next_run_at"] == "2030-02-28T16:20:00Z"


def test_next_run_at_is_recomputed_on_every_edit(api, schedule_body):
    status, sched = api.post("schedules", schedule_body(schedule_type="crontab", schedule_entry={"minute": "30", "hour": "2"},
                                                        start_after="2030-01-01T00:00:00Z"))
    assert sched["next_run_at"] == "2030-01-01T02:30:00Z"
    status, body = api.patch(f"schedules/{sched['id']}", {"schedule_entry": {"minute": "30", "hour": "3"}})
    assert body["next_run_at"] == "2030-01-01T03:30:00Z"
    status, body = api.put(f"schedules/{sched['id']}", {"timezone": "America/New_York"})
    assert body["next_run_at"] == "2030-01-01T08:30:00Z"
    status, body = api.post(f"schedules/{sched['id']}", {"start_after": "2030-06-01 00:00:00"})
    assert body["next_run_at"] == "2030-06-01T07:30:00Z"  # New York is UTC-4 in June
    assert api.get(f"schedules/{sched['id']}")[1]["next_run_at"] == "2030-06-01T07:30:00Z"


def test_a_disabled_schedule_has_no_next_run_at(api, schedule_body):
    status, body = api.post("schedules", schedule_body(enabled=False, start_after="2030-01-01T00:00:00Z"))
    assert (body["next_run_at"], body["active"]) == (None, False)
    status, body = api.patch(f"schedules/{body['id']}", {"enabled": True})
    assert (body["next_run_at"], body["active"]) == ("2030-01-01T00:00:00Z", True)
    status, body = api.patch(f"schedules/{body['id']}", {"enabled": False})
    assert (body["next_run_at"], body["active"]) == (None, False)


def test_a_schedule_that_reached_max_run_count_has_no_next_run_at(api, schedule_body):
    status, sched = api.post("schedules", schedule_body(max_run_count=3))
    assert sched["next_run_at"] is not None
    set_stored(api, sched["id"], total_run_count=3)
    status, body = api.patch(f"schedules/{sched['id']}", {"description": "used up"})
    assert (body["next_run_at"], body["active"], body["total_run_count"]) == (None, False, 3)
    status, body = api.patch(f"schedules/{sched['id']}", {"max_run_count": 4})
    assert body["next_run_at"] is not None and body["active"] is True


def test_a_one_off_that_ran_has_no_next_run_at(api, schedule_body):
    status, sched = api.post("schedules", schedule_body(schedule_type="one_off", schedule_entry="2030-2-28 16:20:00"))
    set_stored(api, sched["id"], total_run_count=1)
    status, body = api.patch(f"schedules/{sched['id']}", {"description": "done"})
    assert (body["next_run_at"], body["active"]) == (None, False)


def test_a_schedule_whose_expires_leaves_one_fire_fires_once(api, schedule_body):
    status, body = api.post("schedules", schedule_body(start_after="2030-01-01T00:00:00Z", expires="2030-01-01T00:00:00.5Z"))
    assert status == 200, body
    assert body["next_run_at"] == "2030-01-01T00:00:00Z"


def test_creating_a_one_off_at_or_after_its_expires_is_a_400_naming_the_fields(api, schedule_body):
    status, body = api.post("schedules", schedule_body(name="late", schedule_type="one_off", schedule_entry="2031-1-1 00:00:00",
                                                       expires="2030-12-31T00:00:00Z"))
    assert status == 400 and body["error"].startswith("schedule_entry, expires:") and "never fire" in body["error"]


# ------------------------------------------------------------------ preview

def test_preview_answers_five_times_by_default(api):
    status, body = api.post("schedules/preview", {"schedule_type": "interval", "schedule_entry": {"every": 1, "period": "days"},
                                                  "after": "2030-01-01T00:00:00Z"})
    assert status == 200, body
    assert body == {"next_run_times": [f"2030-01-0{d}T00:00:00Z" for d in range(2, 7)]}


def test_preview_takes_count_up_to_1000(api):
    base = {"schedule_type": "crontab", "schedule_entry": {"minute": "*"}, "after": "2030-01-01T00:00:00Z"}
    status, body = api.post("schedules/preview", {**base, "count": 1000})
    assert status == 200 and len(body["next_run_times"]) == 1000
    assert body["next_run_times"][-1] == "2030-01-01T16:40:00Z"
    for count in (1001, 0, -1, "5", 2.5):
        status, body = api.post("schedules/preview", {**base, "count": count})
        assert status == 400 and body["error"].startswith("count:")


def test_preview_reads_a_crontab_in_its_timezone_across_dst(api):
    status, body = api.post("schedules/preview", {"schedule_type": "crontab", "schedule_entry": {"minute": "0", "hour": "2"},
                                                  "timezone": "Europe/Athens", "after": "2030-03-29 00:00:00", "count": 4})
    assert status == 200, body
    # Athens springs forward on 2030-03-31 at 03:00 local: 02:00 is UTC+2 that day, UTC+3 from the next.
    assert body["next_run_times"] == ["2030-03-29T00:00:00Z", "2030-03-30T00:00:00Z", "2030-03-31T00:00:00Z",
                                      "2030-03-31T23:00:00Z"]


@pytest.mark.parametrize("schedule_type, entry", [
    ("interval", {"every": 2, "period": "minutes"}),
    ("crontab", {"minute": "*/7", "hour": "1-20"}),
    ("one_off", "2030-2-28 16:20:00"),
])
def test_preview_gives_the_same_times_as_next_run_at(api, schedule_body, schedule_type, entry):
    body = schedule_body(schedule_type=schedule_type, schedule_entry=entry, timezone="Asia/Kolkata")
    status, sched = api.post("schedules", body)
    assert status == 200, sched
    status, preview = api.post("schedules/preview", {**body, "after": sched["created_at"], "count": 1})
    assert status == 200, preview
    assert preview["next_run_times"] == [sched["next_run_at"]]


def test_preview_respects_start_after_expires_and_max_run_count(api):
    base = {"schedule_type": "interval", "schedule_entry": {"every": 1, "period": "hours"}, "after": "2030-01-01T00:00:00Z",
            "start_after": "2030-01-01T10:00:00Z", "count": 10}
    status, body = api.post("schedules/preview", {**base, "expires": "2030-01-01T13:00:00Z"})
    assert body["next_run_times"] == ["2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z", "2030-01-01T12:00:00Z"]
    status, body = api.post("schedules/preview", {**base, "max_run_count": 2})
    assert body["next_run_times"] == ["2030-01-01T10:00:00Z", "2030-01-01T11:00:00Z"]
    status, body = api.post("schedules/preview", {**base, "enabled": False})
    assert body["next_run_times"] == []


def test_preview_stores_nothing(api, schedule_body):
    status, body = api.post("schedules/preview", schedule_body())
    assert status == 200 and len(body["next_run_times"]) == 5
    assert api.get("schedules")[1] == []


def test_preview_needs_a_schedule_type_and_entry(api):
    status, body = api.post("schedules/preview", {"schedule_type": "interval"})
    assert status == 400 and "schedule_entry" in body["error"]


def test_preview_rejects_a_bad_after(api):
    for after in ("soon", [], True, {}):
        status, body = api.post("schedules/preview", {"schedule_type": "interval",
                                                      "schedule_entry": {"every": 1, "period": "hours"}, "after": after})
        assert status == 400 and body["error"].startswith("after:"), after


# ------------------------------------------------------------------ list

@pytest.fixture
def three(api, schedule_body):
    names = []
    for name in ("first", "second", "third"):
        status, body = api.post("schedules", schedule_body(name=name))
        assert status == 200, body
        names.append(name)
    return names


def names_of(items):
    return [i["name"] for i in items]


def test_the_list_is_a_json_array_newest_first_with_the_total(api, three):
    status, items, resp = api.call("GET", "schedules")
    assert status == 200 and names_of(items) == ["third", "second", "first"]
    assert resp.headers["X-Total-Count"] == "3"


def test_the_list_pages_with_limit_and_offset(api, three):
    status, items, resp = api.call("GET", "schedules?limit=2")
    assert names_of(items) == ["third", "second"] and resp.headers["X-Total-Count"] == "3"
    status, items, resp = api.call("GET", "schedules?limit=2&offset=2")
    assert names_of(items) == ["first"] and resp.headers["X-Total-Count"] == "3"
    status, items, resp = api.call("GET", "schedules?offset=5")
    assert items == [] and resp.headers["X-Total-Count"] == "3"
    assert names_of(api.get("schedules?limit=1000")[1]) == ["third", "second", "first"]


def test_the_list_limit_defaults_to_100(api, schedule_body, state):
    status, first = api.post("schedules", schedule_body(name="s0"))
    with state.db.transaction() as session:
        row = session.get(Schedule, first["id"])
        copied = {c.name: getattr(row, c.name) for c in Schedule.__table__.columns if c.name not in ("id", "name")}
        session.add_all(Schedule(**copied, id=f"{i:032x}", name=f"s{i}") for i in range(1, 101))
    status, items, resp = api.call("GET", "schedules")
    assert len(items) == 100 and resp.headers["X-Total-Count"] == "101"


def test_the_list_rejects_bad_paging(api):
    for query in ("limit=0", "limit=1001", "limit=-1", "limit=ten", "offset=-1", "offset=x", "limit=1.5"):
        status, body = api.get(f"schedules?{query}")
        assert status == 400 and body["error"].startswith(query.split("=")[0] + ":"), query


def test_the_list_filters_by_name(api, three):
    status, items, resp = api.call("GET", "schedules?name=second")
    assert names_of(items) == ["second"] and resp.headers["X-Total-Count"] == "1"
    assert api.get("schedules?name=nope")[1] == []


# ------------------------------------------------------------------ edits that re-send past values

def test_resending_a_past_expires_unchanged_with_a_new_description_works(api, schedule_body, schedule):
    set_stored(api, schedule["id"], expires=PAST, start_after=PAST - timedelta(days=1))
    # The whole schedule sent back, as Mist's UI does, in Mist's date form.
    whole = schedule_body(description="retired", expires="2020-1-1 00:00:00", start_after="2019-12-31 00:00:00")
    status, body = api.post(f"schedules/{schedule['id']}", whole)
    assert status == 200, body
    assert (body["description"], body["expires"], body["active"]) == ("retired", "2020-01-01T00:00:00Z", False)
    status, body = api.post(f"schedules/{schedule['id']}", {**whole, "expires": "2020-1-2 00:00:00"})
    assert status == 400 and body["error"].startswith("expires:") and "future" in body["error"]


def test_resending_a_past_one_off_date_unchanged_works(api, schedule_body):
    status, sched = api.post("schedules", schedule_body(schedule_type="one_off", schedule_entry="2030-1-1 00:00:00"))
    set_stored(api, sched["id"], schedule_entry="2020-01-01T00:00:00Z")
    status, body = api.put(f"schedules/{sched['id']}", schedule_body(schedule_type="one_off", description="ran",
                                                                     schedule_entry="2020-01-01 00:00:00"))
    assert status == 200, body
    status, body = api.put(f"schedules/{sched['id']}", schedule_body(schedule_type="one_off",
                                                                     schedule_entry="2020-01-02 00:00:00"))
    assert status == 400 and body["error"].startswith("schedule_entry:")


# ------------------------------------------------------------------ schedules that can never fire

def test_creating_a_one_off_before_its_start_after_is_a_400_naming_both(api, schedule_body):
    status, body = api.post("schedules", schedule_body(schedule_type="one_off", schedule_entry="2030-1-1 00:00:00",
                                                       start_after="2030-02-01T00:00:00Z"))
    assert status == 400 and body["error"].startswith("schedule_entry, start_after:") and "never fire" in body["error"]


def test_creating_a_crontab_with_no_fire_between_start_after_and_expires_is_a_400(api, schedule_body):
    leap_day = {"minute": "0", "hour": "0", "day_of_month": "29", "month_of_year": "2"}
    status, body = api.post("schedules", schedule_body(schedule_type="crontab", schedule_entry=leap_day,
                                                       start_after="2029-03-01T00:00:00Z", expires="2031-12-31T00:00:00Z"))
    assert status == 400 and body["error"].startswith("schedule_entry, start_after, expires:"), body
    status, body = api.post("schedules", schedule_body(schedule_type="crontab", schedule_entry=leap_day,
                                                       start_after="2029-03-01T00:00:00Z", expires="2032-12-31T00:00:00Z"))
    assert status == 200 and body["next_run_at"] == "2032-02-29T00:00:00Z"


def test_an_edit_that_ends_a_schedule_is_allowed(api, schedule_body):
    status, sched = api.post("schedules", schedule_body(schedule_type="crontab", schedule_entry={"minute": "0", "hour": "3"},
                                                        start_after="2030-01-01T00:00:00Z"))
    status, body = api.patch(f"schedules/{sched['id']}", {"expires": "2030-01-01T01:00:00Z"})
    assert status == 200, body
    assert (body["next_run_at"], body["active"]) == (None, False)


# ------------------------------------------------------------------ jitter

def test_jitter_delays_next_run_at_and_the_preview_by_a_stable_bounded_offset(api, schedule_body):
    hourly = {"minute": "0"}
    status, sched = api.post("schedules", schedule_body(schedule_type="crontab", schedule_entry=hourly, jitter=600,
                                                        start_after="2030-01-01T00:00:00Z"))
    assert status == 200, sched
    assert sched["jitter"] == 600
    first = iso(sched["next_run_at"])
    assert datetime(2030, 1, 1, tzinfo=timezone.utc) <= first < datetime(2030, 1, 1, 0, 10, tzinfo=timezone.utc)
    status, preview = api.get(f"schedules/{sched['id']}/preview?count=100&after=2029-12-31T23:59:00Z")
    times = [iso(t) for t in preview["next_run_times"]]
    assert times[0] == first
    delays = [t - datetime(2030, 1, 1, tzinfo=timezone.utc) - timedelta(hours=k) for k, t in enumerate(times)]
    assert all(timedelta(0) <= d < timedelta(minutes=10) for d in delays)
    assert len(set(delays)) > 90  # spread over the ten minutes
    assert api.get(f"schedules/{sched['id']}/preview?count=100&after=2029-12-31T23:59:00Z")[1] == preview  # stable
    # Another schedule with the same timing gets other offsets.
    status, twin = api.post("schedules", schedule_body(name="twin", schedule_type="crontab", schedule_entry=hourly,
                                                       jitter=600, start_after="2030-01-01T00:00:00Z"))
    assert twin["next_run_at"] != sched["next_run_at"]


def test_jitter_longer_than_the_time_between_fires_is_a_400(api, schedule_body):
    status, body = api.post("schedules", schedule_body(jitter=121))  # every 2 minutes
    assert status == 400 and body["error"].startswith("jitter:") and "120" in body["error"]
    assert api.post("schedules", schedule_body(jitter=120))[0] == 200
    for jitter in (-1, 86401, 1.5, "10"):
        status, body = api.post("schedules", schedule_body(name="j", jitter=jitter))
        assert status == 400 and body["error"].startswith("jitter:"), jitter


def test_a_jitter_edit_is_checked_against_the_stored_entry(api, schedule):
    status, body = api.patch(f"schedules/{schedule['id']}", {"jitter": 200})
    assert status == 400 and body["error"].startswith("jitter:")
    status, body = api.patch(f"schedules/{schedule['id']}", {"jitter": 30})
    assert status == 200 and body["jitter"] == 30
    status, body = api.patch(f"schedules/{schedule['id']}", {"schedule_entry": {"every": 10, "period": "seconds"}})
    assert status == 400 and body["error"].startswith("jitter:")


def test_a_body_preview_shows_jitter(api):
    status, body = api.post("schedules/preview", {"schedule_type": "interval", "schedule_entry": {"every": 1, "period": "hours"},
                                                  "start_after": "2030-01-01T00:00:00Z", "jitter": 3600,
                                                  "after": "2029-12-31T00:00:00Z", "count": 5})
    assert status == 200, body
    times = [iso(t) for t in body["next_run_times"]]
    assert all(timedelta(0) <= t - datetime(2030, 1, 1, k, tzinfo=timezone.utc) < timedelta(hours=1)
               for k, t in enumerate(times))
    assert len(set(t.minute for t in times)) > 1
