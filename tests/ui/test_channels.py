"""Notification channels in the console: listed masked as the API masks them, added and deleted through
web.channels (its errors beside their field, its audit entries), and a test sent to a real loopback
receiver through the same send_test and per-org test slot as POST /channels/<id>/test."""
from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import func, select

from web import channels
from web.models import Delivery, Org

from tests.harness.receiver import LOOPBACK_ALLOWED

from .conftest import text

HOOK_TOKEN, SECRET = "T0KEN-in-path", "s3cret-s3cret-s3cret"
HOOK = {"name": "ops-hook", "kind": "webhook", "url": f"https://hooks.example.com/cron/{HOOK_TOKEN}",
        "secret": SECRET}
SLACK = {"name": "ops-slack", "kind": "apprise", "url": "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops"}


def _add(console, **fields):
    return console.post("/ui/channels", fields, csrf_from="/ui/channels")


def _field_error(page: str, field: str) -> str | None:
    shown = re.search(f'<p class="field-error" id="{field}-error" role="alert">(.*?)</p>', page, re.S)
    return html.unescape(shown.group(1)) if shown else None


def test_channels_added_in_the_console_are_the_apis_and_are_listed_masked(console, api):
    resp = _add(console, **HOOK, default="on")
    assert resp.status_code == 302 and resp.headers["Location"] == "/ui/channels", text(resp)
    assert _add(console, **SLACK).status_code == 302
    listed = {c["name"]: c for c in api.get("channels")[1]}
    assert listed["ops-hook"]["url"] == "https://hooks.example.com/…" and listed["ops-hook"]["default"] is True
    assert listed["ops-slack"]["url"] == "slack://…" and listed["ops-slack"]["default"] is False

    page = text(console.get("/ui/channels"))
    for c in listed.values():
        assert c["id"] in page and f"<code>{html.escape(c['url'])}</code>" in page
    assert HOOK_TOKEN not in page and SECRET not in page and "TIiajkdnlazk" not in page and "A1BRTD4JD" not in page
    entries = api.get("audit?resource=channel")[1]
    assert sorted(e["name"] for e in entries) == ["ops-hook", "ops-slack"]
    assert {e["action"] for e in entries} == {"create"} and all(e["token_id"] for e in entries)


@pytest.mark.parametrize("change, field", [
    ({"kind": ""}, "kind"),
    ({"kind": "email"}, "kind"),
    ({"url": "ftp://hooks.example.com/x"}, "url"),
    ({"url": "http://169.254.169.254/latest"}, "url"),
    ({"url": "http://127.0.0.1:8080/hook"}, "url"),  # the receivers' own denied list (loopback, private)
    ({"url": "http://10.1.2.3/hook"}, "url"),
    ({"url": ""}, "url"),
    ({"secret": ""}, "secret"),
    ({"secret": "short"}, "secret"),
    ({"name": ""}, "name"),
    ({"kind": "apprise", "url": "nosuchservice://abc", "secret": ""}, "url"),
    ({"kind": "apprise", "url": SLACK["url"]}, "secret"),  # an Apprise URL carries its own credentials
    ({"name": "a\x00b"}, "name"),
    ({"secret": "s" * 1001}, "secret"),
])
def test_a_refused_channel_reads_as_the_apis_error_beside_its_field(console, api, change, field):
    body = {**HOOK, **change}
    resp = _add(console, **body)
    page = text(resp)
    status, api_error = api.post("channels", {k: (v if v != "" else None) for k, v in body.items()})
    assert resp.status_code == status == 400, (page[:500], api_error)
    assert _field_error(page, field) == api_error["error"], page[page.find("add-channel"):][:1500]
    assert re.search(f'id="{field}"[^>]*aria-invalid="true" aria-describedby="{field}-error"', page)
    # What was typed into url and secret is never sent back: either may hold credentials.
    for secretish in (HOOK_TOKEN, SECRET, "TIiajkdnlazk", "169.254.169.254/latest"):
        if secretish in body["url"] + body["secret"]:
            assert secretish not in page.replace(api_error["error"], ""), secretish
    assert api.get("channels")[1] == []


def test_a_duplicate_name_is_the_apis_409_by_the_name_field(console, api):
    assert api.post("channels", HOOK)[0] == 200
    resp = _add(console, **HOOK)
    assert resp.status_code == 409
    assert _field_error(text(resp), "name") == "name: a channel named 'ops-hook' already exists"
    assert len(api.get("channels")[1]) == 1


def test_the_orgs_channel_limit_is_said_at_the_top_of_the_form(console, api, monkeypatch):
    monkeypatch.setattr(channels, "MAX_CHANNELS", 1)
    assert _add(console, **HOOK).status_code == 302
    resp = _add(console, **{**HOOK, "name": "second"})
    assert resp.status_code == 409
    assert '<p class="error" role="alert">an org has at most 1 channels; delete one first</p>' in text(resp)
    assert 'value="second"' in text(resp)  # the name comes back, the url and secret do not


