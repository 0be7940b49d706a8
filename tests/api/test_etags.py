"""Optimistic concurrency: GET answers an ETag (the resource's version); PATCH, PUT and DELETE honour If-Match."""
from __future__ import annotations

import pytest


def etag_of(api, path):
    status, body, resp = api.call("GET", path)
    assert status == 200, body
    return resp.headers["ETag"]


def test_get_answers_an_etag_that_every_edit_changes(api, schedule):
    path = f"schedules/{schedule['id']}"
    first = etag_of(api, path)
    assert first == '"1"'
    assert etag_of(api, path) == first  # reading does not change it
    api.patch(path, {"description": "x"})
    assert etag_of(api, path) not in (first, None)


def test_an_edit_with_a_stale_if_match_is_refused_with_412_and_changes_nothing(api, schedule):
    path = f"schedules/{schedule['id']}"
    seen = etag_of(api, path)
    assert api.patch(path, {"description": "first writer"})[0] == 200
    status, body = api.patch(path, {"description": "second writer"}, headers={"If-Match": seen})
    assert status == 412 and body["error"].startswith("If-Match: the resource is at ETag")
    assert api.get(path)[1]["description"] == "first writer"


def test_an_edit_with_the_current_etag_or_a_star_passes(api, schedule):
    path = f"schedules/{schedule['id']}"
    status, _, resp = api.call("PATCH", path, {"description": "a"}, headers={"If-Match": etag_of(api, path)})
    assert status == 200 and resp.headers["ETag"] == '"2"'
    assert api.patch(path, {"description": "b"}, headers={"If-Match": "*"})[0] == 200


@pytest.mark.parametrize("collection,body", [
    ("scripts", {"name": "uptime", "script": "#!/bin/sh\nuptime\n"}),
    ("keys", {"name": "deploy", "generate": True}),
    ("clouds", {"title": "lab2", "provider": "other"}),
    ("calendars", {"name": "xmas", "entries": [{"date": "2026-12-25"}]}),
    ("channels", {"name": "hook", "kind": "webhook", "url": "https://hooks.example.com/cron",
                  "secret": "s3cret-s3cret-s3cret"}),
])
def test_every_resource_honours_if_match_on_patch_and_delete(api, collection, body):
    status, created = api.post(collection, body)
    assert status == 200, created
    path = f"{collection}/{created['id']}"
    seen = etag_of(api, path)
    rename = {"title": "renamed"} if collection == "clouds" else {"name": "renamed"}
    assert api.patch(path, rename, headers={"If-Match": seen})[0] == 200
    assert api.delete(path, headers={"If-Match": seen})[0] == 412
    assert api.get(path)[0] == 200
    assert api.delete(path, headers={"If-Match": etag_of(api, path)})[0] == 200


def test_delete_with_a_stale_if_match_keeps_the_schedule(api, schedule):
    path = f"schedules/{schedule['id']}"
    seen = etag_of(api, path)
    api.patch(path, {"enabled": False})
    assert api.delete(path, headers={"If-Match": seen})[0] == 412
    assert api.get(path)[0] == 200


def test_apply_honours_if_match_and_a_missing_resource_matches_nothing(api, cloud, schedule):
    path = f"schedules/by-name/{schedule['name']}"
    seen = etag_of(api, f"schedules/{schedule['id']}")
    api.patch(f"schedules/{schedule['id']}", {"description": "meanwhile"})
    status, body, _ = api.call("PUT", path, {"description": "mine"}, headers={"If-Match": seen})
    assert status == 412
    status, body, _ = api.call("PUT", "schedules/by-name/absent", {"description": "x"}, headers={"If-Match": '"1"'})
    assert status == 412 and body["error"] == "If-Match: there is no such resource to match"


def test_a_pause_changes_the_etag(api, schedule):
    path = f"schedules/{schedule['id']}"
    seen = etag_of(api, path)
    api.post(f"{path}/pause", {"note": "hold"})
    assert etag_of(api, path) != seen


def test_the_dispatchers_bookkeeping_does_not_change_the_etag(api, schedule):
    """A fire advances next_run_at and the counters, not what a client wrote: an edit read before it still passes."""
    from web.models import Schedule

    path = f"schedules/{schedule['id']}"
    seen = etag_of(api, path)
    with api.state.db.transaction() as session:
        row = session.get(Schedule, schedule["id"])
        row.total_run_count += 1  # what the dispatcher's claim writes
    assert etag_of(api, path) == seen
