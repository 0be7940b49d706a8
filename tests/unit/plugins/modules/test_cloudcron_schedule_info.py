"""Decision logic of cloudcron.scheduler.schedule_info: which requests answer which question."""
from __future__ import annotations

from ansible_collections.cloudcron.scheduler.plugins.modules.schedule_info import read_schedules

ONE = {"id": "a" * 32, "name": "nightly", "next_run_at": "2030-01-07T17:00:00Z"}
TWO = {"id": "b" * 32, "name": "weekly", "next_run_at": None}
RUN = {"id": "r" * 32, "status": "succeeded"}


class ReadingClient:
    """Answers GETs from memory and records them."""

    def __init__(self):
        self.calls = []

    def get(self, path, query=None):
        self.calls.append((path, query))
        if path == "schedules":
            return [s for s in (ONE, TWO) if s["name"] == query["name"]]
        return [RUN] * query["limit"]

    def get_or_none(self, path, query=None):
        self.calls.append((path, query))
        return ONE if path == "schedules/" + ONE["id"] else None

    def list_all(self, path, query=None):
        self.calls.append((path, query))
        return [ONE, TWO]


def test_by_name_reads_the_schedule_and_its_last_runs():
    client = ReadingClient()
    found = read_schedules(client, name="nightly", runs=2)
    assert [s["name"] for s in found] == ["nightly"]
    assert found[0]["runs"] == [RUN, RUN] and found[0]["next_run_at"] == ONE["next_run_at"]
    assert client.calls == [("schedules", {"name": "nightly"}), ("schedules/%s/runs" % ONE["id"], {"limit": 2})]


def test_an_unknown_name_or_id_is_an_empty_list():
    assert read_schedules(ReadingClient(), name="nowhere") == []
    assert read_schedules(ReadingClient(), id_="c" * 32) == []


def test_all_schedules_without_runs_cost_one_listing():
    client = ReadingClient()
    found = read_schedules(client, runs=0)
    assert [s["name"] for s in found] == ["nightly", "weekly"] and all(s["runs"] == [] for s in found)
    assert client.calls == [("schedules", None)]
