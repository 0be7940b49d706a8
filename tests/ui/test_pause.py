"""Pause and resume in the console: the schedule page's form writes through the API's pause rules
(schedules.pause_values, set_pause), errors read as the API's beside their field, and a paused
schedule carries a "paused until ..." badge in the list and on its page."""
from __future__ import annotations

import html
import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from web.models import Schedule

from .conftest import text


def _pause(console, sid, **fields):
    path = f"/ui/schedules/{sid}"
    return console.post(f"{path}/pause", {"until": "", "note": "", "skip_next": "", **fields}, csrf_from=path)


def test_a_pause_until_a_local_time_is_stored_as_the_api_stores_it_and_shown_by_a_badge(console, api, schedule_body):
    _, sch = api.post("schedules", schedule_body(name="athens", timezone="Europe/Athens"))
    _, twin = api.post("schedules", schedule_body(name="twin", timezone="Europe/Athens"))
    resp = _pause(console, sch["id"], until="2030-01-07T06:00:00", note="DB migration, ask Eleni")
    assert resp.status_code == 302 and resp.headers["Location"] == f"/ui/schedules/{sch['id']}", text(resp)
    status, via_api = api.post(f"schedules/{twin['id']}/pause", {"until": "2030-01-07 06:00:00",
                                                                  "note": "DB migration, ask Eleni"})
    assert status == 200, via_api
    stored = api.get(f"schedules/{sch['id']}")[1]
    # Athens is UTC+2 in January: the form's local time is read in the schedule's zone, as the API reads it.
    assert stored["paused"] is True and stored["paused_until"] == "2030-01-07T04:00:00Z"
    assert (stored["paused_until"], stored["pause_note"]) == (via_api["paused_until"], via_api["pause_note"])
    assert stored["next_run_at"] >= "2030-01-07T04:00:00Z"  # the held fires are not fires

    badge = '<span class="badge paused">paused until 2030-01-07 04:00:00 UTC</span>'
    page = text(console.get(f"/ui/schedules/{sch['id']}"))
    assert badge in page and "DB migration, ask Eleni" in page and ">Resume</button>" in page
    listing = text(console.get("/ui/schedules?q=athens"))
    assert badge in listing
    assert text(console.get("/ui/schedules")).count(badge) == 2  # the twin the API paused too

    [entry] = api.get(f"audit?id={sch['id']}&action=pause")[1]
    assert entry["token_id"] is not None and entry["changes"]["paused_until"]["after"] == "2030-01-07T04:00:00Z"


def test_a_pause_without_until_holds_until_resumed_and_resume_ends_it(console, api, schedule):
    sid = schedule["id"]
    assert _pause(console, sid).status_code == 302
    stored = api.get(f"schedules/{sid}")[1]
    assert stored["paused"] is True and stored["paused_until"] is None and stored["next_run_at"] is None
    assert '<span class="badge paused">paused until resumed</span>' in text(console.get(f"/ui/schedules/{sid}"))

    resp = console.post(f"/ui/schedules/{sid}/resume", csrf_from=f"/ui/schedules/{sid}")
    assert resp.status_code == 302 and resp.headers["Location"] == f"/ui/schedules/{sid}"
    stored = api.get(f"schedules/{sid}")[1]
    assert stored["paused"] is False and stored["next_run_at"] is not None
    page = text(console.get(f"/ui/schedules/{sid}"))
    assert "badge paused" not in page and ">Resume</button>" not in page
    assert [e["action"] for e in api.get(f"audit?id={sid}")[1]][:2] == ["resume", "pause"]


def test_skip_next_from_the_form_is_the_apis_skip_next(console, api, schedule):
    sid = schedule["id"]
    assert _pause(console, sid, skip_next="2", note="patch window").status_code == 302
    stored = api.get(f"schedules/{sid}")[1]
    assert stored["skip_next"] == 2 and stored["paused"] is False and stored["pause_note"] == "patch window"
    page = text(console.get(f"/ui/schedules/{sid}"))
    assert '<span class="badge paused">skips the next 2 fires</span>' in page and ">Resume</button>" in page
    assert html.unescape(page).count("skipped (skip_next): patch window") == 2  # the timeline marks both


