"""The schedule's `retries` field: stored, answered, validated with errors naming the field, in OpenAPI."""
from __future__ import annotations

import pytest


def test_it_stores_and_answers_retries_with_defaults_filled_in(api, schedule_body, cloud):
    status, body = api.post("schedules", schedule_body(retries={"max": 2}))
    assert status == 200, body
    assert body["retries"] == {"max": 2, "delay": 60, "backoff": 2}
    status, got = api.get(f"schedules/{body['id']}")
    assert status == 200 and got["retries"] == {"max": 2, "delay": 60, "backoff": 2}


def test_a_schedule_has_no_retries_by_default_and_null_clears_them(api, schedule_body, cloud):
    status, body = api.post("schedules", schedule_body())
    assert status == 200 and body["retries"] is None
    status, body = api.patch(f"schedules/{body['id']}", {"retries": {"max": 3, "delay": 5, "backoff": 1.5}})
    assert status == 200 and body["retries"] == {"max": 3, "delay": 5, "backoff": 1.5}
    status, body = api.patch(f"schedules/{body['id']}", {"retries": None})
    assert status == 200 and body["retries"] is None


@pytest.mark.parametrize("value, field", [
    ({"max": 11}, "retries.max"),
    ({"max": -1}, "retries.max"),
    ({"max": True}, "retries.max"),
    ({"max": "3"}, "retries.max"),
    ({"delay": 5}, "retries.max"),
    ({"max": 1, "delay": 3601}, "retries.delay"),
    ({"max": 1, "delay": -1}, "retries.delay"),
    ({"max": 1, "backoff": 0.5}, "retries.backoff"),
    ({"max": 1, "backoff": 11}, "retries.backoff"),
    ({"max": 1, "tries": 2}, "retries.tries"),
])
def test_it_refuses_bad_retries_naming_the_field(api, schedule_body, cloud, value, field):
    status, body = api.post("schedules", schedule_body(retries=value))
    assert status == 400, body
    assert body["error"].startswith(field + ":"), body


def test_it_refuses_retries_that_are_not_an_object(api, schedule_body, cloud):
    status, body = api.post("schedules", schedule_body(retries=[3]))
    assert status == 400 and body["error"].startswith("retries"), body


def test_the_openapi_description_documents_retries(api):
    status, doc = api.get("openapi.json", token=None)
    assert status == 200
    schemas = doc["components"]["schemas"]
    found = [s for s in schemas.values() if "retries" in (s.get("properties") or {})]
    assert found and "backoff" in str(found[0]["properties"]["retries"])
