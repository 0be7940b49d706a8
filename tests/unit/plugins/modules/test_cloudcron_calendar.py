"""Decision logic of cloudcron.scheduler.calendar: what it sends, and that the same entries again write nothing."""
from __future__ import annotations

import copy
import datetime

from ansible_collections.cloudcron.scheduler.plugins.modules import calendar as mod


class PathClient:
    """An in-memory /calendars that records every call like the real client's."""

    def __init__(self, calendars=()):
        self.items = [copy.deepcopy(c) for c in calendars]
        self.calls = []

    @property
    def writes(self):
        return [c for c in self.calls if c[0] != "GET"]

    def find_one(self, collection, field, value):
        self.calls.append(("GET", collection, {field: value}))
        found = [i for i in self.items if i.get(field) == value]
        return copy.deepcopy(found[0]) if found else None

    def post(self, collection, body):
        self.calls.append(("POST", collection, copy.deepcopy(body)))
        item = dict(body, id="n" * 32)
        self.items.append(item)
        return copy.deepcopy(item)

    def patch(self, path, body):
        self.calls.append(("PATCH", path, copy.deepcopy(body)))
        item = next(i for i in self.items if i["id"] == path.rsplit("/", 1)[1])
        item.update(body)
        return copy.deepcopy(item)

    def delete(self, path):
        self.calls.append(("DELETE", path, None))
        self.items = [i for i in self.items if i["id"] != path.rsplit("/", 1)[1]]
        return {"deleted": path.rsplit("/", 1)[1]}


GREEK = {"id": "9" * 32, "name": "greek-holidays", "description": None, "timezone": "Europe/Athens",
         "entries": [{"holidays": {"country": "GR"}}, {"from": "2026-12-24", "to": "2027-01-02"}]}


def params(**given):
    out = {name: spec.get("default") for name, spec in mod.argument_spec().items()}
    out.update(url="http://127.0.0.1:8080", token="t", name="greek-holidays")
    out.update(given)
    return out


def test_a_new_calendar_is_posted_with_its_entries():
    client = PathClient()
    result = mod.ensure(client, params(timezone="Europe/Athens", entries=GREEK["entries"]), check_mode=False)
    assert client.writes == [("POST", "calendars", {"name": "greek-holidays", "timezone": "Europe/Athens",
                                                    "entries": GREEK["entries"]})]
    assert result["changed"] is True and result["changed_fields"] == ["entries", "name", "timezone"]


def test_the_same_entries_again_write_nothing():
    client = PathClient([GREEK])
    result = mod.ensure(client, params(timezone="Europe/Athens", entries=GREEK["entries"]), check_mode=False)
    assert result["changed"] is False and client.writes == []


def test_changed_entries_are_patched_whole_and_diffed():
    client = PathClient([GREEK])
    entries = [{"weekly": {"from": "fri 18:00", "to": "mon 06:00"}}]
    result = mod.ensure(client, params(entries=entries), check_mode=False)
    assert client.writes == [("PATCH", "calendars/" + "9" * 32, {"entries": entries})]
    assert result["diff"] == {"before": {"entries": GREEK["entries"]}, "after": {"entries": entries}}


def test_dates_a_yaml_loader_made_into_objects_are_sent_as_text():
    client = PathClient([GREEK])
    entries = [{"holidays": {"country": "GR"}}, {"from": datetime.date(2026, 12, 24), "to": datetime.date(2027, 1, 2)}]
    assert mod.ensure(client, params(entries=entries), check_mode=False)["changed"] is False


def test_check_mode_predicts_and_writes_nothing():
    client = PathClient([GREEK])
    result = mod.ensure(client, params(timezone="UTC"), check_mode=True)
    assert result["changed"] is True and result["calendar"]["timezone"] == "UTC" and client.writes == []


def test_absent_deletes_and_is_idempotent():
    client = PathClient([GREEK])
    assert mod.ensure(client, params(state="absent"), check_mode=False)["changed"] is True
    assert client.writes == [("DELETE", "calendars/" + "9" * 32, None)]
    assert mod.ensure(client, params(state="absent"), check_mode=False)["changed"] is False