@pytest.mark.parametrize("fields, api_body, field", [
    ({"until": "2020-01-01T00:00:00"}, {"until": "2020-01-01 00:00:00"}, "until"),
    ({"until": "next week"}, {"until": "next week"}, "until"),
    ({"until": "2030-01-01T00:00:00", "skip_next": "2"}, {"until": "2030-01-01 00:00:00", "skip_next": 2}, "until"),
    ({"skip_next": "many"}, {"skip_next": "many"}, "skip_next"),
    ({"skip_next": "0"}, {"skip_next": 0}, "skip_next"),
    ({"note": "n" * 2001}, {"note": "n" * 2001}, "note"),
])
def test_a_refused_pause_reads_as_the_apis_error_beside_its_field_and_changes_nothing(
        console, api, schedule, fields, api_body, field):
    sid = schedule["id"]
    status, api_error = api.post(f"schedules/{sid}/pause", api_body)
    assert status == 400, api_error
    resp = _pause(console, sid, **fields)
    page = text(resp)
    assert resp.status_code == 400
    shown = re.search(f'<p class="field-error" id="{field}-error" role="alert">(.*?)</p>', page, re.S)
    assert shown and html.unescape(shown.group(1)) == api_error["error"], page[page.find('id="pause-h"'):][:2000]
    assert f'id="{field}"' in page and 'aria-describedby="' + field + '-error"' in page
    for name, value in fields.items():  # the form comes back as it was sent
        assert re.search(f'id="{name}" name="{name}"[^>]* value="{re.escape(html.escape(value, quote=False))}"', page)
    after = api.get(f"schedules/{sid}")[1]
    assert after["paused"] is False and after["skip_next"] == 0
    assert api.get(f"audit?id={sid}&action=pause")[1] == []


def test_a_nul_in_the_pause_form_is_refused_by_its_field(console, api, schedule):
    resp = _pause(console, schedule["id"], note="a\x00b")
    assert resp.status_code == 400 and 'id="note-error"' in text(resp)
    assert "note: must not contain NUL" in html.unescape(text(resp))
    assert api.get(f"schedules/{schedule['id']}")[1]["paused"] is False


def test_another_orgs_schedule_cannot_be_paused_or_resumed(other_console, console, api, schedule):
    sid = schedule["id"]
    assert _pause(other_console, sid).status_code == 404
    assert api.get(f"schedules/{sid}")[1]["paused"] is False
    assert _pause(console, sid).status_code == 302
    resp = other_console.post(f"/ui/schedules/{sid}/resume", csrf_from="/ui/")
    assert resp.status_code == 404
    assert api.get(f"schedules/{sid}")[1]["paused"] is True


def test_the_paused_filter_lists_schedules_a_pause_holds_now(console, api, schedule_body, state):
    ids = {n: api.post("schedules", schedule_body(name=n))[1]["id"] for n in ("held", "ended", "free")}
    assert _pause(console, ids["held"]).status_code == 302
    assert _pause(console, ids["ended"], until="2030-01-01T00:00:00").status_code == 302
    # A pause whose until has passed has ended on its own (schedules.is_paused), though its row still has it.
    with state.db.transaction() as s:
        s.execute(update(Schedule).where(Schedule.id == ids["ended"])
                  .values(paused_until=datetime.now(timezone.utc) - timedelta(minutes=1)))
    page = text(console.get("/ui/schedules?status=paused"))
    assert "held" in page and "ended" not in page and "free" not in page
    everything = text(console.get("/ui/schedules"))
    assert everything.count('class="badge paused"') == 1


def test_a_pause_posted_from_the_list_returns_to_it(console, schedule):
    sid = schedule["id"]
    resp = console.post(f"/ui/schedules/{sid}/resume", {"next": "/ui/schedules?status=paused"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/ui/schedules?status=paused"
