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