def test_a_channel_is_deleted_after_a_confirmation_unless_a_schedule_notifies_it(console, api, schedule):
    _, hook = api.post("channels", HOOK)
    path = f"/ui/channels/{hook['id']}/delete"
    assert "Delete channel" in text(console.get(path)) and api.get(f"channels/{hook['id']}")[0] == 200
    api.patch(f"schedules/{schedule['id']}", {"notify": {"channels": ["ops-hook"]}})
    resp = console.post(path, csrf_from=path)
    status, api_error = api.delete(f"channels/{hook['id']}")
    assert resp.status_code == status == 409
    assert f'<p class="error" role="alert">{html.escape(api_error["error"], quote=False)}' in \
           text(resp).replace("&#39;", "'").replace("&#x27;", "'")
    api.patch(f"schedules/{schedule['id']}", {"notify": None})
    resp = console.post(path, csrf_from=path)
    assert resp.status_code == 302 and resp.headers["Location"] == "/ui/channels"
    assert api.get(f"channels/{hook['id']}")[0] == 404
    assert [e["action"] for e in api.get(f"audit?id={hook['id']}")[1]] == ["delete", "create"]


def test_send_test_reaches_a_real_receiver_and_shows_the_delivery(console, api, receiver, state):
    state.config.notify_denied_networks = LOOPBACK_ALLOWED  # the receiver is on loopback
    hook = receiver(statuses=(200,))
    _, channel = api.post("channels", {**HOOK, "url": hook.url + "/hook"})
    resp = console.post(f"/ui/channels/{channel['id']}/test", csrf_from="/ui/channels")
    assert resp.status_code == 302, text(resp)
    assert len(hook.requests) == 1 and b'"type": "test"' in hook.requests[0][1].replace(b'":"', b'": "')
    page = text(console.get(resp.headers["Location"]))
    assert re.search(r'Test of ops-hook:\s*<strong class="status status-succeeded">delivered</strong>', page)


def test_a_failed_test_shows_the_receivers_answer(console, api, receiver, state):
    state.config.notify_denied_networks = LOOPBACK_ALLOWED  # the receiver is on loopback
    hook = receiver(statuses=(500,))
    _, channel = api.post("channels", {**HOOK, "url": hook.url + "/hook"})
    resp = console.post(f"/ui/channels/{channel['id']}/test", csrf_from="/ui/channels")
    page = text(console.get(resp.headers["Location"]))
    assert re.search(r'Test of ops-hook:\s*<strong class="status status-failed">failed</strong>', page)
    assert "HTTP 500 Internal Server Error" in page and hook.url + "/hook" not in page


def test_a_test_while_another_of_the_orgs_is_under_way_is_refused_at_once(console, api, state):
    _, channel = api.post("channels", HOOK)
    token = console.csrf("/ui/channels")
    with channels.one_test_at_a_time(_org(state), 7.0):
        resp = console.post(f"/ui/channels/{channel['id']}/test", {"csrf_token": token})
        # Refused by the slot the holder took, with the service's own bound as Retry-After (CLOUDCRON_NOTIFY_TIMEOUT).
        assert resp.status_code == 429 and resp.headers["Retry-After"] == str(round(state.config.notify_timeout))
        assert "a test of one of this org&#39;s channels is being sent" in text(resp)
        # The API's test and the console's share the slot: the API is refused too.
        assert api.post(f"channels/{channel['id']}/test")[0] == 429
    with state.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 0  # nothing was sent or recorded


def _org(state) -> str:
    with state.db.session() as s:
        return s.scalar(select(Org.id).where(Org.name == "acme"))


def test_another_orgs_channels_are_not_listed_tested_or_deleted(console, other_console, api, receiver, state):
    state.config.notify_denied_networks = LOOPBACK_ALLOWED  # the receiver is on loopback
    hook = receiver()
    _, channel = api.post("channels", {**HOOK, "url": hook.url + "/hook"})
    assert "ops-hook" not in text(other_console.get("/ui/channels"))
    assert other_console.post(f"/ui/channels/{channel['id']}/test", csrf_from="/ui/channels").status_code == 404
    assert hook.requests == []
    assert other_console.get(f"/ui/channels/{channel['id']}/delete").status_code == 404
    assert other_console.post(f"/ui/channels/{channel['id']}/delete", csrf_from="/ui/channels").status_code == 404
    assert api.get(f"channels/{channel['id']}")[0] == 200
    # A test delivery's id does not show another org's outcome either.
    tested = console.post(f"/ui/channels/{channel['id']}/test", csrf_from="/ui/channels").headers["Location"]
    assert "Test of ops-hook" in text(console.get(tested))
    assert "Test of" not in text(other_console.get(tested))
