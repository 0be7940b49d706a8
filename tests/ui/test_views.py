"""The console's views under hostile and odd input: where a form may send a person back to, text the
database cannot store, paging and filter values out of range, and schedules whose stored timing
cannot be computed. Each answer is a page with the field's error or the page itself, never a 500."""
from __future__ import annotations

import pytest

from .conftest import Console, text


@pytest.mark.parametrize("next_url", ["/ui/\r\nSet-Cookie: x=1", "/ui/\nX-Injected: 1", "/ui/\x00", "/ui/\\evil.example",
                                      "//evil.example/ui/", "https://evil.example/ui/", "/ui/\t/evil.example"])
def test_sign_in_sends_a_hostile_next_to_the_dashboard(app, api, next_url):
    c = Console(app.test_client())
    resp = c.flask.post("/ui/signin", data={"token": api.token, "csrf_token": c.csrf(), "next": next_url})
    assert resp.status_code == 302 and resp.headers["Location"] == "/ui/"
    assert "X-Injected" not in resp.headers and "x=1" not in str(resp.headers)


def test_sign_in_keeps_a_console_path_with_its_query(app, api):
    c = Console(app.test_client())
    resp = c.flask.post("/ui/signin", data={"token": api.token, "csrf_token": c.csrf(),
                                            "next": "/ui/schedules?q=night&status=enabled"})
    assert resp.headers["Location"] == "/ui/schedules?q=night&status=enabled"


@pytest.mark.parametrize("next_url", ["/ui/\r\nX-Injected: 1", "/ui/\\\\evil.example", "//evil.example", "javascript:alert(1)"])
def test_enable_disable_returns_to_the_schedule_for_a_hostile_next(console, api, schedule, next_url):
    resp = console.post(f"/ui/schedules/{schedule['id']}/enabled", {"enabled": "false", "next": next_url})
    assert resp.status_code == 302, text(resp)
    assert resp.headers["Location"] == f"/ui/schedules/{schedule['id']}" and "X-Injected" not in resp.headers
    assert api.get(f"schedules/{schedule['id']}")[1]["enabled"] is False


def test_enable_disable_returns_to_the_filtered_list_it_came_from(console, schedule):
    resp = console.post(f"/ui/schedules/{schedule['id']}/enabled", {"enabled": "false", "next": "/ui/schedules?q=ni"})
    assert resp.headers["Location"] == "/ui/schedules?q=ni"


@pytest.mark.parametrize("offset", ["99999999999999999999999", "-5", "1e5", "٣", ""])
def test_a_paging_offset_out_of_range_shows_a_page(console, schedule, offset):
    for path in ("/ui/schedules", f"/ui/schedules/{schedule['id']}", "/ui/logs"):
        resp = console.get(f"{path}?offset={offset}")
        assert resp.status_code == 200, (path, text(resp)[:200])


def test_a_name_filter_longer_than_any_name_matches_nothing(console, schedule):
    resp = console.get("/ui/schedules?q=" + "n" * 100_000)
    assert resp.status_code == 200 and "No schedules match these filters" in text(resp)
    assert "nightly" in text(console.get("/ui/schedules?q=NIGHT"))


def test_the_preview_reads_a_timezone_with_blanks_around_it(console):
    resp = console.post("/ui/schedules/preview", {"schedule_type": "crontab", "minute": "0", "hour": "2",
                                                  "day_of_week": "*", "day_of_month": "*", "month_of_year": "*",
                                                  "timezone": " Europe/Athens "}, csrf_from="/ui/schedules/new")
    assert resp.status_code == 200 and text(resp).count("02:00:00 Europe/Athens") == 10
